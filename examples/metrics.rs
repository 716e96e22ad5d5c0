//! Metrics: every checked request counted by outcome and every backend call timed, exposed for
//! Prometheus.
//!
//! Run: `cargo run --example metrics` (app on `METRICS_APP_ADDR`, default 127.0.0.1:3000;
//! Prometheus scrape endpoint on `METRICS_ADDR`, default 127.0.0.1:9000). Then
//! `for i in $(seq 4); do curl -s -o /dev/null http://127.0.0.1:3000/; done` and
//! `curl -s http://127.0.0.1:9000/metrics | grep ratelimit_`: `ratelimit_requests_total` by
//! `outcome` and the `ratelimit_backend_latency_seconds` histogram.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
use ratelimit_axum::rate_limit;

#[rate_limit(rate = "3/m")]
async fn index() -> &'static str {
    "ok\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let metrics_addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9000".into())
        .parse()?;
    PrometheusBuilder::new()
        .with_http_listener(metrics_addr)
        .install()?;
    let app = Router::new().route("/", get(index));
    let addr = ratelimit_examples::listen_addr("METRICS_APP_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &[
            "for i in $(seq 4); do curl -s -o /dev/null -w '%{http_code}\\n' http://{addr}/; done",
            &format!("curl -s http://{metrics_addr}/metrics | grep ratelimit_"),
        ],
    )
    .await?;
    Ok(())
}
