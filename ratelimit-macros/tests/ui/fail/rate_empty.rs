use ratelimit_axum::rate_limit;

#[rate_limit(rate = "")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
