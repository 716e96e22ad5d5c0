//! What the guard logs when a store fails or a shadow limit is hit: one line per cause every
//! few seconds, never the client's key value. One test per binary: the log throttles are
//! process-wide.

mod support;

use axum::Router;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::routing::get;
use ratelimit_axum::core::{
    Backend, BackendError, Decision, HealthStatus, Limit, MemoryBackend, MultiBackend, Registry,
};
use ratelimit_axum::{Scope, rate_limit};

#[derive(Debug)]
struct Offline;

#[ratelimit_axum::core::async_trait]
impl Backend for Offline {
    async fn check_n(
        &self,
        _key: &str,
        _limit: &Limit,
        _cost: u64,
    ) -> Result<Decision, BackendError> {
        Err(BackendError::Custom("store offline".into()))
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.check_n(key, limit, cost).await
    }

    async fn reset(&self, _key: &str) -> Result<(), BackendError> {
        Ok(())
    }

    async fn health(&self) -> HealthStatus {
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        let mut status = HealthStatus::healthy("offline", None);
        status.healthy = false;
        status
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

#[rate_limit(rate = "1/m", key = "query:token", backend = "offline")]
async fn fails_open() -> &'static str {
    "ok"
}

#[rate_limit(
    rate = "1/m",
    key = "query:token",
    backend = "offline",
    on_error = "deny"
)]
async fn fails_closed() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = "query:token", shadow = true)]
async fn shadowed() -> &'static str {
    "ok"
}

#[rate_limit(rate = "100/m", key = "query:token", backend = "failover")]
async fn failing_over() -> &'static str {
    "ok"
}

async fn get_status(app: &Router, uri: &str) -> StatusCode {
    support::send(app, support::get_request(uri, "192.0.2.1:1"))
        .await
        .status()
}

#[tokio::test]
async fn failures_and_shadow_hits_log_once_per_cause_and_interval_without_key_values() {
    let (captured, _default) = support::capture_logs(tracing::Level::WARN);

    let registry = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .backend("offline", Offline)
        .backend(
            "failover",
            MultiBackend::builder()
                .backend("primary", Offline)
                .backend("fallback", MemoryBackend::new())
                .build(),
        )
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = Router::new()
        .route("/open", get(fails_open))
        .route("/closed", get(fails_closed))
        .route("/shadow", get(shadowed))
        .route("/failover", get(failing_over))
        .layer(Extension(Scope::new(registry)));
    for attempt in 0..50 {
        let uri = |path| format!("/{path}?token=s3cret-{attempt}");
        assert_eq!(get_status(&app, &uri("open")).await, StatusCode::OK);
        assert_eq!(
            get_status(&app, &uri("closed")).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            get_status(&app, "/shadow?token=s3cret").await,
            StatusCode::OK
        );
        assert_eq!(get_status(&app, &uri("failover")).await, StatusCode::OK);
    }

    let logs = captured.text();
    let lines = |needle: &str| logs.lines().filter(|line| line.contains(needle)).count();
    assert_eq!(lines("failed; allowing the request"), 1, "{logs}");
    assert_eq!(lines("failed; denying the request"), 1, "{logs}");
    assert_eq!(lines("shadow rate limit would block"), 1, "{logs}");
    assert_eq!(lines("backend failed; trying the next"), 1, "{logs}");
    assert_eq!(lines("served by a fallback backend"), 1, "{logs}");
    assert_eq!(lines("suppressed=0"), 5, "{logs}");
    assert!(!logs.contains("s3cret"), "{logs}");
    assert_eq!(lines("key_digest="), 3, "{logs}");
    assert_eq!(lines("group=\"guard_logs::fails_open\""), 1, "{logs}");
}
