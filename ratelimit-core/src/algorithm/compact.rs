//! The algorithms whose state is two integers (fixed window, token bucket, leaky bucket) with
//! their parameters worked out once per limit rather than once per check: a store's hot path,
//! which decides a single-quota check on the two stored integers and records it in one pass.
//!
//! Every answer here is the one [`Policy`] gives (`evaluate`, then `admit` and
//! `expires_after_admitting` when allowed); the same per-algorithm functions compute both, and
//! the property test below checks the agreement.

#[cfg(feature = "memory")]
use super::{BucketState, Verdict, WindowState, fixed_window};
use super::{Policy, leaky_bucket, token_bucket};

/// A [`Policy`] of one of the three two-integer algorithms, its parameters prepared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CompactPolicy {
    prepared: Prepared,
    /// Half of [`Policy::limit`], rounded down.
    half_limit: u64,
}

/// `repr(u8)`: a plain tag byte, where the default layout hides the tag in the token bucket's
/// `bool` and the hot path spends instructions decoding it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Prepared {
    FixedWindow { limit: u64, window_ms: u64 },
    TokenBucket(token_bucket::Params),
    LeakyBucket(leaky_bucket::Params),
}

/// What admitting a request leaves stored: the two integers, and when they may be forgotten.
#[cfg(feature = "memory")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// `[window_start, count]` for a window, `[level, last_ms]` for a bucket.
    pub(crate) words: [u64; 2],
    pub(crate) expires_at: u64,
}

impl CompactPolicy {
    /// The prepared form of `policy`; `None` for the sliding algorithms, whose state is larger.
    #[must_use]
    pub(crate) fn of(policy: &Policy) -> Option<Self> {
        let prepared = match *policy {
            Policy::FixedWindow { limit, window_ms } => Prepared::FixedWindow { limit, window_ms },
            Policy::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => Prepared::TokenBucket(token_bucket::Params::new(
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            )),
            Policy::LeakyBucket {
                capacity,
                leak,
                window_ms,
            } => Prepared::LeakyBucket(leaky_bucket::Params::new(capacity, leak, window_ms)),
            Policy::SlidingWindow { .. } | Policy::SlidingWindowCounter { .. } => return None,
        };
        Some(Self {
            prepared,
            half_limit: policy.limit() / 2,
        })
    }

    /// Half the limit its verdicts report ([`Verdict::limit`]), rounded down: a store that
    /// tells states far from their limit apart by `remaining > half_limit` compares without
    /// dividing on every check.
    #[cfg(feature = "memory")]
    #[inline(always)]
    #[must_use]
    pub(crate) fn half_limit(&self) -> u64 {
        self.half_limit
    }

    /// The verdict on a request of `cost` at `now_ms` against the stored integers `words`, and
    /// what to store if it is allowed.
    ///
    /// `None` when the stored state is no longer live (it then means the same as no state) or
    /// is a bucket written after `now_ms` (only after an injected clock stepped back), whose
    /// expiry its own integers do not give: the caller's general path decides those.
    #[cfg(feature = "memory")]
    #[inline(always)]
    #[must_use]
    pub(crate) fn check_live(
        &self,
        words: [u64; 2],
        now_ms: u64,
        cost: u64,
    ) -> Option<(Verdict, Option<Admitted>)> {
        let [first, second] = words;
        let (verdict, admitted, remembered_ms) = match &self.prepared {
            &Prepared::FixedWindow { limit, window_ms } => {
                let state = WindowState {
                    window_start: first,
                    count: second,
                };
                if fixed_window::is_over(window_ms, &state, now_ms) {
                    return None;
                }
                let (verdict, admitted) =
                    fixed_window::step(limit, window_ms, Some(&state), now_ms, cost);
                let remembered_ms = verdict.reset_after_ms;
                (
                    verdict,
                    [admitted.window_start, admitted.count],
                    remembered_ms,
                )
            }
            Prepared::TokenBucket(params) => {
                let state = live_bucket(first, second, now_ms)?;
                if token_bucket::is_forgotten(params, &state, now_ms) {
                    return None;
                }
                let (verdict, admitted) = token_bucket::step(params, Some(&state), now_ms, cost);
                let remembered_ms = token_bucket::remembered_after_admitting(params, &verdict);
                (verdict, [admitted.level, admitted.last_ms], remembered_ms)
            }
            Prepared::LeakyBucket(params) => {
                // An empty leaky bucket means the same as none: it is never forgotten early.
                let state = live_bucket(first, second, now_ms)?;
                let (verdict, admitted) = leaky_bucket::step(params, Some(&state), now_ms, cost);
                let remembered_ms = verdict.reset_after_ms;
                (verdict, [admitted.level, admitted.last_ms], remembered_ms)
            }
        };
        let admitted = verdict.allowed.then(|| Admitted {
            words: admitted,
            // At least a millisecond ahead, like every expiry (`later_than`).
            expires_at: now_ms.saturating_add(remembered_ms.max(1)),
        });
        Some((verdict, admitted))
    }
}

/// The bucket stored as `[level, last_ms]`, unless its refill clock is ahead of `now_ms`.
#[cfg(feature = "memory")]
#[inline(always)]
fn live_bucket(level: u64, last_ms: u64, now_ms: u64) -> Option<BucketState> {
    (last_ms <= now_ms).then_some(BucketState { level, last_ms })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use proptest::prelude::*;

    use super::*;
    use crate::algorithm::{Algorithm, State};
    use crate::{Limit, Quota, Rate};

    fn words(state: &State) -> [u64; 2] {
        match state {
            State::Window(window) => [window.window_start, window.count],
            State::Bucket(bucket) => [bucket.level, bucket.last_ms],
            State::Counter(_) | State::Log(_) => unreachable!("not a two-integer state"),
        }
    }

    fn compact_algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![
            Just(Algorithm::FixedWindow),
            Just(Algorithm::TokenBucket),
            Just(Algorithm::LeakyBucket),
        ]
    }

    proptest! {
        /// The one pass agrees with the definitions on every live state, allowing and
        /// rejecting: `evaluate`, then `admit` and `expires_after_admitting` when allowed; and
        /// it declines exactly the states `is_forgotten` gives up.
        #[test]
        fn the_one_pass_agrees_with_the_definitions(
            algorithm in compact_algorithm(),
            count in 1_u64..20,
            period_ms in 1_u64..5_000,
            initial_tokens in prop::option::of(0_u64..20),
            costs in prop::collection::vec((0_u64..3_000, 1_u64..5), 1..20),
        ) {
            let period = NonZeroU64::new(period_ms).unwrap_or(NonZeroU64::MIN);
            let mut limit = Limit::new(Rate::from_quota(Quota::new(count, period)), algorithm);
            if let (Some(initial), Algorithm::TokenBucket) = (initial_tokens, algorithm) {
                limit = limit.initial_tokens(initial.min(count));
            }
            let policies = limit
                .resolved_policies()
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            let policy = *policies.first().unwrap_or_else(|| unreachable!());
            let compact = CompactPolicy::of(&policy).unwrap_or_else(|| unreachable!());
            let mut state = policy.state_after_first_rejection(1_000);
            let mut now = 1_000;
            for (gap, cost) in costs {
                now += gap;
                let Some(stored) = state.clone() else {
                    state = Some(policy.admit(None, now, cost));
                    continue;
                };
                let one_pass = compact.check_live(words(&stored), now, cost);
                if policy.is_forgotten(&stored, now) {
                    prop_assert_eq!(one_pass, None);
                    state = None;
                    continue;
                }
                let verdict = policy.evaluate(Some(&stored), now, cost);
                let next = verdict.allowed.then(|| policy.admit(Some(stored), now, cost));
                let admitted = next.as_ref().map(|next| Admitted {
                    words: words(next),
                    expires_at: policy.expires_after_admitting(&verdict, next, now),
                });
                prop_assert_eq!(one_pass, Some((verdict, admitted)));
                if let (Some(next), Some(admitted)) = (next, admitted) {
                    prop_assert_eq!(admitted.expires_at, policy.expires_at(&next, now));
                    state = Some(next);
                }
            }
        }
    }
}
