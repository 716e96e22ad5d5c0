//! With the `metrics` feature, every checked request is counted by outcome and every backend
//! call's latency is recorded.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension};
use axum::http::Request;
use axum::routing::get;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use ratelimit_axum::core::{MemoryBackend, Registry};
use ratelimit_axum::{Scope, rate_limit};
use tower::ServiceExt;

#[rate_limit(rate = "2/m")]
async fn two_per_minute() -> &'static str {
    "ok"
}

#[test]
fn outcomes_are_counted_and_backend_latency_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        runtime.block_on(async {
            let registry = Registry::builder()
                .backend("memory", MemoryBackend::new())
                .build()
                .unwrap_or_else(|error| panic!("{error}"));
            let app = Router::new()
                .route("/", get(two_per_minute))
                .layer(Extension(Scope::new(registry)));
            for _ in 0..3 {
                let mut request = Request::builder()
                    .uri("/")
                    .body(Body::empty())
                    .unwrap_or_else(|error| panic!("{error}"));
                let peer: SocketAddr = "192.0.2.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
                request.extensions_mut().insert(ConnectInfo(peer));
                let _ = app.clone().oneshot(request).await;
            }
        });
    });
    let mut allowed = 0;
    let mut limited = 0;
    let mut latencies = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let outcome = key
            .labels()
            .find(|label| label.key() == "outcome")
            .map(|label| label.value().to_owned());
        match (key.name(), outcome.as_deref(), value) {
            ("ratelimit_requests_total", Some("allowed"), DebugValue::Counter(n)) => allowed = n,
            ("ratelimit_requests_total", Some("limited"), DebugValue::Counter(n)) => limited = n,
            ("ratelimit_backend_latency_seconds", None, DebugValue::Histogram(values)) => {
                assert!(
                    key.labels()
                        .any(|l| l.key() == "backend" && l.value() == "memory")
                );
                latencies = values.len();
            }
            _ => {}
        }
    }
    assert_eq!((allowed, limited, latencies), (2, 1, 3));
}
