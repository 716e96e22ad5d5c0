//! The answer to one check, combined over every quota of a limit.

use std::time::Duration;

use crate::algorithm::Verdict;

/// The outcome of a check (or a peek).
///
/// `limit` is the rate's count for the window algorithms and `bucket_size` / `capacity` for the
/// buckets, so `remaining <= limit` always. For a compound rate the fields describe the most
/// restrictive quota; `retry_after` is the longest wait among the quotas that rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was admitted (and counted).
    pub allowed: bool,
    /// The limit of the most restrictive quota.
    pub limit: u64,
    /// What that quota has left.
    pub remaining: u64,
    /// When that quota resets (window end, oldest request leaving, bucket full or empty).
    pub reset_after: Duration,
    /// Only when rejected: how long until this same request would be allowed. `None` when it
    /// never can be (rate 0, or a cost above the limit).
    pub retry_after: Option<Duration>,
    /// The period of the most restrictive quota, for `RateLimit-Policy: <limit>;w=<seconds>`.
    pub window: Duration,
}

impl Decision {
    /// Combines the verdicts of every quota of a limit (at least one).
    ///
    /// Returns `None` for an empty iterator.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Option<Self> {
        let mut verdicts = verdicts.into_iter();
        let first = verdicts.next()?;
        let mut reported = first;
        let mut allowed = first.allowed;
        // The longest wait among rejecting quotas; any rejecting quota that can never pass
        // makes the whole request impossible.
        let mut retry_after_ms = rejection_wait(&first);
        for verdict in verdicts {
            if verdict.allowed {
                if allowed && verdict.remaining < reported.remaining {
                    reported = verdict;
                }
            } else {
                retry_after_ms = match (allowed, retry_after_ms, rejection_wait(&verdict)) {
                    (true, _, wait) => wait,
                    (false, Some(Some(a)), Some(Some(b))) => Some(Some(a.max(b))),
                    (false, _, _) => Some(None),
                };
                if allowed || verdict.remaining < reported.remaining {
                    reported = verdict;
                }
                allowed = false;
            }
        }
        Some(Self {
            allowed,
            retry_after: retry_after_ms.flatten().map(Duration::from_millis),
            ..Self::from(reported)
        })
    }

    /// `Retry-After` in whole seconds: rounded up, at least 1. `None` when allowed or when the
    /// request can never pass.
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(ceil_secs_at_least_one)
    }

    /// Seconds until reset, rounded up.
    #[must_use]
    pub fn reset_after_secs(&self) -> u64 {
        let millis = u64::try_from(self.reset_after.as_millis()).unwrap_or(u64::MAX);
        millis.div_ceil(1_000)
    }
}

impl From<Verdict> for Decision {
    /// The decision of a limit with one quota: its verdict, in `Duration`s.
    #[inline]
    fn from(verdict: Verdict) -> Self {
        Self {
            allowed: verdict.allowed,
            limit: verdict.limit,
            remaining: verdict.remaining,
            reset_after: Duration::from_millis(verdict.reset_after_ms),
            // A verdict carries no wait when it allows.
            retry_after: verdict.retry_after_ms.map(Duration::from_millis),
            window: Duration::from_millis(verdict.window_ms),
        }
    }
}

/// `Some(wait)` for a rejecting verdict (`wait` itself `None` when it can never pass), `None`
/// for an allowing one.
fn rejection_wait(verdict: &Verdict) -> Option<Option<u64>> {
    (!verdict.allowed).then_some(verdict.retry_after_ms)
}

fn ceil_secs_at_least_one(duration: Duration) -> u64 {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    millis.div_ceil(1_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(allowed: bool, remaining: u64, retry_after_ms: Option<u64>) -> Verdict {
        Verdict {
            allowed,
            limit: 10,
            remaining,
            reset_after_ms: 1_000,
            retry_after_ms,
            window_ms: 1_000,
        }
    }

    #[test]
    fn most_restrictive_allowed_quota_is_reported() {
        let decision = Decision::combine([verdict(true, 5, None), verdict(true, 2, None)])
            .unwrap_or_else(|| unreachable!());
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 2);
        assert_eq!(decision.retry_after, None);
    }

    #[test]
    fn longest_wait_among_rejecting_quotas_wins() {
        let decision = Decision::combine([
            verdict(false, 0, Some(300)),
            verdict(true, 7, None),
            verdict(false, 0, Some(900)),
        ])
        .unwrap_or_else(|| unreachable!());
        assert!(!decision.allowed);
        assert_eq!(decision.retry_after, Some(Duration::from_millis(900)));
        assert_eq!(decision.retry_after_secs(), Some(1));
    }

    #[test]
    fn a_quota_that_never_passes_makes_the_request_impossible() {
        let decision = Decision::combine([verdict(false, 0, Some(300)), verdict(false, 0, None)])
            .unwrap_or_else(|| unreachable!());
        assert_eq!(decision.retry_after, None);
        assert_eq!(decision.retry_after_secs(), None);
    }

    #[test]
    fn a_single_verdict_decides_as_a_limit_of_one_quota() {
        for single in [verdict(true, 3, None), verdict(false, 0, Some(250))] {
            assert_eq!(Some(Decision::from(single)), Decision::combine([single]));
        }
    }

    #[test]
    fn retry_after_seconds_round_up_and_are_at_least_one() {
        let mut decision =
            Decision::combine([verdict(false, 0, Some(1))]).unwrap_or_else(|| unreachable!());
        assert_eq!(decision.retry_after_secs(), Some(1));
        decision.retry_after = Some(Duration::from_millis(1_001));
        assert_eq!(decision.retry_after_secs(), Some(2));
    }
}
