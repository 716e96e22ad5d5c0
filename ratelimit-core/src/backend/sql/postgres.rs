//! PostgreSQL: every check is one call of the algorithm's PL/pgSQL function
//! `<prefix><tag>_check_v2` (`sw_check_v3` for the sliding log; see `postgres.sql`), atomic per
//! key under an advisory lock. Checks made concurrently go together in one call of
//! `<prefix>check_batch_v4` (see `batch.rs` and `postgres_batch.sql`): one round trip and one
//! transaction for the whole batch, and one statement for its single-quota fixed-window and
//! token-bucket checks.

use std::num::NonZeroU64;
use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

use super::args::{self, REPLY_PER_QUOTA, algorithm_tag};
use super::batch::{BatchEngine, Check};
use super::{Deleted, Engine, Request, Settings, with_prefix};
use crate::algorithm::{Algorithm, Verdict};
use crate::backend::BackendError;

/// The tables and per-check functions, then the batch function that calls them.
const SCHEMA: &str = concat!(
    include_str!("postgres.sql"),
    include_str!("postgres_batch.sql")
);

/// Every routine `postgres.sql` creates, with its argument types, for dropping them.
const ROUTINES: &[&str] = &[
    "fw_check_v2(bytea, bigint, bigint, boolean, bigint[], bigint[])",
    "sw_check_v3(bytea, bigint, bigint, boolean, bigint[], bigint[])",
    "swc_check_v2(bytea, bigint, bigint, boolean, bigint[], bigint[])",
    "tb_check_v2(bytea, bigint, bigint, boolean, bigint[], bigint[])",
    "lb_check_v2(bytea, bigint, bigint, boolean, bigint[], bigint[])",
    "check_batch_v4(bytea[], bigint[], bigint[], text[], integer[], bigint[], integer[], bigint[])",
    "reset_v3(bytea)",
    "lock_id_v1(bytea)",
    "first_fitting_elapsed_v1(numeric, numeric, numeric)",
    "millis_for_v1(numeric, numeric)",
    // Created by the previous version (its sliding log read `<prefix>log_v2` whole); left for
    // its processes, dropped with the rest.
    "sw_check_v2(bytea, bigint, bigint, boolean, bigint[], bigint[])",
    "check_batch_v3(bytea[], bigint[], bigint[], text[], integer[], bigint[], integer[], bigint[])",
    "reset_v2(bytea)",
    // Created by earlier versions (state per quota index, in `<prefix>state` and `<prefix>log`);
    // left for their processes, dropped with the rest.
    "fw_check_v1(bytea, bigint, bigint, boolean, bigint[])",
    "sw_check_v1(bytea, bigint, bigint, boolean, bigint[])",
    "swc_check_v1(bytea, bigint, bigint, boolean, bigint[])",
    "tb_check_v1(bytea, bigint, bigint, boolean, bigint[])",
    "lb_check_v1(bytea, bigint, bigint, boolean, bigint[])",
    "check_batch_v2(bytea[], bigint[], bigint[], text[], integer[], bigint[])",
    "check_batch_v1(bytea[], bigint[], bigint[], text[], integer[], bigint[])",
    "reset_v1(bytea)",
];

/// Every table, this version's and the earlier versions' (see [`ROUTINES`]), for dropping them.
const TABLES: &str = "{prefix}state_v2, {prefix}log_v3, {prefix}log_v2, {prefix}state, {prefix}log";

/// The previous version's sliding log. This version neither creates nor reads it, but its
/// processes may still write it during a rolling upgrade, so the cleanup deletes its expired
/// entries while it exists.
const PREVIOUS_LOG: &str = "{prefix}log_v2";

/// The granule `cleanup_at_ms` is rounded up to (postgres.sql).
const CLEANUP_GRANULE_MS: u64 = 10_000;

/// The database clock in ms, or the injected time `$1` when there is one.
const NOW: &str =
    "coalesce($1::bigint, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)";

pub(super) struct PostgresEngine {
    pool: PgPool,
    prefix: String,
    /// `SELECT <prefix><tag>_check_v2(..)` (`sw_check_v3`), in the order of [`Algorithm::ALL`].
    checks: [String; 5],
    check_batch: String,
    reset: String,
    cleanup_state: String,
    cleanup_log: String,
    count_expired: String,
    /// The previous version's sliding log, cleaned while it exists (see [`PREVIOUS_LOG`]).
    previous_log_exists: String,
    cleanup_previous_log: String,
    count_expired_previous_log: String,
}

impl PostgresEngine {
    /// Connects once directly, so a refused connection or a bad password is reported as such
    /// (a pool would retry until its timeout), migrates on that connection, then opens the pool.
    pub(super) async fn open(settings: &Settings<'_>) -> Result<Self, BackendError> {
        let options = PgConnectOptions::from_str(settings.url)?;
        let mut connection = options.connect().await?;
        migrate(&mut connection, settings.table_prefix).await?;
        connection.close().await?;
        let pool = settings.pool_options().connect_lazy_with(options);
        let prefix = settings.table_prefix;
        let sql = |text: &str| with_prefix(text, prefix);
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            checks: Algorithm::ALL.map(|algorithm| {
                let tag = algorithm_tag(algorithm);
                let version = check_version(algorithm);
                sql(&format!(
                    "SELECT {{prefix}}{tag}_check_{version}($1, $2, $3, $4, $5, $6)"
                ))
            }),
            check_batch: sql("SELECT {prefix}check_batch_v4($1, $2, $3, $4, $5, $6, $7, $8)"),
            reset: sql("SELECT {prefix}reset_v3($1)"),
            // The outer condition is checked again on the row as it is when locked, so a row a
            // check has just renewed is not deleted. Rows a check holds are skipped (it is
            // renewing them): a cleanup never waits on a row, so it can never be half of a
            // deadlock with a batch of checks that holds several keys. The state table is
            // searched through its coarse `cleanup_at_ms` index (see postgres.sql).
            cleanup_state: sql(&format!(
                "DELETE FROM {{prefix}}state_v2 WHERE expires_at_ms <= {NOW} \
                 AND (key_hash, policy) IN (SELECT key_hash, policy \
                 FROM {{prefix}}state_v2 WHERE cleanup_at_ms <= {NOW} + {CLEANUP_GRANULE_MS} \
                 AND expires_at_ms <= {NOW} LIMIT $2 FOR UPDATE SKIP LOCKED)"
            )),
            cleanup_log: sql(&cleanup_log("{prefix}log_v3")),
            count_expired: sql(&format!(
                "SELECT (SELECT count(*) FROM {{prefix}}state_v2 \
                 WHERE cleanup_at_ms <= {NOW} + {CLEANUP_GRANULE_MS} AND expires_at_ms <= {NOW}) \
                 + (SELECT count(*) FROM {{prefix}}log_v3 WHERE expires_at_ms <= {NOW})"
            )),
            previous_log_exists: sql(&format!("SELECT to_regclass('{PREVIOUS_LOG}') IS NOT NULL")),
            cleanup_previous_log: sql(&cleanup_log(PREVIOUS_LOG)),
            count_expired_previous_log: sql(&format!(
                "SELECT count(*) FROM {PREVIOUS_LOG} WHERE expires_at_ms <= {NOW}"
            )),
        })
    }
}

/// Deletes at most `$2` expired entries of a sliding log `table`. The outer condition is
/// checked again on the row as it is when locked, and rows a check holds are skipped (see
/// `cleanup_state`).
fn cleanup_log(table: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE expires_at_ms <= {NOW} \
         AND (key_hash, policy, at_ms, seq) IN (SELECT key_hash, policy, at_ms, seq \
         FROM {table} WHERE expires_at_ms <= {NOW} LIMIT $2 FOR UPDATE SKIP LOCKED)"
    )
}

/// Creates the tables and routines. Concurrent connects (many processes starting at once)
/// queue on an advisory lock: PostgreSQL's `IF NOT EXISTS` and `OR REPLACE` are not safe
/// against each other.
async fn migrate(connection: &mut sqlx::PgConnection, prefix: &str) -> Result<(), BackendError> {
    let mut transaction = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("ratelimit migrate {prefix}"))
        .execute(&mut *transaction)
        .await?;
    // `Executor::execute` rather than `raw_sql(..).execute(..)`: the same call, but its boxed
    // `Send` future keeps `SqlBackendBuilder::build()` spawnable (rustc cannot prove the
    // unboxed one `Send` for every lifetime).
    let schema = with_prefix(SCHEMA, prefix);
    (&mut *transaction).execute(sqlx::raw_sql(&schema)).await?;
    transaction.commit().await?;
    Ok(())
}

#[async_trait]
impl BatchEngine for PostgresEngine {
    async fn decide_batch(&self, checks: &[&Check]) -> Result<Vec<Vec<Verdict>>, BackendError> {
        let unexpected = || BackendError::UnexpectedReply {
            backend: "postgres",
        };
        let mut keys = Vec::with_capacity(checks.len());
        let mut now = Vec::with_capacity(checks.len());
        let mut costs = Vec::with_capacity(checks.len());
        let mut algorithms = Vec::with_capacity(checks.len());
        // Where each check's policy ids start in `ids`, and its parameters in `params` (1-based,
        // as SQL arrays), and where they end.
        let mut id_bounds = Vec::with_capacity(checks.len() + 1);
        let mut ids = Vec::new();
        let mut param_bounds = Vec::with_capacity(checks.len() + 1);
        let mut params = Vec::new();
        let bound = |list: &Vec<i64>| i32::try_from(list.len() + 1).map_err(|_| unexpected());
        for check in checks {
            keys.push(check.key.as_bytes());
            now.push(check.now_ms);
            costs.push(check.cost);
            algorithms.push(algorithm_tag(check.algorithm));
            id_bounds.push(bound(&ids)?);
            ids.extend_from_slice(&check.ids);
            param_bounds.push(bound(&params)?);
            params.extend_from_slice(&check.params);
        }
        id_bounds.push(bound(&ids)?);
        param_bounds.push(bound(&params)?);
        let reply: Vec<i64> = sqlx::query_scalar(&self.check_batch)
            .bind(keys)
            .bind(now)
            .bind(costs)
            .bind(algorithms)
            .bind(id_bounds)
            .bind(ids)
            .bind(param_bounds)
            .bind(params)
            .fetch_one(&self.pool)
            .await?;
        let mut rest = reply.as_slice();
        let mut verdicts = Vec::with_capacity(checks.len());
        for check in checks {
            let length = check.policies.len() * REPLY_PER_QUOTA;
            let (own, after) = rest.split_at_checked(length).ok_or_else(unexpected)?;
            verdicts.push(args::verdicts(self.name(), &check.policies, own)?);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(unexpected());
        }
        Ok(verdicts)
    }
}

impl PostgresEngine {
    /// Whether the previous version's sliding log exists here (see [`PREVIOUS_LOG`]).
    async fn previous_log_exists(&self) -> Result<bool, BackendError> {
        Ok(sqlx::query_scalar(&self.previous_log_exists)
            .fetch_one(&self.pool)
            .await?)
    }
}

fn optional_int(what: &'static str, value: Option<u64>) -> Result<Option<i64>, BackendError> {
    value.map(|value| args::to_sql_int(what, value)).transpose()
}

/// The version of an algorithm's check function: the sliding log's changed with its table
/// (`log_v3`, running totals).
fn check_version(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::SlidingWindow => "v3",
        _ => "v2",
    }
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

#[async_trait]
impl Engine for PostgresEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn decide(&self, request: &Request<'_>) -> Result<Vec<Verdict>, BackendError> {
        let check = Algorithm::ALL
            .iter()
            .zip(&self.checks)
            .find_map(|(algorithm, check)| (*algorithm == request.algorithm).then_some(check))
            .ok_or(BackendError::UnexpectedReply {
                backend: "postgres",
            })?;
        let reply: Vec<i64> = sqlx::query_scalar(check)
            .bind(request.key.as_bytes())
            .bind(optional_int("now", request.now_ms)?)
            .bind(args::cost_arg(request.cost))
            .bind(request.record)
            .bind(args::policy_ids(request.ids))
            .bind(args::policy_args(request.policies)?)
            .fetch_one(&self.pool)
            .await?;
        args::verdicts(self.name(), request.policies, &reply)
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        sqlx::query(&self.reset)
            .bind(key.as_bytes())
            .execute(&self.pool)
            .await?;
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
        let now = optional_int("now", now_ms)?;
        let batch = args::to_sql_int("cleanup batch", batch.get())?;
        let state = sqlx::query(&self.cleanup_state)
            .bind(now)
            .bind(batch)
            .execute(&self.pool)
            .await?;
        let log = sqlx::query(&self.cleanup_log)
            .bind(now)
            .bind(batch)
            .execute(&self.pool)
            .await?;
        let previous_log = if self.previous_log_exists().await? {
            sqlx::query(&self.cleanup_previous_log)
                .bind(now)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected()
        } else {
            0
        };
        Ok(Deleted {
            state: state.rows_affected(),
            log: log.rows_affected(),
            previous_log,
        })
    }

    async fn count_expired(&self, now_ms: Option<u64>) -> Result<u64, BackendError> {
        let now = optional_int("now", now_ms)?;
        let expired: i64 = sqlx::query_scalar(&self.count_expired)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        let previous: i64 = if self.previous_log_exists().await? {
            sqlx::query_scalar(&self.count_expired_previous_log)
                .bind(now)
                .fetch_one(&self.pool)
                .await?
        } else {
            0
        };
        Ok(count(expired).saturating_add(count(previous)))
    }

    async fn drop_schema(&self) -> Result<(), BackendError> {
        let mut statements: Vec<String> = ROUTINES
            .iter()
            .map(|routine| format!("DROP FUNCTION IF EXISTS {{prefix}}{routine};"))
            .collect();
        statements.push(format!("DROP TABLE IF EXISTS {TABLES};"));
        let sql = with_prefix(&statements.concat(), &self.prefix);
        sqlx::raw_sql(&sql).execute(&self.pool).await?;
        Ok(())
    }

    fn is_transient(&self, error: &sqlx::Error) -> bool {
        // serialization_failure, deadlock_detected: the transaction was rolled back whole.
        matches!(
            error,
            sqlx::Error::Database(database)
                if matches!(database.code().as_deref(), Some("40001" | "40P01"))
        )
    }
}
