use ratelimit_axum::rate_limit;

#[rate_limit(key = "ip")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
