//! Failover against a Redis process this test owns: killed under steady load, then brought back
//! on the same port; and against a listener of its own that never answers. Never touches the
//! shared Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ratelimit_core::{
    Backend, BackendError, CircuitBreakerConfig, CircuitState, Config, Limit, MemoryBackend,
    MultiBackend, Rate, RedisBackend, Registry,
};
use ratelimit_tests::expiry_audit;
use ratelimit_tests::fault_proxy::{Fault, FaultProxy};
use ratelimit_tests::services::{PrivateRedis, skip_or_fail};

const CALL_TIMEOUT: Duration = Duration::from_millis(200);
/// What a call may take beyond the backend timeout on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(300);

fn limit() -> Limit {
    Limit::fixed_window(Rate::parse("1000000/h").unwrap_or_else(|error| panic!("{error}")))
}

async fn start_redis() -> Option<PrivateRedis> {
    match PrivateRedis::start().await {
        Ok(redis) => Some(redis),
        Err(error) => skip_or_fail(format!("cannot start a private redis-server: {error}")),
    }
}

fn failover(redis: RedisBackend, threshold: u32, recovery: Duration) -> Arc<MultiBackend> {
    Arc::new(
        MultiBackend::builder()
            .backend("redis", redis)
            .backend("memory", MemoryBackend::new())
            .circuit_breaker(CircuitBreakerConfig {
                failure_threshold: threshold,
                recovery_timeout: recovery,
                ..CircuitBreakerConfig::default()
            })
            .build(),
    )
}

/// One call under load: how long it took and whether it was allowed (or why it failed).
type Call = (Duration, Result<bool, String>);

/// Runs `tasks` loops of checks until `stop`; returns every call's latency and outcome.
fn steady_load(
    backend: Arc<MultiBackend>,
    tasks: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Call>>> {
    (0..tasks)
        .map(|task| {
            let backend = Arc::clone(&backend);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let outcome = backend
                        .check(&format!("client:{task}"), &limit())
                        .await
                        .map(|decision| decision.allowed)
                        .map_err(|error| error.to_string());
                    calls.push((started.elapsed(), outcome));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                calls
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_over_without_errors_and_comes_back() {
    let Some(mut redis) = start_redis().await else {
        return;
    };
    let port = redis.port();
    let backend = RedisBackend::builder(redis.url())
        .timeout(CALL_TIMEOUT)
        .build()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let prefix = backend.key_prefix().to_owned();
    let recovery = Duration::from_secs(1);
    let multi = failover(backend, 3, recovery);
    let alive_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(Arc::clone(&multi), 8, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill().await.unwrap_or_else(|error| panic!("{error}"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        multi.breaker("redis").map(|breaker| breaker.state()),
        Some(CircuitState::Open),
        "the breaker opened after the threshold"
    );
    // With the circuit open a check costs no network wait at all.
    let started = Instant::now();
    assert!(
        multi
            .check("probe", &limit())
            .await
            .is_ok_and(|d| d.allowed)
    );
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );

    let restarted = PrivateRedis::start_on(port)
        .await
        .unwrap_or_else(|error| panic!("restarting redis on {port}: {error}"));
    tokio::time::sleep(recovery + Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let mut calls = Vec::new();
    for handle in load {
        calls.extend(
            handle
                .await
                .unwrap_or_else(|error| panic!("load task: {error}")),
        );
    }

    assert!(calls.len() > 100, "steady load: {} calls", calls.len());
    let failed: Vec<_> = calls
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .collect();
    assert!(failed.is_empty(), "no request failed: {failed:?}");
    let slowest = calls
        .iter()
        .map(|(latency, _)| *latency)
        .max()
        .unwrap_or_default();
    assert!(
        slowest <= CALL_TIMEOUT + SLACK,
        "slowest call took {slowest:?}"
    );
    assert_eq!(
        multi.breaker("redis").map(|breaker| breaker.state()),
        Some(CircuitState::Closed),
        "traffic returned to redis after the recovery timeout"
    );
    let health = multi.health().await;
    assert!(health.members[0].status.healthy, "{health:?}");
    // Every load task finished; nothing was left running in the background.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let alive_after = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        alive_after <= alive_before,
        "{alive_before} tasks before, {alive_after} after"
    );
    expiry_audit::assert_redis_keys_expire(restarted.url(), &prefix).await;
}

#[tokio::test]
async fn deny_when_every_backend_is_down_is_an_error_the_guard_turns_into_503() {
    let Some(mut redis) = start_redis().await else {
        return;
    };
    let backend = RedisBackend::builder(redis.url())
        .timeout(CALL_TIMEOUT)
        .build()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let multi = MultiBackend::builder()
        .backend("redis", backend)
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 2,
            recovery_timeout: Duration::from_secs(30),
            ..CircuitBreakerConfig::default()
        })
        .build();
    redis.kill().await.unwrap_or_else(|error| panic!("{error}"));
    for attempt in 0..5 {
        let started = Instant::now();
        match multi.check("k", &limit()).await {
            Err(BackendError::AllBackendsFailed { retry_after, .. }) => {
                if attempt >= 2 {
                    assert!(retry_after.is_some_and(|after| after <= Duration::from_secs(30)));
                    assert!(
                        started.elapsed() < Duration::from_millis(50),
                        "open circuit waits"
                    );
                }
            }
            other => panic!("expected every backend to fail, got {other:?}"),
        }
        assert!(started.elapsed() <= CALL_TIMEOUT + SLACK);
    }
    assert!(!multi.health().await.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_cut_primaries_cost_at_most_the_timeout_then_nothing() {
    let Some(redis) = start_redis().await else {
        return;
    };
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", redis.port()))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let backend = RedisBackend::builder(&format!("redis://{}", proxy.address()))
        .timeout(CALL_TIMEOUT)
        .build()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let prefix = backend.key_prefix().to_owned();
    let recovery = Duration::from_secs(1);
    let multi = failover(backend, 3, recovery);
    for fault in [Fault::Stall, Fault::Cut] {
        proxy.set(fault);
        let mut latencies = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let decision = multi.check("client", &limit()).await;
            latencies.push(started.elapsed());
            assert!(
                decision.is_ok_and(|d| d.allowed),
                "{fault:?}: the fallback answers"
            );
        }
        assert!(
            latencies
                .iter()
                .all(|latency| *latency <= CALL_TIMEOUT + SLACK),
            "{fault:?}: {latencies:?}"
        );
        assert_eq!(
            multi.breaker("redis").map(|breaker| breaker.state()),
            Some(CircuitState::Open),
            "{fault:?}"
        );
        // Once open, the faulty primary costs nothing: the last calls skip it.
        assert!(
            latencies[5..]
                .iter()
                .all(|latency| *latency < Duration::from_millis(50)),
            "{fault:?}: {latencies:?}"
        );
        proxy.set(Fault::Pass);
        tokio::time::sleep(recovery + Duration::from_millis(100)).await;
        let mut back = false;
        for _ in 0..20 {
            let _ = multi.check("client", &limit()).await;
            if multi.breaker("redis").map(|breaker| breaker.state()) == Some(CircuitState::Closed) {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            back,
            "{fault:?}: traffic returned to redis after the fault ended"
        );
    }
    expiry_audit::assert_redis_keys_expire(redis.url(), &prefix).await;
}

/// A loopback listener that accepts every connection and holds it without ever answering;
/// returns its address and the count of connections it accepted.
async fn silent_server() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (address, accepted, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_failover_member_costs_each_concurrent_check_one_timeout_at_most() {
    let (address, accepted, holder) = silent_server().await;
    let config = Config::from_toml_str(&format!(
        r#"
        backend = "multi"
        [[backends]]
        name = "silent"
        type = "redis"
        url = "redis://{address}"
        [multi]
        backends = ["silent", "memory"]
        "#
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    // The member cannot connect at startup; the registry is built anyway and keeps trying.
    let registry = Arc::new(
        Registry::from_config(&config)
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    );
    let timeout = ratelimit_core::backend::redis::DEFAULT_TIMEOUT;
    let bound = timeout + Duration::from_millis(200);

    let checks: Vec<_> = (0..50)
        .map(|client| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = registry
                    .default_backend()
                    .check(&format!("client:{client}"), &limit())
                    .await
                    .map(|decision| decision.allowed)
                    .map_err(|error| error.to_string());
                (started.elapsed(), outcome)
            })
        })
        .collect();
    let mut calls = Vec::new();
    for check in checks {
        calls.push(
            check
                .await
                .unwrap_or_else(|error| panic!("check task: {error}")),
        );
    }
    for (elapsed, outcome) in &calls {
        assert!(
            *elapsed <= bound,
            "a check took {elapsed:?}, more than {bound:?}: {calls:?}"
        );
        assert_eq!(outcome, &Ok(true), "the memory fallback answers: {calls:?}");
    }
    assert!(
        accepted.load(Ordering::SeqCst) <= 2,
        "one attempt at startup, one shared by the 50 checks: {} connections",
        accepted.load(Ordering::SeqCst)
    );

    // The failures opened the member's circuit: later checks skip it without connecting.
    let health = registry.default_backend().health_status();
    assert_eq!(
        health.members[0].status.circuit,
        CircuitState::Open,
        "{health:?}"
    );
    assert!(!health.members[0].status.healthy, "{health:?}");
    let connections = accepted.load(Ordering::SeqCst);
    for client in 0..10 {
        let started = Instant::now();
        let decision = registry
            .default_backend()
            .check(&format!("client:{client}"), &limit())
            .await;
        assert!(decision.is_ok_and(|d| d.allowed));
        assert!(started.elapsed() <= bound, "{:?}", started.elapsed());
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        connections,
        "an open circuit makes no connection attempt"
    );
    holder.abort();
}
