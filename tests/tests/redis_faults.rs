//! The Redis backend when its server fails: nobody listening at connect, the server killed
//! under load and restarted on the same port, and a fault-injecting proxy that stalls, refuses
//! or cuts connections. Every server here is the test's own; the shared Redis is never touched.
//!
//! The promise under test: a call never takes much longer than the backend's timeout, fails
//! with a typed error (`Redis` or `Timeout`) while the server is away for longer than that,
//! never panics, and the same backend works again once the server is back. A server away for
//! less than the timeout (a quick restart, `SCRIPT FLUSH`) fails no check, and a call sent again
//! after its reply was lost counts once. Every test ends with the expiry audit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratelimit_core::{Backend, BackendError, Limit, Rate, RedisBackend};
use ratelimit_tests::expiry_audit;
use ratelimit_tests::fault_proxy::{Fault, FaultProxy};
use ratelimit_tests::services::{self, PrivateRedis, ServerError, unique_prefix};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// The backend's timeout in every test here.
const TIMEOUT: Duration = Duration::from_millis(200);
/// How much longer than [`TIMEOUT`] a call may take (scheduling, a busy test machine).
const SLACK: Duration = Duration::from_millis(300);
/// How long a recovered server may take to serve the same backend again: the connection
/// manager retries with exponential backoff, up to a few seconds between attempts.
const RECOVERY: Duration = Duration::from_secs(15);

/// A `redis-server` of this test's own, or `None` (after a warning) when it is not installed.
async fn private_redis() -> Option<PrivateRedis> {
    match PrivateRedis::start().await {
        Ok(server) => Some(server),
        Err(error @ ServerError::NotInstalled { .. }) => services::skip_or_fail(error),
        Err(error) => panic!("starting a private redis-server: {error}"),
    }
}

async fn backend(url: &str, test_name: &str) -> RedisBackend {
    RedisBackend::builder(url)
        .key_prefix(unique_prefix(test_name))
        .timeout(TIMEOUT)
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"))
}

/// A limit no test gets near: every successful check is allowed.
fn roomy_limit() -> Limit {
    Limit::fixed_window(Rate::parse("1000000/s").unwrap_or_else(|e| panic!("{e}")))
}

/// A loopback port nobody listens on (it was free a moment ago).
fn unused_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Whether `error` is one a server outage may produce.
fn is_outage(error: &BackendError) -> bool {
    matches!(error, BackendError::Redis(_) | BackendError::Timeout { .. })
}

/// One check made by [`Load`].
#[derive(Debug)]
struct Call {
    started: Instant,
    took: Duration,
    outcome: Result<(), BackendError>,
}

impl Call {
    fn ended(&self) -> Instant {
        self.started + self.took
    }
}

/// A few tasks checking in a loop until told to stop, recording every call.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Call>>>,
}

impl Load {
    fn start(backend: &Arc<RedisBackend>, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|task| {
                let backend = Arc::clone(backend);
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let limit = roomy_limit();
                    let key = format!("load:{task}");
                    let mut calls = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let outcome = backend.check(&key, &limit).await.map(|_| ());
                        calls.push(Call {
                            started,
                            took: started.elapsed(),
                            outcome,
                        });
                        // Failing calls can return at once; do not spin on them.
                        sleep(Duration::from_millis(5)).await;
                    }
                    calls
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the tasks and returns every call, in no particular order.
    async fn finish(self) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        for task in self.tasks {
            match task.await {
                Ok(mut task_calls) => calls.append(&mut task_calls),
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        calls
    }
}

/// Asserts that no call took longer than the timeout allows.
fn assert_bounded(calls: &[Call], what: &str) {
    let slowest = calls.iter().map(|call| call.took).max().unwrap_or_default();
    assert!(
        slowest <= TIMEOUT + SLACK,
        "{what}: a call took {slowest:?}, more than {TIMEOUT:?} + {SLACK:?}"
    );
}

/// Checks until one succeeds; returns when. Fails the test after [`RECOVERY`].
async fn wait_for_recovery(backend: &RedisBackend, what: &str) -> Instant {
    let since = Instant::now();
    let limit = roomy_limit();
    loop {
        let started = Instant::now();
        let outcome = backend.check("recovery", &limit).await;
        let took = started.elapsed();
        assert!(took <= TIMEOUT + SLACK, "{what}: a check took {took:?}");
        match outcome {
            Ok(_) => {
                tracing::info!(after = ?since.elapsed(), "{what}: recovered");
                return Instant::now();
            }
            Err(error) if since.elapsed() > RECOVERY => {
                panic!("{what}: still failing after {RECOVERY:?}: {error}")
            }
            Err(error) => assert!(is_outage(&error), "{what}: {error:?}"),
        }
        sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_unhealthy(backend: &RedisBackend, what: &str) {
    let started = Instant::now();
    let status = backend.health().await;
    assert!(
        started.elapsed() <= TIMEOUT + SLACK,
        "{what}: health() took {:?}",
        started.elapsed()
    );
    assert!(!status.healthy, "{what}: {status:?}");
    assert!(status.failure_count > 0, "{what}: {status:?}");
    assert!(status.detail.is_some(), "{what}: {status:?}");
}

async fn assert_healthy(backend: &RedisBackend, what: &str) {
    let status = backend.health().await;
    assert!(status.healthy, "{what}: {status:?}");
    assert_eq!(status.failure_count, 0, "{what}: {status:?}");
    assert!(status.latency.is_some(), "{what}: {status:?}");
}

#[tokio::test]
async fn connecting_to_a_port_nobody_listens_on_fails_fast() {
    let url = format!("redis://127.0.0.1:{}", unused_port());

    let started = Instant::now();
    let connected = RedisBackend::connect(&url).await;
    let took = started.elapsed();
    match connected {
        Err(error) => assert!(is_outage(&error), "{error:?}"),
        Ok(backend) => panic!("connected to nobody: {backend:?}"),
    }
    assert!(took < Duration::from_secs(2), "connect took {took:?}");

    let started = Instant::now();
    let built = RedisBackend::builder(&url).timeout(TIMEOUT).build().await;
    let took = started.elapsed();
    assert!(built.is_err_and(|error| is_outage(&error)));
    assert!(took <= TIMEOUT + SLACK, "build took {took:?}");

    let started = Instant::now();
    let cluster = RedisBackend::cluster([&url]).await;
    let took = started.elapsed();
    assert!(cluster.is_err_and(|error| is_outage(&error)));
    assert!(took < Duration::from_secs(2), "cluster took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_fails_every_call_within_the_timeout_and_a_restart_recovers() {
    let Some(mut server) = private_redis().await else {
        return;
    };
    let port = server.port();
    let backend = Arc::new(backend(server.url(), "killed-server").await);
    let load = Load::start(&backend, 4);
    sleep(Duration::from_millis(300)).await;

    let killing = Instant::now();
    server
        .kill()
        .await
        .unwrap_or_else(|e| panic!("killing the server: {e}"));
    let down = Instant::now();
    sleep(Duration::from_secs(1)).await;
    assert_unhealthy(&backend, "server killed").await;

    let restarting = Instant::now();
    let restarted = PrivateRedis::start_on(port)
        .await
        .unwrap_or_else(|e| panic!("restarting redis-server on port {port}: {e}"));
    let recovered = wait_for_recovery(&backend, "server restarted").await;
    sleep(Duration::from_millis(300)).await;
    let calls = load.finish().await;
    assert_healthy(&backend, "server restarted").await;

    assert_bounded(&calls, "kill and restart");
    let before: Vec<&Call> = calls.iter().filter(|c| c.ended() < killing).collect();
    assert!(!before.is_empty(), "no call before the kill");
    for call in before {
        assert!(call.outcome.is_ok(), "before the kill: {call:?}");
    }
    let outage: Vec<&Call> = calls
        .iter()
        .filter(|c| c.started >= down && c.ended() <= restarting)
        .collect();
    assert!(!outage.is_empty(), "no call while the server was down");
    for call in outage {
        match &call.outcome {
            Err(error) => assert!(is_outage(error), "{error:?}"),
            Ok(()) => panic!("a call succeeded with the server down: {call:?}"),
        }
    }
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= recovered).collect();
    assert!(!after.is_empty(), "no call after recovery");
    for call in after {
        assert!(call.outcome.is_ok(), "after recovery: {call:?}");
    }
    expiry_audit::assert_redis_keys_expire(restarted.url(), backend.key_prefix()).await;
}

/// A private server behind a fault proxy, and a backend connected through the proxy.
async fn behind_proxy(test_name: &str) -> Option<(PrivateRedis, FaultProxy, RedisBackend)> {
    let server = private_redis().await?;
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", server.port()))
        .await
        .unwrap_or_else(|e| panic!("starting the fault proxy: {e}"));
    let backend = backend(&format!("redis://{}", proxy.address()), test_name).await;
    assert!(backend.check("warm-up", &roomy_limit()).await.is_ok());
    Some((server, proxy, backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_connection_times_out_and_never_hangs() {
    let Some((server, proxy, backend)) = behind_proxy("stalled").await else {
        return;
    };
    let backend = Arc::new(backend);
    proxy.set(Fault::Stall);

    // One at a time, then several at once on the one multiplexed connection.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let outcome = backend.check("stalled", &roomy_limit()).await;
        outcomes.push((started.elapsed(), outcome));
    }
    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = backend.check("stalled", &roomy_limit()).await;
                (started.elapsed(), outcome)
            })
        })
        .collect();
    for task in concurrent {
        outcomes.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    for (took, outcome) in &outcomes {
        match outcome {
            Err(BackendError::Timeout { after, .. }) => assert_eq!(*after, TIMEOUT),
            other => panic!("a stalled call returned {other:?}"),
        }
        assert!(
            *took >= TIMEOUT - Duration::from_millis(20),
            "gave up early: {took:?}"
        );
        assert!(*took <= TIMEOUT + SLACK, "a stalled call took {took:?}");
    }
    assert_unhealthy(&backend, "stalled").await;

    proxy.set(Fault::Pass);
    wait_for_recovery(&backend, "stall lifted").await;
    assert_healthy(&backend, "stall lifted").await;
    expiry_audit::assert_redis_keys_expire(server.url(), backend.key_prefix()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_connections_fail_calls_and_the_backend_recovers_after_pass() {
    let Some((server, proxy, backend)) = behind_proxy("cut").await else {
        return;
    };
    let backend = Arc::new(backend);
    let load = Load::start(&backend, 4);
    sleep(Duration::from_millis(300)).await;

    let cutting = Instant::now();
    proxy.set(Fault::Cut);
    sleep(Duration::from_millis(700)).await;
    assert_unhealthy(&backend, "connections cut").await;
    let passing = Instant::now();
    proxy.set(Fault::Pass);
    let recovered = wait_for_recovery(&backend, "cut lifted").await;
    sleep(Duration::from_millis(300)).await;
    let calls = load.finish().await;
    assert_healthy(&backend, "cut lifted").await;

    assert_bounded(&calls, "cut and pass");
    let during: Vec<&Call> = calls
        .iter()
        .filter(|c| c.started >= cutting && c.ended() <= passing)
        .collect();
    assert!(!during.is_empty(), "no call while connections were cut");
    for call in during {
        match &call.outcome {
            Err(error) => assert!(is_outage(error), "{error:?}"),
            Ok(()) => panic!("a call succeeded through a cut proxy: {call:?}"),
        }
    }
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= recovered).collect();
    assert!(!after.is_empty(), "no call after recovery");
    for call in after {
        assert!(call.outcome.is_ok(), "after recovery: {call:?}");
    }
    expiry_audit::assert_redis_keys_expire(server.url(), backend.key_prefix()).await;
}

#[tokio::test]
async fn refused_connections_fail_a_new_backend_fast_but_spare_open_ones() {
    let Some((server, proxy, connected)) = behind_proxy("refused").await else {
        return;
    };
    let url = format!("redis://{}", proxy.address());
    proxy.set(Fault::Refuse);

    let started = Instant::now();
    let refused = RedisBackend::builder(&url).timeout(TIMEOUT).build().await;
    let took = started.elapsed();
    match refused {
        Err(error) => assert!(is_outage(&error), "{error:?}"),
        Ok(backend) => panic!("connected through a refusing proxy: {backend:?}"),
    }
    assert!(took <= TIMEOUT + SLACK, "connecting took {took:?}");
    // The connection opened before the fault still passes.
    assert!(connected.check("open", &roomy_limit()).await.is_ok());

    proxy.set(Fault::Pass);
    let accepted = backend(&url, "refused-then-accepted").await;
    assert!(accepted.check("new", &roomy_limit()).await.is_ok());
    expiry_audit::assert_redis_keys_expire(server.url(), connected.key_prefix()).await;
    expiry_audit::assert_redis_keys_expire(server.url(), accepted.key_prefix()).await;
}

/// `SCRIPT FLUSH` (an operator, a failover to a fresh replica) forgets the scripts under a
/// running load: every check must still succeed, the batcher loading the script again on
/// `NOSCRIPT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_under_load_fails_no_check() {
    let Some(server) = private_redis().await else {
        return;
    };
    let backend = Arc::new(backend(server.url(), "script-flush").await);
    let client = redis::Client::open(server.url()).unwrap_or_else(|e| panic!("{e}"));
    let mut operator = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let load = Load::start(&backend, 8);
    sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let flushed: Result<String, _> = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut operator)
            .await;
        assert_eq!(flushed.ok().as_deref(), Some("OK"));
        sleep(Duration::from_millis(100)).await;
    }
    sleep(Duration::from_millis(200)).await;
    let calls = load.finish().await;
    let failed: Vec<_> = calls.iter().filter(|call| call.outcome.is_err()).collect();
    assert!(calls.len() > 50, "too little load: {} calls", calls.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        calls.len()
    );
    assert_bounded(&calls, "script flush");
    // Every limiter key the load wrote carries a TTL (the shared hash-tag secret alone lives on).
    let with_ttl = expiry_audit::assert_redis_keys_expire(server.url(), backend.key_prefix()).await;
    assert!(with_ttl > 0, "the load left no key");
}

/// The backend's timeout in the restart test: a restart of a local `redis-server` takes a small
/// part of it, so every check may wait out the restart and still answer in time.
const RESTART_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters of a server since it started (`INFO stats`, `errorstats`, `commandstats`).
#[derive(Debug, Default)]
struct ServerStats {
    connections_received: u64,
    /// Replies `NOSCRIPT` (an `EVALSHA` of a script the server does not hold).
    noscript_errors: u64,
    /// `EVALSHA`, `EVAL` and `SCRIPT LOAD` calls.
    script_calls: u64,
}

impl ServerStats {
    async fn read(url: &str) -> Self {
        let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{e}"));
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("errorstats")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("INFO: {e}"));
        let mut stats = Self::default();
        for line in info.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name {
                "total_connections_received" => stats.connections_received = number(value),
                "errorstat_NOSCRIPT" => stats.noscript_errors = field(value, "count"),
                "cmdstat_evalsha" | "cmdstat_eval" | "cmdstat_script|load" => {
                    stats.script_calls += field(value, "calls");
                }
                _ => {}
            }
        }
        stats
    }
}

fn number(text: &str) -> u64 {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// `name=<n>` out of an `INFO` value such as `calls=12,usec=345`.
fn field(value: &str, name: &str) -> u64 {
    value
        .split(',')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .map_or(0, number)
}

/// A restart (the server killed and started again on its port) under load on three
/// connections (three backends, as three app instances have). A restart much shorter than
/// the timeout must cost no check: the checks in flight when the server went away are sent
/// again, once, on the new connection, and the ones made meanwhile wait for it. The restarted
/// server knows no script; each connection must bring them back with at most one extra round
/// trip, not a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quick_restart_under_load_fails_no_check_and_costs_one_round_trip_per_connection() {
    let Some(mut server) = private_redis().await else {
        return;
    };
    let (port, url) = (server.port(), server.url().to_owned());
    let prefix = unique_prefix("restart");
    let mut backends = Vec::new();
    for _ in 0..3 {
        let backend = RedisBackend::builder(&url)
            .key_prefix(&prefix)
            .timeout(RESTART_TIMEOUT)
            .build()
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
        backends.push(Arc::new(backend));
    }
    let loads: Vec<Load> = backends
        .iter()
        .map(|backend| Load::start(backend, 4))
        .collect();
    sleep(Duration::from_millis(300)).await;

    let restarting = Instant::now();
    server
        .kill()
        .await
        .unwrap_or_else(|e| panic!("killing the server: {e}"));
    // Away long enough for the waiting checks to meet refused reconnects.
    sleep(Duration::from_millis(300)).await;
    let restarted = PrivateRedis::start_on(port)
        .await
        .unwrap_or_else(|e| panic!("restarting redis-server on port {port}: {e}"));
    let away = restarting.elapsed();
    assert!(
        away < RESTART_TIMEOUT / 2,
        "the restart took {away:?}, too close to the timeout ({RESTART_TIMEOUT:?}) to test it"
    );
    sleep(Duration::from_millis(700)).await;
    let mut calls = Vec::new();
    for load in loads {
        calls.append(&mut load.finish().await);
    }
    let stats = ServerStats::read(restarted.url()).await;
    tracing::info!(?away, checks = calls.len(), ?stats, "restart under load");

    let failed: Vec<&Call> = calls.iter().filter(|call| call.outcome.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed: {failed:?}",
        failed.len(),
        calls.len()
    );
    let slowest = calls.iter().map(|call| call.took).max().unwrap_or_default();
    assert!(
        slowest <= RESTART_TIMEOUT + SLACK,
        "a check took {slowest:?}"
    );
    let answered_after = calls.iter().filter(|c| c.ended() > restarting).count();
    assert!(
        answered_after > 100,
        "too little load: {answered_after} checks"
    );
    // One connection per backend, the start's readiness probe and the one that read the
    // counters: no reconnect loop.
    assert!(
        stats.connections_received <= backends.len() as u64 + 2,
        "{stats:?}"
    );
    // At most one NOSCRIPT per connection (the algorithm's one script), and no call beyond
    // one per check plus the one each NOSCRIPT costs.
    assert!(stats.noscript_errors <= backends.len() as u64, "{stats:?}");
    assert!(
        stats.script_calls <= answered_after as u64 + stats.noscript_errors,
        "{stats:?} for {answered_after} checks"
    );
    expiry_audit::assert_redis_keys_expire(restarted.url(), &prefix).await;
}

/// The reply of a check is lost after the server ran its script, and the connection with it:
/// the backend sends the call once more on a fresh connection, and the script, finding the
/// call's marker, answers with the first run's reply instead of counting the check again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_the_script_ran_is_answered_and_counted_once() {
    let Some((server, proxy, backend)) = behind_proxy("lost-reply").await else {
        return;
    };
    let limit = Limit::fixed_window(Rate::parse("5/h").unwrap_or_else(|e| panic!("{e}")));
    proxy.lose_next_reply();
    let started = Instant::now();
    let checked = backend.check("lost", &limit).await;
    let took = started.elapsed();
    assert!(!proxy.is_losing_next_reply(), "no reply was lost");
    let decision = checked.unwrap_or_else(|error| panic!("the check failed: {error}"));
    assert!(took <= TIMEOUT + SLACK, "the check took {took:?}");
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.remaining, 4, "{decision:?}");
    let peeked = backend
        .peek("lost", &limit)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    // A peek answers as the next check would: with one counted, it would leave 3.
    assert_eq!(peeked.remaining, 3, "counted twice: {peeked:?}");
    expiry_audit::assert_redis_keys_expire(server.url(), backend.key_prefix()).await;
}
