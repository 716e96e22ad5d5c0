//! After a load or fault test: nothing the test wrote is left to live forever (SPEC §4, "state
//! expires on its own").
//!
//! ```no_run
//! use std::time::Duration;
//! use ratelimit_tests::expiry_audit;
//!
//! # async fn a_test(url: &str, prefix: &str, sql_url: &str, table_prefix: &str) {
//! // Every key under the prefix has a TTL (but the hash-tag secret, configuration by design).
//! expiry_audit::assert_redis_keys_expire(url, prefix).await;
//! // Every row has a finite expiry, and a cleanup an hour on (the longest window) deletes all.
//! expiry_audit::assert_sql_rows_expire(sql_url, table_prefix, None, Duration::from_secs(3_600))
//!     .await;
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratelimit_core::{Backend, ManualClock, SqlBackend};

/// Keys per `SCAN` step, and per pipeline of `PTTL`s.
const SCAN_COUNT: usize = 1_000;

/// Added to the test's last instant and longest window before the audit's cleanup: covers the
/// distance between the database's clock and this process's.
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// The key every backend under a prefix shares the hash-tag secret through: configuration,
/// without a TTL by design (see `RedisBackendBuilder::hash_tag_secret`).
fn secret_key(prefix: &str) -> String {
    format!("{prefix}hash-tag-secret")
}

/// Asserts that every key under `prefix` on the server at `url` has a TTL, but the hash-tag
/// secret. Returns how many keys with a TTL it saw.
///
/// # Panics
/// When a key has no TTL, or the server cannot be reached.
pub async fn assert_redis_keys_expire(url: &str, prefix: &str) -> usize {
    let (without_ttl, with_ttl) = keys_without_ttl(url, prefix).await;
    assert!(
        without_ttl.is_empty(),
        "{url}: {} key(s) under {prefix:?} have no TTL: {without_ttl:?}",
        without_ttl.len()
    );
    with_ttl
}

/// [`assert_redis_keys_expire`] on every node of a Cluster (each holds its own slots' keys).
/// Returns how many keys with a TTL it saw on all of them.
///
/// # Panics
/// When a key on any node has no TTL, or a node cannot be reached.
pub async fn assert_redis_cluster_keys_expire(urls: &[String], prefix: &str) -> usize {
    let mut with_ttl = 0;
    for url in urls {
        with_ttl += assert_redis_keys_expire(url, prefix).await;
    }
    with_ttl
}

/// The keys under `prefix` without a TTL (but the secret), and how many have one.
async fn keys_without_ttl(url: &str, prefix: &str) -> (Vec<String>, usize) {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let pattern = format!("{}*", glob_escaped(prefix));
    let secret = secret_key(prefix);
    let (mut without_ttl, mut with_ttl) = (Vec::new(), 0);
    let mut cursor: u64 = 0;
    loop {
        let (next, names): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("SCAN on {url}: {e}"));
        let mut pttl = redis::pipe();
        for name in &names {
            pttl.cmd("PTTL").arg(name);
        }
        // A step may find nothing, and an empty pipeline is an error.
        let ttls: Vec<i64> = if names.is_empty() {
            Vec::new()
        } else {
            pttl.query_async(&mut connection)
                .await
                .unwrap_or_else(|e| panic!("PTTL on {url}: {e}"))
        };
        for (name, ttl) in names.into_iter().zip(ttls) {
            match ttl {
                // -1: no TTL. -2: expired since SCAN listed it.
                -1 if name != secret => without_ttl.push(name),
                -1 | -2 => {}
                _ => with_ttl += 1,
            }
        }
        if next == 0 {
            return (without_ttl, with_ttl);
        }
        cursor = next;
    }
}

/// `text` with Redis's glob characters escaped, for `SCAN … MATCH`.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Asserts that every row of the tables under `table_prefix` at `url` (PostgreSQL, MySQL or
/// SQLite) has a finite expiry: a cleanup at an injected instant `longest` (the longest window
/// or bucket time the test used) after the test's last one deletes every row. `last_ms` is the
/// latest instant of the test's injected clock when that is later than now; `None` for the
/// database's clock or an injected one in the past. Returns how many rows the cleanup deleted.
///
/// # Panics
/// When a row is left after the cleanup, or the database cannot be reached.
pub async fn assert_sql_rows_expire(
    url: &str,
    table_prefix: &str,
    last_ms: Option<u64>,
    longest: Duration,
) -> u64 {
    let horizon_ms = horizon_ms(last_ms, longest);
    let before = count_rows(url, table_prefix).await;
    let cleaner = SqlBackend::builder(url)
        .table_prefix(table_prefix)
        .clock(ManualClock::new(horizon_ms))
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
    let removed = cleaner
        .cleanup()
        .await
        .unwrap_or_else(|error| panic!("cleanup of {table_prefix}* at {url}: {error}"));
    let left = count_rows(url, table_prefix).await;
    assert_eq!(
        left, 0,
        "{url}: {left} of {before} row(s) under {table_prefix:?} outlive a cleanup at \
         {horizon_ms} ms ({longest:?} after the test's last instant; {removed} removed)"
    );
    // The tables counted are the ones the cleanup covers (a counting query that found no
    // table would see nothing left, and prove nothing).
    assert_eq!(
        before, removed,
        "{url}: counted {before} row(s) under {table_prefix:?}, the cleanup removed {removed}"
    );
    removed
}

/// The test's last instant (its injected clock, or this host's time, whichever is later) plus
/// `longest` and [`CLOCK_SLACK`].
fn horizon_ms(last_ms: Option<u64>, longest: Duration) -> u64 {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let after = u64::try_from((longest + CLOCK_SLACK).as_millis()).unwrap_or(u64::MAX);
    last_ms.unwrap_or(0).max(wall_ms).saturating_add(after)
}

/// Rows in every table under `table_prefix` that has an `expires_at_ms` column (the state and
/// sliding-log tables of any version).
async fn count_rows(url: &str, table_prefix: &str) -> u64 {
    let counted = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await;
        let list = "SELECT table_name::text FROM information_schema.columns \
                    WHERE column_name = 'expires_at_ms' AND table_schema = current_schema()";
        match pool {
            Ok(pool) => rows_in(&pool, list, table_prefix).await,
            Err(error) => Err(error),
        }
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        let pool = sqlx::MySqlPool::connect(url).await;
        let list = "SELECT CAST(table_name AS CHAR) FROM information_schema.columns \
                    WHERE column_name = 'expires_at_ms' AND table_schema = DATABASE()";
        match pool {
            Ok(pool) => rows_in(&pool, list, table_prefix).await,
            Err(error) => Err(error),
        }
    } else {
        let pool = sqlx::SqlitePool::connect(url).await;
        let list = "SELECT m.name FROM sqlite_master AS m, pragma_table_info(m.name) AS c \
                    WHERE m.type = 'table' AND c.name = 'expires_at_ms'";
        match pool {
            Ok(pool) => rows_in(&pool, list, table_prefix).await,
            Err(error) => Err(error),
        }
    };
    counted.unwrap_or_else(|error| panic!("counting rows under {table_prefix:?} at {url}: {error}"))
}

/// Rows in the tables that `list` names and whose names start with `table_prefix`.
async fn rows_in<DB>(
    pool: &sqlx::Pool<DB>,
    list: &str,
    table_prefix: &str,
) -> Result<u64, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'a> DB::Arguments<'a>: sqlx::IntoArguments<'a, DB>,
    String: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let tables: Vec<String> = sqlx::query_scalar(list).fetch_all(pool).await?;
    let mut rows = 0;
    // Table prefixes are plain identifiers (the backend checks them), safe to quote as names.
    for table in tables.iter().filter(|name| name.starts_with(table_prefix)) {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await?;
        rows += u64::try_from(count).unwrap_or(0);
    }
    pool.close().await;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(glob_escaped("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn the_horizon_is_after_the_later_of_the_clocks() {
        let longest = Duration::from_secs(3_600);
        let far = 4_000_000_000_000;
        assert_eq!(horizon_ms(Some(far), longest), far + 3_660_000);
        assert!(horizon_ms(Some(0), longest) > 1_700_000_000_000);
    }
}
