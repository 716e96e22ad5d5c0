use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h", methods = ["post"])]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
