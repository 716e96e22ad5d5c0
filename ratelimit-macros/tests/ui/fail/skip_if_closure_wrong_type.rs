use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h", skip_if = |parts| parts.uri.path().len())]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
}
