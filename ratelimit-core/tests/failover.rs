//! `MultiBackend`: first healthy backend, fail fast on open circuits, return to the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use ratelimit_core::{
    Backend, BackendError, CircuitBreakerConfig, CircuitState, Decision, HealthStatus, Limit,
    ManualClock, MemoryBackend, MultiBackend, Rate, async_trait,
};

/// A memory store that can be switched off, or made to never answer a check, counting the
/// calls that reach it.
#[derive(Debug, Default)]
struct Switchable {
    store: MemoryBackend,
    down: AtomicBool,
    silent: AtomicBool,
    calls: AtomicU32,
}

impl Switchable {
    fn fail_if_down(&self) -> Result<(), BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Custom("switched off".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Switchable {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.fail_if_down()?;
        if self.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.store.check_n(key, limit, cost).await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.fail_if_down()?;
        self.store.peek_n(key, limit, cost).await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        self.fail_if_down()?;
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
        self.store.cleanup().await
    }
}

fn limit() -> Limit {
    Limit::fixed_window(Rate::parse("100/h").unwrap_or_else(|error| panic!("{error}")))
}

struct Setup {
    multi: MultiBackend,
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
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(10),
            ..CircuitBreakerConfig::default()
        })
        .clock(clock.clone())
        .build();
    Setup {
        multi,
        primary,
        fallback,
        clock,
    }
}

#[tokio::test]
async fn the_primary_serves_while_healthy() {
    let s = setup();
    for _ in 0..5 {
        assert!(s.multi.check("k", &limit()).await.is_ok_and(|d| d.allowed));
    }
    assert_eq!(s.primary.calls.load(Ordering::SeqCst), 5);
    assert_eq!(s.fallback.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn failures_fall_through_then_the_open_circuit_costs_no_call() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    for _ in 0..10 {
        assert!(
            s.multi.check("k", &limit()).await.is_ok_and(|d| d.allowed),
            "fallback serves"
        );
    }
    assert_eq!(
        s.primary.calls.load(Ordering::SeqCst),
        3,
        "the breaker opened after 3 failures"
    );
    assert_eq!(s.fallback.calls.load(Ordering::SeqCst), 10);
    assert_eq!(
        s.multi.breaker("primary").map(|b| b.state()),
        Some(CircuitState::Open)
    );
    let health = s.multi.health_status();
    assert!(health.healthy, "the fallback can serve");
    assert_eq!(health.members.len(), 2);
    assert!(!health.members[0].status.healthy);
    assert_eq!(health.members[0].status.circuit, CircuitState::Open);
    assert_eq!(health.members[0].status.failure_count, 3);
    assert!(health.members[0].status.next_attempt_unix_ms.is_some());
}

#[tokio::test]
async fn traffic_returns_to_the_primary_once_its_circuit_closes() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        let _ = s.multi.check("k", &limit()).await;
    }
    s.primary.down.store(false, Ordering::SeqCst);
    assert!(s.multi.check("k", &limit()).await.is_ok());
    assert_eq!(
        s.primary.calls.load(Ordering::SeqCst),
        3,
        "still open: skipped"
    );
    s.clock.advance(Duration::from_secs(10));
    assert!(s.multi.check("k", &limit()).await.is_ok());
    assert_eq!(s.primary.calls.load(Ordering::SeqCst), 4, "the trial call");
    assert_eq!(
        s.multi.breaker("primary").map(|b| b.state()),
        Some(CircuitState::Closed)
    );
    let fallback_calls = s.fallback.calls.load(Ordering::SeqCst);
    assert!(s.multi.check("k", &limit()).await.is_ok());
    assert_eq!(s.fallback.calls.load(Ordering::SeqCst), fallback_calls);
}

#[tokio::test]
async fn a_dropped_trial_call_gives_its_half_open_slot_back() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(s.multi.check("k", &limit()).await.is_ok());
    }
    assert_eq!(
        s.multi.breaker("primary").map(|b| b.state()),
        Some(CircuitState::Open)
    );
    s.clock.advance(Duration::from_secs(10));
    s.primary.down.store(false, Ordering::SeqCst);
    s.primary.silent.store(true, Ordering::SeqCst);
    // The trial call never answers; a timeout layer (or a client that goes away) drops it.
    let limit = limit();
    let trial = tokio::time::timeout(Duration::from_millis(50), s.multi.check("k", &limit));
    assert!(trial.await.is_err(), "the silent primary never answers");
    assert_eq!(s.primary.calls.load(Ordering::SeqCst), 4, "the trial call");

    let health = s.multi.health_status();
    let primary = &health.members[0].status;
    assert_eq!(primary.circuit, CircuitState::HalfOpen, "{health:?}");
    assert!(
        !primary.healthy,
        "a half-open member is not healthy: {health:?}"
    );
    assert!(health.healthy, "the fallback can serve: {health:?}");

    // The dropped trial counted as no result: the circuit is still half-open and the next
    // call is tried on the primary.
    s.primary.silent.store(false, Ordering::SeqCst);
    assert!(s.multi.check("k", &limit).await.is_ok_and(|d| d.allowed));
    assert_eq!(
        s.primary.calls.load(Ordering::SeqCst),
        5,
        "the primary was tried again"
    );
    assert_eq!(
        s.multi.breaker("primary").map(|b| b.state()),
        Some(CircuitState::Closed)
    );
    assert!(s.multi.health_status().members[0].status.healthy);
}

/// An invalid limit is the caller's mistake: it is returned as is, and a half-open trial that
/// meets it counts for nothing, so the circuit neither closes nor reopens on it.
#[tokio::test]
async fn an_invalid_limit_is_never_a_successful_trial_call() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(s.multi.check("k", &limit()).await.is_ok());
    }
    s.clock.advance(Duration::from_secs(10));
    s.primary.down.store(false, Ordering::SeqCst);
    let compound = Rate::parse("1/s;5/m").unwrap_or_else(|error| panic!("{error}"));
    let invalid = Limit::token_bucket(compound).bucket_size(5);
    for _ in 0..3 {
        assert!(matches!(
            s.multi.check("k", &invalid).await,
            Err(BackendError::InvalidLimit(_))
        ));
        assert_eq!(
            s.multi.breaker("primary").map(|b| b.state()),
            Some(CircuitState::HalfOpen),
            "an invalid limit says nothing of the primary's health"
        );
    }
    assert!(s.multi.check("k", &limit()).await.is_ok_and(|d| d.allowed));
    assert_eq!(
        s.multi.breaker("primary").map(|b| b.state()),
        Some(CircuitState::Closed)
    );
}

#[tokio::test]
async fn when_everything_fails_the_error_says_when_to_retry() {
    let s = setup();
    s.primary.down.store(true, Ordering::SeqCst);
    s.fallback.down.store(true, Ordering::SeqCst);
    let mut last = None;
    for _ in 0..4 {
        last = Some(s.multi.check("k", &limit()).await);
    }
    match last {
        Some(Err(BackendError::AllBackendsFailed {
            failures,
            retry_after,
        })) => {
            assert_eq!(failures.len(), 2);
            assert!(
                failures.iter().all(|(_, why)| why == "circuit open"),
                "{failures:?}"
            );
            assert_eq!(retry_after, Some(Duration::from_secs(10)));
        }
        other => panic!("expected every backend to fail, got {other:?}"),
    }
    assert!(!s.multi.health_status().healthy);
}

#[tokio::test]
async fn invalid_limits_are_not_backend_failures() {
    let s = setup();
    let invalid = limit().bucket_size(3);
    for _ in 0..10 {
        assert!(matches!(
            s.multi.check("k", &invalid).await,
            Err(BackendError::InvalidLimit(_))
        ));
    }
    assert_eq!(
        s.multi.breaker("primary").map(|b| b.state()),
        Some(CircuitState::Closed)
    );
    assert_eq!(s.fallback.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn reset_clears_the_key_on_every_member() {
    let s = setup();
    let one = Limit::fixed_window(Rate::parse("1/h").unwrap_or_else(|error| panic!("{error}")));
    assert!(s.primary.check("k", &one).await.is_ok_and(|d| d.allowed));
    assert!(s.fallback.check("k", &one).await.is_ok_and(|d| d.allowed));
    assert!(s.multi.reset("k").await.is_ok());
    assert!(s.primary.peek("k", &one).await.is_ok_and(|d| d.allowed));
    assert!(s.fallback.peek("k", &one).await.is_ok_and(|d| d.allowed));
}
