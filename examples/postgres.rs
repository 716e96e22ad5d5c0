//! Limits counted in PostgreSQL: every server process that points at the same database shares
//! them, and the database's clock decides.
//!
//! Run: `cargo run --example postgres` (database from `DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/test; address from `POSTGRES_ADDR`, default
//! 127.0.0.1:3000). The tables `ratelimit_state_v2` and `ratelimit_log_v2` and their functions are
//! created on connect. Then `curl -i http://127.0.0.1:3000/api/orders` six times: five 200s,
//! then a 429 with `Retry-After`; `curl -i -X POST http://127.0.0.1:3000/cleanup` deletes the
//! expired rows and says how many.

use axum::Router;
use axum::routing::{get, post};
use ratelimit_axum::core::{Registry, SqlBackend};
use ratelimit_axum::rate_limit;

/// Five per minute per client IP, counted in PostgreSQL.
#[rate_limit(key = "ip", rate = "5/m", group = "postgres-example")]
async fn orders() -> &'static str {
    "orders\n"
}

/// Bursts of 3, then one every 10 s: a token bucket kept in the same tables.
#[rate_limit(rate = "6/m", algorithm = "token_bucket", algorithm_config = { bucket_size = 3 })]
async fn search() -> &'static str {
    "results\n"
}

/// What a periodic job (or `ratelimit cleanup`) does: delete expired rows in batches.
async fn cleanup() -> String {
    let backend = Registry::global().default_backend();
    match backend.cleanup().await {
        Ok(removed) => format!("removed {removed} expired rows\n"),
        Err(error) => format!("cleanup failed: {error}\n"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    Registry::builder()
        .backend("postgres", SqlBackend::connect(&url).await?)
        .default_backend("postgres")
        .install()?;
    let app = Router::new()
        .route("/api/orders", get(orders))
        .route("/api/search", get(search))
        .route("/cleanup", post(cleanup));
    let addr = ratelimit_examples::listen_addr("POSTGRES_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &[
            "for i in $(seq 6); do curl -si http://{addr}/api/orders | head -n1; done",
            "curl -i http://{addr}/api/search",
            "curl -i -X POST http://{addr}/cleanup",
        ],
    )
    .await?;
    Ok(())
}
