//! `health_handler` and the failure policy with a failover backend, through real routing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use ratelimit_axum::core::{
    Backend, BackendError, CircuitBreakerConfig, Decision, HealthStatus, Limit, ManualClock,
    MemoryBackend, MultiBackend, Registry, async_trait,
};
use ratelimit_axum::{GuardSettings, Scope, health_handler, rate_limit};

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
    // Every health request probes, so each sees the state the test just set.
    let settings = GuardSettings::builder()
        .health_interval(Duration::ZERO)
        .build();
    let app = Router::new()
        .route("/", get(guarded))
        .route("/health", get(health_handler))
        .layer(Extension(Scope::new(registry).with_settings(settings)));
    Setup {
        app,
        primary,
        fallback,
        clock,
    }
}

async fn call(app: &Router, uri: &str) -> Response {
    support::send(app, support::get_request(uri, "192.0.2.1:1")).await
}

async fn json(response: Response) -> serde_json::Value {
    serde_json::from_str(&support::body_text(response).await).unwrap_or(serde_json::Value::Null)
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
    assert_eq!(body["backends"][0]["members"][0]["serving"], false);
    assert_eq!(body["backends"][0]["members"][1]["serving"], true);
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

// ---- the health endpoint: cached, single flight, no secrets ----

/// A store that is down with a talkative error, and counts its probes; each probe takes a
/// while, so concurrent requests overlap it.
#[derive(Debug, Default)]
struct Leaky {
    probes: AtomicUsize,
}

/// What `Leaky` says went wrong: everything an anonymous client must never read.
const LEAKY_DETAIL: &str = "connection to postgres://admin:hunter2@db-7.internal.example:5432/app refused (user \"admin\", host 10.1.2.3)";

#[async_trait]
impl Backend for Leaky {
    async fn check_n(&self, _: &str, _: &Limit, _: u64) -> Result<Decision, BackendError> {
        Err(BackendError::Custom(LEAKY_DETAIL.into()))
    }

    async fn peek_n(&self, _: &str, _: &Limit, _: u64) -> Result<Decision, BackendError> {
        Err(BackendError::Custom(LEAKY_DETAIL.into()))
    }

    async fn reset(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }

    async fn health(&self) -> HealthStatus {
        self.probes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        let mut status = HealthStatus::healthy("leaky", Some(Duration::from_millis(3)));
        status.healthy = false;
        status.failure_count = 7;
        status.detail = Some(LEAKY_DETAIL.to_owned());
        status
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

/// A router whose registry has `leaky` alone and inside a failover before memory, with health
/// answers cached for `interval`.
fn leaky_app(interval: Duration) -> (Router, Arc<Leaky>) {
    let leaky = Arc::new(Leaky::default());
    let multi = MultiBackend::builder()
        .shared_backend("db", Arc::clone(&leaky) as Arc<dyn Backend>)
        .backend("memory", MemoryBackend::new())
        .build();
    let registry = Registry::builder()
        .shared_backend("db", Arc::clone(&leaky) as Arc<dyn Backend>)
        .backend("multi", multi)
        .default_backend("multi")
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let settings = GuardSettings::builder().health_interval(interval).build();
    let app = Router::new()
        .route("/health", get(health_handler))
        .layer(Extension(Scope::new(registry).with_settings(settings)));
    (app, leaky)
}

#[tokio::test]
async fn health_shows_states_never_error_text_hosts_users_or_urls() {
    let (app, _leaky) = leaky_app(Duration::from_secs(60));
    let response = call(&app, "/health").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = support::body_text(response).await;
    for secret in [
        "hunter2", "admin", "db-7", "internal", "10.1.2.3", "postgres", "refused", "5432", "detail",
    ] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
    let body: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"));
    assert_eq!(body["healthy"], false);
    assert_eq!(body["serving"], false, "db alone cannot serve: {body}");
    let keys = |value: &serde_json::Value| {
        let mut keys: Vec<String> = value
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let db = &body["backends"][0];
    assert_eq!(keys(db), ["circuit", "healthy", "name", "serving"], "{db}");
    assert_eq!(db["name"], "db");
    assert_eq!(db["serving"], false);
    let multi = &body["backends"][1];
    assert_eq!(
        keys(multi),
        ["circuit", "healthy", "members", "name", "serving"]
    );
    assert_eq!(multi["serving"], true, "memory serves: {multi}");
    assert_eq!(multi["healthy"], false);
    for member in multi["members"].as_array().into_iter().flatten() {
        assert_eq!(keys(member), ["circuit", "healthy", "name", "serving"]);
    }
    assert_eq!(multi["members"][0]["serving"], false);
    assert_eq!(multi["members"][1]["name"], "memory");
    assert_eq!(multi["members"][1]["serving"], true);
}

#[tokio::test]
async fn concurrent_health_requests_share_one_probe_and_the_next_ones_reuse_it() {
    let (app, leaky) = leaky_app(Duration::from_secs(60));
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { call(&app, "/health").await.status() })
        })
        .collect();
    for request in requests {
        let status = request.await.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // One probe of the registry probes `db` twice: alone and as a failover member.
    assert_eq!(
        leaky.probes.load(Ordering::SeqCst),
        2,
        "16 requests, 1 probe"
    );
    let again = call(&app, "/health").await;
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        leaky.probes.load(Ordering::SeqCst),
        2,
        "within the interval: the cached answer"
    );
}

#[tokio::test]
async fn health_probes_again_once_the_interval_has_passed() {
    let interval = Duration::from_millis(300);
    let (app, leaky) = leaky_app(interval);
    let first = support::body_text(call(&app, "/health").await).await;
    assert_eq!(leaky.probes.load(Ordering::SeqCst), 2);
    assert_eq!(support::body_text(call(&app, "/health").await).await, first);
    assert_eq!(leaky.probes.load(Ordering::SeqCst), 2, "still fresh");
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    assert_eq!(support::body_text(call(&app, "/health").await).await, first);
    assert_eq!(leaky.probes.load(Ordering::SeqCst), 4, "a new probe");
}
