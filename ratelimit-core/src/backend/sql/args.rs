//! The translation between a limit's policies and the SQL routines' arguments and replies, shared
//! by the engines that decide in the database (PostgreSQL and MySQL).
//!
//! Each quota is sent as its policy id (the key of its rows) and the same integers, in the same
//! order, as the Redis scripts read them, and answered with four integers: allowed (1/0), remaining, reset_after_ms and retry_after_ms
//! (-1: never).

#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::algorithm::{Algorithm, Policy, PolicyId, Verdict};
use crate::backend::BackendError;

/// Integers the reply carries per quota.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(super) const REPLY_PER_QUOTA: usize = 4;

/// The routines' names for the algorithms, the same tags as the Redis keys.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(super) fn algorithm_tag(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => "fw",
        Algorithm::SlidingWindow => "sw",
        Algorithm::SlidingWindowCounter => "swc",
        Algorithm::TokenBucket => "tb",
        Algorithm::LeakyBucket => "lb",
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// Each quota's policy id, as a SQL `BIGINT` (the same bits, signed).
pub(super) fn policy_ids(ids: &[PolicyId]) -> Vec<i64> {
    ids.iter().map(|id| id.as_i64()).collect()
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// Every quota's arguments, one after the other, in the order the routines read them.
///
/// # Errors
/// [`BackendError::SqlValueOutOfRange`] for a value above `i64::MAX` (a period of more than
/// 292 million years), which no SQL `BIGINT` holds.
pub(super) fn policy_args(policies: &[Policy]) -> Result<Vec<i64>, BackendError> {
    let mut args = Vec::with_capacity(policies.len() * 5);
    for policy in policies {
        let values: &[(&'static str, u64)] = match *policy {
            Policy::FixedWindow { limit, window_ms }
            | Policy::SlidingWindow { limit, window_ms }
            | Policy::SlidingWindowCounter { limit, window_ms } => {
                &[("limit", limit), ("window", window_ms)]
            }
            Policy::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => &[
                ("bucket_size", bucket_size),
                ("refill", refill.amount),
                ("refill period", refill.per_ms),
                ("initial_tokens", initial_tokens),
                ("window", window_ms),
            ],
            Policy::LeakyBucket {
                capacity,
                leak,
                window_ms,
            } => &[
                ("capacity", capacity),
                ("leak", leak.amount),
                ("leak period", leak.per_ms),
                ("window", window_ms),
            ],
        };
        for &(what, value) in values {
            args.push(to_sql_int(what, value)?);
        }
    }
    Ok(args)
}

/// A `u64` as a SQL `BIGINT`.
///
/// # Errors
/// [`BackendError::SqlValueOutOfRange`] above `i64::MAX`.
pub(super) fn to_sql_int(what: &'static str, value: u64) -> Result<i64, BackendError> {
    i64::try_from(value).map_err(|_| BackendError::SqlValueOutOfRange { what, value })
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// A cost as a SQL `BIGINT`. A cost above `i64::MAX` is above every limit (limits are at most
/// 2^53), so it is sent as `i64::MAX`: the decision is the same rejection.
pub(super) fn cost_arg(cost: u64) -> i64 {
    i64::try_from(cost).unwrap_or(i64::MAX)
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// Every quota's verdict from the routine's reply (four integers per quota).
///
/// # Errors
/// [`BackendError::UnexpectedReply`] when the reply does not have four non-negative integers
/// (retry -1 aside) per quota.
pub(super) fn verdicts(
    backend: &'static str,
    policies: &[Policy],
    reply: &[i64],
) -> Result<Vec<Verdict>, BackendError> {
    let unexpected = || BackendError::UnexpectedReply { backend };
    if reply.len() != policies.len() * REPLY_PER_QUOTA {
        return Err(unexpected());
    }
    policies
        .iter()
        .zip(reply.chunks_exact(REPLY_PER_QUOTA))
        .map(|(policy, chunk)| verdict(policy, chunk).ok_or_else(unexpected))
        .collect()
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn verdict(policy: &Policy, reply: &[i64]) -> Option<Verdict> {
    let [allowed, remaining, reset_after_ms, retry_after_ms] = *reply else {
        return None;
    };
    let retry_after_ms = match retry_after_ms {
        -1 => None,
        wait => Some(u64::try_from(wait).ok()?),
    };
    Some(Verdict {
        allowed: allowed == 1,
        limit: policy.limit(),
        remaining: u64::try_from(remaining).ok()?,
        reset_after_ms: u64::try_from(reset_after_ms).ok()?,
        retry_after_ms: retry_after_ms.filter(|_| allowed != 1),
        window_ms: policy.window_ms(),
    })
}

#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod tests {
    use super::*;
    use crate::algorithm::Flow;

    #[test]
    fn policies_are_flattened_in_routine_order() {
        let policies = [
            Policy::FixedWindow {
                limit: 5,
                window_ms: 60_000,
            },
            Policy::TokenBucket {
                bucket_size: 10,
                refill: Flow::new(1, 1_000),
                initial_tokens: 3,
                window_ms: 10_000,
            },
        ];
        assert_eq!(
            policy_args(&policies).ok(),
            Some(vec![5, 60_000, 10, 1, 1_000, 3, 10_000])
        );
    }

    #[test]
    fn values_beyond_bigint_are_refused_not_wrapped() {
        let policies = [Policy::FixedWindow {
            limit: 1,
            window_ms: u64::MAX,
        }];
        assert!(matches!(
            policy_args(&policies),
            Err(BackendError::SqlValueOutOfRange { .. })
        ));
        assert_eq!(cost_arg(u64::MAX), i64::MAX);
    }

    #[test]
    fn replies_of_the_wrong_shape_are_errors() {
        let policies = [Policy::FixedWindow {
            limit: 5,
            window_ms: 1_000,
        }];
        assert!(verdicts("postgres", &policies, &[1, 4, 1_000]).is_err());
        assert!(verdicts("postgres", &policies, &[1, -4, 1_000, -1]).is_err());
        let verdict = verdicts("postgres", &policies, &[0, 0, 1_000, -1]);
        assert!(verdict.is_ok_and(|v| !v[0].allowed && v[0].retry_after_ms.is_none()));
    }
}
