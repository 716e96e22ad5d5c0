//! `forbid` levels (which no inner `allow` may lower) still accept the expansion.
#![forbid(unsafe_code, clippy::pedantic)]
#![deny(warnings)]

use axum::Router;
use axum::routing::get;
use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h")]
async fn api() -> &'static str {
    "ok"
}

fn main() {
    let _app: Router = Router::new().route("/api", get(api));
}
