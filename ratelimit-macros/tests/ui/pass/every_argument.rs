//! Every argument at once; the registered limit records what was written.

use axum::Router;
use axum::http::request::Parts;
use axum::routing::post;
use ratelimit_axum::core::{Algorithm, registered_limits};
use ratelimit_axum::rate_limit;

fn is_staff(parts: &Parts) -> bool {
    parts.headers.contains_key("x-staff")
}

fn upload_cost(parts: &Parts) -> u32 {
    parts
        .headers
        .get("content-length")
        .and_then(|length| length.to_str().ok()?.parse::<u32>().ok())
        .map_or(1, |bytes| bytes / 1024 + 1)
}

#[rate_limit(
    key = "header:X-Api-Key",
    rate = "100/h",
    algorithm = "token_bucket",
    algorithm_config = { bucket_size = 200, refill_rate = 2.0, initial_tokens = 0 },
    backend = "memory",
    block = false,
    skip_if = is_staff,
    group = "uploads",
    cost = upload_cost,
    methods = ["POST", "PUT"],
    on_error = "deny",
    shadow = true,
)]
async fn upload(body: String) -> String {
    body
}

fn main() {
    let _app: Router = Router::new().route("/upload", post(upload));
    let limit = registered_limits()
        .find(|limit| limit.handler.ends_with("::upload"))
        .unwrap_or_else(|| panic!("`upload` did not register its limit"));
    assert_eq!(limit.group, "uploads");
    assert_eq!(limit.rate, "100/h");
    assert_eq!(limit.algorithm, Algorithm::TokenBucket);
    assert_eq!(limit.backend, Some("memory"));
}
