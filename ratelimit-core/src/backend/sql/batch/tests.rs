//! The batcher against a fake engine that records each batch and can hold it or fail it, so
//! what goes in which batch is deterministic.

use std::num::NonZeroU64;
use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;
use crate::backend::sql::{Deleted, Request};

/// Records every batch as (key, cost) pairs; each batch waits for a permit of `gate`.
struct FakeEngine {
    batches: Mutex<Vec<Vec<(String, i64)>>>,
    gate: Semaphore,
    fail: bool,
}

impl FakeEngine {
    fn new(open: bool, fail: bool) -> Arc<Self> {
        Arc::new(Self {
            batches: Mutex::new(Vec::new()),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            fail,
        })
    }

    fn batches(&self) -> Vec<Vec<(String, i64)>> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl Engine for FakeEngine {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn decide(&self, _: &Request<'_>) -> Result<Vec<Verdict>, BackendError> {
        Err(BackendError::UnexpectedReply { backend: "fake" })
    }

    async fn reset(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn cleanup_batch(&self, _: Option<u64>, _: NonZeroU64) -> Result<Deleted, BackendError> {
        Ok(Deleted::default())
    }

    async fn count_expired(&self, _: Option<u64>) -> Result<u64, BackendError> {
        Ok(0)
    }

    async fn drop_schema(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn is_transient(&self, _: &sqlx::Error) -> bool {
        false
    }
}

#[async_trait]
impl BatchEngine for FakeEngine {
    /// Each check's verdict says its cost in `remaining` and its place in the batch in
    /// `reset_after_ms`, so a caller can tell it got its own reply.
    async fn decide_batch(&self, checks: &[&Check]) -> Result<Vec<Vec<Verdict>>, BackendError> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(
                checks
                    .iter()
                    .map(|check| (check.key.clone(), check.cost))
                    .collect(),
            );
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        if self.fail {
            return Err(BackendError::Sql(sqlx::Error::Protocol(
                "connection lost".to_owned(),
            )));
        }
        Ok(checks
            .iter()
            .enumerate()
            .map(|(place, check)| {
                vec![Verdict {
                    allowed: true,
                    limit: 100,
                    remaining: u64::try_from(check.cost).unwrap_or_default(),
                    reset_after_ms: place as u64,
                    retry_after_ms: None,
                    window_ms: 1_000,
                }]
            })
            .collect())
    }
}

fn batcher(engine: &Arc<FakeEngine>, timeout: Duration) -> Arc<Batcher> {
    // One batch out at a time: checks made while it is out all go in the next one.
    Arc::new(Batcher::new(
        Arc::clone(engine) as Arc<dyn BatchEngine>,
        timeout,
        64,
        1,
        1,
        10_000,
    ))
}

fn check(key: &str, cost: u64) -> Check {
    let policies = vec![Policy::FixedWindow {
        limit: 100,
        window_ms: 1_000,
    }];
    let ids = [policies[0].id()];
    Check::new(key, Algorithm::FixedWindow, policies, &ids, None, cost)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn spawn_check(
    batcher: &Arc<Batcher>,
    key: &str,
    cost: u64,
) -> tokio::task::JoinHandle<Result<Vec<Verdict>, BackendError>> {
    let batcher = Arc::clone(batcher);
    let check = check(key, cost);
    tokio::spawn(async move { batcher.decide(check).await })
}

/// Lets spawned tasks queue their checks.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_check_on_an_idle_backend_goes_at_once_alone() {
    let engine = FakeEngine::new(true, false);
    let batcher = batcher(&engine, Duration::from_secs(5));
    let reply = batcher.decide(check("k", 3)).await;
    assert!(reply.is_ok_and(|verdicts| verdicts[0].remaining == 3));
    assert_eq!(engine.batches(), vec![vec![("k".to_owned(), 3)]]);
}

#[tokio::test]
async fn checks_made_while_a_batch_is_out_go_together_in_key_order() {
    let engine = FakeEngine::new(false, false);
    let batcher = batcher(&engine, Duration::from_secs(5));
    let first = spawn_check(&batcher, "m", 1);
    settle().await;
    // Queued behind the first batch, in this order; "a" twice, told apart by cost.
    let queued: Vec<_> = [("z", 2), ("a", 3), ("q", 4), ("a", 5)]
        .into_iter()
        .map(|(key, cost)| spawn_check(&batcher, key, cost))
        .collect();
    settle().await;
    engine.gate.add_permits(2);
    assert!(first.await.is_ok_and(|reply| reply.is_ok()));
    let mut costs = Vec::new();
    for task in queued {
        let reply = task.await.unwrap_or_else(|error| panic!("{error}"));
        let verdicts = reply.unwrap_or_else(|error| panic!("{error}"));
        costs.push((verdicts[0].remaining, verdicts[0].reset_after_ms));
    }
    let key = |key: &str, cost: i64| (key.to_owned(), cost);
    assert_eq!(
        engine.batches(),
        vec![
            vec![key("m", 1)],
            // Sorted by key; the two checks of "a" keep their callers' order.
            vec![key("a", 3), key("a", 5), key("q", 4), key("z", 2)],
        ]
    );
    // Each caller got its own reply (its cost), placed where the batch ran it.
    assert_eq!(costs, vec![(2, 3), (3, 0), (4, 2), (5, 1)]);
}

#[tokio::test]
async fn a_failed_batch_fails_every_caller_with_the_same_error() {
    let engine = FakeEngine::new(false, true);
    let batcher = batcher(&engine, Duration::from_secs(5));
    let first = spawn_check(&batcher, "a", 1);
    settle().await;
    let queued: Vec<_> = ["b", "c", "d"]
        .into_iter()
        .map(|key| spawn_check(&batcher, key, 1))
        .collect();
    settle().await;
    engine.gate.add_permits(2);
    for task in std::iter::once(first).chain(queued) {
        let reply = task.await.unwrap_or_else(|error| panic!("{error}"));
        assert!(
            matches!(&reply, Err(BackendError::Sql(sqlx::Error::Protocol(message))) if message == "connection lost"),
            "{reply:?}"
        );
    }
    assert_eq!(engine.batches().len(), 2);
}

#[tokio::test]
async fn a_caller_that_gives_up_is_left_out_and_wedges_nothing() {
    let engine = FakeEngine::new(false, false);
    let batcher = batcher(&engine, Duration::from_secs(5));
    let first = spawn_check(&batcher, "a", 1);
    settle().await;
    let dropped = spawn_check(&batcher, "b", 2);
    let kept = spawn_check(&batcher, "c", 3);
    settle().await;
    dropped.abort();
    let _ = dropped.await;
    engine.gate.add_permits(2);
    assert!(first.await.is_ok_and(|reply| reply.is_ok()));
    assert!(kept.await.is_ok_and(|reply| reply.is_ok()));
    // The dropped check was never sent; later checks still go through.
    engine.gate.add_permits(1);
    assert!(batcher.decide(check("d", 4)).await.is_ok());
    let sent: Vec<String> = engine
        .batches()
        .into_iter()
        .flatten()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(sent, vec!["a", "c", "d"]);
}

#[tokio::test]
async fn a_caller_waits_at_most_the_timeout() {
    let engine = FakeEngine::new(false, false);
    let batcher = batcher(&engine, Duration::from_millis(100));
    let started = Instant::now();
    let reply = batcher.decide(check("a", 1)).await;
    assert!(
        matches!(reply, Err(BackendError::Timeout { .. })),
        "{reply:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The batch still out holds the only slot until it returns; then checks flow again.
    engine.gate.add_permits(Semaphore::MAX_PERMITS);
    settle().await;
    assert!(batcher.decide(check("b", 1)).await.is_ok());
}

/// Lets spawned tasks run until they wait, well within `EXTRA_BATCH_AFTER`.
async fn run_ready_tasks() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_full_batch_waiting_goes_without_waiting_for_the_one_out() {
    let engine = FakeEngine::new(false, false);
    // Batches of two, one out at once, up to three when a full batch waits.
    let batcher = Arc::new(Batcher::new(
        Arc::clone(&engine) as Arc<dyn BatchEngine>,
        Duration::from_secs(5),
        2,
        1,
        3,
        10_000,
    ));
    let first = spawn_check(&batcher, "a", 1);
    run_ready_tasks().await;
    let second = spawn_check(&batcher, "b", 2);
    run_ready_tasks().await;
    // One check waiting is not a full batch: it waits for the one out.
    assert_eq!(engine.batches().len(), 1);
    let third = spawn_check(&batcher, "c", 3);
    run_ready_tasks().await;
    assert_eq!(engine.batches().len(), 2);
    engine.gate.add_permits(Semaphore::MAX_PERMITS);
    for task in [first, second, third] {
        assert!(task.await.is_ok_and(|reply| reply.is_ok()));
    }
    let key = |key: &str, cost: i64| (key.to_owned(), cost);
    assert_eq!(
        engine.batches(),
        vec![vec![key("a", 1)], vec![key("b", 2), key("c", 3)]]
    );
}

#[tokio::test]
async fn batches_coming_back_slowly_let_a_second_one_out() {
    let engine = FakeEngine::new(false, false);
    let batcher = Arc::new(Batcher::new(
        Arc::clone(&engine) as Arc<dyn BatchEngine>,
        Duration::from_secs(5),
        64,
        1,
        4,
        10_000,
    ));
    // A fast batch: the next check waits for the one out.
    engine.gate.add_permits(1);
    assert!(batcher.decide(check("a", 1)).await.is_ok());
    let held = spawn_check(&batcher, "b", 2);
    run_ready_tasks().await;
    let waiting = spawn_check(&batcher, "c", 3);
    run_ready_tasks().await;
    assert_eq!(engine.batches().len(), 2);
    // That batch comes back after 40 ms, far above SLOW_ROUND_TRIP even averaged in.
    tokio::time::sleep(Duration::from_millis(40)).await;
    engine.gate.add_permits(1);
    assert!(held.await.is_ok_and(|reply| reply.is_ok()));
    engine.gate.add_permits(1);
    assert!(waiting.await.is_ok_and(|reply| reply.is_ok()));
    // Now a check made while one batch is out leaves at once in a second one.
    let held = spawn_check(&batcher, "d", 4);
    run_ready_tasks().await;
    let second = spawn_check(&batcher, "e", 5);
    run_ready_tasks().await;
    assert_eq!(engine.batches().len(), 5);
    engine.gate.add_permits(Semaphore::MAX_PERMITS);
    assert!(held.await.is_ok_and(|reply| reply.is_ok()));
    assert!(second.await.is_ok_and(|reply| reply.is_ok()));
}

/// One batch out at a time, and at most three checks waiting, queued or out.
fn bounded_batcher(engine: &Arc<FakeEngine>) -> Arc<Batcher> {
    Arc::new(Batcher::new(
        Arc::clone(engine) as Arc<dyn BatchEngine>,
        Duration::from_secs(5),
        64,
        1,
        1,
        3,
    ))
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_counting_the_batch_out() {
    let engine = FakeEngine::new(false, false);
    let batcher = bounded_batcher(&engine);
    let out = spawn_check(&batcher, "a", 1);
    settle().await;
    let queued = [spawn_check(&batcher, "b", 2), spawn_check(&batcher, "c", 3)];
    settle().await;
    let started = Instant::now();
    let refused = batcher.decide(check("d", 4)).await;
    assert!(
        matches!(
            refused,
            Err(BackendError::Overloaded {
                backend: "fake",
                queued: 3
            })
        ),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        refused
            .err()
            .is_some_and(|error| error.to_string().contains("max_queued"))
    );
    engine.gate.add_permits(Semaphore::MAX_PERMITS);
    for task in std::iter::once(out).chain(queued) {
        assert!(task.await.is_ok_and(|reply| reply.is_ok()));
    }
    // Answered checks leave room; the refused one was never sent.
    assert!(batcher.decide(check("e", 5)).await.is_ok());
    let sent: Vec<String> = engine
        .batches()
        .into_iter()
        .flatten()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(sent, vec!["a", "b", "c", "e"]);
}

#[tokio::test]
async fn callers_that_gave_up_make_room_in_a_full_queue() {
    let engine = FakeEngine::new(false, false);
    let batcher = bounded_batcher(&engine);
    let out = spawn_check(&batcher, "a", 1);
    settle().await;
    let gave_up = spawn_check(&batcher, "b", 2);
    let kept = spawn_check(&batcher, "c", 3);
    settle().await;
    gave_up.abort();
    let _ = gave_up.await;
    let late = spawn_check(&batcher, "d", 4);
    settle().await;
    assert!(matches!(
        batcher.decide(check("e", 5)).await,
        Err(BackendError::Overloaded { queued: 3, .. })
    ));
    engine.gate.add_permits(Semaphore::MAX_PERMITS);
    for task in [out, kept, late] {
        assert!(task.await.is_ok_and(|reply| reply.is_ok()));
    }
}

#[tokio::test]
async fn taking_a_batch_pops_its_checks_and_leaves_the_rest_in_place() {
    let engine = FakeEngine::new(true, false);
    let batcher = Arc::new(Batcher::new(
        Arc::clone(&engine) as Arc<dyn BatchEngine>,
        Duration::from_secs(5),
        64,
        1,
        1,
        10_000,
    ));
    let shared = &batcher.shared;
    let mut queue = shared.lock();
    let mut callers = Vec::new();
    for index in 0..10_000_u64 {
        let (reply, receiver) = oneshot::channel();
        let pending = Pending {
            check: check("k", index + 1),
            reply,
        };
        assert!(queue.push(pending, shared.max_queued, "fake").is_ok());
        callers.push(receiver);
    }
    // The first caller gave up: skipped, and the batch is the next 64 in order.
    callers[0].close();
    let batch = shared.take(&mut queue);
    let costs: Vec<i64> = batch.iter().map(|pending| pending.check.cost).collect();
    assert_eq!(costs, (2..=65).collect::<Vec<i64>>());
    assert_eq!(queue.waiting.len(), 10_000 - 65);
    assert_eq!(
        queue.waiting.front().map(|pending| pending.check.cost),
        Some(66)
    );
    assert_eq!(queue.sent, 64);
    assert_eq!(queue.unanswered(), 10_000 - 1);
}
