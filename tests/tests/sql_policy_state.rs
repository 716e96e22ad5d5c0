//! State per (key, policy) on the SQL engines, against real PostgreSQL and MariaDB/MySQL (or
//! private servers the test support starts) and SQLite in a temporary file: limits of different
//! rates or algorithms on one key never share state, identical limits do, a reset forgets every
//! limit of a key; a database of an earlier version (state per quota index,
//! `tests/fixtures/sql_v1`) keeps working after the upgrade, and so does one whose sliding logs
//! a process of the previous version (the log read whole, `tests/fixtures/sql_v2`) still
//! counts beside this one. Every test works in tables of its own prefix and drops them at the
//! end, so tests run in parallel.

use std::str::FromStr as _;
use std::time::Duration;

use ratelimit_core::{Algorithm, Backend, Decision, Limit, ManualClock, Rate, SqlBackend};
use ratelimit_tests::conformance::T0_MS;
use ratelimit_tests::sql_database::{Database, Engine};

async fn open_backend(database: &Database, clock: &ManualClock) -> SqlBackend {
    let builder = database
        .builder()
        .clock(clock.clone())
        .pool_size(2)
        .timeout(Duration::from_secs(10));
    database.connect(builder).await
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

async fn check(backend: &SqlBackend, key: &str, limit: &Limit) -> Result<Decision, String> {
    backend
        .check(key, limit)
        .await
        .map_err(|error| format!("check {key} {limit:?}: {error}"))
}

async fn peek(backend: &SqlBackend, key: &str, limit: &Limit) -> Result<Decision, String> {
    backend
        .peek(key, limit)
        .await
        .map_err(|error| format!("peek {key} {limit:?}: {error}"))
}

/// `rounds` checks of each of `limits` on `key`, taking turns; how many each admitted.
async fn admitted_in_turns(
    backend: &SqlBackend,
    key: &str,
    limits: &[&Limit],
    rounds: usize,
) -> Result<Vec<u64>, String> {
    let mut admitted = vec![0; limits.len()];
    for _ in 0..rounds {
        for (limit, count) in limits.iter().zip(&mut admitted) {
            *count += u64::from(check(backend, key, limit).await?.allowed);
        }
    }
    Ok(admitted)
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, expected: T) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {expected:?}"))
    }
}

/// `5/m` and `10/h` fixed windows on one key, checked in turns: each admits exactly its own
/// count, and the hour's 11th request is refused after the minute's window rolled over.
async fn minute_and_hour_windows_count_apart(
    backend: &SqlBackend,
    clock: &ManualClock,
) -> Result<(), String> {
    let minute = Limit::fixed_window(rate("5/m"));
    let hour = Limit::fixed_window(rate("10/h"));
    let both = [&minute, &hour];
    let key = "user:1";
    expect(
        "minute 0",
        admitted_in_turns(backend, key, &both, 7).await?,
        vec![5, 7],
    )?;
    clock.advance(Duration::from_secs(60));
    expect(
        "minute 1",
        admitted_in_turns(backend, key, &both, 7).await?,
        vec![5, 3],
    )?;
    clock.advance(Duration::from_secs(60));
    // The minute's window is new; the hour has counted 10 and refuses the 11th.
    let eleventh = check(backend, key, &hour).await?;
    expect(
        "11th in the hour",
        (eleventh.allowed, eleventh.limit, eleventh.remaining),
        (false, 10, 0),
    )?;
    let fresh_minute = check(backend, key, &minute).await?;
    expect(
        "minute 2",
        (
            fresh_minute.allowed,
            fresh_minute.limit,
            fresh_minute.remaining,
        ),
        (true, 5, 4),
    )?;
    clock.set_millis(T0_MS + 3_600_000);
    expect(
        "next hour",
        admitted_in_turns(backend, key, &both, 6).await?,
        vec![5, 6],
    )
}

/// One rate under each algorithm on one key: five states, each admitting its own count.
async fn algorithms_of_one_rate_count_apart(
    backend: &SqlBackend,
    clock: &ManualClock,
) -> Result<(), String> {
    let limits: Vec<Limit> = Algorithm::ALL
        .into_iter()
        .map(|algorithm| Limit::new(rate("3/m"), algorithm))
        .collect();
    let every: Vec<&Limit> = limits.iter().collect();
    expect(
        "every algorithm",
        admitted_in_turns(backend, "shared", &every, 4).await?,
        vec![3; 5],
    )?;
    // A token bucket and a fixed window of one rate: the bucket refills one token in 20 s,
    // and the window still refuses until the minute ends.
    let fixed = Limit::fixed_window(rate("3/m"));
    let tokens = Limit::token_bucket(rate("3/m"));
    clock.advance(Duration::from_secs(20));
    expect(
        "after 20 s: token bucket, fixed window",
        admitted_in_turns(backend, "shared", &[&tokens, &fixed], 2).await?,
        vec![1, 0],
    )
}

/// Sliding logs of `2/m` and `4/h` on one key keep their own entries.
async fn sliding_logs_of_two_rates_count_apart(
    backend: &SqlBackend,
    clock: &ManualClock,
) -> Result<(), String> {
    let minute = Limit::sliding_window(rate("2/m"));
    let hour = Limit::sliding_window(rate("4/h"));
    let both = [&minute, &hour];
    expect(
        "first minute",
        admitted_in_turns(backend, "log", &both, 3).await?,
        vec![2, 3],
    )?;
    clock.advance(Duration::from_secs(61));
    expect(
        "after 61 s",
        admitted_in_turns(backend, "log", &both, 3).await?,
        vec![2, 1],
    )?;
    let hour_now = peek(backend, "log", &hour).await?;
    expect(
        "the hour's log",
        (hour_now.allowed, hour_now.remaining),
        (false, 0),
    )
}

/// Limits that are the same policy share one state, however they were built or ordered, and
/// a rate that lists one quota twice counts a request once.
async fn identical_limits_share(backend: &SqlBackend, _: &ManualClock) -> Result<(), String> {
    let built = Limit::fixed_window(rate("3/m"));
    let parsed = Limit::new(rate("3/m"), Algorithm::FixedWindow);
    expect(
        "one count over two values",
        admitted_in_turns(backend, "same", &[&built, &parsed], 2).await?,
        vec![2, 1],
    )?;
    let twice = Limit::fixed_window(rate("3/m;3/m"));
    expect(
        "the rate listing it twice",
        peek(backend, "same", &twice).await?.allowed,
        false,
    )?;
    expect(
        "a fresh key, one quota listed twice",
        admitted_in_turns(backend, "twice", &[&twice], 4).await?,
        vec![3],
    )?;
    // The quotas of a compound rate are each shared with the same single limits, in any order.
    let minute_first = Limit::fixed_window(rate("5/m;10/h"));
    let hour_first = Limit::fixed_window(rate("10/h;5/m"));
    expect(
        "compound rates in two orders",
        admitted_in_turns(backend, "order", &[&minute_first, &hour_first], 3).await?,
        vec![3, 2],
    )?;
    let hour = peek(backend, "order", &Limit::fixed_window(rate("10/h"))).await?;
    expect("the hour alone", (hour.allowed, hour.remaining), (true, 4))
}

/// A reset forgets every limit's state of the key, whatever its rate or algorithm, and nothing
/// of another key.
async fn reset_forgets_every_limit_of_the_key(
    backend: &SqlBackend,
    _: &ManualClock,
) -> Result<(), String> {
    let mut limits = Vec::new();
    for algorithm in Algorithm::ALL {
        for text in ["1/h", "1/d"] {
            limits.push(Limit::new(rate(text), algorithm));
        }
    }
    for limit in &limits {
        for key in ["mine", "other"] {
            expect(
                &format!("first check of {key} {limit:?}"),
                check(backend, key, limit).await?.allowed,
                true,
            )?;
        }
    }
    backend
        .reset("mine")
        .await
        .map_err(|error| format!("reset: {error}"))?;
    for limit in &limits {
        expect(
            &format!("mine after reset {limit:?}"),
            peek(backend, "mine", limit).await?.allowed,
            true,
        )?;
        expect(
            &format!("other after reset {limit:?}"),
            peek(backend, "other", limit).await?.allowed,
            false,
        )?;
    }
    Ok(())
}

/// One test per engine for each scenario, each on its own tables with a clock at [`T0_MS`]
/// (an hour boundary).
macro_rules! on_every_engine {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            async fn run(engine: Engine) {
                let Some(database) = Database::new(engine, stringify!($scenario)).await else {
                    return;
                };
                let clock = ManualClock::new(T0_MS);
                let backend = open_backend(&database, &clock).await;
                let outcome = super::$scenario(&backend, &clock).await;
                database.drop_tables().await;
                if let Err(error) = outcome {
                    panic!("{engine:?}: {error}");
                }
            }

            #[tokio::test]
            async fn postgres() {
                run(Engine::Postgres).await;
            }

            #[tokio::test]
            async fn mysql() {
                run(Engine::Mysql).await;
            }

            #[tokio::test]
            async fn sqlite() {
                run(Engine::Sqlite).await;
            }
        }
    )*};
}

on_every_engine!(
    minute_and_hour_windows_count_apart,
    algorithms_of_one_rate_count_apart,
    sliding_logs_of_two_rates_count_apart,
    identical_limits_share,
    reset_forgets_every_limit_of_the_key,
);

/// An earlier version's schema, as it created it.
#[derive(Clone, Copy, Debug)]
enum Fixture {
    /// State per quota index (`tests/fixtures/sql_v1`).
    V1,
    /// State per policy, the sliding log read whole (`tests/fixtures/sql_v2`).
    V2,
}

fn old_schema(fixture: Fixture, engine: Engine, prefix: &str) -> String {
    let sql = match (fixture, engine) {
        (Fixture::V1, Engine::Postgres) => concat!(
            include_str!("../fixtures/sql_v1/postgres.sql"),
            include_str!("../fixtures/sql_v1/postgres_batch.sql")
        ),
        (Fixture::V1, Engine::Mysql) => include_str!("../fixtures/sql_v1/mysql.sql"),
        (Fixture::V1, Engine::Sqlite) => include_str!("../fixtures/sql_v1/sqlite.sql"),
        (Fixture::V2, Engine::Postgres) => concat!(
            include_str!("../fixtures/sql_v2/postgres.sql"),
            include_str!("../fixtures/sql_v2/postgres_batch.sql")
        ),
        (Fixture::V2, Engine::Mysql) => include_str!("../fixtures/sql_v2/mysql.sql"),
        (Fixture::V2, Engine::Sqlite) => include_str!("../fixtures/sql_v2/sqlite.sql"),
    };
    sql.replace("{prefix}", prefix)
}

/// A connection of the test's own, outside the backend: it plays the previous version's
/// process and looks at the schema.
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
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&database.url)?
                    .create_if_missing(true);
                Self::Sqlite(sqlx::SqlitePool::connect_with(options).await?)
            }
        })
    }

    /// Creates an earlier version's tables and routines.
    async fn install_old_schema(&self, fixture: Fixture, prefix: &str) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(pool) => {
                let schema = old_schema(fixture, Engine::Postgres, prefix);
                sqlx::raw_sql(&schema).execute(pool).await?;
            }
            Self::Mysql(pool) => {
                // Sent one statement at a time, as that version's migration did.
                for statement in old_schema(fixture, Engine::Mysql, prefix).split("\n-- //\n") {
                    sqlx::raw_sql(statement).execute(pool).await?;
                }
            }
            Self::Sqlite(pool) => {
                let schema = old_schema(fixture, Engine::Sqlite, prefix);
                sqlx::raw_sql(&schema).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// One check of `5/m` (fixed window) on `key` at `now`, the way a process of the previous
    /// version makes it; whether it was allowed. On SQLite, where that version decided in Rust,
    /// its write: the count in the window, one more.
    async fn old_check(&self, prefix: &str, key: &str, now: u64) -> Result<bool, sqlx::Error> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        match self {
            Self::Postgres(pool) => {
                let reply: Vec<i64> = sqlx::query_scalar(&format!(
                    "SELECT {prefix}fw_check_v1($1, $2, 1, true, ARRAY[5, 60000]::bigint[])"
                ))
                .bind(key.as_bytes())
                .bind(now)
                .fetch_one(pool)
                .await?;
                Ok(reply.first() == Some(&1))
            }
            Self::Mysql(pool) => {
                let reply: Vec<String> = sqlx::query_scalar(&format!(
                    "CALL {prefix}check_v1(?, 'fw', ?, 1, true, 1, '5,60000')"
                ))
                .bind(key.as_bytes())
                .bind(now)
                .fetch_all(pool)
                .await?;
                Ok(reply.first().is_some_and(|reply| reply.starts_with("1,")))
            }
            Self::Sqlite(pool) => {
                let start = now - now % 60_000;
                sqlx::query(&format!(
                    "INSERT INTO {prefix}state \
                     (key, algorithm, quota, since_ms, amount, previous, expires_at_ms) \
                     VALUES (?1, 'fw', 0, ?2, 1, 0, ?3) \
                     ON CONFLICT (key, algorithm, quota) DO UPDATE SET amount = amount + 1"
                ))
                .bind(key.as_bytes())
                .bind(start)
                .bind(start + 60_000)
                .execute(pool)
                .await?;
                Ok(true)
            }
        }
    }

    /// One check of the sliding log `quota` (its policy id, limit and window) on `key` at `now`,
    /// the way a process of the version before running totals makes it; whether it was
    /// allowed. On SQLite, where that version decided in Rust, the same statements: the counted
    /// entries of `log_v2` added up, then for an admission the expired entries dropped, the new
    /// one numbered after the state row's sequence, and the state row written.
    async fn v2_sliding_check(
        &self,
        prefix: &str,
        key: &str,
        (policy, limit, window): (i64, i64, i64),
        now: u64,
    ) -> Result<bool, sqlx::Error> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        match self {
            Self::Postgres(pool) => {
                let reply: Vec<i64> = sqlx::query_scalar(&format!(
                    "SELECT {prefix}sw_check_v2($1, $2, 1, true, ARRAY[$3]::bigint[], \
                     ARRAY[$4, $5]::bigint[])"
                ))
                .bind(key.as_bytes())
                .bind(now)
                .bind(policy)
                .bind(limit)
                .bind(window)
                .fetch_one(pool)
                .await?;
                Ok(reply.first() == Some(&1))
            }
            Self::Mysql(pool) => {
                let reply: Vec<String> = sqlx::query_scalar(&format!(
                    "CALL {prefix}check_v2(?, 'sw', ?, 1, true, 1, ?, ?)"
                ))
                .bind(key.as_bytes())
                .bind(now)
                .bind(policy.to_string())
                .bind(format!("{limit},{window}"))
                .fetch_all(pool)
                .await?;
                Ok(reply.first().is_some_and(|reply| reply.starts_with("1,")))
            }
            Self::Sqlite(pool) => {
                let mut transaction = pool.begin().await?;
                let of_key = "WHERE key = ?1 AND policy = ?2";
                let used: i64 = sqlx::query_scalar(&format!(
                    "SELECT COALESCE(SUM(cost), 0) FROM {prefix}log_v2 {of_key} AND at_ms > ?3"
                ))
                .bind(key.as_bytes())
                .bind(policy)
                .bind(now - window)
                .fetch_one(&mut *transaction)
                .await?;
                if used + 1 > limit {
                    return Ok(false);
                }
                let statements = [
                    format!("DELETE FROM {prefix}log_v2 {of_key} AND at_ms <= ?3 - ?4"),
                    format!(
                        "INSERT INTO {prefix}log_v2 (key, policy, at_ms, seq, cost, expires_at_ms) \
                         SELECT ?1, ?2, ?3, COALESCE(MAX(amount), 0) + 1, 1, ?3 + ?4 \
                         FROM {prefix}state_v2 {of_key}"
                    ),
                    format!(
                        "INSERT INTO {prefix}state_v2 \
                         (key, policy, since_ms, amount, previous, expires_at_ms) \
                         SELECT ?1, ?2, MAX(at_ms), MAX(seq), 0, MAX(at_ms) + ?4 \
                         FROM {prefix}log_v2 {of_key} \
                         ON CONFLICT (key, policy) DO UPDATE SET since_ms = excluded.since_ms, \
                         amount = excluded.amount, expires_at_ms = excluded.expires_at_ms"
                    ),
                ];
                for statement in &statements {
                    sqlx::query(statement)
                        .bind(key.as_bytes())
                        .bind(policy)
                        .bind(now)
                        .bind(window)
                        .execute(&mut *transaction)
                        .await?;
                }
                transaction.commit().await?;
                Ok(true)
            }
        }
    }

    /// The count the previous version's state table holds for its `5/m` window.
    async fn old_count(&self, prefix: &str) -> Result<i64, sqlx::Error> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(&format!(
                    "SELECT COALESCE(SUM(amount), 0)::bigint FROM {prefix}state"
                ))
                .fetch_one(pool)
                .await
            }
            Self::Mysql(pool) => {
                sqlx::query_scalar(&format!(
                    "SELECT CAST(COALESCE(SUM(amount), 0) AS SIGNED) FROM {prefix}state"
                ))
                .fetch_one(pool)
                .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar(&format!(
                    "SELECT COALESCE(SUM(amount), 0) FROM {prefix}state"
                ))
                .fetch_one(pool)
                .await
            }
        }
    }

    /// How many tables and routines have names starting with `prefix`.
    async fn objects_named(&self, prefix: &str) -> Result<i64, sqlx::Error> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND left(c.relname, length($1)) = $1) \
                     + (SELECT count(*) FROM pg_proc p \
                     JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = current_schema() AND left(p.proname, length($1)) = $1)",
                )
                .bind(prefix)
                .fetch_one(pool)
                .await
            }
            Self::Mysql(pool) => {
                sqlx::query_scalar(
                    "SELECT (SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() \
                     AND LEFT(table_name, CHAR_LENGTH(?)) = ?) \
                     + (SELECT COUNT(*) FROM information_schema.routines \
                     WHERE routine_schema = DATABASE() \
                     AND LEFT(routine_name, CHAR_LENGTH(?)) = ?)",
                )
                .bind(prefix)
                .bind(prefix)
                .bind(prefix)
                .bind(prefix)
                .fetch_one(pool)
                .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE substr(name, 1, length(?1)) = ?1",
                )
                .bind(prefix)
                .fetch_one(pool)
                .await
            }
        }
    }

    async fn close(self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Mysql(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

/// A database the previous version created and counted in: the current backend connects to
/// it (twice: the migration is idempotent), counts afresh in its own tables, and leaves the old
/// ones to the old version's processes, which keep working; dropping the tables removes both
/// versions' tables and routines.
async fn upgrade(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("upgrade_{engine:?}")).await else {
        return;
    };
    let direct = Direct::connect(&database)
        .await
        .unwrap_or_else(|error| panic!("{engine:?}: connecting: {error}"));
    let outcome = upgrade_steps(&database, &direct).await;
    database.drop_tables().await;
    let left = direct.objects_named(&database.prefix).await;
    direct.close().await;
    if let Err(error) = outcome {
        panic!("{engine:?}: {error}");
    }
    assert_eq!(
        left.ok(),
        Some(0),
        "{engine:?}: tables or routines of {}* left after drop_tables",
        database.prefix
    );
}

async fn upgrade_steps(database: &Database, direct: &Direct) -> Result<(), String> {
    let prefix = &database.prefix;
    let sql = |what: &'static str| move |error: sqlx::Error| format!("{what}: {error}");
    direct
        .install_old_schema(Fixture::V1, prefix)
        .await
        .map_err(sql("installing the old schema"))?;
    for _ in 0..3 {
        let allowed = direct
            .old_check(prefix, "k", T0_MS)
            .await
            .map_err(sql("old check"))?;
        expect("an old check before the upgrade", allowed, true)?;
    }

    let clock = ManualClock::new(T0_MS);
    let backend = open_backend(database, &clock).await;
    let minute = Limit::fixed_window(rate("5/m"));
    let hour = Limit::fixed_window(rate("10/h"));
    // The old rows are not read: the new tables count from zero, each limit on its own.
    expect(
        "after the upgrade",
        admitted_in_turns(&backend, "k", &[&minute, &hour], 6).await?,
        vec![5, 6],
    )?;
    // A process of the old version still counts in its own tables.
    let allowed = direct
        .old_check(prefix, "k", T0_MS)
        .await
        .map_err(sql("old check after the upgrade"))?;
    expect("an old check after the upgrade", allowed, true)?;
    expect(
        "the old count",
        direct.old_count(prefix).await.map_err(sql("old count"))?,
        4,
    )?;
    // Connecting again migrates nothing more and sees the same state.
    let again = open_backend(database, &clock).await;
    expect(
        "a second backend",
        peek(&again, "k", &minute).await?.allowed,
        false,
    )?;
    let hour_left = peek(&again, "k", &hour).await?;
    // Six counted; this request would leave three.
    expect("the hour, seen again", hour_left.remaining, 3)?;
    again
        .reset("k")
        .await
        .map_err(|error| format!("reset: {error}"))?;
    expect(
        "after a reset",
        peek(&backend, "k", &minute).await?.allowed,
        true,
    )
}

#[tokio::test]
async fn postgres_database_of_the_previous_version_keeps_working() {
    upgrade(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_database_of_the_previous_version_keeps_working() {
    upgrade(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_database_of_the_previous_version_keeps_working() {
    upgrade(Engine::Sqlite).await;
}

/// A database the version before running totals created, one of whose processes keeps
/// counting sliding logs beside this version on the same keys and limits (a rolling upgrade):
/// each version admits exactly its own limit (this one counts in `log_v3` from zero and never
/// reads the previous version's log, nor the state row that version keeps numbering its entries
/// with), neither fails, the cleanup removes both versions' expired rows, and dropping the
/// tables removes both versions' tables and routines.
async fn previous_version_beside(engine: Engine) {
    let Some(database) = Database::new(engine, &format!("beside_{engine:?}")).await else {
        return;
    };
    let direct = Direct::connect(&database)
        .await
        .unwrap_or_else(|error| panic!("{engine:?}: connecting: {error}"));
    let outcome = beside_steps(&database, &direct).await;
    database.drop_tables().await;
    let left = direct.objects_named(&database.prefix).await;
    direct.close().await;
    if let Err(error) = outcome {
        panic!("{engine:?}: {error}");
    }
    assert_eq!(
        left.ok(),
        Some(0),
        "{engine:?}: tables or routines of {}* left after drop_tables",
        database.prefix
    );
}

async fn beside_steps(database: &Database, direct: &Direct) -> Result<(), String> {
    let prefix = &database.prefix;
    let sql = |what: &'static str| move |error: sqlx::Error| format!("{what}: {error}");
    direct
        .install_old_schema(Fixture::V2, prefix)
        .await
        .map_err(sql("installing the previous schema"))?;
    let limit = Limit::sliding_window(rate("3/m"));
    let (_, id) = limit
        .policies_with_ids()
        .map_err(|error| error.to_string())?
        .next()
        .ok_or("no policy")?;
    let quota = (id.as_i64(), 3, 60_000);
    // `count` checks of the previous version at `now`; how many it admitted.
    let old_checks = |now: u64, count: usize| async move {
        let mut admitted = 0;
        for _ in 0..count {
            let allowed = direct
                .v2_sliding_check(prefix, "k", quota, now)
                .await
                .map_err(sql("a check of the previous version"))?;
            admitted += usize::from(allowed);
        }
        Ok::<_, String>(admitted)
    };
    expect(
        "the previous version, before",
        old_checks(T0_MS, 2).await?,
        2,
    )?;

    let clock = ManualClock::new(T0_MS);
    let backend = open_backend(database, &clock).await;
    // Turns within one millisecond: a version that removed or renumbered the other's state
    // row would make it reuse an entry number there.
    for round in 0..2 {
        expect(
            &format!("this version, round {round}"),
            admitted_in_turns(&backend, "k", &[&limit], 2).await?,
            vec![if round == 0 { 2 } else { 1 }],
        )?;
        expect(
            &format!("the previous version, round {round}"),
            old_checks(T0_MS, 1).await?,
            usize::from(round == 0),
        )?;
    }
    let now = peek(&backend, "k", &limit).await?;
    expect(
        "this version's count",
        (now.allowed, now.remaining),
        (false, 0),
    )?;

    // A minute later both start over, each in its own log.
    clock.set_millis(T0_MS + 61_000);
    expect(
        "the previous version, a minute later",
        old_checks(T0_MS + 61_000, 4).await?,
        3,
    )?;
    expect(
        "this version, a minute later",
        admitted_in_turns(&backend, "k", &[&limit], 4).await?,
        vec![3],
    )?;

    // Everything has expired: the previous version's three entries and state row, and this
    // version's three entries.
    clock.set_millis(T0_MS + 200_000);
    let expired = backend.count_expired().await.map_err(|e| e.to_string())?;
    let removed = backend.cleanup().await.map_err(|e| e.to_string())?;
    let left = backend.count_expired().await.map_err(|e| e.to_string())?;
    expect(
        "expired, removed, left",
        (expired, removed, left),
        (7, 7, 0),
    )
}

#[tokio::test]
async fn postgres_previous_version_counts_sliding_logs_beside_this_one() {
    previous_version_beside(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_previous_version_counts_sliding_logs_beside_this_one() {
    previous_version_beside(Engine::Mysql).await;
}

#[tokio::test]
async fn sqlite_previous_version_counts_sliding_logs_beside_this_one() {
    previous_version_beside(Engine::Sqlite).await;
}
