//! Batched checks on PostgreSQL (`backend/sql/batch.rs`): the checks that concurrent tasks make
//! through one backend go to the database together, and still decide exactly as one at a time.
//! A pool of one connection makes one batch out at a time, so every check made meanwhile lands
//! in the next batch. A full queue refuses the next check at once
//! ([`BackendError::Overloaded`]), and a failover backend serves it elsewhere.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{
    Algorithm, Backend, BackendError, Decision, Limit, ManualClock, MemoryBackend, MultiBackend,
    Rate, SqlBackend,
};
use ratelimit_tests::contention::{admitted_per_algorithm, remaining_of_admitted};
use ratelimit_tests::expiry_audit;
use ratelimit_tests::fault_proxy::{Fault, FaultProxy};
use ratelimit_tests::services::{self, unique_sql_prefix};
use tokio::time::Instant;

/// A backend on its own tables, or `None` to skip (see `services`).
async fn backend(test: &str, pool_size: u32, clock: Option<ManualClock>) -> Option<SqlBackend> {
    let url = services::postgres().await?.url().to_owned();
    let mut builder = SqlBackend::builder(&url)
        .table_prefix(unique_sql_prefix(test))
        .pool_size(pool_size)
        .timeout(Duration::from_secs(10));
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    Some(
        builder
            .build()
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}")),
    )
}

/// No test here uses a window or bucket time longer than this.
const LONGEST_WINDOW: Duration = Duration::from_secs(86_400);

/// Drops the test's tables, after the expiry audit: every row they hold would go in a cleanup
/// once the longest window is over.
async fn drop_tables(backend: &SqlBackend) {
    if let Some(postgres) = services::postgres().await {
        let prefix = backend.table_prefix();
        expiry_audit::assert_sql_rows_expire(postgres.url(), prefix, None, LONGEST_WINDOW).await;
    }
    if let Err(error) = backend.drop_tables().await {
        panic!("dropping {}*: {error}", backend.table_prefix());
    }
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

/// Checks of `key` from `tasks` tasks at once; every decision, in no particular order.
async fn at_once(
    backend: &Arc<SqlBackend>,
    key: &str,
    limit: &Limit,
    tasks: usize,
) -> Vec<Decision> {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let backend = Arc::clone(backend);
            let (key, limit) = (key.to_owned(), limit.clone());
            tokio::spawn(async move { backend.check(&key, &limit).await })
        })
        .collect();
    let mut decisions = Vec::new();
    for handle in handles {
        let decision = handle.await.unwrap_or_else(|error| panic!("{error}"));
        decisions.push(decision.unwrap_or_else(|error| panic!("{error}")));
    }
    decisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_one_key_through_one_backend_admit_exactly_the_limit() {
    let clock = ManualClock::new(1_700_000_000_000);
    let Some(backend) = backend("batch_hot", 4, Some(clock)).await else {
        return;
    };
    let sql = Arc::new(backend);
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::clone(&sql) as Arc<dyn Backend>];
    let results = admitted_per_algorithm(&backends).await;
    drop_tables(&sql).await;
    for (algorithm, admitted) in results {
        assert_eq!(admitted, 50, "{algorithm}: 320 attempts on a limit of 50");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_of_one_key_in_one_batch_each_see_the_one_before() {
    let clock = ManualClock::new(1_700_000_000_000);
    let Some(backend) = backend("batch_same", 1, Some(clock)).await else {
        return;
    };
    let backend = Arc::new(backend);
    let limit = Limit::fixed_window(rate("10/h"));
    let decisions = at_once(&backend, "same", &limit, 30).await;
    drop_tables(&backend).await;
    let remaining = remaining_of_admitted(&decisions);
    // Exactly ten admitted, each seeing one more counted than the one before it.
    assert_eq!(remaining, (0..10).collect::<Vec<u64>>());
}

/// Limits of different rates and algorithms on one key, checked by many tasks at once through
/// one connection, so every batch mixes them on a repeated key: each admits exactly its own
/// count, and the two that are one policy (`5/m` listed alone and twice) share theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_sharing_a_key_in_batches_count_apart() {
    let clock = ManualClock::new(1_700_000_000_000);
    let Some(backend) = backend("batch_policies", 1, Some(clock)).await else {
        return;
    };
    let backend = Arc::new(backend);
    let limits = [
        Limit::fixed_window(rate("5/m")),
        Limit::fixed_window(rate("10/h")),
        Limit::fixed_window(rate("4/m;9/h")),
        Limit::token_bucket(rate("5/m")),
        Limit::token_bucket(rate("7/h")),
        Limit::sliding_window(rate("6/m")),
        Limit::sliding_window_counter(rate("3/m")),
        Limit::leaky_bucket(rate("4/m")),
    ];
    let handles: Vec<_> = (0..16)
        .flat_map(|_| limits.iter().cloned().enumerate())
        .map(|(index, limit)| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move { (index, backend.check("shared", &limit).await) })
        })
        .collect();
    let mut admitted = vec![0_u64; limits.len()];
    for handle in handles {
        let (index, decision) = handle.await.unwrap_or_else(|error| panic!("{error}"));
        let decision = decision.unwrap_or_else(|error| panic!("{error}"));
        admitted[index] += u64::from(decision.allowed);
    }
    let twice = Limit::fixed_window(rate("5/m;5/m"));
    let peeked = backend.peek("shared", &twice).await;
    drop_tables(&backend).await;
    assert_eq!(
        admitted,
        [5, 10, 4, 5, 7, 6, 3, 4],
        "16 attempts on each limit"
    );
    assert!(peeked.is_ok_and(|decision| !decision.allowed));
}

/// Each task owns one (key, algorithm, rate, cost) and checks it in turn, all tasks at once, so
/// batches mix keys and algorithms; each task's decisions must be the memory backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_keys_and_algorithms_in_batches_decide_like_memory() {
    let clock = ManualClock::new(1_700_000_000_000);
    let Some(backend) = backend("batch_mixed", 2, Some(clock.clone())).await else {
        return;
    };
    let sql = Arc::new(backend);
    let memory = MemoryBackend::with_clock(clock);
    let mut owners = Vec::new();
    for (index, algorithm) in Algorithm::ALL.into_iter().enumerate() {
        for (rate_text, cost) in [("4/m", 1), ("5/h;3/m", 1), ("7/m", 2)] {
            let limit = Limit::new(rate(rate_text), algorithm);
            owners.push((format!("mixed:{index}:{rate_text}:{cost}"), limit, cost));
        }
    }
    let handles: Vec<_> = owners
        .iter()
        .cloned()
        .map(|(key, limit, cost)| {
            let sql = Arc::clone(&sql);
            tokio::spawn(async move {
                let mut decisions = Vec::new();
                for _ in 0..6 {
                    let decision = sql.check_n(&key, &limit, cost).await;
                    decisions.push(decision.unwrap_or_else(|error| panic!("{key}: {error}")));
                }
                decisions
            })
        })
        .collect();
    let mut from_sql = Vec::new();
    for handle in handles {
        from_sql.push(handle.await.unwrap_or_else(|error| panic!("{error}")));
    }
    drop_tables(&sql).await;
    for ((key, limit, cost), decisions) in owners.iter().zip(from_sql) {
        for (step, decision) in decisions.into_iter().enumerate() {
            let expected = memory.check_n(key, limit, *cost).await;
            let expected = expected.unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(decision, expected, "{key} check {step}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_reaches_every_caller_and_the_backend_recovers() {
    let Some(backend) = backend("batch_error", 1, None).await else {
        return;
    };
    let backend = Arc::new(backend);
    let limit = Limit::fixed_window(rate("100/h"));
    // With its routines gone, every batch fails in the database.
    drop_tables(&backend).await;
    let handles: Vec<_> = (0..20)
        .map(|task| {
            let backend = Arc::clone(&backend);
            let limit = limit.clone();
            tokio::spawn(async move { backend.check(&format!("k{}", task % 3), &limit).await })
        })
        .collect();
    for handle in handles {
        let outcome = handle.await.unwrap_or_else(|error| panic!("{error}"));
        assert!(matches!(outcome, Err(BackendError::Sql(_))), "{outcome:?}");
    }
    // A backend connecting again installs the routines; the first one works again.
    let Some(again) = backend_with_prefix(backend.table_prefix()).await else {
        return;
    };
    let decision = backend.check("k0", &limit).await;
    drop_tables(&again).await;
    assert!(decision.is_ok_and(|decision| decision.allowed));
}

async fn backend_with_prefix(prefix: &str) -> Option<SqlBackend> {
    let url = services::postgres().await?.url().to_owned();
    Some(
        SqlBackend::builder(&url)
            .table_prefix(prefix)
            .build()
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_that_give_up_wedge_nothing_and_never_overshoot() {
    let Some(backend) = backend("batch_dropped", 1, None).await else {
        return;
    };
    let backend = Arc::new(backend);
    let limit = Limit::fixed_window(rate("40/h"));
    let handles: Vec<_> = (0..60)
        .map(|_| {
            let backend = Arc::clone(&backend);
            let limit = limit.clone();
            tokio::spawn(async move { backend.check("dropped", &limit).await })
        })
        .collect();
    // Half the callers go away while their checks wait or run.
    for handle in handles.iter().step_by(2) {
        handle.abort();
    }
    let mut admitted_seen = 0;
    for handle in handles {
        if let Ok(outcome) = handle.await {
            let decision = outcome.unwrap_or_else(|error| panic!("{error}"));
            admitted_seen += u64::from(decision.allowed);
        }
    }
    // Whatever was counted, later checks still flow and the limit still holds.
    let after = at_once(&backend, "dropped", &limit, 60).await;
    let peeked = backend.peek("dropped", &limit).await;
    drop_tables(&backend).await;
    let admitted_after = after.iter().filter(|decision| decision.allowed).count();
    assert!(admitted_seen <= 40);
    assert!(admitted_after <= 40);
    assert!(peeked.is_ok_and(|decision| decision.remaining == 0));
}

/// What "at once" means for a refused check on a busy test machine.
const AT_ONCE: Duration = Duration::from_millis(150);

/// PostgreSQL behind a fault proxy, and a backend through it on its own tables: one connection
/// (one batch out at a time), at most 8 checks waiting.
async fn bounded_backend(test: &str) -> Option<(FaultProxy, Arc<SqlBackend>)> {
    let postgres = services::postgres().await?;
    let url = postgres.url();
    let address = postgres
        .address()
        .unwrap_or_else(|| panic!("no address in the postgres URL"));
    let proxy = FaultProxy::start(address)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let proxied = url.replacen(address, &proxy.address().to_string(), 1);
    let backend = SqlBackend::builder(&proxied)
        .table_prefix(unique_sql_prefix(test))
        .pool_size(1)
        .timeout(Duration::from_secs(10))
        .max_queued(8)
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting through the proxy: {error}"));
    Some((proxy, Arc::new(backend)))
}

/// Checks `keys` through `backend`, each in a task of its own.
fn spawn_checks(
    backend: &Arc<dyn Backend>,
    limit: &Limit,
    keys: impl IntoIterator<Item = String>,
) -> Vec<tokio::task::JoinHandle<Result<Decision, BackendError>>> {
    keys.into_iter()
        .map(|key| {
            let (backend, limit) = (Arc::clone(backend), limit.clone());
            tokio::spawn(async move { backend.check(&key, &limit).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_the_next_check_at_once_and_serves_the_queued_ones() {
    let Some((proxy, sql)) = bounded_backend("batch_bounded").await else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::clone(&sql) as Arc<dyn Backend>;
    let limit = Limit::fixed_window(rate("100/h"));
    assert!(backend.check("warm", &limit).await.is_ok());

    proxy.set(Fault::Stall);
    let queued = spawn_checks(
        &backend,
        &limit,
        (0..8).map(|index| format!("queued-{index}")),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(queued.iter().all(|task| !task.is_finished()));
    let started = Instant::now();
    let refused = backend.check("ninth", &limit).await;
    let took = started.elapsed();
    let refused_at_once = took < AT_ONCE;
    let overloaded = matches!(
        refused,
        Err(BackendError::Overloaded {
            backend: "postgres",
            queued: 8
        })
    );
    let still_waiting = queued.iter().all(|task| !task.is_finished());

    proxy.set(Fault::Pass);
    let mut answers = Vec::new();
    for task in queued {
        answers.push(task.await.unwrap_or_else(|error| panic!("{error}")));
    }
    // Answered checks leave room: the refused one goes through now, and was never counted.
    let after = backend.check("ninth", &limit).await;
    drop_tables(&sql).await;
    assert!(overloaded, "{refused:?}");
    assert!(refused_at_once, "the refused check waited {took:?}");
    assert!(still_waiting);
    for answer in answers {
        assert!(matches!(answer, Ok(ref d) if d.allowed), "{answer:?}");
    }
    assert_eq!(after.ok().map(|d| d.remaining), Some(99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_member_of_a_multi_backend_is_served_by_the_fallback() {
    let Some((proxy, sql)) = bounded_backend("batch_overloaded_multi").await else {
        return;
    };
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let multi: Arc<dyn Backend> = Arc::new(
        MultiBackend::builder()
            .shared_backend("postgres", Arc::clone(&sql) as Arc<dyn Backend>)
            .shared_backend("memory", Arc::clone(&memory))
            .build(),
    );
    let limit = Limit::fixed_window(rate("100/h"));
    assert!(multi.check("warm", &limit).await.is_ok());

    proxy.set(Fault::Stall);
    let queued = spawn_checks(
        &multi,
        &limit,
        (0..8).map(|index| format!("queued-{index}")),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let overflow = multi.check("overflow", &limit).await;
    let took = started.elapsed();

    proxy.set(Fault::Pass);
    let mut answers = Vec::new();
    for task in queued {
        answers.push(task.await.unwrap_or_else(|error| panic!("{error}")));
    }
    drop_tables(&sql).await;
    assert!(matches!(overflow, Ok(ref d) if d.allowed), "{overflow:?}");
    assert!(took < AT_ONCE, "the overflowing check waited {took:?}");
    // The fallback counted it (a peek reports what would remain after one more), and never saw
    // the queued checks: they were the database's.
    let counted = memory.peek("overflow", &limit).await;
    assert_eq!(counted.ok().map(|d| d.remaining), Some(98));
    for answer in answers {
        assert!(matches!(answer, Ok(ref d) if d.allowed), "{answer:?}");
    }
    let untouched = memory.peek("queued-0", &limit).await;
    assert_eq!(untouched.ok().map(|d| d.remaining), Some(99));
}
