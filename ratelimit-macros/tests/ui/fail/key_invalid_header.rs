use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h", key = "header:X Api Key")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
