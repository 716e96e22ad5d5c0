//! `health_handler` and the failure policy with a failover backend, through real routing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::get;
use http_body_util::BodyExt;
use ratelimit_axum::core::{
    Backend, BackendError, CircuitBreakerConfig, Decision, HealthStatus, Limit, ManualClock,
    MemoryBackend, MultiBackend, Registry, async_trait,
};
use ratelimit_axum::{Scope, health_handler, rate_limit};
use tower::ServiceExt;

/// A store that can be switched off.
#[derive(Debug, Default)]
struct Switchable {
    store: MemoryBackend,
    down: AtomicBool,
}

impl Switchable {
    fn check_up(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BackendError::Custom("switched off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Backend for Switchable {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.check_up()?;
        self.store.check_n(key, limit, cost).await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.check_up()?;
        self.store.peek_n(key, limit, cost).await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        self.store.reset(key).await
    }

    async fn health(&self) -> HealthStatus {
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        let mut status = HealthStatus::healthy("switchable", None);
        status.healthy = !self.down.load(Ordering::SeqCst);
        status
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

#[rate_limit(rate = "100/h", on_error = "deny")]
async fn guarded() -> &'static str {
    "ok"
}

struct Setup {
    app: Router,
    primary: Arc<Switchable>,
    fallback: Arc<Switchable>,
    clock: ManualClock,
}

fn setup() -> Setup {
    let clock = ManualClock::new(1_700_000_000_000);
    let primary = Arc::new(Switchable::default());
    let fallback = Arc::new(Switchable::default());
    let multi = MultiBackend::builder()
        .shared_backend("primary", Arc::clone(&primary) as Arc<dyn Backend>)
        .shared_backend("fallback", Arc::clone(&fallback) as Arc<dyn Backend>)
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 2,
            recovery_timeout: Duration::from_secs(30),
            ..CircuitBreakerConfig::default()
        })
        .clock(clock.clone())
        .build();
    let registry = Registry::builder()
        .backend("multi", multi)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = Router::new()
        .route("/", get(guarded))
        .route("/health", get(health_handler))
        .layer(Extension(Scope::new(registry)));
    Setup {
        app,
        primary,
        fallback,
        clock,
    }
}

async fn call(app: &Router, uri: &str) -> Response {
    let mut request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .unwrap_or_else(|error| panic!("{error}"));
    let peer: SocketAddr = "192.0.2.1:1"
        .parse()
        .unwrap_or_else(|error| panic!("{error}"));
    request.extensions_mut().insert(ConnectInfo(peer));
    app.clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {})
}

async fn json(response: Response) -> serde_json::Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn health_is_200_with_every_backend_and_circuit_listed() {
    let s = setup();
    let response = call(&s.app, "/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["healthy"], true);
    assert_eq!(body["serving"], true);
    assert_eq!(body["backends"][0]["name"], "multi");
    assert_eq!(body["backends"][0]["members"][0]["name"], "primary");
    assert_eq!(body["backends"][0]["members"][0]["circuit"], "closed");
    assert_eq!(body["backends"][0]["members"][1]["name"], "fallback");
}

#[tokio::test]
async fn a_failover_keeps_serving_and_health_shows_the_open_circuit() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(call(&s.app, "/").await.status(), StatusCode::OK);
    }
    let response = call(&s.app, "/health").await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "degraded is not healthy"
    );
    let body = json(response).await;
    assert_eq!(body["healthy"], false);
    assert_eq!(body["serving"], true, "the fallback serves: {body}");
    assert_eq!(body["backends"][0]["members"][0]["circuit"], "open");
    assert_eq!(body["backends"][0]["members"][0]["failure_count"], 2);
}

#[tokio::test]
async fn a_half_open_member_is_reported_as_such_and_not_healthy() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(call(&s.app, "/").await.status(), StatusCode::OK);
    }
    // Back up, but its circuit has not had a trial call yet.
    s.primary.down.store(false, Ordering::SeqCst);
    s.clock.advance(Duration::from_secs(30));
    let response = call(&s.app, "/health").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json(response).await;
    let primary = &body["backends"][0]["members"][0];
    assert_eq!(primary["circuit"], "half_open", "{body}");
    assert_eq!(primary["healthy"], false, "on trial, not healthy: {body}");
    assert_eq!(body["serving"], true, "{body}");

    assert_eq!(
        call(&s.app, "/").await.status(),
        StatusCode::OK,
        "the trial"
    );
    let response = call(&s.app, "/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json(response).await["backends"][0]["members"][0]["circuit"],
        "closed"
    );
}

#[tokio::test]
async fn deny_policy_answers_503_with_the_circuit_retry_time_never_429() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    s.fallback.down.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    let mut retry_afters = Vec::new();
    for _ in 0..4 {
        let response = call(&s.app, "/").await;
        statuses.push(response.status());
        retry_afters.push(
            response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        );
    }
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    // Once both circuits are open, Retry-After is when the first one will try again.
    assert_eq!(
        retry_afters.last().cloned().flatten().as_deref(),
        Some("30")
    );
    let health = call(&s.app, "/health").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(health).await["serving"], false);
    s.primary.down.store(false, Ordering::SeqCst);
    s.clock.advance(Duration::from_secs(30));
    assert_eq!(
        call(&s.app, "/").await.status(),
        StatusCode::OK,
        "primary back after recovery"
    );
    assert_eq!(
        call(&s.app, "/health").await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "fallback still down"
    );
}
