//! Property tests: the memory backend against a naive reference model, for random rates, costs
//! and request times, on every algorithm.

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{
    Algorithm, Decision, Limit, ManualClock, MemoryBackend, Policy, Quota, Rate, State,
};

const START_MS: u64 = 1_700_000_000_000;

/// A deliberately naive model: it keeps every admitted request and recomputes from history.
struct Model {
    algorithm: Algorithm,
    count: u64,
    period_ms: u64,
    admitted: Vec<(u64, u64)>,
    /// First request time: a bucket's refill starts there.
    first_ms: Option<u64>,
}

impl Model {
    /// Tokens (token bucket) or level (leaky bucket) at `now`, times `period_ms`, replayed from
    /// the admitted history with the default flow of `count` per `period_ms`.
    fn bucket_scaled(&self, now: u64) -> u128 {
        let size = u128::from(self.count) * u128::from(self.period_ms);
        let Some(first) = self.first_ms else {
            return if self.algorithm == Algorithm::TokenBucket {
                size
            } else {
                0
            };
        };
        let (mut value, mut last) = if self.algorithm == Algorithm::TokenBucket {
            (size, first)
        } else {
            (0, first)
        };
        for &(at, cost) in self.admitted.iter().chain(std::iter::once(&(now, 0))) {
            let flowed = u128::from(at - last) * u128::from(self.count);
            value = if self.algorithm == Algorithm::TokenBucket {
                (value + flowed).min(size)
            } else {
                value.saturating_sub(flowed)
            };
            let cost = u128::from(cost) * u128::from(self.period_ms);
            value = if self.algorithm == Algorithm::TokenBucket {
                value - cost
            } else {
                value + cost
            };
            last = at;
        }
        value
    }

    fn used_in(&self, from: u64, to: u64) -> u64 {
        self.admitted
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, cost)| cost)
            .sum()
    }

    /// `(allowed, remaining)` for a request of `cost` at `now`; records it when allowed.
    fn request(&mut self, now: u64, cost: u64) -> (bool, u64) {
        self.first_ms.get_or_insert(now);
        let period = self.period_ms;
        let limit = self.count;
        let (allowed, remaining) = match self.algorithm {
            Algorithm::FixedWindow => {
                let start = now / period * period;
                let used = self.used_in(start, start + period);
                let allowed = used + cost <= limit;
                (allowed, limit - used - if allowed { cost } else { 0 })
            }
            Algorithm::SlidingWindow => {
                let used = self.used_in(now.saturating_sub(period - 1), now + 1);
                let allowed = used + cost <= limit;
                (allowed, limit - used - if allowed { cost } else { 0 })
            }
            Algorithm::SlidingWindowCounter => {
                let start = now / period * period;
                let current = u128::from(self.used_in(start, start + period));
                let previous = u128::from(self.used_in(start.saturating_sub(period), start));
                let overlap = u128::from(start + period - now);
                let period = u128::from(period);
                let used_scaled = previous * overlap + current * period;
                let cost_scaled = u128::from(cost) * period;
                let limit_scaled = u128::from(limit) * period;
                let allowed = used_scaled + cost_scaled <= limit_scaled;
                let after = used_scaled + if allowed { cost_scaled } else { 0 };
                (
                    allowed,
                    (limit_scaled.saturating_sub(after) / period) as u64,
                )
            }
            Algorithm::TokenBucket => {
                let tokens = self.bucket_scaled(now);
                let needed = u128::from(cost) * u128::from(period);
                let allowed = tokens >= needed;
                let after = if allowed { tokens - needed } else { tokens };
                (allowed, (after / u128::from(period)) as u64)
            }
            Algorithm::LeakyBucket => {
                let level = self.bucket_scaled(now);
                let capacity = u128::from(limit) * u128::from(period);
                let added = u128::from(cost) * u128::from(period);
                let allowed = level + added <= capacity;
                let after = level + if allowed { added } else { 0 };
                (allowed, ((capacity - after) / u128::from(period)) as u64)
            }
        };
        if allowed {
            self.admitted.push((now, cost));
        }
        (allowed, remaining)
    }
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

fn quota() -> impl Strategy<Value = (u64, u64)> {
    (
        0_u64..12,
        prop::sample::select(vec![1_000_u64, 2_000, 10_000, 60_000]),
    )
}

fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0_u64..2_500, 1_u64..5), 1..80)
}

fn setup(algorithm: Algorithm, count: u64, period_ms: u64) -> (MemoryBackend, ManualClock, Limit) {
    let clock = ManualClock::new(START_MS);
    let backend = MemoryBackend::with_clock(clock.clone());
    let period = std::num::NonZeroU64::new(period_ms).unwrap_or(std::num::NonZeroU64::MIN);
    let limit = Limit::new(Rate::from_quota(Quota::new(count, period)), algorithm);
    (backend, clock, limit)
}

fn decide(backend: &MemoryBackend, limit: &Limit, cost: u64, commit: bool) -> Decision {
    let decision = if commit {
        backend.check_now("k", limit, cost)
    } else {
        backend.peek_now("k", limit, cost)
    };
    decision.unwrap_or_else(|error| panic!("valid limit refused: {error}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The fast implementation agrees with the naive model on every decision, `peek` always
    /// predicts `check`, and `remaining <= limit`.
    #[test]
    fn backend_agrees_with_the_reference_model(
        algorithm in algorithm(),
        (count, period_ms) in quota(),
        requests in requests(),
    ) {
        let (backend, clock, limit) = setup(algorithm, count, period_ms);
        let mut model = Model { algorithm, count, period_ms, admitted: Vec::new(), first_ms: None };
        for (advance_ms, cost) in requests {
            clock.advance(Duration::from_millis(advance_ms));
            let now = clock.now_millis();
            let peeked = decide(&backend, &limit, cost, false);
            let decision = decide(&backend, &limit, cost, true);
            prop_assert_eq!(peeked, decision, "peek predicts check");
            let (allowed, remaining) = model.request(now, cost);
            prop_assert_eq!(decision.allowed, allowed, "allowed at {} cost {}", now - START_MS, cost);
            prop_assert_eq!(decision.remaining, remaining, "remaining at {}", now - START_MS);
            prop_assert!(decision.remaining <= decision.limit);
            prop_assert_eq!(decision.limit, count);
            prop_assert_eq!(decision.retry_after.is_some(), !decision.allowed && cost <= count);
        }
    }

    /// `retry_after` is exact: one millisecond earlier the same request is still rejected, at
    /// `retry_after` it is allowed.
    #[test]
    fn retry_after_is_the_exact_wait(
        algorithm in algorithm(),
        (count, period_ms) in quota(),
        requests in requests(),
    ) {
        let (backend, clock, limit) = setup(algorithm, count, period_ms);
        for (advance_ms, cost) in requests {
            clock.advance(Duration::from_millis(advance_ms));
            let now = clock.now_millis();
            let decision = decide(&backend, &limit, cost, true);
            let Some(retry_after) = decision.retry_after else { continue };
            let retry_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
            prop_assert!(retry_ms >= 1);
            clock.set_millis(now + retry_ms - 1);
            prop_assert!(!decide(&backend, &limit, cost, false).allowed, "allowed before retry_after");
            clock.set_millis(now + retry_ms);
            prop_assert!(decide(&backend, &limit, cost, false).allowed, "still rejected at retry_after");
            clock.set_millis(now);
        }
    }

    /// No window of length P ever admits more than the limit (fixed and sliding windows: any
    /// window; buckets: never more than the burst plus what flowed in).
    #[test]
    fn no_overshoot(
        algorithm in algorithm(),
        (count, period_ms) in quota(),
        requests in requests(),
    ) {
        let (backend, clock, limit) = setup(algorithm, count, period_ms);
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for (advance_ms, cost) in requests {
            clock.advance(Duration::from_millis(advance_ms));
            if decide(&backend, &limit, cost, true).allowed {
                admitted.push((clock.now_millis(), cost));
            }
        }
        let first = admitted.first().map_or(START_MS, |(at, _)| *at);
        for &(from, _) in &admitted {
            let in_window: u64 = admitted
                .iter()
                .filter(|(at, _)| (from..from + period_ms).contains(at))
                .map(|(_, cost)| cost)
                .sum();
            match algorithm {
                Algorithm::FixedWindow => {
                    let start = from / period_ms * period_ms;
                    let aligned: u64 = admitted
                        .iter()
                        .filter(|(at, _)| (start..start + period_ms).contains(at))
                        .map(|(_, cost)| cost)
                        .sum();
                    prop_assert!(aligned <= count);
                }
                Algorithm::SlidingWindow => prop_assert!(in_window <= count),
                // Approximate by design: never more than twice the limit in any window.
                Algorithm::SlidingWindowCounter => prop_assert!(in_window <= 2 * count),
                Algorithm::TokenBucket | Algorithm::LeakyBucket => {
                    let through: u64 = admitted
                        .iter()
                        .filter(|(at, _)| *at <= from)
                        .map(|(_, cost)| cost)
                        .sum();
                    let flowed = u128::from(from - first) * u128::from(count) / u128::from(period_ms);
                    prop_assert!(u128::from(through) <= u128::from(count) + flowed);
                }
            }
        }
    }
}

/// A bucket limit of `count` per `period_ms`: leaky, or token starting `initial` below full.
fn bucket_limit(leaky: bool, count: u64, period_ms: u64, initial: Option<u64>) -> Limit {
    let period = std::num::NonZeroU64::new(period_ms).unwrap_or(std::num::NonZeroU64::MIN);
    let rate = Rate::from_quota(Quota::new(count.max(1), period));
    match (leaky, initial) {
        (true, _) => Limit::leaky_bucket(rate),
        (false, None) => Limit::token_bucket(rate),
        (false, Some(initial)) => Limit::token_bucket(rate).initial_tokens(initial.min(count)),
    }
}

/// The state after admitting what fits of `costs`, one request per millisecond from `START_MS`,
/// and the time of the last request.
fn state_after(policy: &Policy, costs: &[u64]) -> (Option<State>, u64) {
    let mut state = None;
    let mut now = START_MS;
    for &cost in costs {
        now += 1;
        if policy.evaluate(state.as_ref(), now, cost).allowed {
            state = Some(policy.admit(state, now, cost));
        }
    }
    (state, now)
}

fn only_policy(limit: &Limit) -> Policy {
    let policies: Vec<Policy> = limit
        .policies()
        .unwrap_or_else(|error| panic!("valid limit refused: {error}"))
        .collect();
    policies[0]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Why `Policy::is_forgotten` may say "never" for a token bucket that starts full and for a
    /// leaky bucket: once such a state has expired, it decides and admits exactly like no state.
    #[test]
    fn an_expired_full_or_empty_bucket_decides_like_no_state(
        leaky in any::<bool>(),
        (count, period_ms) in quota(),
        costs in prop::collection::vec(1_u64..5, 1..12),
        late in 0_u64..10_000,
        cost in 1_u64..5,
    ) {
        let policy = only_policy(&bucket_limit(leaky, count, period_ms, None));
        let (Some(state), now) = state_after(&policy, &costs) else {
            return Ok(());
        };
        let at = policy.expires_at(&state, now) + late;
        prop_assert!(!policy.is_forgotten(&state, at));
        prop_assert_eq!(policy.evaluate(Some(&state), at, cost), policy.evaluate(None, at, cost));
        prop_assert_eq!(policy.admit(Some(state), at, cost), policy.admit(None, at, cost));
    }

    /// A token bucket that starts below full is forgotten exactly when `expires_at` said, so a
    /// store that keeps only a coarse expiry still forgets it on the millisecond.
    #[test]
    fn a_bucket_that_starts_below_full_is_forgotten_exactly_at_its_expiry(
        (count, period_ms) in quota(),
        initial in 0_u64..3,
        costs in prop::collection::vec(1_u64..5, 1..12),
    ) {
        let policy = only_policy(&bucket_limit(false, count.max(3), period_ms, Some(initial)));
        let (state, now) = state_after(&policy, &costs);
        let state = state
            .or_else(|| policy.state_after_first_rejection(now))
            .unwrap_or_else(|| panic!("a bucket starting below full keeps a state"));
        let expires_at = policy.expires_at(&state, now);
        prop_assert!(!policy.is_forgotten(&state, expires_at - 1));
        prop_assert!(policy.is_forgotten(&state, expires_at));
    }

    /// The expiry a store's hot path computes after an admission, from the verdict alone,
    /// agrees with the definition `expires_at`, for every algorithm. (The hot path's one-pass
    /// decision itself is checked against `evaluate` and `admit` in `algorithm::compact`.)
    #[test]
    fn the_expiry_after_an_admission_agrees_with_the_definition(
        algorithm in algorithm(),
        (count, period_ms) in quota(),
        costs in prop::collection::vec((0_u64..3_000, 1_u64..5), 1..20),
    ) {
        let period = std::num::NonZeroU64::new(period_ms).unwrap_or(std::num::NonZeroU64::MIN);
        let limit = Limit::new(Rate::from_quota(Quota::new(count, period)), algorithm);
        let policy = only_policy(&limit);
        let mut state = None;
        let mut now = START_MS;
        for (gap, cost) in costs {
            now += gap;
            let verdict = policy.evaluate(state.as_ref(), now, cost);
            let admitted = policy.admit(state.clone(), now, cost);
            if verdict.allowed {
                prop_assert_eq!(
                    policy.expires_after_admitting(&verdict, &admitted, now),
                    policy.expires_at(&admitted, now)
                );
                state = Some(admitted);
            }
        }
    }
}

/// The longest period, in ms.
const MAX_PERIOD_MS: u64 = 36_525 * 86_400_000;

fn any_algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Extreme values never panic (tests run with overflow checks): periods up to the grammar's
    /// longest (those beyond 100 years are refused), counts up to what stores keep exact, any
    /// cost, and steps of time up to several periods. Each call is a decision or an error,
    /// never a crash.
    #[test]
    fn extreme_periods_counts_and_costs_never_panic(
        algorithm in any_algorithm(),
        count in prop_oneof![Just(0_u64), 1_u64..10, Just(1_u64 << 40), Just(1_u64 << 53)],
        period_ms in prop_oneof![
            Just(1_u64),
            1_u64..100_000,
            Just(MAX_PERIOD_MS),
            1_u64..=MAX_PERIOD_MS,
            // Beyond the longest period, up to the grammar's: refused, never a crash.
            MAX_PERIOD_MS..=u64::MAX,
            Just(u64::MAX),
        ],
        steps in prop::collection::vec(
            (
                prop_oneof![Just(0_u64), 0_u64..1_000, Just(MAX_PERIOD_MS), Just(3 * MAX_PERIOD_MS)],
                prop_oneof![Just(1_u64), 1_u64..10, Just(u64::from(u32::MAX)), Just(u64::MAX)],
                any::<bool>(),
            ),
            1..12,
        ),
    ) {
        let (backend, clock, limit) = setup(algorithm, count, period_ms);
        for (advance_ms, cost, commit) in steps {
            clock.advance(Duration::from_millis(advance_ms));
            let decided = if commit {
                backend.check_now("k", &limit, cost)
            } else {
                backend.peek_now("k", &limit, cost)
            };
            if let Ok(decision) = decided {
                prop_assert!(decision.remaining <= decision.limit);
            }
        }
    }
}

#[test]
fn periods_longer_than_a_hundred_years_are_refused() {
    let period = |ms: u64| std::num::NonZeroU64::new(ms).unwrap_or(std::num::NonZeroU64::MIN);
    for algorithm in Algorithm::ALL {
        let longest = Limit::new(
            Rate::from_quota(Quota::new(5, period(MAX_PERIOD_MS))),
            algorithm,
        );
        assert!(longest.validate().is_ok(), "{algorithm}");
        for too_long in [MAX_PERIOD_MS + 1, u64::MAX] {
            let limit = Limit::new(Rate::from_quota(Quota::new(5, period(too_long))), algorithm);
            let refused = limit.validate();
            assert!(
                matches!(
                    refused,
                    Err(ratelimit_core::LimitError::PeriodTooLong { .. })
                ),
                "{algorithm}: {refused:?}"
            );
        }
    }
    let grammar_longest: Rate = "1/213503982334d".parse().unwrap_or_else(|e| panic!("{e}"));
    let message = Limit::sliding_window(grammar_longest)
        .validate()
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(message.contains("100 years"), "{message}");
}
