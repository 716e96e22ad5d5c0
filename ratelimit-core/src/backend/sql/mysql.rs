//! MySQL and MariaDB: every check is one `CALL <prefix>check_v3(..)` of the stored procedure in
//! `mysql.sql`, so one round trip, atomic per key under row locks.

use std::fmt::Write as _;
use std::num::NonZeroU64;
use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

use super::args::{self, algorithm_tag};
use super::{Deleted, Engine, Request, Settings, with_prefix};
use crate::algorithm::Verdict;
use crate::backend::BackendError;

const SCHEMA: &str = include_str!("mysql.sql");

/// The line between two statements of `mysql.sql`.
const SEPARATOR: &str = "\n-- //\n";

/// The procedures `mysql.sql` creates, without their version, for dropping them.
const PROCEDURES: &[&str] = &[
    "check",
    "reset",
    "load",
    "store",
    "fw_evaluate",
    "fw_admit",
    "sw_evaluate",
    "sw_admit",
    "swc_evaluate",
    "swc_admit",
    "tb_evaluate",
    "tb_store",
    "tb_admit",
    "tb_first_rejection",
    "lb_evaluate",
    "lb_admit",
];

/// The versions of [`PROCEDURES`] to drop: this one's (the sliding log's and the procedures
/// calling them are `_v3`, the rest `_v2`), and the earlier ones', left for their processes: the
/// `_v2` sliding log (in `<prefix>log_v2`) and state per quota index (`_v1`, in `<prefix>state`
/// and `<prefix>log`).
const PROCEDURE_VERSIONS: &[&str] = &["_v3", "_v2", "_v1"];

/// The functions `mysql.sql` creates, for dropping them.
const FUNCTIONS: &[&str] = &[
    "param_v1",
    "millis_for_v1",
    "first_fitting_elapsed_v1",
    "tb_tokens_v1",
    "lb_level_v1",
];

/// The database clock in ms (the statement's start), or the injected time when there is one.
const NOW: &str = "COALESCE(?, FLOOR(UNIX_TIMESTAMP(NOW(3)) * 1000))";

/// The previous version's sliding log. This version neither creates nor reads it, but its
/// processes may still write it during a rolling upgrade, so the cleanup deletes its expired
/// entries while it exists.
const PREVIOUS_LOG: &str = "{prefix}log_v2";

/// Every table, this version's and the earlier versions', for dropping them.
const TABLES: &str = "{prefix}state_v2, {prefix}log_v3, {prefix}log_v2, {prefix}state, {prefix}log";

/// MySQL's "ER_LOCK_DEADLOCK" SQLSTATE: the transaction was rolled back whole.
const DEADLOCK: &str = "40001";

pub(super) struct MysqlEngine {
    pool: MySqlPool,
    prefix: String,
    check: String,
    reset: String,
    cleanup_state: String,
    cleanup_log: String,
    count_expired: String,
    /// The previous version's sliding log, cleaned while it exists (see [`PREVIOUS_LOG`]).
    previous_log_exists: String,
    cleanup_previous_log: String,
    count_expired_previous_log: String,
}

impl MysqlEngine {
    /// Connects once directly, so a refused connection or a bad password is reported as such
    /// (a pool would retry until its timeout), migrates on that connection, then opens the pool.
    pub(super) async fn open(settings: &Settings<'_>) -> Result<Self, BackendError> {
        let options = MySqlConnectOptions::from_str(settings.url)?;
        let mut connection = options.connect().await?;
        migrate(&mut connection, settings.table_prefix).await?;
        connection.close().await?;
        let pool = settings.pool_options().connect_lazy_with(options);
        let prefix = settings.table_prefix;
        let sql = |text: &str| with_prefix(text, prefix);
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            check: sql("CALL {prefix}check_v3(?, ?, ?, ?, ?, ?, ?, ?)"),
            reset: sql("CALL {prefix}reset_v3(?)"),
            // Under READ COMMITTED InnoDB checks the condition again on the row it locks, so a
            // row a check has just renewed is not deleted.
            cleanup_state: sql(&format!(
                "DELETE FROM {{prefix}}state_v2 WHERE expires_at_ms <= {NOW} LIMIT ?"
            )),
            cleanup_log: sql(&format!(
                "DELETE FROM {{prefix}}log_v3 WHERE expires_at_ms <= {NOW} LIMIT ?"
            )),
            count_expired: sql(&format!(
                "SELECT (SELECT COUNT(*) FROM {{prefix}}state_v2 WHERE expires_at_ms <= {NOW}) \
                 + (SELECT COUNT(*) FROM {{prefix}}log_v3 WHERE expires_at_ms <= {NOW})"
            )),
            previous_log_exists: sql(&format!(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '{PREVIOUS_LOG}'"
            )),
            cleanup_previous_log: sql(&format!(
                "DELETE FROM {PREVIOUS_LOG} WHERE expires_at_ms <= {NOW} LIMIT ?"
            )),
            count_expired_previous_log: sql(&format!(
                "SELECT COUNT(*) FROM {PREVIOUS_LOG} WHERE expires_at_ms <= {NOW}"
            )),
        })
    }

    /// Whether the previous version's sliding log exists here (see [`PREVIOUS_LOG`]).
    async fn previous_log_exists(&self) -> Result<bool, BackendError> {
        let tables: i64 = sqlx::query_scalar(&self.previous_log_exists)
            .fetch_one(&self.pool)
            .await?;
        Ok(tables > 0)
    }

    async fn delete_expired(
        &self,
        statement: &str,
        now: Option<i64>,
        batch: i64,
    ) -> Result<u64, BackendError> {
        let mut connection = self.pool.acquire().await?;
        // No gap locks: a cleanup never blocks checks inserting new keys. (The procedures set
        // their own level, so the session's does not matter to them.)
        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *connection)
            .await?;
        let deleted = sqlx::query(statement)
            .bind(now)
            .bind(batch)
            .execute(&mut *connection)
            .await?
            .rows_affected();
        Ok(deleted)
    }
}

/// Creates the tables and routines, one statement at a time, while holding a named lock so
/// processes connecting at once do not race on `IF NOT EXISTS`.
async fn migrate(connection: &mut sqlx::MySqlConnection, prefix: &str) -> Result<(), BackendError> {
    // Lock names are at most 64 characters; the prefix is at most 40.
    let lock = format!("ratelimit migrate {prefix}");
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
        .bind(&lock)
        .fetch_one(&mut *connection)
        .await?;
    if locked != Some(1) {
        return Err(BackendError::UnexpectedReply { backend: "mysql" });
    }
    let mut outcome = Ok(());
    for statement in with_prefix(SCHEMA, prefix).split(SEPARATOR) {
        // `Executor::execute` rather than `raw_sql(..).execute(..)`: the same call, but its boxed
        // `Send` future keeps `SqlBackendBuilder::build()` spawnable (rustc cannot prove the
        // unboxed one `Send` for every lifetime).
        if let Err(error) = (&mut *connection).execute(sqlx::raw_sql(statement)).await {
            outcome = Err(error.into());
            break;
        }
    }
    sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *connection)
        .await?;
    outcome
}

fn optional_int(what: &'static str, value: Option<u64>) -> Result<Option<i64>, BackendError> {
    value.map(|value| args::to_sql_int(what, value)).transpose()
}

/// Integers as one comma-separated list, for the procedure (procedures take no arrays).
fn comma_separated(values: &[i64]) -> String {
    let mut list = String::new();
    for (index, value) in values.iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        let _ = write!(list, "{separator}{value}");
    }
    list
}

fn parse_reply(reply: &str) -> Option<Vec<i64>> {
    reply.split(',').map(|number| number.parse().ok()).collect()
}

#[async_trait]
impl Engine for MysqlEngine {
    fn name(&self) -> &'static str {
        "mysql"
    }

    async fn decide(&self, request: &Request<'_>) -> Result<Vec<Verdict>, BackendError> {
        let quotas = i32::try_from(request.policies.len())
            .map_err(|_| BackendError::UnexpectedReply { backend: "mysql" })?;
        let replies: Vec<String> = sqlx::query_scalar(&self.check)
            .bind(request.key.as_bytes())
            .bind(algorithm_tag(request.algorithm))
            .bind(optional_int("now", request.now_ms)?)
            .bind(args::cost_arg(request.cost))
            .bind(request.record)
            .bind(quotas)
            .bind(comma_separated(&args::policy_ids(request.ids)))
            .bind(comma_separated(&args::policy_args(request.policies)?))
            .fetch_all(&self.pool)
            .await?;
        let reply = replies
            .first()
            .and_then(|reply| parse_reply(reply))
            .ok_or(BackendError::UnexpectedReply { backend: "mysql" })?;
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
        let previous_log = if self.previous_log_exists().await? {
            self.delete_expired(&self.cleanup_previous_log, now, batch)
                .await?
        } else {
            0
        };
        Ok(Deleted {
            state: self.delete_expired(&self.cleanup_state, now, batch).await?,
            log: self.delete_expired(&self.cleanup_log, now, batch).await?,
            previous_log,
        })
    }

    async fn count_expired(&self, now_ms: Option<u64>) -> Result<u64, BackendError> {
        let now = optional_int("now", now_ms)?;
        let expired: i64 = sqlx::query_scalar(&self.count_expired)
            .bind(now)
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
        Ok(u64::try_from(expired)
            .unwrap_or_default()
            .saturating_add(u64::try_from(previous).unwrap_or_default()))
    }

    async fn drop_schema(&self) -> Result<(), BackendError> {
        let mut sql = String::new();
        for version in PROCEDURE_VERSIONS {
            for procedure in PROCEDURES {
                sql.push_str(&format!(
                    "DROP PROCEDURE IF EXISTS {{prefix}}{procedure}{version};"
                ));
            }
        }
        for function in FUNCTIONS {
            sql.push_str(&format!("DROP FUNCTION IF EXISTS {{prefix}}{function};"));
        }
        sql.push_str(&format!("DROP TABLE IF EXISTS {TABLES};"));
        sqlx::raw_sql(&with_prefix(&sql, &self.prefix))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn is_transient(&self, error: &sqlx::Error) -> bool {
        matches!(
            error,
            sqlx::Error::Database(database) if database.code().as_deref() == Some(DEADLOCK)
        )
    }
}
