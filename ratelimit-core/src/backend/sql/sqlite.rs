//! SQLite: the state is loaded and written back inside one `BEGIN IMMEDIATE` transaction (the
//! database's single writer lock), and the Rust algorithms themselves decide, so SQLite agrees
//! with the memory backend by construction. SQLite runs in the process, so the extra
//! statements cost no network round trips. The sliding log is read by index probes instead of
//! loaded (see [`sliding_log`]).

mod sliding_log;

use std::num::NonZeroU64;
use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::Executor as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqliteSynchronous,
};

use super::args::to_sql_int;
use super::{Deleted, Engine, Request, Settings, with_prefix};
use crate::algorithm::{BucketState, CounterState, LogCheck, Policy, State, Verdict, WindowState};
use crate::backend::BackendError;

const SCHEMA: &str = include_str!("sqlite.sql");

/// The database clock in ms: SQLite's own `now`, which is the host's clock.
const DATABASE_NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// SQLITE_BUSY and SQLITE_LOCKED (the low byte of extended result codes): another connection
/// holds the write lock; nothing was written.
const BUSY: i64 = 5;
const LOCKED: i64 = 6;

pub(super) struct SqliteEngine {
    pool: SqlitePool,
    sql: Statements,
}

/// Every statement, with the table prefix filled in once.
struct Statements {
    load_state: String,
    store_state: String,
    log: sliding_log::LogStatements,
    reset_state: String,
    reset_log: String,
    cleanup_state: String,
    cleanup_log: String,
    count_expired: String,
    /// The previous version's sliding log (`<prefix>log_v2`): this version neither creates nor
    /// reads it, but its processes may still write it during a rolling upgrade, so the cleanup
    /// deletes its expired entries while it exists.
    previous_log_exists: String,
    cleanup_previous_log: String,
    count_expired_previous_log: String,
    drop_tables: String,
}

impl Statements {
    fn new(prefix: &str) -> Self {
        let sql = |text: &str| with_prefix(text, prefix);
        let now_or = format!("COALESCE(?1, {DATABASE_NOW})");
        Self {
            load_state: sql("SELECT since_ms, amount, previous FROM {prefix}state_v2 \
                 WHERE key = ?1 AND policy = ?2 AND expires_at_ms > ?3"),
            store_state: sql("INSERT INTO {prefix}state_v2 \
                 (key, policy, since_ms, amount, previous, expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (key, policy) DO UPDATE SET since_ms = excluded.since_ms, \
                 amount = excluded.amount, previous = excluded.previous, \
                 expires_at_ms = excluded.expires_at_ms"),
            log: sliding_log::LogStatements::new(prefix),
            reset_state: sql("DELETE FROM {prefix}state_v2 WHERE key = ?1"),
            reset_log: sql("DELETE FROM {prefix}log_v3 WHERE key = ?1"),
            cleanup_state: sql(&format!(
                "DELETE FROM {{prefix}}state_v2 WHERE (key, policy) IN \
                 (SELECT key, policy FROM {{prefix}}state_v2 \
                 WHERE expires_at_ms <= {now_or} LIMIT ?2)"
            )),
            cleanup_log: sql(&cleanup_log("{prefix}log_v3", &now_or)),
            count_expired: sql(&format!(
                "SELECT (SELECT COUNT(*) FROM {{prefix}}state_v2 \
                 WHERE expires_at_ms <= {now_or}) \
                 + (SELECT COUNT(*) FROM {{prefix}}log_v3 WHERE expires_at_ms <= {now_or})"
            )),
            previous_log_exists: sql("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = '{prefix}log_v2'"),
            cleanup_previous_log: sql(&cleanup_log("{prefix}log_v2", &now_or)),
            count_expired_previous_log: sql(&format!(
                "SELECT COUNT(*) FROM {{prefix}}log_v2 WHERE expires_at_ms <= {now_or}"
            )),
            // The earlier versions' tables too (see sqlite.sql).
            drop_tables: sql("DROP TABLE IF EXISTS {prefix}state_v2; \
                 DROP TABLE IF EXISTS {prefix}log_v3; DROP TABLE IF EXISTS {prefix}log_v2; \
                 DROP TABLE IF EXISTS {prefix}state; DROP TABLE IF EXISTS {prefix}log;"),
        }
    }
}

/// Deletes at most `?2` expired entries of a sliding log `table`, at `now_or` (`?1` or the
/// database's clock).
fn cleanup_log(table: &str, now_or: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE (key, policy, at_ms, seq) IN \
         (SELECT key, policy, at_ms, seq FROM {table} WHERE expires_at_ms <= {now_or} LIMIT ?2)"
    )
}

impl SqliteEngine {
    /// Whether the previous version's sliding log exists here (see
    /// [`Statements::previous_log_exists`]).
    async fn previous_log_exists(&self) -> Result<bool, BackendError> {
        let tables: i64 = sqlx::query_scalar(&self.sql.previous_log_exists)
            .fetch_one(&self.pool)
            .await?;
        Ok(tables > 0)
    }

    /// Deletes at most `batch` expired rows with `statement`; how many it deleted.
    async fn delete_expired(
        &self,
        statement: &str,
        now: Option<i64>,
        batch: i64,
    ) -> Result<u64, BackendError> {
        let deleted = sqlx::query(statement)
            .bind(now)
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }

    /// The count `statement` answers at `now`.
    async fn count(&self, statement: &str, now: Option<i64>) -> Result<u64, BackendError> {
        let rows: i64 = sqlx::query_scalar(statement)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(rows).unwrap_or_default())
    }

    pub(super) async fn open(settings: &Settings<'_>) -> Result<Self, BackendError> {
        let in_memory = settings.url.contains(":memory:") || settings.url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(settings.url)?
            .create_if_missing(true)
            .busy_timeout(settings.timeout)
            // Safe with WAL: a power cut may lose the last commits, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal);
        let mut pool = settings.pool_options::<sqlx::Sqlite>();
        if in_memory {
            // An in-memory database lives while a connection to it is open; one connection
            // keeps it, and SQLite has one writer anyway.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            // WAL lets peeks read while a check writes.
            options = options.journal_mode(SqliteJournalMode::Wal);
        }
        let pool = pool.connect_with(options).await?;
        let mut migration = pool.begin_with("BEGIN IMMEDIATE").await?;
        // `Executor::execute` rather than `raw_sql(..).execute(..)`: the same call, but its boxed
        // `Send` future keeps `SqlBackendBuilder::build()` spawnable (rustc cannot prove the
        // unboxed one `Send` for every lifetime).
        let schema = with_prefix(SCHEMA, settings.table_prefix);
        (&mut *migration).execute(sqlx::raw_sql(&schema)).await?;
        migration.commit().await?;
        Ok(Self {
            pool,
            sql: Statements::new(settings.table_prefix),
        })
    }

    /// One quota's state, if it has not expired. (Not for the sliding log, which keeps none:
    /// see [`sliding_log`].)
    async fn load(
        &self,
        connection: &mut SqliteConnection,
        quota: &QuotaRow<'_>,
        now: u64,
    ) -> Result<Option<State>, BackendError> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(&self.sql.load_state)
            .bind(quota.key)
            .bind(quota.policy_id)
            .bind(to_sql_int("now", now)?)
            .fetch_optional(connection)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let [since, amount, previous] = <[i64; 3]>::from(row)
            .map(u64::try_from)
            .map(|value| value.map_err(|_| unexpected()));
        let (since, amount, previous) = (since?, amount?, previous?);
        Ok(Some(match quota.policy {
            Policy::FixedWindow { .. } => State::Window(WindowState {
                window_start: since,
                count: amount,
            }),
            Policy::SlidingWindowCounter { .. } => State::Counter(CounterState {
                current_start: since,
                current: amount,
                previous,
            }),
            // The sliding log keeps no state row (see `sliding_log`).
            Policy::TokenBucket { .. }
            | Policy::LeakyBucket { .. }
            | Policy::SlidingWindow { .. } => State::Bucket(BucketState {
                level: amount,
                last_ms: since,
            }),
        }))
    }

    /// One quota's verdict on a request of `cost`, and the state it was decided on (none for
    /// the sliding log, which is read by index probes and keeps no state row).
    async fn evaluate(
        &self,
        connection: &mut SqliteConnection,
        quota: &QuotaRow<'_>,
        now: u64,
        cost: u64,
    ) -> Result<(Verdict, Option<State>), BackendError> {
        if let Policy::SlidingWindow { limit, window_ms } = *quota.policy {
            let check = LogCheck {
                limit,
                window_ms,
                now_ms: now,
                cost,
            };
            let verdict = sliding_log::evaluate(&self.sql.log, connection, quota, check).await?;
            return Ok((verdict, None));
        }
        let state = self.load(connection, quota, now).await?;
        Ok((quota.policy.evaluate(state.as_ref(), now, cost), state))
    }

    /// Writes what a check leaves in one quota: the admitted request when every quota allowed,
    /// else only a first rejection's state.
    async fn record(
        &self,
        connection: &mut SqliteConnection,
        quota: &QuotaRow<'_>,
        state: Option<State>,
        all_allowed: bool,
        now: u64,
        cost: u64,
    ) -> Result<(), BackendError> {
        if let Policy::SlidingWindow { window_ms, .. } = *quota.policy {
            if all_allowed {
                sliding_log::admit(&self.sql.log, connection, quota, window_ms, now, cost).await?;
            }
            return Ok(());
        }
        let new_state = if all_allowed {
            Some(quota.policy.admit(state, now, cost))
        } else if state.is_none() {
            // A token bucket's refill clock starts at the first request, even rejected.
            quota.policy.state_after_first_rejection(now)
        } else {
            None
        };
        match new_state {
            Some(new_state) => self.store(connection, quota, &new_state, now).await,
            None => Ok(()),
        }
    }

    /// Writes `state` (what [`Policy::admit`] or a first rejection produced) for one quota.
    async fn store(
        &self,
        connection: &mut SqliteConnection,
        quota: &QuotaRow<'_>,
        state: &State,
        now: u64,
    ) -> Result<(), BackendError> {
        let expires_at = clamp(quota.policy.expires_at(state, now));
        let (since, amount, previous) = match state {
            State::Window(window) => (window.window_start, window.count, 0),
            State::Counter(counter) => (counter.current_start, counter.current, counter.previous),
            State::Bucket(bucket) => (bucket.last_ms, bucket.level, 0),
            // The sliding log is written by `sliding_log::admit`, never as a state.
            State::Log(_) => return Err(unexpected()),
        };
        sqlx::query(&self.sql.store_state)
            .bind(quota.key)
            .bind(quota.policy_id)
            .bind(to_sql_int("state", since)?)
            .bind(to_sql_int("state", amount)?)
            .bind(to_sql_int("state", previous)?)
            .bind(expires_at)
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// Where one quota's rows are: the key and the policy's id.
struct QuotaRow<'a> {
    key: &'a [u8],
    policy_id: i64,
    policy: &'a Policy,
}

/// Entries admitted after this instant still count: `at_ms + window > now`.
fn counted_after(now: u64, window_ms: u64) -> i64 {
    let bound = i128::from(now) - i128::from(window_ms);
    i64::try_from(bound.max(i128::from(i64::MIN))).unwrap_or(i64::MAX)
}

/// An expiry as a SQL integer; beyond `i64::MAX` means never in practice.
fn clamp(instant: u64) -> i64 {
    i64::try_from(instant).unwrap_or(i64::MAX)
}

fn unexpected() -> BackendError {
    BackendError::UnexpectedReply { backend: "sqlite" }
}

fn optional_int(value: Option<u64>) -> Result<Option<i64>, BackendError> {
    value.map(|value| to_sql_int("now", value)).transpose()
}

#[async_trait]
impl Engine for SqliteEngine {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn decide(&self, request: &Request<'_>) -> Result<Vec<Verdict>, BackendError> {
        let key = request.key.as_bytes();
        // IMMEDIATE takes the write lock up front, so two checks never both read and then
        // both write; a peek only reads.
        let mut transaction = if request.record {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        };
        let now = match request.now_ms {
            Some(now) => now,
            None => {
                let now: i64 = sqlx::query_scalar(&format!("SELECT {DATABASE_NOW}"))
                    .fetch_one(&mut *transaction)
                    .await?;
                u64::try_from(now).map_err(|_| unexpected())?
            }
        };
        let quotas: Vec<QuotaRow<'_>> = request
            .ids
            .iter()
            .zip(request.policies)
            .map(|(id, policy)| QuotaRow {
                key,
                policy_id: id.as_i64(),
                policy,
            })
            .collect();
        let mut states = Vec::with_capacity(quotas.len());
        let mut verdicts = Vec::with_capacity(quotas.len());
        for quota in &quotas {
            let (verdict, state) = self
                .evaluate(&mut transaction, quota, now, request.cost)
                .await?;
            verdicts.push(verdict);
            states.push(state);
        }
        if request.record {
            let all_allowed = verdicts.iter().all(|verdict| verdict.allowed);
            for (quota, state) in quotas.iter().zip(states) {
                self.record(
                    &mut transaction,
                    quota,
                    state,
                    all_allowed,
                    now,
                    request.cost,
                )
                .await?;
            }
        }
        transaction.commit().await?;
        Ok(verdicts)
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for statement in [&self.sql.reset_state, &self.sql.reset_log] {
            sqlx::query(statement)
                .bind(key.as_bytes())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn cleanup_batch(
        &self,
        now_ms: Option<u64>,
        batch: NonZeroU64,
    ) -> Result<Deleted, BackendError> {
        let now = optional_int(now_ms)?;
        let batch = to_sql_int("cleanup batch", batch.get())?;
        let state = self
            .delete_expired(&self.sql.cleanup_state, now, batch)
            .await?;
        let log = self
            .delete_expired(&self.sql.cleanup_log, now, batch)
            .await?;
        let previous_log = if self.previous_log_exists().await? {
            self.delete_expired(&self.sql.cleanup_previous_log, now, batch)
                .await?
        } else {
            0
        };
        Ok(Deleted {
            state,
            log,
            previous_log,
        })
    }

    async fn count_expired(&self, now_ms: Option<u64>) -> Result<u64, BackendError> {
        let now = optional_int(now_ms)?;
        let mut expired = self.count(&self.sql.count_expired, now).await?;
        if self.previous_log_exists().await? {
            let previous = self
                .count(&self.sql.count_expired_previous_log, now)
                .await?;
            expired = expired.saturating_add(previous);
        }
        Ok(expired)
    }

    async fn drop_schema(&self) -> Result<(), BackendError> {
        sqlx::raw_sql(&self.sql.drop_tables)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn is_transient(&self, error: &sqlx::Error) -> bool {
        let sqlx::Error::Database(database) = error else {
            return false;
        };
        let code = database
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .unwrap_or_default();
        matches!(code & 0xff, BUSY | LOCKED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_bound_never_overflows() {
        assert_eq!(counted_after(10_000, 3_000), 7_000);
        assert_eq!(counted_after(1_000, 3_000), -2_000);
        assert_eq!(counted_after(0, u64::MAX), i64::MIN);
        assert_eq!(clamp(u64::MAX), i64::MAX);
    }
}
