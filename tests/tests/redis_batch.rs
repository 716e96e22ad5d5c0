//! Concurrent checks on one `RedisBackend` share script calls (batches). What must hold: the
//! same decisions as one call each, in the order the checks were queued; a batch never over
//! admits; a caller that gives up withdraws only its own check; a failed batch fails each of
//! its callers with a typed error, and the backend recovers; a full queue refuses the next
//! check at once ([`BackendError::Overloaded`]), and a failover backend serves it elsewhere.
//!
//! On a current-thread runtime the order is deterministic: spawned tasks run in spawn order and
//! queue their checks before the task sending the batch gets to run.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ratelimit_core::{
    Algorithm, Backend, BackendError, Decision, Limit, ManualClock, MemoryBackend, MultiBackend,
    Rate, RedisBackend,
};
use ratelimit_tests::contention::remaining_of_admitted;
use ratelimit_tests::expiry_audit;
use ratelimit_tests::fault_proxy::{Fault, FaultProxy};
use ratelimit_tests::services::{self, PrivateRedis, ServerError, unique_prefix};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The most checks one script call carries (`MAX_BATCH` in `backend/redis/batch.rs`).
const MAX_BATCH: usize = 128;

const TIMEOUT: Duration = Duration::from_millis(200);
/// How much longer than [`TIMEOUT`] a call may take on a busy test machine.
const SLACK: Duration = Duration::from_millis(300);

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

async fn private_redis() -> Option<PrivateRedis> {
    match PrivateRedis::start().await {
        Ok(server) => Some(server),
        Err(error @ ServerError::NotInstalled { .. }) => services::skip_or_fail(error),
        Err(error) => panic!("starting a private redis-server: {error}"),
    }
}

async fn backend(url: &str, test_name: &str, clock: Option<ManualClock>) -> Arc<RedisBackend> {
    let mut builder = RedisBackend::builder(url)
        .key_prefix(unique_prefix(test_name))
        .timeout(TIMEOUT);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    Arc::new(
        builder
            .build()
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}")),
    )
}

async fn evalsha_calls(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{e}"));
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

async fn join_all<T: 'static>(mut tasks: JoinSet<(usize, T)>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic())));
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_one_backend_admit_exactly_the_limit_in_order() {
    let Some(redis) = services::redis().await else {
        return;
    };
    // Frozen: nothing refills, leaks or slides out while the tasks run.
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = backend(redis.url(), "redis-batch-exact", Some(clock)).await;
    for algorithm in Algorithm::ALL {
        let limit = Limit::new(rate("50/h"), algorithm);
        let mut tasks = JoinSet::new();
        for index in 0..200 {
            let backend = Arc::clone(&backend);
            let limit = limit.clone();
            tasks.spawn(async move {
                let decision = backend.check("hot", &limit).await;
                (
                    index,
                    decision.unwrap_or_else(|e| panic!("{algorithm}: {e}")),
                )
            });
        }
        let decisions = join_all(tasks).await;
        let remaining = remaining_of_admitted(&decisions);
        // Each admitted check saw the ones before it: 49, 48, ... 0, each exactly once.
        assert_eq!(remaining, (0..50).collect::<Vec<u64>>(), "{algorithm}");
    }
    expiry_audit::assert_redis_keys_expire(redis.url(), backend.key_prefix()).await;
}

/// How many script calls `checks` concurrent checks take, the `index`-th with
/// `limits[index % limits.len()]` on one of a few keys; every check must be allowed. Each
/// limit's script is loaded first, so that no NOSCRIPT retry is counted.
async fn script_calls_for(
    redis: &PrivateRedis,
    test: &str,
    limits: &[Limit],
    checks: usize,
) -> u64 {
    let backend = backend(redis.url(), test, None).await;
    for limit in limits {
        assert!(backend.check("warm", limit).await.is_ok());
    }
    let before = evalsha_calls(redis.url()).await;
    let mut tasks = JoinSet::new();
    for index in 0..checks {
        let backend = Arc::clone(&backend);
        let limit = limits[index % limits.len()].clone();
        tasks.spawn(async move {
            let key = format!("key-{}", index % 7);
            (index, backend.check(&key, &limit).await.map(|d| d.allowed))
        });
    }
    for result in join_all(tasks).await {
        assert!(matches!(result, Ok(true)), "{result:?}");
    }
    let calls = evalsha_calls(redis.url()).await - before;
    expiry_audit::assert_redis_keys_expire(redis.url(), backend.key_prefix()).await;
    calls
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_checks_share_script_calls_up_to_the_batch_cap() {
    let Some(redis) = private_redis().await else {
        return;
    };
    let checks = MAX_BATCH + 72;
    let limits = [Limit::fixed_window(rate("1000/h"))];
    let calls = script_calls_for(&redis, "redis-batch-calls", &limits, checks).await;
    // All are queued before the sender runs: one call of MAX_BATCH, one of the rest.
    assert_eq!(
        calls, 2,
        "{checks} concurrent checks took {calls} script calls"
    );
}

/// One script per algorithm (SPEC §5): concurrent checks of two algorithms go out as one
/// script call for each, every check in its algorithm's call.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_checks_of_two_algorithms_take_one_call_per_algorithm() {
    let Some(redis) = private_redis().await else {
        return;
    };
    let limits = [
        Limit::fixed_window(rate("1000/h")),
        Limit::token_bucket(rate("1000/h")),
    ];
    let calls = script_calls_for(&redis, "redis-batch-two-scripts", &limits, 40).await;
    assert_eq!(
        calls, 2,
        "40 concurrent checks of two algorithms took {calls} calls"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_of_mixed_keys_and_algorithms_decides_like_the_memory_backend() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let clock = ManualClock::new(1_700_000_000_000);
    let url = redis.url().to_owned();
    let redis = backend(&url, "redis-batch-mixed", Some(clock.clone())).await;
    let memory = MemoryBackend::with_clock(clock.clone());
    let limits: Vec<Limit> = vec![
        Limit::fixed_window(rate("5/m")),
        Limit::sliding_window(rate("4/m")),
        Limit::sliding_window_counter(rate("6/m")),
        Limit::token_bucket(rate("5/m")).bucket_size(3),
        Limit::token_bucket(rate("5/m")).initial_tokens(1),
        Limit::leaky_bucket(rate("4/m")),
        Limit::fixed_window(rate("2/s;5/m")),
        Limit::token_bucket(rate("3/s;5/m")),
    ];
    for step in 0..4 {
        // Every check of one step in one batch: two keys per limit (a key used with two
        // rates of one algorithm would share state, batched or not), costs 1 to 3, peeks
        // among them.
        let mut requests = Vec::new();
        for (index, limit) in limits.iter().enumerate() {
            for repeat in 0..4_u64 {
                let key = format!("key-{index}-{}", repeat % 2);
                let cost = 1 + (repeat + index as u64) % 3;
                let peek = repeat == 2;
                requests.push((key, limit.clone(), cost, peek));
            }
        }
        let mut tasks = JoinSet::new();
        for (index, (key, limit, cost, peek)) in requests.iter().cloned().enumerate() {
            let redis = Arc::clone(&redis);
            tasks.spawn(async move {
                let decision = if peek {
                    redis.peek_n(&key, &limit, cost).await
                } else {
                    redis.check_n(&key, &limit, cost).await
                };
                (index, decision.unwrap_or_else(|e| panic!("{e}")))
            });
        }
        let batched: Vec<Decision> = join_all(tasks).await;
        for ((key, limit, cost, peek), from_redis) in requests.iter().zip(&batched) {
            let expected = if *peek {
                memory.peek_n(key, limit, *cost).await
            } else {
                memory.check_n(key, limit, *cost).await
            }
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                *from_redis, expected,
                "step {step}: {key} {limit:?} cost {cost} peek {peek}"
            );
        }
        clock.advance(Duration::from_millis(7_300));
    }
    expiry_audit::assert_redis_keys_expire(&url, redis.key_prefix()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_caller_that_gives_up_withdraws_only_its_own_check() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = backend(redis.url(), "redis-batch-dropped", Some(clock)).await;
    let limit = Limit::fixed_window(rate("1000/h"));
    let mut tasks = JoinSet::new();
    for index in 0..100 {
        let backend = Arc::clone(&backend);
        let limit = limit.clone();
        tasks.spawn(async move {
            if index % 2 == 0 {
                // Polled once (queued), then dropped before its batch is sent.
                let mut check = backend.check("shared", &limit);
                let first = std::future::poll_fn(|cx| Poll::Ready(check.as_mut().poll(cx))).await;
                drop(check);
                (index, first.is_pending())
            } else {
                (index, backend.check("shared", &limit).await.is_ok())
            }
        });
    }
    assert!(join_all(tasks).await.into_iter().all(|ok| ok));
    let after = backend.peek("shared", &limit).await;
    // 50 counted; a peek reports what would remain after one more.
    assert_eq!(after.ok().map(|d| d.remaining), Some(1000 - 50 - 1));

    // Callers dropped while their batch is on the wire: the batch still answers the rest,
    // and the next check is served.
    let mut tasks = JoinSet::new();
    for index in 0..40 {
        let backend = Arc::clone(&backend);
        let limit = limit.clone();
        tasks.spawn(async move { (index, backend.check("other", &limit).await.is_ok()) });
    }
    tokio::task::yield_now().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let started = Instant::now();
    assert!(backend.check("other", &limit).await.is_ok());
    assert!(started.elapsed() < TIMEOUT + SLACK);
    expiry_audit::assert_redis_keys_expire(redis.url(), backend.key_prefix()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_fails_every_caller_and_the_backend_recovers() {
    let Some(redis) = private_redis().await else {
        return;
    };
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", redis.port()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("redis://{}", proxy.address());
    let backend = backend(&url, "redis-batch-failed", None).await;
    let limit = Limit::fixed_window(rate("1000000/s"));
    assert!(backend.check("warm", &limit).await.is_ok());

    for fault in [Fault::Stall, Fault::Cut] {
        proxy.set(fault);
        let mut tasks = JoinSet::new();
        for index in 0..60 {
            let backend = Arc::clone(&backend);
            let limit = limit.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let result = backend.check(&format!("key-{index}"), &limit).await;
                (index, (result, started.elapsed()))
            });
        }
        for (result, took) in join_all(tasks).await {
            assert!(
                matches!(
                    result,
                    Err(BackendError::Timeout { .. } | BackendError::Redis(_))
                ),
                "{fault:?}: {result:?}"
            );
            assert!(
                took < TIMEOUT + SLACK,
                "{fault:?}: a caller waited {took:?}"
            );
        }
        proxy.set(Fault::Pass);
        // The connection manager reconnects with backoff; the same backend works again.
        let deadline = Instant::now() + Duration::from_secs(15);
        while backend.check("after", &limit).await.is_err() {
            assert!(Instant::now() < deadline, "{fault:?}: no recovery");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    expiry_audit::assert_redis_keys_expire(redis.url(), backend.key_prefix()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_holding_something_else_fails_only_its_own_check() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-batch-foreign");
    let backend = Arc::new(
        RedisBackend::builder(redis.url())
            .key_prefix(&prefix)
            .timeout(TIMEOUT)
            .build()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    );
    let client = redis::Client::open(redis.url()).unwrap_or_else(|e| panic!("{e}"));
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fixed = Limit::fixed_window(rate("5/m"));
    let tokens = Limit::token_bucket(rate("5/m"));
    let state_key = |key: &str, limit: &Limit| {
        let names = backend
            .state_keys(key, limit)
            .unwrap_or_else(|e| panic!("{e}"));
        names[0].clone()
    };
    let (garbled, hashed) = (state_key("garbled", &fixed), state_key("hashed", &tokens));
    // Written by some other program where our states go: a string of the wrong shape, and a
    // hash (GET on it is a WRONGTYPE error inside the script).
    let _: () = redis::cmd("SET")
        .arg(&garbled)
        .arg("not a state")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _: () = redis::cmd("HSET")
        .arg(&hashed)
        .arg("l")
        .arg("1")
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _: () = redis::cmd("PEXPIRE")
        .arg(&hashed)
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let checks = [
        ("good-1", fixed.clone(), true),
        ("garbled", fixed.clone(), false),
        ("good-2", tokens.clone(), true),
        ("hashed", tokens.clone(), false),
        ("good-1", fixed, true),
        ("good-2", tokens, true),
    ];
    let mut tasks = JoinSet::new();
    for (index, (key, limit, _)) in checks.iter().cloned().enumerate() {
        let backend = Arc::clone(&backend);
        tasks.spawn(async move { (index, backend.check(key, &limit).await) });
    }
    // All six share one batch (one current-thread poll round), yet only two fail.
    for ((key, _, good), result) in checks.iter().zip(join_all(tasks).await) {
        if *good {
            assert!(
                matches!(result, Ok(ref d) if d.allowed),
                "{key}: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(BackendError::UnexpectedReply { .. })),
                "{key}: {result:?}"
            );
        }
    }
    let after = backend
        .peek("good-1", &Limit::fixed_window(rate("5/m")))
        .await;
    assert_eq!(after.ok().map(|d| d.remaining), Some(5 - 2 - 1));
}

/// How long the bounded-queue tests' backends wait: far longer than the stall, so the queued
/// checks are still waiting when it ends.
const PATIENT: Duration = Duration::from_secs(5);

/// What "at once" means for a refused check on a busy test machine.
const AT_ONCE: Duration = Duration::from_millis(150);

/// The shared Redis behind a fault proxy, and a backend through it that lets 8 checks wait.
async fn bounded_backend(test_name: &str) -> Option<(FaultProxy, Arc<RedisBackend>)> {
    let redis = services::redis().await?;
    let address = redis
        .address()
        .unwrap_or_else(|| panic!("no address in {}", redis.url()));
    let proxy = FaultProxy::start(address)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("redis://{}", proxy.address());
    let backend = RedisBackend::builder(&url)
        .key_prefix(unique_prefix(test_name))
        .timeout(PATIENT)
        .max_queued(8)
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
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
    let Some((proxy, redis)) = bounded_backend("redis-batch-bounded").await else {
        return;
    };
    let prefix = redis.key_prefix().to_owned();
    let backend: Arc<dyn Backend> = redis;
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
    assert!(
        matches!(
            refused,
            Err(BackendError::Overloaded {
                backend: "redis",
                queued: 8
            })
        ),
        "{refused:?}"
    );
    assert!(took < AT_ONCE, "the refused check waited {took:?}");
    assert!(queued.iter().all(|task| !task.is_finished()));

    proxy.set(Fault::Pass);
    for task in queued {
        let decision = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(decision, Ok(ref d) if d.allowed), "{decision:?}");
    }
    // Answered checks leave room: the refused one goes through now, and was never counted.
    let decision = backend.check("ninth", &limit).await;
    assert_eq!(decision.ok().map(|d| d.remaining), Some(99));
    expiry_audit::assert_redis_keys_expire(&format!("redis://{}", proxy.address()), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_member_of_a_multi_backend_is_served_by_the_fallback() {
    let Some((proxy, redis)) = bounded_backend("redis-batch-overloaded-multi").await else {
        return;
    };
    let prefix = redis.key_prefix().to_owned();
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let multi: Arc<dyn Backend> = Arc::new(
        MultiBackend::builder()
            .shared_backend("redis", redis)
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
    assert!(matches!(overflow, Ok(ref d) if d.allowed), "{overflow:?}");
    assert!(took < AT_ONCE, "the overflowing check waited {took:?}");
    // The fallback counted it (a peek reports what would remain after one more).
    let counted = memory.peek("overflow", &limit).await;
    assert_eq!(counted.ok().map(|d| d.remaining), Some(98));

    proxy.set(Fault::Pass);
    for task in queued {
        let decision = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(decision, Ok(ref d) if d.allowed), "{decision:?}");
    }
    // The queued checks were Redis's: the fallback never saw them.
    let untouched = memory.peek("queued-0", &limit).await;
    assert_eq!(untouched.ok().map(|d| d.remaining), Some(99));
    expiry_audit::assert_redis_keys_expire(&format!("redis://{}", proxy.address()), &prefix).await;
}
