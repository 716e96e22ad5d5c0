use axum::http::request::Parts;
use ratelimit_axum::rate_limit;

fn user_name(parts: &Parts) -> Option<String> {
    parts.uri.query().map(str::to_owned)
}

#[rate_limit(rate = "100/h", skip_if = user_name)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
}
