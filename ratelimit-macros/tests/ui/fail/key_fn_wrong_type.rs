use axum::http::request::Parts;
use ratelimit_axum::rate_limit;

fn is_staff(parts: &Parts) -> bool {
    parts.headers.contains_key("x-staff")
}

#[rate_limit(rate = "100/h", key = is_staff)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
}
