//! Several attributes are one guard with every limit, in attribute order; the path may be
//! qualified, and other attributes between them stay on the handler.

use axum::Router;
use axum::routing::get;
use ratelimit_axum::core::registered_limits;
use ratelimit_axum::rate_limit;

/// Documented handler.
#[rate_limit(key = "ip", rate = "100/h", algorithm = "token_bucket")]
#[allow(clippy::unused_async)]
#[ratelimit_axum::rate_limit(rate = "10/s;1000/d", key = "global", group = "burst")]
#[rate_limit(rate = "1/s", algorithm = "leaky_bucket", algorithm_config = { capacity = 5, leak_rate = 0.5 })]
async fn api() -> &'static str {
    "ok"
}

fn main() {
    let _app: Router = Router::new().route("/api", get(api));
    let rates: Vec<&str> = registered_limits()
        .filter(|limit| limit.handler.ends_with("::api"))
        .map(|limit| limit.rate)
        .collect();
    assert_eq!(rates.len(), 3, "{rates:?}");
    for rate in ["100/h", "10/s;1000/d", "1/s"] {
        assert!(rates.contains(&rate), "{rate} missing from {rates:?}");
    }
}
