use ratelimit_axum::rate_limit;

#[rate_limit(rate = "0/0s")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
