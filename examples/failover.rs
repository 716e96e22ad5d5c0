//! Failover: Redis first, memory when Redis is down, with a circuit breaker and a health
//! endpoint.
//!
//! Run: `cargo run --example failover` (Redis from `REDIS_URL`, default
//! redis://127.0.0.1:6379; address from `FAILOVER_ADDR`, default 127.0.0.1:3000). Then
//! `curl -i http://127.0.0.1:3000/api` and `curl -s http://127.0.0.1:3000/health`. Stop Redis
//! (`redis-cli shutdown nosave` on a Redis of your own) and requests keep being limited, by
//! the memory fallback; after 3 failures the circuit opens and Redis costs no wait at all
//! until it is tried again 10 s later.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ratelimit_axum::core::{
    CircuitBreakerConfig, MemoryBackend, MultiBackend, OnError, RedisBackend, Registry,
};
use ratelimit_axum::{health_handler, rate_limit};

#[rate_limit(rate = "10/m")]
async fn api() -> &'static str {
    "ok\n"
}

/// Fails closed: when neither store answers, clients get 503 (never a misleading 429).
#[rate_limit(rate = "3/m", on_error = "deny", group = "payments")]
async fn payments() -> &'static str {
    "charged\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = RedisBackend::builder(&url)
        .timeout(Duration::from_millis(200))
        .build()
        .await?;
    let failover = MultiBackend::builder()
        .backend("redis", redis)
        .backend("memory", MemoryBackend::new())
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(10),
            ..CircuitBreakerConfig::default()
        })
        .build();
    Registry::builder()
        .backend("failover", failover)
        .on_backend_error(OnError::Allow)
        .install()?;
    let app = Router::new()
        .route("/api", get(api))
        .route("/payments", get(payments))
        .route("/health", get(health_handler));
    let addr = ratelimit_examples::listen_addr("FAILOVER_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &["curl -i http://{addr}/api", "curl -s http://{addr}/health"],
    )
    .await?;
    Ok(())
}
