use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h", algorithm = "token_bucket", algorithm_config = { initial_tokens = 101 })]
async fn handler() -> &'static str {
    "ok"
}

fn main() {
    let _ = handler;
}
