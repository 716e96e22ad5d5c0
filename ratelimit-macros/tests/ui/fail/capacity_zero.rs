use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h", algorithm = "leaky_bucket", algorithm_config = { capacity = 0 })]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
