//! A per-request rate that does not fit the handler's settings is a bug in the program: every
//! request gets a 500 with a generic body, one error line a minute names the handler and the
//! problem, and the failure policy never lets the request through uncounted. One test per
//! binary: the log throttles are process-wide.

mod support;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use http::request::Parts;
use ratelimit_axum::core::{MemoryBackend, MultiBackend, Rate, Registry};
use ratelimit_axum::rate_limit;

/// A compound rate, which bucket settings cannot apply to.
fn compound(_parts: &Parts) -> Rate {
    Rate::parse("10/s;100/h").unwrap_or_else(|error| panic!("{error}"))
}

#[rate_limit(
    rate = compound,
    algorithm = "token_bucket",
    algorithm_config = { bucket_size = 20 },
    on_error = "allow"
)]
async fn misconfigured() -> &'static str {
    "the handler must not run"
}

#[rate_limit(
    rate = compound,
    algorithm = "token_bucket",
    algorithm_config = { bucket_size = 20 },
    backend = "failover"
)]
async fn misconfigured_behind_failover() -> &'static str {
    "the handler must not run"
}

#[tokio::test]
async fn an_invalid_per_request_limit_is_a_500_never_the_failure_policy() {
    let (captured, _default) = support::capture_logs(tracing::Level::WARN);
    let registry = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .backend(
            "failover",
            MultiBackend::builder()
                .backend("primary", MemoryBackend::new())
                .backend("fallback", MemoryBackend::new())
                .build(),
        )
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = support::scoped(
        Router::new()
            .route("/direct", get(misconfigured))
            .route("/failover", get(misconfigured_behind_failover)),
        registry,
    );
    for path in ["/direct", "/failover"] {
        for _ in 0..20 {
            let response = support::send(&app, support::get_request(path, "192.0.2.8:1")).await;
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{path}"
            );
            assert!(
                response.headers().get("x-ratelimit-limit").is_none(),
                "{path}: no rate-limit headers"
            );
            let body = support::body_text(response).await;
            assert!(body.contains("rate_limit_misconfigured"), "{body}");
            assert!(!body.contains("bucket_size"), "a generic body: {body}");
        }
    }
    let logs = captured.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("invalid"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per handler: {logs}");
    assert!(
        lines[0].contains("guard_invalid_limit::misconfigured") && lines[0].contains("bucket_size"),
        "names the handler and the problem: {logs}"
    );
    assert!(lines[0].contains("ERROR"), "{logs}");
    assert!(!logs.contains("allowing the request"), "{logs}");
}
