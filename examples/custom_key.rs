//! Custom keys and per-request rates: bucket by API key with a tier-dependent rate, skip
//! health probes, and let a handler see its status instead of being blocked.
//!
//! Run: `cargo run --example custom_key` (address from `CUSTOM_KEY_ADDR`, default
//! 127.0.0.1:3000), then `curl -i -H 'x-api-key: pro-123' http://127.0.0.1:3000/api`.

use axum::Router;
use axum::extract::Extension;
use axum::http::request::Parts;
use axum::routing::get;
use ratelimit_axum::core::{Quota, Rate};
use ratelimit_axum::{RateLimitStatus, rate_limit};

fn api_key(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

const MINUTE_MS: std::num::NonZeroU64 = std::num::NonZeroU64::MIN.saturating_add(59_999);
const PRO: &[Quota] = &[Quota::new(100, MINUTE_MS)];
const FREE: &[Quota] = &[Quota::new(5, MINUTE_MS)];

/// Keys starting with `pro-` get 100 per minute, everyone else 5.
fn tier_rate(parts: &Parts) -> Rate {
    let pro = api_key(parts).is_some_and(|key| key.starts_with("pro-"));
    Rate::from_static(if pro { PRO } else { FREE })
}

fn is_health_probe(parts: &Parts) -> bool {
    parts
        .headers
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|agent| agent.starts_with("kube-probe"))
}

#[rate_limit(key = api_key, rate = tier_rate, skip_if = is_health_probe)]
async fn api() -> &'static str {
    "ok\n"
}

/// Not blocked: the handler degrades gracefully when over the limit.
#[rate_limit(key = |parts: &Parts| api_key(parts), rate = "3/m", block = false)]
async fn report(Extension(status): Extension<RateLimitStatus>) -> String {
    if status.limited {
        "cached report (you are over your limit)\n".to_owned()
    } else {
        format!("fresh report ({} left)\n", status.decision.remaining)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let app = Router::new()
        .route("/api", get(api))
        .route("/report", get(report));
    let addr = ratelimit_examples::listen_addr("CUSTOM_KEY_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &[
            "curl -i -H 'x-api-key: pro-123' http://{addr}/api",
            "curl -i -H 'x-api-key: free-9' http://{addr}/api",
            "for i in $(seq 4); do curl -s -H 'x-api-key: k' http://{addr}/report; done",
        ],
    )
    .await?;
    Ok(())
}
