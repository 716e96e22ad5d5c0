//! PostgreSQL, MySQL/MariaDB and SQLite through `sqlx`: tables created on connect, time from
//! the database, every check atomic across processes and connections.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ratelimit_core::{Backend, Limit, SqlBackend};
//! let backend = SqlBackend::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! let limit = Limit::fixed_window("5/m".parse()?);
//! let decision = backend.check("user:42", &limit).await?;
//! # let _ = decision;
//! # Ok(()) }
//! ```
//!
//! The URL scheme picks the engine: `postgres://` or `postgresql://` (feature `postgres`),
//! `mysql://` or `mariadb://` (feature `mysql`), `sqlite:` (feature `sqlite`; a file is
//! created when missing, `sqlite::memory:` lives as long as the backend).
//!
//! How each engine decides:
//!
//! - **PostgreSQL**: `<prefix><algorithm>_check_v2(..)` (`sw_check_v3` for the sliding log), a
//!   PL/pgSQL port of the Redis Lua scripts with the same integer maths (in `NUMERIC`, so nothing
//!   overflows). Checks of one key queue on a transaction-scoped advisory lock taken from the key's
//!   hash, so a key seen for the first time is never inserted twice. A single-quota check decides
//!   inside one `INSERT .. ON CONFLICT DO UPDATE .. WHERE <fits>` when it can. Checks are batched:
//!   those that concurrent tasks make through one backend while earlier ones are at the database go
//!   together as one call of `<prefix>check_batch_v4(..)`, one round trip and one transaction (so
//!   one commit and one WAL flush) for the batch. It locks the batch's keys in key order (two
//!   batches never deadlock), decides the single-quota fixed-window and token-bucket checks of
//!   distinct keys in one `UPDATE`/`INSERT` statement for the lot, runs the rest one after the
//!   other (checks of one key keep their order, each seeing the one before), and answers each
//!   caller with exactly what it would have got alone. A check on an idle backend leaves at once;
//!   [`SqlBackendBuilder::batches_in_flight`] batches (default 1) start as soon as checks come, and
//!   more, up to the pool size, when a full batch waits or a check has waited 5 ms (a batch held up
//!   on a lock or a stalled disk). A failed batch fails each of its callers with the same error. At
//!   most [`SqlBackendBuilder::max_queued`] checks (default [`DEFAULT_MAX_QUEUED`]) wait at once,
//!   queued or in batches out; one more fails at once with [`BackendError::Overloaded`]. Peeks,
//!   resets and cleanups are not batched.
//! - **MySQL/MariaDB**: one round trip per check, `CALL <prefix>check_v3(..)`, a stored procedure
//!   that locks the key's rows (inserting a placeholder row first, so a new key has a row to
//!   lock) in a `READ COMMITTED` transaction. Not batched: a procedure cannot take arrays, and
//!   building one multi-statement call per batch would cost the parsing batching saves.
//! - **SQLite**: a `BEGIN IMMEDIATE` transaction (one writer at a time) that loads the state and
//!   applies the Rust algorithms themselves (for the sliding log, reads what the algorithm's
//!   arithmetic needs by index probes). Not batched: there is no round trip to share.
//!
//! Tables (prefix `ratelimit_` by default): `<prefix>state_v2`, one row per key and policy, and
//! `<prefix>log_v3`, the sliding log's entries, per key and policy. The policy column holds the
//! [`PolicyId`] of the quota (its algorithm and every parameter, as a signed 64-bit integer), so
//! two limits on one key (`5/m` and `10/h`, or a fixed window and a token bucket of one rate)
//! never share a row, and identical limits do; [`Backend::reset`] deletes every row of the key,
//! whatever its policy. A rate that lists one policy twice (`5/m;5/m`) counts a request once.
//!
//! The tables of earlier versions, `<prefix>state` and `<prefix>log`, were keyed by the quota's
//! position in its rate, which does not say which policy a row counted, so their rows cannot be
//! carried over: the `_v2` tables are created empty beside them, and every count starts afresh
//! once, at the upgrade. The old tables and routines are left in place and never read, so
//! processes of the previous version still running during a rolling upgrade keep working (each
//! version counting on its own) until they are replaced; [`SqlBackend::drop_tables`] drops them
//! with the rest, and so can a `DROP TABLE` once no such process is left.
//!
//! The sliding log costs a check O(log n) for a log of n entries, never O(limit), as in memory
//! and Redis: each row of `<prefix>log_v3` carries the running total of the costs through it,
//! in time order, and is indexed by time (the primary key) and by that total. The cost of the
//! entries still counted is the newest entry's total minus the total just before the oldest
//! counted one (two index probes), and a rejection's retry time is when the first entry whose
//! total reaches the excess over the limit was admitted (one more). An admission deletes the
//! key's expired entries by range (each entry once) and appends; a clock that steps back (an
//! injected one) puts the request before later entries and adds its cost to their totals
//! (O(later entries), only on such clocks). Totals start from 0 when the log is empty and are
//! rebased before one would leave the 64-bit range. Nothing reads an expired entry, so
//! [`Backend::cleanup`] may delete them at any time; the sliding log keeps no state row.
//!
//! Upgrading from the sliding log `<prefix>log_v2`, which every check read whole: its entries
//! carry no totals, so sliding-log counts start afresh once, at the upgrade, in `<prefix>log_v3`
//! (every other count stays in `<prefix>state_v2`, shared by both versions). The previous
//! version's sliding-log routines and `<prefix>log_v2` are no longer created but left in place:
//! its processes still running during a rolling upgrade keep counting their sliding logs there
//! (each version on its own, and a [`Backend::reset`] by either leaving the other's log), and
//! this version's cleanup deletes the expired entries they leave. Nothing of this version reads
//! that table or the state row the previous version kept beside it, so they cannot change what
//! this version counts; [`SqlBackend::drop_tables`] drops them with the rest.
//!
//! Every row stores `expires_at_ms`, the instant after which it means the same as no row
//! ([`crate::Policy::expires_at`]); a row past it is ignored by checks and deleted by
//! [`Backend::cleanup`] in batches, through an index (on PostgreSQL over `expires_at_ms` rounded
//! up to 10 s, so bucket updates stay HOT). PostgreSQL and MySQL store the SHA-256 of the key,
//! so keys of any length and any bytes fit one index entry.
//!
//! Time comes from the database server, read after the key's lock is taken (so a check that
//! waited decides on the time it runs); a clock injected with [`SqlBackendBuilder::clock`]
//! (tests) overrides it. Deadlocks, serialization failures and a busy SQLite file are retried
//! a few times within the timeout; they roll back whole, so a retry never counts twice.
//! Pooled connections are not pinged before use (a ping is a second round trip per check): a
//! connection that broke while idle (a database restart) fails its next call with
//! [`BackendError::Sql`], and the pool replaces it. Other errors are never retried, as the
//! database may have counted the request before the connection failed.

mod args;
#[cfg(feature = "postgres")]
mod batch;
#[cfg(feature = "postgres")]
mod copy_error;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Backend, BackendError};
use crate::algorithm::{Algorithm, Policy, PolicyId, Verdict};
use crate::clock::Clock;
use crate::decision::Decision;
use crate::health::{HealthStatus, HealthTracker};
use crate::limit::{Limit, LimitError};

/// The default table prefix: tables `ratelimit_state_v2` and `ratelimit_log_v3`.
pub const DEFAULT_TABLE_PREFIX: &str = "ratelimit_";

/// The default time a call may take, waiting for a pooled connection and retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default number of pooled connections.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// The default most checks waiting at once for batches on PostgreSQL, queued or in a batch at
/// the database (see [`SqlBackendBuilder::max_queued`]).
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// The default most checks in one statement (PostgreSQL; see [`SqlBackendBuilder::batch_size`]).
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// The default most batches at the database at once (PostgreSQL; see
/// [`SqlBackendBuilder::batches_in_flight`]): one, so that every waiting check meets the next
/// log flush and batches are as large as they can be.
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 1;

/// Rows [`Backend::cleanup`] deletes per statement, so a large cleanup never holds locks long.
pub const DEFAULT_CLEANUP_BATCH: NonZeroU64 = match NonZeroU64::new(1_000) {
    Some(batch) => batch,
    None => NonZeroU64::MIN,
};

/// Longest table prefix: `<prefix>state_v2_cleanup_at` must stay within PostgreSQL's 63-byte
/// names.
const MAX_TABLE_PREFIX_LEN: usize = 40;

/// Attempts per call when the database rolls a transaction back for a deadlock, a
/// serialization failure or a busy file.
const MAX_ATTEMPTS: u32 = 5;

/// A rate-limit store in PostgreSQL, MySQL/MariaDB or SQLite.
pub struct SqlBackend {
    engine: Arc<dyn Engine>,
    /// Gathers concurrent checks into one statement, on the engines that can (PostgreSQL).
    #[cfg(feature = "postgres")]
    batcher: Option<batch::Batcher>,
    table_prefix: String,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    health: HealthTracker,
}

impl fmt::Debug for SqlBackend {
    // No URL: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackend")
            .field("engine", &self.engine.name())
            .field("table_prefix", &self.table_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One check or peek, as the engines receive it.
pub(crate) struct Request<'a> {
    key: &'a str,
    /// Which routine decides (PostgreSQL, MySQL); SQLite needs only the policies.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "mysql")),
        expect(dead_code, reason = "read by the PostgreSQL and MySQL engines only")
    )]
    algorithm: Algorithm,
    /// The limit's distinct policies, in id order (see [`Quotas`]).
    policies: &'a [Policy],
    /// Each policy's identity, which keys its rows.
    ids: &'a [PolicyId],
    /// The injected clock's time; `None` to use the database's.
    now_ms: Option<u64>,
    cost: u64,
    /// `false` for a peek: read only, no writes.
    record: bool,
}

/// Rows one cleanup batch deleted, per table.
#[derive(Clone, Copy, Debug, Default)]
struct Deleted {
    state: u64,
    log: u64,
    /// From the previous version's sliding log (`<prefix>log_v2`), which its processes may still
    /// write during a rolling upgrade; 0 where the table does not exist.
    previous_log: u64,
}

impl Deleted {
    fn total(self) -> u64 {
        self.state
            .saturating_add(self.log)
            .saturating_add(self.previous_log)
    }

    /// Whether every table had less than a batch to delete: nothing expired is left.
    fn is_last(self, batch: NonZeroU64) -> bool {
        [self.state, self.log, self.previous_log]
            .into_iter()
            .all(|deleted| deleted < batch.get())
    }
}

/// What a SQL engine does; [`SqlBackend`] adds the timeout, retries and health around it.
#[async_trait]
trait Engine: Send + Sync {
    /// `postgres`, `mysql` or `sqlite`.
    fn name(&self) -> &'static str;

    /// One attempt at a check or peek: one verdict per policy of the request, in order.
    async fn decide(&self, request: &Request<'_>) -> Result<Vec<Verdict>, BackendError>;

    /// Deletes every state and log entry of `key`, of every policy.
    async fn reset(&self, key: &str) -> Result<(), BackendError>;

    /// A trivial round trip.
    async fn ping(&self) -> Result<(), BackendError>;

    /// Deletes at most `batch` expired rows of each table.
    async fn cleanup_batch(
        &self,
        now_ms: Option<u64>,
        batch: NonZeroU64,
    ) -> Result<Deleted, BackendError>;

    /// How many rows have expired and wait for a cleanup.
    async fn count_expired(&self, now_ms: Option<u64>) -> Result<u64, BackendError>;

    /// Drops this backend's tables and routines.
    async fn drop_schema(&self) -> Result<(), BackendError>;

    /// Whether the database rolled the attempt back whole and it may simply run again.
    fn is_transient(&self, error: &sqlx::Error) -> bool;
}

impl SqlBackend {
    /// Connects to the database the URL names, creating the tables if needed.
    ///
    /// # Errors
    /// An unsupported URL, a database that refuses the connection or does not answer within the
    /// default timeout, or a migration that fails.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::builder(url).build().await
    }

    /// Every setting.
    #[must_use]
    pub fn builder(url: &str) -> SqlBackendBuilder {
        SqlBackendBuilder::new(url)
    }

    /// The engine: `postgres`, `mysql` or `sqlite`.
    #[must_use]
    pub fn engine(&self) -> &'static str {
        self.engine.name()
    }

    /// The prefix of this backend's tables.
    #[must_use]
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// [`Backend::cleanup`] with `batch_size` rows per statement.
    ///
    /// # Errors
    /// When the database fails or does not answer within the timeout (per batch).
    pub async fn cleanup_in_batches(&self, batch_size: NonZeroU64) -> Result<u64, BackendError> {
        let mut removed = 0_u64;
        loop {
            let deleted = self
                .call(|| self.engine.cleanup_batch(self.now_ms(), batch_size))
                .await?;
            removed = removed.saturating_add(deleted.total());
            if deleted.is_last(batch_size) {
                return Ok(removed);
            }
        }
    }

    /// How many rows a cleanup would delete now (for a dry run).
    ///
    /// # Errors
    /// When the database fails or does not answer within the timeout.
    pub async fn count_expired(&self) -> Result<u64, BackendError> {
        self.call(|| self.engine.count_expired(self.now_ms())).await
    }

    /// Drops this backend's tables and routines (tests, uninstalling), and those of earlier
    /// versions under the same prefix. Other backends with the same prefix fail until one of
    /// them connects again.
    ///
    /// # Errors
    /// When the database fails or does not answer within the timeout.
    pub async fn drop_tables(&self) -> Result<(), BackendError> {
        self.call(|| self.engine.drop_schema()).await
    }

    fn now_ms(&self) -> Option<u64> {
        self.clock.as_ref().map(|clock| clock.now_millis())
    }

    async fn decide(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
        record: bool,
    ) -> Result<Decision, BackendError> {
        if cost == 0 {
            return Err(LimitError::ZeroCost.into());
        }
        let quotas = Quotas::of(limit)?;
        #[cfg(feature = "postgres")]
        if let (Some(batcher), true) = (&self.batcher, record) {
            let started = Instant::now();
            let check = batch::Check::new(
                key,
                limit.algorithm(),
                quotas.policies.clone(),
                &quotas.ids,
                self.now_ms(),
                cost,
            )?;
            let verdicts = batcher.decide(check).await;
            self.health
                .record(verdicts.as_ref().err(), started.elapsed());
            return self.combine(&quotas, verdicts?);
        }
        let verdicts = self
            .call(|| async {
                let request = Request {
                    key,
                    algorithm: limit.algorithm(),
                    policies: &quotas.policies,
                    ids: &quotas.ids,
                    now_ms: self.now_ms(),
                    cost,
                    record,
                };
                self.engine.decide(&request).await
            })
            .await?;
        self.combine(&quotas, verdicts)
    }

    /// The decision of a check from its verdicts, one per distinct policy of `quotas`.
    fn combine(&self, quotas: &Quotas, verdicts: Vec<Verdict>) -> Result<Decision, BackendError> {
        let unexpected = || BackendError::UnexpectedReply {
            backend: self.engine.name(),
        };
        let verdicts = quotas.per_quota(&verdicts).ok_or_else(unexpected)?;
        let decision = Decision::combine(verdicts).ok_or_else(unexpected)?;
        tracing::trace!(
            engine = self.engine.name(),
            allowed = decision.allowed,
            remaining = decision.remaining,
            "sql decision"
        );
        Ok(decision)
    }

    /// Runs `attempt` with [`with_retries`] and records health.
    async fn call<T, F, Fut>(&self, attempt: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let started = Instant::now();
        let result = with_retries(&*self.engine, self.timeout, attempt).await;
        self.health.record(result.as_ref().err(), started.elapsed());
        result
    }
}

/// A limit's quotas as the engines see them: each policy (distinct, as [`Limit`] keeps them) in
/// id order.
///
/// The id order makes every check lock a key's rows in one order (MySQL), whatever order a
/// rate lists its quotas in, so two limits with the same quotas never wait on each other in a
/// cycle. The verdicts go back to the rate's order, which decides ties between quotas.
struct Quotas {
    policies: Vec<Policy>,
    ids: Vec<PolicyId>,
    /// For each quota of the rate, in the rate's order, the index of its policy above.
    of_quota: Vec<usize>,
}

impl Quotas {
    fn of(limit: &Limit) -> Result<Self, LimitError> {
        let in_rate_order: Vec<(Policy, PolicyId)> = limit.policies_with_ids()?.collect();
        let mut by_id = in_rate_order.clone();
        by_id.sort_unstable_by_key(|&(_, id)| id);
        let of_quota = in_rate_order
            .iter()
            // Always found: `by_id` holds every id of `in_rate_order`.
            .map(|(_, id)| {
                by_id
                    .binary_search_by_key(id, |&(_, id)| id)
                    .unwrap_or_else(|at| at)
            })
            .collect();
        let (policies, ids) = by_id.into_iter().unzip();
        Ok(Self {
            policies,
            ids,
            of_quota,
        })
    }

    /// Each quota's verdict, in the rate's order, from one verdict per policy in id order;
    /// `None` when there are not as many verdicts as policies.
    fn per_quota(&self, verdicts: &[Verdict]) -> Option<Vec<Verdict>> {
        if verdicts.len() != self.policies.len() {
            return None;
        }
        self.of_quota
            .iter()
            .map(|&index| verdicts.get(index).copied())
            .collect()
    }
}

/// Runs `attempt` under `timeout`, again while the database reports a transient rollback.
async fn with_retries<T, F, Fut>(
    engine: &dyn Engine,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let attempts = async {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(BackendError::Sql(error))
                    if tries < MAX_ATTEMPTS && engine.is_transient(&error) =>
                {
                    tracing::debug!(engine = engine.name(), %error, tries, "retrying");
                    // Let the transaction that won finish before trying again.
                    tokio::time::sleep(Duration::from_millis(1 << tries)).await;
                    tries += 1;
                }
                outcome => return outcome,
            }
        }
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::Timeout {
                backend: engine.name(),
                after: timeout,
            })
        })
}

#[async_trait]
impl Backend for SqlBackend {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.decide(key, limit, cost, true).await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.decide(key, limit, cost, false).await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        self.call(|| self.engine.reset(key)).await
    }

    async fn health(&self) -> HealthStatus {
        let _ = self.call(|| self.engine.ping()).await;
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        self.health.snapshot()
    }

    /// Deletes expired rows, [`DEFAULT_CLEANUP_BATCH`] per statement, until none is left.
    async fn cleanup(&self) -> Result<u64, BackendError> {
        self.cleanup_in_batches(DEFAULT_CLEANUP_BATCH).await
    }
}

/// Settings for a [`SqlBackend`].
pub struct SqlBackendBuilder {
    url: String,
    table_prefix: String,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    pool_size: u32,
    batch_size: usize,
    batches_in_flight: usize,
    max_queued: usize,
}

impl fmt::Debug for SqlBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackendBuilder")
            .field("table_prefix", &self.table_prefix)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("batch_size", &self.batch_size)
            .field("batches_in_flight", &self.batches_in_flight)
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

/// What an engine needs to connect.
pub(crate) struct Settings<'a> {
    url: &'a str,
    table_prefix: &'a str,
    timeout: Duration,
    pool_size: u32,
}

impl Settings<'_> {
    /// The pool settings every engine shares: size, acquire timeout, and no ping before each
    /// use (it would cost a second round trip per check; a connection that broke while idle
    /// fails its next call, and the pool replaces it).
    fn pool_options<DB: sqlx::Database>(&self) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(self.timeout)
            .test_before_acquire(false)
    }
}

impl SqlBackendBuilder {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            table_prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            clock: None,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            batch_size: DEFAULT_BATCH_SIZE,
            batches_in_flight: DEFAULT_BATCHES_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }

    /// Prepended to every table and routine name (default `ratelimit_`): lower-case ASCII
    /// letters, digits and `_`, starting with a letter or `_`, at most 40 characters.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Decides on this clock instead of the database's (tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The most a call may take, waiting for a pooled connection and retries included, and the
    /// most connecting may take (default 2 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many connections the pool keeps at most (default 10; at least 1). An in-memory
    /// SQLite database always uses one.
    #[must_use]
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// PostgreSQL: the most concurrent checks sent together as one statement and transaction
    /// (default 64; 1 sends every check on its own). See [`Self::batches_in_flight`].
    /// MySQL and SQLite send every check on its own.
    #[must_use]
    pub fn batch_size(mut self, checks: usize) -> Self {
        self.batch_size = checks.max(1);
        self
    }

    /// PostgreSQL: how many batches of checks may leave for the database at once (default 1, at
    /// most the pool size). A check made when fewer are out leaves at once; one made while that
    /// many are out waits for the next batch, which leaves as soon as one of them returns. One
    /// more batch starts (up to the pool size) when a full batch ([`Self::batch_size`]) waits,
    /// or when a check has waited 5 ms (a batch held up on a lock or a stalled disk). Fewer
    /// batches make larger ones: fewer statements and commits per check, and, since the
    /// database flushes one commit at a time, no batch waits for another's flush; more batches
    /// may suit a server with many cores when commits are fast.
    #[must_use]
    pub fn batches_in_flight(mut self, batches: usize) -> Self {
        self.batches_in_flight = batches.max(1);
        self
    }

    /// PostgreSQL: the most checks that may wait at once for batches, queued or in a batch at
    /// the database (default [`DEFAULT_MAX_QUEUED`], 10,000; at least 1). One more fails at
    /// once with [`BackendError::Overloaded`], which follows the failure policy like any
    /// backend failure (a [`MultiBackend`](crate::MultiBackend) tries its next member, the
    /// limit's `on_error` decides), instead of queueing for the timeout while the database is
    /// stalled. Size it above the checks one process makes in one timeout at its peak. MySQL,
    /// SQLite and a [`Self::batch_size`] of 1 send each check on its own, through the pool.
    #[must_use]
    pub fn max_queued(mut self, checks: usize) -> Self {
        self.max_queued = checks.max(1);
        self
    }

    /// Connects and creates the tables and routines if they do not exist.
    ///
    /// # Errors
    /// An unsupported URL or table prefix, a database that refuses the connection or does not
    /// answer within the timeout, or a migration that fails.
    pub async fn build(self) -> Result<SqlBackend, BackendError> {
        check_table_prefix(&self.table_prefix)?;
        let settings = Settings {
            url: &self.url,
            table_prefix: &self.table_prefix,
            timeout: self.timeout,
            pool_size: self.pool_size,
        };
        let kind = EngineKind::of(&self.url)?;
        let opening = open(kind, &settings);
        let opened = tokio::time::timeout(self.timeout, opening)
            .await
            .map_err(|_| BackendError::Timeout {
                backend: kind.name(),
                after: self.timeout,
            })??;
        #[cfg(feature = "postgres")]
        let batcher = opened
            .batches
            .filter(|_| self.batch_size > 1)
            .map(|engine| {
                let connections = usize::try_from(self.pool_size).unwrap_or(usize::MAX);
                batch::Batcher::new(
                    engine,
                    self.timeout,
                    self.batch_size,
                    self.batches_in_flight.min(connections),
                    connections,
                    self.max_queued,
                )
            });
        let engine = opened.engine;
        Ok(SqlBackend {
            health: HealthTracker::new(engine.name()),
            engine,
            #[cfg(feature = "postgres")]
            batcher,
            table_prefix: self.table_prefix,
            clock: self.clock,
            timeout: self.timeout,
        })
    }
}

/// The engines this build supports, picked by URL scheme.
#[derive(Clone, Copy)]
enum EngineKind {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "mysql")]
    Mysql,
    #[cfg(feature = "sqlite")]
    Sqlite,
}

impl EngineKind {
    fn of(url: &str) -> Result<Self, BackendError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Self::Postgres),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => Ok(Self::Mysql),
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(Self::Sqlite),
            _ => Err(BackendError::UnsupportedUrl {
                // Only the scheme: the rest may hold a password.
                scheme: scheme.chars().take(32).collect(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres => "postgres",
            #[cfg(feature = "mysql")]
            Self::Mysql => "mysql",
            #[cfg(feature = "sqlite")]
            Self::Sqlite => "sqlite",
        }
    }
}

/// An open engine, and the same engine again when it can decide checks in batches.
struct Opened {
    engine: Arc<dyn Engine>,
    #[cfg(feature = "postgres")]
    batches: Option<Arc<dyn batch::BatchEngine>>,
}

impl Opened {
    #[cfg(any(feature = "mysql", feature = "sqlite"))]
    fn unbatched(engine: Arc<dyn Engine>) -> Self {
        Self {
            engine,
            #[cfg(feature = "postgres")]
            batches: None,
        }
    }
}

async fn open(kind: EngineKind, settings: &Settings<'_>) -> Result<Opened, BackendError> {
    Ok(match kind {
        #[cfg(feature = "postgres")]
        EngineKind::Postgres => {
            let engine = Arc::new(postgres::PostgresEngine::open(settings).await?);
            Opened {
                engine: Arc::clone(&engine) as Arc<dyn Engine>,
                batches: Some(engine),
            }
        }
        #[cfg(feature = "mysql")]
        EngineKind::Mysql => Opened::unbatched(Arc::new(mysql::MysqlEngine::open(settings).await?)),
        #[cfg(feature = "sqlite")]
        EngineKind::Sqlite => {
            Opened::unbatched(Arc::new(sqlite::SqliteEngine::open(settings).await?))
        }
    })
}

/// Table and routine names are built from the prefix, so it must be a plain identifier.
fn check_table_prefix(prefix: &str) -> Result<(), BackendError> {
    let mut chars = prefix.chars();
    let plain = chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && prefix.len() <= MAX_TABLE_PREFIX_LEN;
    if plain {
        Ok(())
    } else {
        Err(BackendError::InvalidTablePrefix {
            prefix: prefix.to_owned(),
        })
    }
}

/// `sql` with every `{prefix}` replaced by the (checked) table prefix.
fn with_prefix(sql: &str, prefix: &str) -> String {
    sql.replace("{prefix}", prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_prefixes_are_plain_identifiers() {
        for good in ["ratelimit_", "_x", "a1_b2", &"a".repeat(40)] {
            assert!(check_table_prefix(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Upper",
            "semi;colon",
            "sp ace",
            "dash-",
            &"a".repeat(41),
        ] {
            assert!(check_table_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotas_go_once_each_in_id_order_and_come_back_in_rate_order() {
        let rate =
            |text: &str| -> crate::Rate { text.parse().unwrap_or_else(|error| panic!("{error}")) };
        let limit = Limit::fixed_window(rate("10/h;5/m;10/h;1/s"));
        let quotas = Quotas::of(&limit).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(quotas.policies.len(), 3, "10/h named twice is one policy");
        assert!(quotas.ids.is_sorted() && quotas.ids.windows(2).all(|pair| pair[0] != pair[1]));
        // One verdict per policy (in id order); each quota gets its policy's.
        let verdict = |limit: u64| Verdict {
            allowed: true,
            limit,
            remaining: limit - 1,
            reset_after_ms: 0,
            retry_after_ms: None,
            window_ms: 0,
        };
        let verdicts: Vec<Verdict> = quotas
            .policies
            .iter()
            .map(|policy| verdict(policy.limit()))
            .collect();
        let spread = quotas.per_quota(&verdicts).unwrap_or_default();
        let limits: Vec<u64> = spread.iter().map(|verdict| verdict.limit).collect();
        assert_eq!(limits, [10, 5, 1]);
        assert!(quotas.per_quota(&verdicts[..1]).is_none());
    }

    #[test]
    fn unknown_schemes_are_refused_without_echoing_the_url() {
        let error = EngineKind::of("oracle://scott:tiger@db/x").err();
        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("oracle"), "{message}");
        assert!(!message.contains("tiger"), "{message}");
    }
}
