use axum::http::request::Parts;
use ratelimit_axum::rate_limit;

fn tier_rate(_parts: &Parts) -> &'static str {
    "100/h"
}

#[rate_limit(rate = tier_rate)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
}
