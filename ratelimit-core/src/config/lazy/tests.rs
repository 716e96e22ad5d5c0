//! Single flight against fake connectors that count their attempts: one that never finishes,
//! one that fails, one that panics and one that connects to a memory store.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::*;
use crate::backend::MemoryBackend;
use crate::rate::Rate;

const TIMEOUT: Duration = Duration::from_millis(100);
/// What a call may take beyond the timeout on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(200);

/// A lazy backend whose connector counts its attempts and runs `attempt` for each.
fn lazy(attempt: fn() -> Connecting) -> (Arc<LazyBackend>, Arc<AtomicU32>) {
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&attempts);
    let connector: Connector = Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        attempt()
    });
    (
        Arc::new(LazyBackend::new("fake", TIMEOUT, connector)),
        attempts,
    )
}

fn limit() -> Limit {
    Limit::fixed_window(Rate::parse("100/h").unwrap_or_else(|error| panic!("{error}")))
}

/// `calls` concurrent checks; each one's time and outcome.
async fn concurrent_checks(
    backend: &Arc<LazyBackend>,
    calls: usize,
) -> Vec<(Duration, Result<Decision, BackendError>)> {
    let tasks: Vec<_> = (0..calls)
        .map(|call| {
            let backend = Arc::clone(backend);
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = backend.check(&format!("k{call}"), &limit()).await;
                (started.elapsed(), outcome)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|error| panic!("{error}")));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_attempt_and_wait_one_timeout_at_most() {
    let (backend, attempts) = lazy(|| Box::pin(std::future::pending()));
    let outcomes = concurrent_checks(&backend, 20).await;
    for (elapsed, outcome) in &outcomes {
        assert!(*elapsed <= TIMEOUT + SLACK, "{elapsed:?}");
        assert!(
            matches!(outcome, Err(BackendError::Timeout { backend: "fake", after }) if *after == TIMEOUT),
            "{outcome:?}"
        );
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    // The callers gave up, the attempt did not: a later call waits for the same one.
    assert!(backend.check("k", &limit()).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_shared_and_the_next_call_starts_a_new_one() {
    let (backend, attempts) = lazy(|| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(BackendError::UnexpectedReply { backend: "fake" })
        })
    });
    let outcomes = concurrent_checks(&backend, 10).await;
    let causes: Vec<_> = outcomes
        .into_iter()
        .map(|(_, outcome)| match outcome {
            Err(BackendError::NotConnected {
                backend: "fake",
                cause,
            }) => cause,
            other => panic!("expected the attempt's error, got {other:?}"),
        })
        .collect();
    assert!(causes.iter().all(|cause| Arc::ptr_eq(cause, &causes[0])));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(backend.check("k", &limit()).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "a new attempt");
    let health = backend.health_status();
    assert!(!health.healthy);
    assert_eq!(health.failure_count, 2);
    assert_eq!(
        health.detail.as_deref(),
        Some("not connected: fake returned an unexpected reply")
    );
}

#[tokio::test]
async fn an_attempt_that_ends_without_an_outcome_still_answers_its_waiters() {
    let (backend, attempts) = lazy(|| Box::pin(async { panic!("the connector broke") }));
    assert!(matches!(
        backend.check("k", &limit()).await,
        Err(BackendError::NotConnected { .. })
    ));
    assert!(backend.check("k", &limit()).await.is_err());
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "a new attempt each time"
    );
}

#[tokio::test]
async fn once_connected_every_call_goes_to_the_backend() {
    let (backend, attempts) =
        lazy(|| Box::pin(async { Ok(Arc::new(MemoryBackend::new()) as Arc<dyn Backend>) }));
    for _ in 0..5 {
        assert!(backend.check("k", &limit()).await.is_ok_and(|d| d.allowed));
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(backend.health_status().healthy);
    assert!(
        backend
            .peek("k", &limit())
            .await
            .is_ok_and(|d| d.remaining == 94)
    );
}
