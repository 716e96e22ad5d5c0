//! The sliding log on SQLite: one row per admitted request in `<prefix>log_v3`, each carrying
//! the running total of the costs through it (see `sqlite.sql`), so a check reads a few index
//! entries however long the log is, and the algorithm's own arithmetic ([`LogCheck`]) decides.
//!
//! Totals are kept in SQLite's 64-bit integers with checked arithmetic: they restart from 0
//! when the log is empty and are rebased before one would overflow.

use sqlx::sqlite::SqliteConnection;

use super::{QuotaRow, counted_after, unexpected};
use crate::algorithm::{Counted, LogCheck, Verdict};
use crate::backend::BackendError;
use crate::backend::sql::args::to_sql_int;
use crate::backend::sql::with_prefix;

/// The sliding log's statements, with the table prefix filled in once. Each reads or writes
/// one key and policy (`?1`, `?2`), through the primary key (time order) or the totals' index.
pub(super) struct LogStatements {
    /// The oldest entry admitted after `?3`: its time and the running total before it.
    oldest_counted: String,
    /// The newest entry's running total.
    total: String,
    /// When the first entry whose running total reaches `?3` was admitted.
    first_reaching: String,
    delete_uncounted: String,
    /// The last entry admitted at or before `?3`, after which a request of `?3` goes.
    last_at_or_before: String,
    /// The running total before the first entry.
    before_first: String,
    rebase: String,
    /// Adds `?4` to the totals of the entries admitted after `?3`.
    shift_later: String,
    insert: String,
}

impl LogStatements {
    pub(super) fn new(prefix: &str) -> Self {
        let sql = |text: &str| with_prefix(text, prefix);
        let of_key = "FROM {prefix}log_v3 WHERE key = ?1 AND policy = ?2";
        Self {
            oldest_counted: sql(&format!(
                "SELECT at_ms, through - cost {of_key} AND at_ms > ?3 ORDER BY at_ms, seq LIMIT 1"
            )),
            total: sql(&format!(
                "SELECT through {of_key} ORDER BY through DESC LIMIT 1"
            )),
            first_reaching: sql(&format!(
                "SELECT at_ms {of_key} AND through >= ?3 ORDER BY through LIMIT 1"
            )),
            delete_uncounted: sql(
                "DELETE FROM {prefix}log_v3 WHERE key = ?1 AND policy = ?2 AND at_ms <= ?3",
            ),
            last_at_or_before: sql(&format!(
                "SELECT at_ms, seq, through {of_key} AND at_ms <= ?3 \
                 ORDER BY at_ms DESC, seq DESC LIMIT 1"
            )),
            before_first: sql(&format!(
                "SELECT through - cost {of_key} ORDER BY at_ms, seq LIMIT 1"
            )),
            rebase: sql(
                "UPDATE {prefix}log_v3 SET through = through - ?3 WHERE key = ?1 AND policy = ?2",
            ),
            shift_later: sql("UPDATE {prefix}log_v3 SET through = through + ?4 \
                 WHERE key = ?1 AND policy = ?2 AND at_ms > ?3"),
            insert: sql("INSERT INTO {prefix}log_v3 \
                 (key, policy, at_ms, seq, cost, through, expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        }
    }
}

/// The verdict of one sliding-log quota: two probes for what is counted, and one more for a
/// rejection that can wait.
pub(super) async fn evaluate(
    sql: &LogStatements,
    connection: &mut SqliteConnection,
    quota: &QuotaRow<'_>,
    check: LogCheck,
) -> Result<Verdict, BackendError> {
    let oldest: Option<(i64, i64)> = sqlx::query_as(&sql.oldest_counted)
        .bind(quota.key)
        .bind(quota.policy_id)
        .bind(counted_after(check.now_ms, check.window_ms))
        .fetch_optional(&mut *connection)
        .await?;
    let Some((oldest_at_ms, before)) = oldest else {
        return Ok(check.verdict(None, None));
    };
    let total: i64 = sqlx::query_scalar(&sql.total)
        .bind(quota.key)
        .bind(quota.policy_id)
        .fetch_one(&mut *connection)
        .await?;
    let counted = Counted {
        oldest_at_ms: to_u64(oldest_at_ms)?,
        used: to_u64(total.checked_sub(before).ok_or_else(unexpected)?)?,
    };
    let Some(must_free) = check.must_free(Some(counted)) else {
        return Ok(check.verdict(Some(counted), None));
    };
    // At most what is counted, so within the log's totals.
    let reaching = i64::try_from(must_free)
        .ok()
        .and_then(|must_free| before.checked_add(must_free))
        .ok_or_else(unexpected)?;
    let freed_at: Option<i64> = sqlx::query_scalar(&sql.first_reaching)
        .bind(quota.key)
        .bind(quota.policy_id)
        .bind(reaching)
        .fetch_optional(connection)
        .await?;
    Ok(check.verdict(Some(counted), freed_at.map(to_u64).transpose()?))
}

/// Records an admitted request of `cost` at `now`: drops the entries no longer counted (by
/// range, each once), then adds the request after the last entry at or before `now`.
pub(super) async fn admit(
    sql: &LogStatements,
    connection: &mut SqliteConnection,
    quota: &QuotaRow<'_>,
    window_ms: u64,
    now: u64,
    cost: u64,
) -> Result<(), BackendError> {
    let at_ms = to_sql_int("now", now)?;
    let cost = to_sql_int("cost", cost)?;
    sqlx::query(&sql.delete_uncounted)
        .bind(quota.key)
        .bind(quota.policy_id)
        .bind(counted_after(now, window_ms))
        .execute(&mut *connection)
        .await?;
    let last: Option<(i64, i64, i64)> = sqlx::query_as(&sql.last_at_or_before)
        .bind(quota.key)
        .bind(quota.policy_id)
        .bind(at_ms)
        .fetch_optional(&mut *connection)
        .await?;
    let before_first: Option<i64> = sqlx::query_scalar(&sql.before_first)
        .bind(quota.key)
        .bind(quota.policy_id)
        .fetch_optional(&mut *connection)
        .await?;
    let total: Option<i64> = sqlx::query_scalar(&sql.total)
        .bind(quota.key)
        .bind(quota.policy_id)
        .fetch_optional(&mut *connection)
        .await?;
    let totals = Totals {
        before_first: before_first.unwrap_or(0),
        before_new: last.map(|(_, _, through)| through),
        total: total.unwrap_or(0),
    };
    let place = totals.place(cost).ok_or_else(unexpected)?;
    if place.rebase_by != 0 {
        sqlx::query(&sql.rebase)
            .bind(quota.key)
            .bind(quota.policy_id)
            .bind(place.rebase_by)
            .execute(&mut *connection)
            .await?;
    }
    if place.shift_later {
        sqlx::query(&sql.shift_later)
            .bind(quota.key)
            .bind(quota.policy_id)
            .bind(at_ms)
            .bind(cost)
            .execute(&mut *connection)
            .await?;
    }
    // One more than the last entry of the same millisecond, which it follows.
    let seq = match last {
        Some((last_at, seq, _)) if last_at == at_ms => seq.checked_add(1).ok_or_else(unexpected)?,
        _ => 1,
    };
    sqlx::query(&sql.insert)
        .bind(quota.key)
        .bind(quota.policy_id)
        .bind(at_ms)
        .bind(seq)
        .bind(cost)
        .bind(place.through)
        .bind(super::clamp(now.saturating_add(window_ms)))
        .execute(connection)
        .await?;
    Ok(())
}

/// The running totals of a log as an admission finds them, once the entries no longer counted
/// are gone.
#[derive(Clone, Copy, Debug)]
struct Totals {
    /// Before the first entry (0 for an empty log).
    before_first: i64,
    /// Through the last entry at or before the request, if there is one.
    before_new: Option<i64>,
    /// Through the newest entry (0 for an empty log).
    total: i64,
}

/// Where an admitted request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    /// Subtracted from every total of the log first (0: none).
    rebase_by: i64,
    /// The request's running total.
    through: i64,
    /// Whether later entries (a clock that stepped back) must add the request's cost.
    shift_later: bool,
}

impl Totals {
    /// Where a request of `cost` goes; `None` only for totals that no admission leaves (it
    /// admits at most the limit, so every total left after a rebase fits).
    fn place(self, cost: i64) -> Option<Place> {
        // Totals only grow while the log never empties: before one would overflow, they are
        // rebased on the total before the first entry. Every entry left is counted, so the
        // totals are then at most the limit.
        let rebase_by = if self.total.checked_add(cost).is_some() {
            0
        } else {
            self.before_first
        };
        let before_new = self.before_new.unwrap_or(self.before_first);
        let before_new = before_new.checked_sub(rebase_by)?;
        let total = self.total.checked_sub(rebase_by)?;
        Some(Place {
            rebase_by,
            through: before_new.checked_add(cost)?,
            shift_later: total > before_new,
        })
    }
}

fn to_u64(value: i64) -> Result<u64, BackendError> {
    u64::try_from(value).map_err(|_| unexpected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_goes_at_the_end_or_before_later_entries() {
        let empty = Totals {
            before_first: 0,
            before_new: None,
            total: 0,
        };
        let appended = Totals {
            before_first: 10,
            before_new: Some(15),
            total: 15,
        };
        let before_later = Totals {
            before_new: Some(12),
            ..appended
        };
        let before_all = Totals {
            before_new: None,
            ..appended
        };
        let place = |totals: Totals| totals.place(2);
        let at = |through, shift_later| {
            Some(Place {
                rebase_by: 0,
                through,
                shift_later,
            })
        };
        assert_eq!(place(empty), at(2, false));
        assert_eq!(place(appended), at(17, false));
        assert_eq!(place(before_later), at(14, true));
        assert_eq!(place(before_all), at(12, true));
    }

    #[test]
    fn totals_are_rebased_before_they_overflow() {
        let near_the_top = Totals {
            before_first: i64::MAX - 10,
            before_new: Some(i64::MAX - 4),
            total: i64::MAX - 1,
        };
        assert_eq!(
            near_the_top.place(5),
            Some(Place {
                rebase_by: i64::MAX - 10,
                through: 11,
                shift_later: true,
            })
        );
        assert_eq!(near_the_top.place(1).map(|place| place.rebase_by), Some(0));
    }
}
