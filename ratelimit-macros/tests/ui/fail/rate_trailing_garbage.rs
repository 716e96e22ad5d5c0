use ratelimit_axum::rate_limit;

#[rate_limit(rate = "10/s per client")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
