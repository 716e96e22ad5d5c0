use ratelimit_axum::rate_limit;

#[rate_limit(rate = "1/40000d")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
