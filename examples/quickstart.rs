//! Quickstart: the zero-configuration memory backend guarding an axum route.
//!
//! Run: `cargo run --example quickstart`, then `curl -i http://127.0.0.1:3000/api/data`
//! (six times within a minute: the sixth answers 429).

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ratelimit_axum::core::{Limit, Quota, Rate, Registry};

const MINUTE_MS: NonZeroU64 = NonZeroU64::MIN.saturating_add(59_999);
const FIVE_PER_MINUTE_QUOTAS: &[Quota] = &[Quota::new(5, MINUTE_MS)];
static FIVE_PER_MINUTE: LazyLock<Limit> =
    LazyLock::new(|| Limit::fixed_window(Rate::from_static(FIVE_PER_MINUTE_QUOTAS)));

async fn data(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let key = format!("quickstart:ip:{}", peer.ip());
    match Registry::global()
        .default_backend()
        .check(&key, &FIVE_PER_MINUTE)
        .await
    {
        Ok(decision) if decision.allowed => {
            (StatusCode::OK, format!("ok, {} left\n", decision.remaining)).into_response()
        }
        Ok(decision) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limited, retry in {}s\n",
                decision.retry_after_secs().unwrap_or(0)
            ),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "rate-limit backend failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("QUICKSTART_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let app = Router::new().route("/api/data", get(data));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{addr}; try: curl -i http://{addr}/api/data");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
