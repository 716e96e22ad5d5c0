use ratelimit_axum::rate_limit;

#[rate_limit(rate = "10/s;1000/h", algorithm = "token_bucket", algorithm_config = { bucket_size = 20 })]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
