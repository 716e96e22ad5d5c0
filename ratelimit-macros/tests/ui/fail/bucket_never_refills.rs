use ratelimit_axum::rate_limit;

#[rate_limit(rate = "0/m", algorithm = "token_bucket", algorithm_config = { bucket_size = 10 })]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
