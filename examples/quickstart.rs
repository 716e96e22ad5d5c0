//! Quickstart: `#[rate_limit]` on a few axum routes, with the zero-configuration memory backend.
//!
//! Run: `cargo run --example quickstart` (listens on `QUICKSTART_ADDR`, default
//! 127.0.0.1:3000), then e.g. `curl -i http://127.0.0.1:3000/api/data` six times: five 200s
//! with `X-RateLimit-Remaining` 4..0, then a 429 with `Retry-After`.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use ratelimit_axum::rate_limit;

/// Five requests per minute per client IP (fixed window, the default algorithm).
#[rate_limit(key = "ip", rate = "5/m")]
async fn data() -> &'static str {
    "data\n"
}

/// Bursts of up to 10, refilled at 100 per hour (token bucket).
#[rate_limit(rate = "100/h", algorithm = "token_bucket", algorithm_config = { bucket_size = 10 })]
async fn search() -> &'static str {
    "results\n"
}

/// Two limits at once: 2 per second and 20 per minute per IP (a sliding log is exact).
#[rate_limit(rate = "2/s;20/m", algorithm = "sliding_window")]
async fn burst() -> &'static str {
    "burst\n"
}

/// Per path parameter: each item gets 3 views per minute, whoever asks.
#[rate_limit(key = "path:id", rate = "3/m")]
async fn item(Path(id): Path<u32>) -> String {
    format!("item {id}\n")
}

/// One bucket for everybody: 10 per minute across all clients.
#[rate_limit(key = "global", rate = "10/m", algorithm = "sliding_window_counter")]
async fn status() -> &'static str {
    "up\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let app = Router::new()
        .route("/api/data", get(data))
        .route("/api/search", get(search))
        .route("/api/burst", get(burst))
        .route("/api/items/{id}", get(item))
        .route("/api/status", get(status));
    let addr = ratelimit_examples::listen_addr("QUICKSTART_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &[
            "for i in $(seq 6); do curl -si http://{addr}/api/data | head -n1; done",
            "curl -i http://{addr}/api/search",
            "curl -i http://{addr}/api/burst",
            "curl -i http://{addr}/api/items/7",
            "curl -i http://{addr}/api/status",
        ],
    )
    .await?;
    Ok(())
}
