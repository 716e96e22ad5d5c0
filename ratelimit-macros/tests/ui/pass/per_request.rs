//! Per-request rates, keys and costs: paths and closures, checked against their `fn` types.

use axum::Router;
use axum::http::request::Parts;
use axum::routing::get;
use ratelimit_axum::core::{Quota, Rate, registered_limits};
use ratelimit_axum::rate_limit;

mod tiers {
    use super::{Parts, Quota, Rate};
    use std::num::NonZeroU64;

    pub fn rate(parts: &Parts) -> Rate {
        let count = if parts.headers.contains_key("x-premium") {
            1000
        } else {
            100
        };
        Rate::from_quota(Quota::new(count, NonZeroU64::MIN.saturating_add(3_599_999)))
    }
}

#[rate_limit(
    rate = tiers::rate,
    algorithm = "token_bucket",
    algorithm_config = { refill_rate = 0.5 },
    key = |parts| parts.headers.get("x-tenant")?.to_str().ok().map(str::to_owned),
    cost = |parts| if parts.uri.path().ends_with("/bulk") { 10 } else { 1 },
    skip_if = |parts: &Parts| parts.uri.path() == "/health",
)]
async fn tenant() -> &'static str {
    "ok"
}

fn main() {
    let _app: Router = Router::new().route("/tenant", get(tenant));
    let limit = registered_limits()
        .find(|limit| limit.handler.ends_with("::tenant"))
        .unwrap_or_else(|| panic!("`tenant` did not register its limit"));
    assert_eq!(limit.rate, "<per request>");
}
