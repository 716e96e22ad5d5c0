//! Only `rate`: the group defaults to the handler's path and no backend is named.

use axum::Router;
use axum::routing::get;
use ratelimit_axum::core::{Algorithm, registered_limits};
use ratelimit_axum::rate_limit;

#[rate_limit(rate = "5/minute")]
async fn login() -> &'static str {
    "ok"
}

fn main() {
    let _app: Router = Router::new().route("/login", get(login));
    let limit = registered_limits()
        .find(|limit| limit.handler.ends_with("::login"))
        .unwrap_or_else(|| panic!("`login` did not register its limit"));
    assert_eq!(limit.group, limit.handler);
    assert_eq!(limit.handler, concat!(module_path!(), "::login"));
    assert_eq!(limit.rate, "5/minute");
    assert_eq!(limit.algorithm, Algorithm::FixedWindow);
    assert_eq!(limit.backend, None);
}
