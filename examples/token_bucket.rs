//! Token and leaky buckets: bursts up to a bucket size with a steady refill, and a meter that
//! smooths traffic; the request cost comes from the request.
//!
//! Run: `cargo run --example token_bucket` (address from `TOKEN_BUCKET_ADDR`, default
//! 127.0.0.1:3000), then `curl -i http://127.0.0.1:3000/upload -H 'x-size-kb: 300'`.

use axum::Router;
use axum::http::request::Parts;
use axum::routing::get;
use ratelimit_axum::rate_limit;

/// Each started 100 kB costs one token.
fn upload_cost(parts: &Parts) -> u32 {
    let kilobytes: u32 = parts
        .headers
        .get("x-size-kb")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    kilobytes.div_ceil(100).max(1)
}

/// A bucket of 20 tokens that starts with 5 and refills at 0.5 tokens per second.
#[rate_limit(
    rate = "30/m",
    algorithm = "token_bucket",
    algorithm_config = { bucket_size = 20, refill_rate = 0.5, initial_tokens = 5 },
    cost = upload_cost
)]
async fn upload() -> &'static str {
    "stored\n"
}

/// A meter of capacity 4 draining 1 per second: steady traffic passes, bursts above 4 wait.
#[rate_limit(rate = "60/m", algorithm = "leaky_bucket", algorithm_config = { capacity = 4, leak_rate = 1.0 })]
async fn stream() -> &'static str {
    "chunk\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let app = Router::new()
        .route("/upload", get(upload))
        .route("/stream", get(stream));
    let addr = ratelimit_examples::listen_addr("TOKEN_BUCKET_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &[
            "curl -i -H 'x-size-kb: 300' http://{addr}/upload",
            "for i in $(seq 6); do curl -si http://{addr}/stream | grep -i -E '^(HTTP|x-ratelimit-remaining)'; done",
        ],
    )
    .await?;
    Ok(())
}
