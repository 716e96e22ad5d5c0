//! The SQL backend against real PostgreSQL and MariaDB/MySQL on loopback (or private servers the
//! test support starts) and SQLite in a temporary file: the conformance table, exactness under
//! contention, cleanup, odd keys, errors. Every test works in tables of its own prefix and drops
//! them at the end, so tests run in parallel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Algorithm, Backend, BackendError, Limit, ManualClock, Rate, SqlBackend};
use ratelimit_tests::conformance;
use ratelimit_tests::contention::{admitted_per_algorithm, admitted_under_contention};
use ratelimit_tests::expiry_audit;
use ratelimit_tests::sql_database::{Database, Engine};

/// A backend on a test's tables, deciding on `clock` (`None`: the database's clock).
async fn open_backend(database: &Database, clock: Option<ManualClock>) -> SqlBackend {
    open_backend_with_pool(database, clock, 4).await
}

async fn open_backend_with_pool(
    database: &Database,
    clock: Option<ManualClock>,
    pool_size: u32,
) -> SqlBackend {
    let mut builder = database
        .builder()
        .pool_size(pool_size)
        .timeout(Duration::from_secs(10));
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    database.connect(builder).await
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

async fn conformance(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("conf_{engine:?}")).await else {
        return;
    };
    let database = Arc::new(database);
    let failures = conformance::run(
        |clock| {
            let database = Arc::clone(&database);
            async move { Arc::new(open_backend(&database, Some(clock)).await) as Arc<dyn Backend> }
        },
        "",
    )
    .await;
    database.drop_tables().await;
    assert!(failures.is_empty(), "{engine:?}: {failures:#?}");
}

#[tokio::test]
async fn postgres_matches_the_conformance_table() {
    conformance(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_matches_the_conformance_table() {
    conformance(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_matches_the_conformance_table() {
    conformance(Engine::Sqlite).await;
}

/// `pools` backends (each its own pool) × 64 tasks × 5 attempts on one key, every algorithm.
async fn contention(engine: Engine, pools: usize) {
    let Some(database) = Database::new(engine, &format!("hot_{engine:?}")).await else {
        return;
    };
    // A frozen clock: nothing refills, leaks or slides out while the tasks run.
    let clock = ManualClock::new(1_700_000_000_000);
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for _ in 0..pools {
        backends.push(Arc::new(open_backend(&database, Some(clock.clone())).await));
    }
    let results = admitted_per_algorithm(&backends).await;
    let hour = Duration::from_secs(3_600);
    let rows =
        expiry_audit::assert_sql_rows_expire(&database.url, &database.prefix, None, hour).await;
    assert!(rows > 0, "{engine:?}: the audit saw no row");
    database.drop_tables().await;
    for (algorithm, admitted) in results {
        assert_eq!(
            admitted, 50,
            "{engine:?} {algorithm}: 320 attempts on a limit of 50 over {pools} pools"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_pools_and_many_tasks_admit_exactly_the_limit() {
    contention(Engine::Postgres, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_pools_and_many_tasks_admit_exactly_the_limit() {
    contention(Engine::Mysql, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_connections_and_many_tasks_admit_exactly_the_limit() {
    // One pool of four connections to one file: SQLite has one writer at a time anyway.
    contention(Engine::Sqlite, 1).await;
}

/// Database time (no injected clock) across two pools: one day-aligned window.
async fn database_time(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("dbtime_{engine:?}")).await else {
        return;
    };
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(open_backend(&database, None).await),
        Arc::new(open_backend(&database, None).await),
    ];
    let limit = Limit::fixed_window(rate("50/d"));
    let admitted = admitted_under_contention(&backends, "db-clock", &limit, 32, 4).await;
    let peeked = backends[0].peek("db-clock", &limit).await;
    let day = Duration::from_secs(86_400);
    expiry_audit::assert_sql_rows_expire(&database.url, &database.prefix, None, day).await;
    database.drop_tables().await;
    // 128 attempts within one day-aligned window (a run across midnight UTC could see two).
    assert!(admitted == 50 || admitted == 100, "{engine:?}: {admitted}");
    let decision = peeked.unwrap_or_else(|error| panic!("{error}"));
    assert!(decision.reset_after <= Duration::from_secs(86_400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_time_is_used_without_an_injected_clock() {
    database_time(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_time_is_used_without_an_injected_clock() {
    database_time(Engine::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_time_is_used_without_an_injected_clock() {
    database_time(Engine::Sqlite).await;
}

/// Rows expire when [`ratelimit_core::Policy::expires_at`] says; cleanup removes exactly those
/// and says how many, and live state survives it.
async fn cleanup(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("cleanup_{engine:?}")).await else {
        return;
    };
    let clock = ManualClock::new(conformance::T0_MS);
    let backend = open_backend(&database, Some(clock.clone())).await;
    let outcome = cleanup_steps(&backend, &clock).await;
    database.drop_tables().await;
    if let Err(error) = outcome {
        panic!("{engine:?}: {error}");
    }
}

async fn cleanup_steps(backend: &SqlBackend, clock: &ManualClock) -> Result<(), String> {
    let fixed = Limit::fixed_window(rate("5/m"));
    let log = Limit::sliding_window(rate("5/m"));
    let counter = Limit::sliding_window_counter(rate("5/m"));
    let tokens = Limit::token_bucket(rate("5/m"));
    let leaky = Limit::leaky_bucket(rate("5/m"));
    let check = |key: &'static str, limit: &Limit| {
        let limit = limit.clone();
        async move {
            backend
                .check(key, &limit)
                .await
                .map_err(|error| format!("check {key}: {error}"))
        }
    };
    for (key, limit) in [
        ("fixed", &fixed),
        ("log", &log),
        ("counter", &counter),
        ("tokens", &tokens),
        ("leaky", &leaky),
    ] {
        check(key, limit).await?;
    }
    clock.advance(Duration::from_secs(1));
    check("log", &log).await?;
    // A rejection on a key never seen stores nothing.
    let zero = Limit::fixed_window(rate("0/m"));
    check("never", &zero).await?;

    let expect = |after: Duration, expired: u64, what: &str| {
        clock.advance(after);
        let what = what.to_owned();
        async move {
            let counted = backend.count_expired().await.map_err(|e| e.to_string())?;
            let removed = backend.cleanup().await.map_err(|e| e.to_string())?;
            let left = backend.count_expired().await.map_err(|e| e.to_string())?;
            if (counted, removed, left) == (expired, expired, 0) {
                Ok(())
            } else {
                Err(format!(
                    "{what}: counted {counted}, removed {removed}, left {left}; expected {expired}"
                ))
            }
        }
    };
    // t = 1 s: nothing has expired.
    expect(Duration::ZERO, 0, "at 1 s").await?;
    // t = 12 s: one token (or one unit of level) back takes 12 s; both buckets are full/empty.
    expect(Duration::from_secs(11), 2, "at 12 s").await?;
    // The fixed window and counter are still counting.
    let fixed_now = check("fixed", &fixed).await?;
    if fixed_now.remaining != 3 {
        return Err(format!("fixed window lost its count: {fixed_now:?}"));
    }
    // t = 61 s: the window ended at 60 s; both log entries at 61 s (the sliding log keeps no
    // state row: its entries are all its state).
    expect(Duration::from_secs(49), 3, "at 61 s").await?;
    // t = 120 s: the counter's previous bucket no longer matters.
    expect(Duration::from_secs(59), 1, "at 120 s").await?;
    Ok(())
}

#[tokio::test]
async fn postgres_cleanup_removes_exactly_the_expired_rows() {
    cleanup(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_cleanup_removes_exactly_the_expired_rows() {
    cleanup(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_cleanup_removes_exactly_the_expired_rows() {
    cleanup(Engine::Sqlite).await;
}

/// Cleanup in batches smaller than what expired still removes everything.
async fn cleanup_in_batches(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("batches_{engine:?}")).await else {
        return;
    };
    let clock = ManualClock::new(conformance::T0_MS);
    let backend = open_backend(&database, Some(clock.clone())).await;
    let log = Limit::sliding_window(rate("5/s"));
    let window = Limit::fixed_window(rate("5/s"));
    let mut outcome = Ok(0);
    for key in 0..25 {
        for limit in [&log, &window] {
            if let Err(error) = backend.check(&format!("key:{key}"), limit).await {
                outcome = Err(error);
            }
        }
    }
    clock.advance(Duration::from_secs(2));
    let batch = std::num::NonZeroU64::new(7).unwrap_or(std::num::NonZeroU64::MIN);
    if outcome.is_ok() {
        outcome = backend.cleanup_in_batches(batch).await;
    }
    database.drop_tables().await;
    // 25 state rows (the fixed windows) and 25 log entries.
    assert_eq!(outcome.ok(), Some(50), "{engine:?}");
}

#[tokio::test]
async fn postgres_cleanup_works_in_batches() {
    cleanup_in_batches(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_cleanup_works_in_batches() {
    cleanup_in_batches(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_cleanup_works_in_batches() {
    cleanup_in_batches(Engine::Sqlite).await;
}

async fn odd_keys(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("keys_{engine:?}")).await else {
        return;
    };
    let backend = open_backend(&database, None).await;
    let limit = Limit::fixed_window(rate("1/h"));
    let huge = "x".repeat(100_000);
    let keys = [
        huge.as_str(),
        "ключ",
        "🔑",
        "a{b}c",
        "'; DROP TABLE users; --",
        "with space",
        "new\nline",
        "nul\0byte",
        "nul\0bytf",
    ];
    let mut failures = Vec::new();
    for key in keys {
        if !backend.check(key, &limit).await.is_ok_and(|d| d.allowed) {
            failures.push(format!("{key:.10?}: first check"));
        }
    }
    for key in keys {
        if !backend.check(key, &limit).await.is_ok_and(|d| !d.allowed) {
            failures.push(format!("{key:.10?}: second check"));
        }
        if let Err(error) = backend.reset(key).await {
            failures.push(format!("{key:.10?}: reset: {error}"));
        }
        if !backend.check(key, &limit).await.is_ok_and(|d| d.allowed) {
            failures.push(format!("{key:.10?}: after reset"));
        }
    }
    database.drop_tables().await;
    assert!(failures.is_empty(), "{engine:?}: {failures:#?}");
}

#[tokio::test]
async fn postgres_long_unicode_and_binary_keys_are_separate_buckets() {
    odd_keys(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_long_unicode_and_binary_keys_are_separate_buckets() {
    odd_keys(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_long_unicode_and_binary_keys_are_separate_buckets() {
    odd_keys(Engine::Sqlite).await;
}

/// Reset forgets every algorithm and quota of the key, and only that key.
async fn reset_everything(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("reset_{engine:?}")).await else {
        return;
    };
    let backend = open_backend(&database, None).await;
    let limits: Vec<Limit> = Algorithm::ALL
        .into_iter()
        .map(|algorithm| Limit::new(rate("1/h;2/d"), algorithm))
        .collect();
    let mut failures = Vec::new();
    for limit in &limits {
        for key in ["mine", "other"] {
            if !backend.check(key, limit).await.is_ok_and(|d| d.allowed) {
                failures.push(format!("{}: first check of {key}", limit.algorithm()));
            }
        }
    }
    if let Err(error) = backend.reset("mine").await {
        failures.push(format!("reset: {error}"));
    }
    for limit in &limits {
        if !backend.peek("mine", limit).await.is_ok_and(|d| d.allowed) {
            failures.push(format!("{}: mine after reset", limit.algorithm()));
        }
        if !backend.peek("other", limit).await.is_ok_and(|d| !d.allowed) {
            failures.push(format!("{}: other after reset", limit.algorithm()));
        }
    }
    database.drop_tables().await;
    assert!(failures.is_empty(), "{engine:?}: {failures:#?}");
}

#[tokio::test]
async fn postgres_reset_forgets_every_algorithm_and_quota() {
    reset_everything(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_reset_forgets_every_algorithm_and_quota() {
    reset_everything(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_reset_forgets_every_algorithm_and_quota() {
    reset_everything(Engine::Sqlite).await;
}

async fn health(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("health_{engine:?}")).await else {
        return;
    };
    let backend = open_backend(&database, None).await;
    let status = backend.health().await;
    let last = backend.health_status();
    database.drop_tables().await;
    assert!(status.healthy, "{engine:?}: {status:?}");
    assert!(status.latency.is_some(), "{engine:?}: {status:?}");
    assert_eq!(status, last);
}

#[tokio::test]
async fn postgres_health_is_a_round_trip() {
    health(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_health_is_a_round_trip() {
    health(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_health_is_a_round_trip() {
    health(Engine::Sqlite).await;
}

/// A port nothing listens on: connecting fails fast with an error, never a panic or a hang.
#[tokio::test]
async fn unreachable_servers_fail_fast_with_an_error() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("binding a port: {error}"));
        listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"))
            .port()
    };
    for url in [
        format!("postgres://postgres@127.0.0.1:{closed_port}/test"),
        format!("mysql://root@127.0.0.1:{closed_port}/test"),
    ] {
        let started = Instant::now();
        let outcome = SqlBackend::builder(&url)
            .timeout(Duration::from_secs(5))
            .build()
            .await;
        let took = started.elapsed();
        assert!(
            matches!(outcome, Err(BackendError::Sql(_))),
            "{url}: {outcome:?}"
        );
        assert!(took < Duration::from_secs(2), "{url}: took {took:?}");
    }
}

#[tokio::test]
async fn unsupported_urls_and_prefixes_are_errors() {
    assert!(matches!(
        SqlBackend::connect("oracle://scott:tiger@127.0.0.1/x").await,
        Err(BackendError::UnsupportedUrl { .. })
    ));
    assert!(matches!(
        SqlBackend::builder("sqlite::memory:")
            .table_prefix("x; DROP TABLE y")
            .build()
            .await,
        Err(BackendError::InvalidTablePrefix { .. })
    ));
    assert!(matches!(
        SqlBackend::connect("sqlite:///nonexistent-dir/for/sure/x.db").await,
        Err(BackendError::Sql(_))
    ));
}

#[tokio::test]
async fn sqlite_in_memory_works_with_one_connection() {
    let backend = SqlBackend::builder("sqlite::memory:")
        .pool_size(8)
        .build()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let limit = Limit::fixed_window(rate("2/h"));
    for expected in [true, true, false] {
        let decision = backend.check("k", &limit).await;
        assert!(
            decision.as_ref().is_ok_and(|d| d.allowed == expected),
            "{decision:?}"
        );
    }
}

/// Connecting can be spawned on a multi-threaded runtime: the future of `build()` is `Send` for
/// every engine, so a service can open its stores in a background task (and the compiler
/// checks it here).
async fn connects_from_a_spawned_task(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("spawned_connect_{engine:?}")).await else {
        return;
    };
    let builder = SqlBackend::builder(&database.url)
        .table_prefix(&database.prefix)
        .timeout(Duration::from_secs(10));
    let backend = tokio::spawn(builder.build())
        .await
        .unwrap_or_else(|error| panic!("the connecting task failed: {error}"))
        .unwrap_or_else(|error| panic!("connecting to {}: {error}", database.url));
    let limit = Limit::fixed_window(rate("1/h"));
    for expected in [true, false] {
        let decision = backend.check("spawned", &limit).await;
        assert!(
            decision.as_ref().is_ok_and(|d| d.allowed == expected),
            "{engine:?}: {decision:?}"
        );
    }
    database.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connects_from_a_spawned_task() {
    connects_from_a_spawned_task(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connects_from_a_spawned_task() {
    connects_from_a_spawned_task(Engine::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connects_from_a_spawned_task() {
    connects_from_a_spawned_task(Engine::Sqlite).await;
}

async fn extreme_values(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("extreme_{engine:?}")).await else {
        return;
    };
    let clock = ManualClock::new(conformance::T0_MS);
    let backend = open_backend(&database, Some(clock.clone())).await;
    let (broken, calls) = ratelimit_tests::extreme_values::run(&backend, &clock, "", 40).await;
    assert!(calls >= 160, "too few valid cases: {calls} calls");
    database.drop_tables().await;
    assert!(broken.is_empty(), "{engine:?}: {broken:#?}");
}

#[tokio::test]
async fn postgres_decides_extreme_values_without_errors() {
    extreme_values(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_decides_extreme_values_without_errors() {
    extreme_values(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_decides_extreme_values_without_errors() {
    extreme_values(Engine::Sqlite).await;
}
