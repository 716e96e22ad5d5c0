//! The sliding log on the SQL engines (`<prefix>log_v3`, whose entries carry running totals),
//! against real PostgreSQL and MariaDB/MySQL (or private servers the test support starts) and
//! SQLite in a temporary file:
//!
//! - a check on a full `20000/h` log costs a few index probes, not a walk over its entries:
//!   counted in rows read on PostgreSQL (its statistics are exact once flushed), timed against a
//!   log of one entry on MySQL and SQLite, which have no such counter per table;
//! - a clock that steps back across several entries decides as the memory backend does;
//! - running totals near the `BIGINT` limit are rebased, still deciding as the memory backend.
//!
//! Every test works in tables of its own prefix and drops them at the end, also when it fails.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Backend, Limit, ManualClock, MemoryBackend, Rate, SqlBackend};
use ratelimit_tests::conformance::T0_MS;
use ratelimit_tests::sql_database::{Database, Engine};

/// A backend on a test's tables, deciding on `clock`; `batch_size` 1 sends every check on its
/// own (PostgreSQL).
async fn open_backend(
    database: &Database,
    clock: &ManualClock,
    pool_size: u32,
    batch_size: usize,
) -> SqlBackend {
    let builder = database
        .builder()
        .clock(clock.clone())
        .pool_size(pool_size)
        .batch_size(batch_size)
        .timeout(Duration::from_secs(30));
    database.connect(builder).await
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

// ---- a full log is checked without walking it ----

/// The log the cost tests fill: at its limit, every further check is rejected.
const FULL: &str = "20000/h";
const FULL_ENTRIES: u64 = 20_000;

/// Admits `entries` requests of `cost` on `key`, `parallel` at a time; the clock moves 10 ms
/// after each round, so the log spans a few seconds of its hour.
async fn fill(
    backend: &Arc<SqlBackend>,
    clock: &ManualClock,
    key: &str,
    limit: &Limit,
    (entries, cost): (u64, u64),
    parallel: u64,
) -> Result<(), String> {
    let mut admitted = 0;
    while admitted < entries {
        let round = parallel.min(entries - admitted);
        let checks: Vec<_> = (0..round)
            .map(|_| {
                let (backend, key, limit) = (Arc::clone(backend), key.to_owned(), limit.clone());
                tokio::spawn(async move { backend.check_n(&key, &limit, cost).await })
            })
            .collect();
        for check in checks {
            let decision = check
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| format!("filling {key} after {admitted}: {error}"))?;
            if !decision.allowed {
                return Err(format!("filling {key} after {admitted}: {decision:?}"));
            }
        }
        admitted += round;
        clock.advance(Duration::from_millis(10));
    }
    Ok(())
}

/// A check on a full log: rejected, with a retry time.
async fn over_limit(backend: &SqlBackend, key: &str, limit: &Limit) -> Result<(), String> {
    let decision = backend
        .check(key, limit)
        .await
        .map_err(|error| format!("{key}: {error}"))?;
    if !decision.allowed && decision.remaining == 0 && decision.retry_after.is_some() {
        Ok(())
    } else {
        Err(format!("{key}, expected a rejection: {decision:?}"))
    }
}

/// Scans of `prefix`'s tables, and the rows they read (sequential scans' rows and index
/// entries), as PostgreSQL's cumulative statistics have them.
async fn rows_read(pool: &sqlx::PgPool, prefix: &str) -> Result<(i64, i64), String> {
    sqlx::query_as(
        "SELECT coalesce(sum(t.seq_scan + coalesce(t.idx_scan, 0)), 0)::bigint, \
         (coalesce(sum(t.seq_tup_read), 0) + coalesce((SELECT sum(i.idx_tup_read) \
         FROM pg_stat_user_indexes i WHERE left(i.relname, length($1)) = $1), 0))::bigint \
         FROM pg_stat_user_tables t WHERE left(t.relname, length($1)) = $1",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .map_err(|error| format!("reading statistics: {error}"))
}

/// The statistics once every server process that used `prefix`'s tables has flushed them: a
/// process flushes within about a second of going idle, and when it exits. Waits until at
/// least `scans` scans are counted and nothing changed for 2 s.
async fn settled_rows_read(
    pool: &sqlx::PgPool,
    prefix: &str,
    scans: i64,
) -> Result<(i64, i64), String> {
    let started = Instant::now();
    let mut last = rows_read(pool, prefix).await?;
    let mut unchanged_since = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rows_read(pool, prefix).await?;
        if now != last {
            (last, unchanged_since) = (now, Instant::now());
        } else if now.0 >= scans && unchanged_since.elapsed() >= Duration::from_secs(2) {
            return Ok(now);
        }
    }
    Err(format!(
        "statistics of {prefix}* never settled at {scans}+ scans: {last:?}"
    ))
}

/// PostgreSQL: 256 over-limit checks on a log of 20,000 entries read a few rows each. A check
/// that walked the log (sum of the counted costs, then the running sum for the retry time)
/// would read about 40,000.
async fn postgres_rows_read_per_check(
    database: &Database,
    clock: &ManualClock,
    limit: &Limit,
) -> Result<(), String> {
    const CHECKS: i64 = 256;
    let stats = sqlx::PgPool::connect(&database.url)
        .await
        .map_err(|error| format!("connecting: {error}"))?;
    let (scans_before, rows_before) = settled_rows_read(&stats, &database.prefix, 0).await?;
    // One connection, every check on its own: only these checks touch the tables, and the
    // process that ran them flushes its statistics when the pool is dropped.
    let measured = open_backend(database, clock, 1, 1).await;
    for _ in 0..CHECKS {
        over_limit(&measured, "long", limit).await?;
    }
    drop(measured);
    let settled = settled_rows_read(&stats, &database.prefix, scans_before + CHECKS).await;
    stats.close().await;
    let (scans, rows) = settled?;
    let per_check = (rows - rows_before) / CHECKS;
    tracing::info!(
        per_check,
        scans = scans - scans_before,
        "rows read per check"
    );
    if per_check <= 16 {
        Ok(())
    } else {
        Err(format!(
            "{per_check} rows read per over-limit check on a log of {FULL_ENTRIES} entries \
             ({} rows in {} scans for {CHECKS} checks)",
            rows - rows_before,
            scans - scans_before
        ))
    }
}

/// MySQL and SQLite: over-limit checks on the log of 20,000 entries and on a log of one entry
/// (of cost 20,000), taking turns so that load from other work on the machine hits both. The
/// medians must be close: a check that walked the log would take thousands of times the work
/// on the long one.
async fn long_log_as_fast_as_a_short_one(
    backend: &SqlBackend,
    limit: &Limit,
) -> Result<(), String> {
    const ROUNDS: usize = 64;
    let mut long = Vec::with_capacity(ROUNDS);
    let mut short = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        for (key, times) in [("long", &mut long), ("short", &mut short)] {
            let started = Instant::now();
            over_limit(backend, key, limit).await?;
            times.push(started.elapsed());
        }
    }
    let (long, short) = (median(long), median(short));
    tracing::info!(?long, ?short, "median over-limit check");
    if long <= short * 3 + Duration::from_millis(3) {
        Ok(())
    } else {
        Err(format!(
            "median check on a log of {FULL_ENTRIES} entries {long:?}, on a log of one {short:?}"
        ))
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

async fn a_full_log_is_checked_without_walking_it(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("swlong_{engine:?}")).await else {
        return;
    };
    let outcome = full_log_steps(&database).await;
    database.drop_tables().await;
    if let Err(error) = outcome {
        panic!("{engine:?}: {error}");
    }
}

async fn full_log_steps(database: &Database) -> Result<(), String> {
    let clock = ManualClock::new(T0_MS);
    let backend = Arc::new(open_backend(database, &clock, 8, 64).await);
    let limit = Limit::sliding_window(rate(FULL));
    // SQLite has one writer: parallel checks would only queue for it.
    let parallel = match database.engine {
        Engine::Sqlite => 1,
        Engine::Postgres | Engine::Mysql => 256,
    };
    let long = (FULL_ENTRIES, 1);
    fill(&backend, &clock, "long", &limit, long, parallel).await?;
    fill(&backend, &clock, "short", &limit, (1, FULL_ENTRIES), 1).await?;
    match database.engine {
        Engine::Postgres => postgres_rows_read_per_check(database, &clock, &limit).await,
        Engine::Mysql | Engine::Sqlite => long_log_as_fast_as_a_short_one(&backend, &limit).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_a_few_rows_per_check_of_a_full_log() {
    a_full_log_is_checked_without_walking_it(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_checks_a_full_log_as_fast_as_a_short_one() {
    a_full_log_is_checked_without_walking_it(Engine::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checks_a_full_log_as_fast_as_a_short_one() {
    a_full_log_is_checked_without_walking_it(Engine::Sqlite).await;
}

// ---- decisions equal the memory backend's ----

/// One step of a scripted sequence: the clock set to `T0_MS + at_ms`, then a check (or a peek)
/// of `cost`.
#[derive(Clone, Copy, Debug)]
struct Step {
    at_ms: u64,
    cost: u64,
    peek: bool,
}

const fn check(at_ms: u64, cost: u64) -> Step {
    Step {
        at_ms,
        cost,
        peek: false,
    }
}

const fn peek(at_ms: u64, cost: u64) -> Step {
    Step {
        at_ms,
        cost,
        peek: true,
    }
}

/// Runs `steps` on the memory backend and on `sql` (both on `clock`), calling `between`
/// before each step; every decision must be the same. Returns how many were admitted and
/// rejected.
async fn decide_like_memory<F, Fut>(
    sql: &SqlBackend,
    clock: &ManualClock,
    limit: &Limit,
    steps: &[Step],
    mut between: F,
) -> Result<(usize, usize), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let memory = MemoryBackend::with_clock(clock.clone());
    let (mut admitted, mut rejected) = (0, 0);
    for (index, step) in steps.iter().enumerate() {
        clock.set_millis(T0_MS + step.at_ms);
        between().await?;
        let (expected, got) = if step.peek {
            (
                memory.peek_n("k", limit, step.cost).await,
                sql.peek_n("k", limit, step.cost).await,
            )
        } else {
            (
                memory.check_n("k", limit, step.cost).await,
                sql.check_n("k", limit, step.cost).await,
            )
        };
        let expected = expected.map_err(|error| format!("memory, step {index}: {error}"))?;
        let got = got.map_err(|error| format!("step {index} {step:?}: {error}"))?;
        if got != expected {
            return Err(format!(
                "step {index} {step:?}: got {got:?}, expected {expected:?}"
            ));
        }
        if expected.allowed {
            admitted += 1;
        } else {
            rejected += 1;
        }
    }
    Ok((admitted, rejected))
}

/// `10/m`: entries at 0, 10, 20 and 30 s, then the clock steps back across three of them, and
/// later before all of them; admissions go between entries (later totals grow), rejections
/// find their retry time among entries admitted out of order.
const STEPPING_BACK: &[Step] = &[
    check(0, 2),
    check(10_000, 1),
    check(20_000, 3),
    check(30_000, 1),
    // Back across three entries: goes between 0 s and 10 s.
    check(5_000, 2),
    // The same millisecond again: after the entry just put there.
    check(5_000, 1),
    // Full: 2 must slide out, which the entries at 0 s and 5 s hold.
    check(5_000, 1),
    peek(1_000, 3),
    check(12_000, 4),
    // 60 s: the entry at 0 s is gone; the one at 5 s (2, then 1) is next.
    check(60_000, 2),
    peek(61_000, 3),
    check(66_000, 3),
    // Back before every entry left (10 s on): first in the log.
    check(8_000, 1),
    check(9_000, 1),
    peek(9_000, 1),
    check(70_000, 1),
    check(75_000, 2),
    check(200_000, 10),
    check(150_000, 1),
    check(200_000, 1),
];

async fn a_clock_stepping_back_decides_like_memory(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("swback_{engine:?}")).await else {
        return;
    };
    let clock = ManualClock::new(T0_MS);
    let backend = open_backend(&database, &clock, 2, 64).await;
    let limit = Limit::sliding_window(rate("10/m"));
    let outcome =
        decide_like_memory(&backend, &clock, &limit, STEPPING_BACK, || async { Ok(()) }).await;
    database.drop_tables().await;
    let (admitted, rejected) = outcome.unwrap_or_else(|error| panic!("{engine:?}: {error}"));
    assert!(
        admitted >= 10 && rejected >= 8,
        "{engine:?}: {admitted} admitted, {rejected} rejected"
    );
}

#[tokio::test]
async fn postgres_decides_like_memory_when_the_clock_steps_back() {
    a_clock_stepping_back_decides_like_memory(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_decides_like_memory_when_the_clock_steps_back() {
    a_clock_stepping_back_decides_like_memory(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_decides_like_memory_when_the_clock_steps_back() {
    a_clock_stepping_back_decides_like_memory(Engine::Sqlite).await;
}

/// A connection of the test's own, outside the backend, to move the log's running totals.
enum Direct {
    Postgres(sqlx::PgPool),
    Mysql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

impl Direct {
    async fn connect(database: &Database) -> Result<Self, sqlx::Error> {
        Ok(match database.engine {
            Engine::Postgres => Self::Postgres(sqlx::PgPool::connect(&database.url).await?),
            Engine::Mysql => Self::Mysql(sqlx::MySqlPool::connect(&database.url).await?),
            Engine::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&database.url)?;
                Self::Sqlite(sqlx::SqlitePool::connect_with(options).await?)
            }
        })
    }

    /// The newest entry's running total (the test's only key), if there is an entry.
    async fn newest_total(&self, prefix: &str) -> Result<Option<i64>, sqlx::Error> {
        let newest = format!("SELECT MAX(through) FROM {prefix}log_v3");
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(&newest).fetch_one(pool).await,
            Self::Mysql(pool) => sqlx::query_scalar(&newest).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(&newest).fetch_one(pool).await,
        }
    }

    /// Adds one amount to every running total of the log, so that the newest, `newest`, reaches
    /// `top`. The decisions cannot change: only differences between totals mean anything.
    async fn raise_totals(&self, prefix: &str, newest: i64, top: i64) -> Result<(), sqlx::Error> {
        let by = top - newest;
        let raise = format!("UPDATE {prefix}log_v3 SET through = through + ?");
        match self {
            Self::Postgres(pool) => {
                let raise = raise.replace('?', "$1");
                sqlx::query(&raise).bind(by).execute(pool).await?;
            }
            Self::Mysql(pool) => {
                sqlx::query(&raise).bind(by).execute(pool).await?;
            }
            Self::Sqlite(pool) => {
                sqlx::query(&raise).bind(by).execute(pool).await?;
            }
        }
        Ok(())
    }

    async fn close(self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Mysql(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

/// A limit of 2^49 a minute and costs of up to 2^48, clock steps back included: before every
/// step the running totals are raised to just below `i64::MAX`, by a margin smaller than most
/// costs, so most admissions must rebase them first.
fn near_the_top_steps() -> Vec<Step> {
    const UNIT: u64 = 1 << 44;
    let mut steps = Vec::new();
    let mut at_ms = 100_000_u64;
    for index in 0..48_u64 {
        // Mostly forward, sometimes not at all or back across a few entries.
        at_ms = match index % 7 {
            3 => at_ms - 45_000,
            5 => at_ms,
            6 => at_ms + 30_000,
            _ => at_ms + 20_000,
        };
        let cost = UNIT * (1 + (index * 37) % 16);
        steps.push(if index % 5 == 4 {
            peek(at_ms, cost)
        } else {
            check(at_ms, cost)
        });
    }
    steps
}

async fn totals_near_the_limit_are_rebased(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("swtop_{engine:?}")).await else {
        return;
    };
    let outcome = near_the_top(&database).await;
    database.drop_tables().await;
    let (admitted, rejected, rebased) =
        outcome.unwrap_or_else(|error| panic!("{engine:?}: {error}"));
    assert!(
        admitted >= 30 && rejected >= 10 && rebased >= 20,
        "{engine:?}: {admitted} admitted, {rejected} rejected, {rebased} rebased"
    );
}

/// [`near_the_top_steps`], the totals raised before each; how many steps were admitted and
/// rejected, and how many times the totals were found rebased.
async fn near_the_top(database: &Database) -> Result<(usize, usize, usize), String> {
    let clock = ManualClock::new(T0_MS);
    let backend = open_backend(database, &clock, 2, 64).await;
    let direct = Direct::connect(database)
        .await
        .map_err(|error| format!("connecting: {error}"))?;
    let limit = Limit::sliding_window(rate("562949953421312/m"));
    let prefix = &database.prefix;
    let mut margins = [3_i64 << 42, 1, 5 << 44, 0].into_iter().cycle();
    // Totals far below the top after they were raised there: the step between rebased them.
    let rebased = std::cell::Cell::new(0);
    let outcome = decide_like_memory(&backend, &clock, &limit, &near_the_top_steps(), || {
        let top = i64::MAX - margins.next().unwrap_or_default();
        let (direct, rebased) = (&direct, &rebased);
        async move {
            let newest = direct
                .newest_total(prefix)
                .await
                .map_err(|error| format!("reading the totals: {error}"))?;
            let Some(newest) = newest else {
                return Ok(());
            };
            if newest < 1 << 62 {
                rebased.set(rebased.get() + 1);
            }
            if newest < top {
                direct
                    .raise_totals(prefix, newest, top)
                    .await
                    .map_err(|error| format!("raising the totals: {error}"))?;
            }
            Ok(())
        }
    })
    .await;
    direct.close().await;
    let (admitted, rejected) = outcome?;
    Ok((admitted, rejected, rebased.get()))
}

#[tokio::test]
async fn postgres_rebases_totals_near_the_bigint_limit() {
    totals_near_the_limit_are_rebased(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_rebases_totals_near_the_bigint_limit() {
    totals_near_the_limit_are_rebased(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_rebases_totals_near_the_bigint_limit() {
    totals_near_the_limit_are_rebased(Engine::Sqlite).await;
}
