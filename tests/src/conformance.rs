//! The backend conformance suite: one table of scenarios (algorithm × rate × cost × clock steps
//! → expected decisions) that every backend must reproduce exactly under an injected clock, and
//! a table of pairings (two limits interleaved on one key) in which each limit must decide
//! exactly as it does alone on a fresh key.
//!
//! ```ignore
//! let failures = conformance::run(|clock| async move { Arc::new(MemoryBackend::with_clock(clock)) as Arc<dyn Backend> }, "prefix:").await;
//! assert!(failures.is_empty(), "{failures:#?}");
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Backend, Decision, Limit, ManualClock, Rate};

/// A day boundary (2023-11-14T00:00:00Z), so every window of s, m, h and d starts at 0 here.
pub const T0_MS: u64 = 19_675 * 86_400_000;

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `check_n(key, limit, cost)`.
    Check,
    /// `peek_n(key, limit, cost)`: must equal what a check would say, and record nothing.
    Peek,
    /// `reset(key)`; the step's expectation is ignored.
    Reset,
}

/// The decision a step must produce, in milliseconds (headers are derived from these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: u64,
    pub retry_after_ms: Option<u64>,
}

/// One step: move the clock forward, then act.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub advance_ms: u64,
    pub op: Op,
    pub cost: u64,
    pub expect: Expect,
}

/// A named sequence of steps on one fresh key.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub limit: Limit,
    pub steps: Vec<Step>,
}

/// A step whose decision differed from the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub scenario: &'static str,
    pub step: usize,
    pub expected: Expect,
    pub actual: Result<Expect, String>,
}

/// Allowed, with what is left and when the quota resets.
const fn ok(limit: u64, remaining: u64, reset_after_ms: u64) -> Expect {
    Expect {
        allowed: true,
        limit,
        remaining,
        reset_after_ms,
        retry_after_ms: None,
    }
}

/// Rejected; `retry_after_ms` is `None` when the request can never pass.
const fn no(
    limit: u64,
    remaining: u64,
    reset_after_ms: u64,
    retry_after_ms: Option<u64>,
) -> Expect {
    Expect {
        allowed: false,
        limit,
        remaining,
        reset_after_ms,
        retry_after_ms,
    }
}

const fn check(advance_ms: u64, cost: u64, expect: Expect) -> Step {
    Step {
        advance_ms,
        op: Op::Check,
        cost,
        expect,
    }
}

const fn peek(advance_ms: u64, cost: u64, expect: Expect) -> Step {
    Step {
        advance_ms,
        op: Op::Peek,
        cost,
        expect,
    }
}

const fn reset(advance_ms: u64) -> Step {
    Step {
        advance_ms,
        op: Op::Reset,
        cost: 0,
        expect: ok(0, 0, 0),
    }
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("scenario rate {text:?}: {error}"))
}

/// Every scenario. Times are relative to [`T0_MS`].
#[must_use]
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "fixed_window: five per minute, then the window boundary",
            limit: Limit::fixed_window(rate("5/m")),
            steps: vec![
                check(0, 1, ok(5, 4, 60_000)),
                check(0, 1, ok(5, 3, 60_000)),
                check(0, 1, ok(5, 2, 60_000)),
                check(0, 1, ok(5, 1, 60_000)),
                check(0, 1, ok(5, 0, 60_000)),
                check(0, 1, no(5, 0, 60_000, Some(60_000))),
                check(59_999, 1, no(5, 0, 1, Some(1))),
                // Exactly (k+1)*P is the next window.
                check(1, 1, ok(5, 4, 60_000)),
            ],
        },
        Scenario {
            name: "fixed_window: costs fit entirely or not at all",
            limit: Limit::fixed_window(rate("10/m")),
            steps: vec![
                check(1_000, 4, ok(10, 6, 59_000)),
                check(0, 4, ok(10, 2, 59_000)),
                check(0, 4, no(10, 2, 59_000, Some(59_000))),
                peek(0, 2, ok(10, 0, 59_000)),
                check(0, 2, ok(10, 0, 59_000)),
                check(0, 11, no(10, 0, 59_000, None)),
            ],
        },
        Scenario {
            name: "fixed_window: a rate of zero blocks everything, forever",
            limit: Limit::fixed_window(rate("0/m")),
            steps: vec![
                check(0, 1, no(0, 0, 60_000, None)),
                check(120_000, 1, no(0, 0, 60_000, None)),
            ],
        },
        Scenario {
            name: "fixed_window: reset forgets the count",
            limit: Limit::fixed_window(rate("2/h")),
            steps: vec![
                check(0, 2, ok(2, 0, 3_600_000)),
                check(0, 1, no(2, 0, 3_600_000, Some(3_600_000))),
                reset(0),
                check(0, 1, ok(2, 1, 3_600_000)),
            ],
        },
        Scenario {
            name: "sliding_window: requests leave one period after they were admitted",
            limit: Limit::sliding_window(rate("3/10s")),
            steps: vec![
                check(0, 1, ok(3, 2, 10_000)),
                check(2_000, 1, ok(3, 1, 8_000)),
                check(2_000, 1, ok(3, 0, 6_000)),
                check(1_000, 1, no(3, 0, 5_000, Some(5_000))),
                peek(0, 2, no(3, 0, 5_000, Some(7_000))),
                // t = 10 s: the request of t = 0 no longer counts.
                check(5_000, 1, ok(3, 0, 2_000)),
                check(0, 1, no(3, 0, 2_000, Some(2_000))),
                check(0, 2, no(3, 0, 2_000, Some(4_000))),
                check(0, 4, no(3, 0, 2_000, None)),
            ],
        },
        Scenario {
            name: "sliding_window_counter: the previous bucket slides out",
            limit: Limit::sliding_window_counter(rate("10/m")),
            steps: vec![
                check(0, 6, ok(10, 4, 60_000)),
                check(30_000, 4, ok(10, 0, 30_000)),
                // Only fits in the next bucket, once 10 * (60 - e) / 60 <= 9.
                check(0, 1, no(10, 0, 30_000, Some(36_000))),
                // t = 66 s: used = 10 * 54 / 60 = 9.
                check(36_000, 1, ok(10, 0, 54_000)),
                // Room in this bucket once 10 * (60 - e) / 60 <= 8, at e = 12 s.
                check(0, 1, no(10, 0, 54_000, Some(6_000))),
                peek(6_000, 1, ok(10, 0, 48_000)),
                check(0, 11, no(10, 1, 48_000, None)),
            ],
        },
        Scenario {
            name: "token_bucket: a burst, then one token per second",
            limit: Limit::token_bucket(rate("10/10s")),
            steps: vec![
                check(0, 10, ok(10, 0, 10_000)),
                check(0, 1, no(10, 0, 10_000, Some(1_000))),
                check(500, 1, no(10, 0, 9_500, Some(500))),
                check(500, 1, ok(10, 0, 10_000)),
                check(10_000, 3, ok(10, 7, 3_000)),
                check(0, 11, no(10, 7, 3_000, None)),
            ],
        },
        Scenario {
            name: "token_bucket: starts empty and refills from the first (rejected) request",
            limit: Limit::token_bucket(rate("100/h"))
                .bucket_size(5)
                .refill_rate(2.0)
                .initial_tokens(0),
            steps: vec![
                check(0, 1, no(5, 0, 2_500, Some(500))),
                peek(250, 1, no(5, 0, 2_250, Some(250))),
                check(250, 1, ok(5, 0, 2_500)),
                check(2_500, 5, ok(5, 0, 2_500)),
                check(0, 6, no(5, 0, 2_500, None)),
            ],
        },
        Scenario {
            name: "leaky_bucket: the level drains at the leak rate",
            limit: Limit::leaky_bucket(rate("4/4s")),
            steps: vec![
                check(0, 4, ok(4, 0, 4_000)),
                check(0, 1, no(4, 0, 4_000, Some(1_000))),
                check(1_000, 1, ok(4, 0, 4_000)),
                check(2_000, 2, ok(4, 0, 4_000)),
                check(0, 5, no(4, 0, 4_000, None)),
                check(4_000, 1, ok(4, 3, 1_000)),
            ],
        },
        Scenario {
            name: "leaky_bucket: explicit capacity and leak rate",
            limit: Limit::leaky_bucket(rate("1/s")).capacity(3).leak_rate(0.5),
            steps: vec![
                check(0, 3, ok(3, 0, 6_000)),
                check(0, 1, no(3, 0, 6_000, Some(2_000))),
                check(1_000, 1, no(3, 0, 5_000, Some(1_000))),
                check(1_000, 1, ok(3, 0, 6_000)),
            ],
        },
        Scenario {
            name: "compound: every quota must allow; the rejecting one is reported",
            limit: Limit::fixed_window(rate("2/s;3/m")),
            steps: vec![
                check(0, 1, ok(2, 1, 1_000)),
                check(0, 1, ok(2, 0, 1_000)),
                // 2/s rejects, so 3/m is not charged.
                check(0, 1, no(2, 0, 1_000, Some(1_000))),
                check(1_000, 1, ok(3, 0, 59_000)),
                check(0, 1, no(3, 0, 59_000, Some(59_000))),
            ],
        },
        Scenario {
            name: "compound token buckets: the longest wait wins",
            limit: Limit::token_bucket(rate("2/s;4/10s")),
            steps: vec![
                check(0, 2, ok(2, 0, 1_000)),
                // Both quotas are down to 0 whole tokens; the first one written is reported.
                check(1_000, 2, ok(2, 0, 1_000)),
                // 2/s has 2 tokens again; 4/10s has 0.8 and needs 0.5 s more for one.
                check(1_000, 1, no(4, 0, 8_000, Some(500))),
            ],
        },
    ]
}

/// Two limits checked in turn on one key.
#[derive(Clone, Debug)]
pub struct Pairing {
    pub name: &'static str,
    pub limits: [Limit; 2],
    /// Whether the two limits are identical, and so must share one state: each decision then
    /// equals the one a single limit makes on the whole interleaved sequence.
    pub shared: bool,
    /// Move the clock forward, then check `limits[which]` with `cost`.
    pub steps: Vec<PairStep>,
}

/// One step of a [`Pairing`].
#[derive(Clone, Copy, Debug)]
pub struct PairStep {
    pub advance_ms: u64,
    pub which: usize,
    pub cost: u64,
}

/// `rounds` rounds of: advance `gap_ms`, then `burst` checks of cost 1 alternating between
/// the two limits (first, second, first, …).
fn alternating(rounds: usize, gap_ms: u64, burst: usize) -> Vec<PairStep> {
    (0..rounds)
        .flat_map(|_| {
            (0..burst).map(move |index| PairStep {
                advance_ms: if index == 0 { gap_ms } else { 0 },
                which: index % 2,
                cost: 1,
            })
        })
        .collect()
}

/// Every pairing: two limits on one key that differ in period, in count or in algorithm (and
/// one pair of identical limits, which share). Each is built so that checked alone, each limit
/// both admits and rejects along the way (see `pairings_exercise_both_outcomes`).
#[must_use]
pub fn pairings() -> Vec<Pairing> {
    vec![
        Pairing {
            name: "fixed windows: a burst limit and a sustained limit (5/m and 10/h)",
            limits: [
                Limit::fixed_window(rate("5/m")),
                Limit::fixed_window(rate("10/h")),
            ],
            shared: false,
            steps: alternating(4, 60_000, 14),
        },
        Pairing {
            name: "fixed windows: one period, two counts (3/m and 6/m)",
            limits: [
                Limit::fixed_window(rate("3/m")),
                Limit::fixed_window(rate("6/m")),
            ],
            shared: false,
            steps: alternating(3, 30_000, 16),
        },
        Pairing {
            name: "sliding windows: 3/10s and 5/m keep separate logs",
            limits: [
                Limit::sliding_window(rate("3/10s")),
                Limit::sliding_window(rate("5/m")),
            ],
            shared: false,
            steps: alternating(6, 4_000, 8),
        },
        Pairing {
            name: "sliding window counters: 4/10s and 6/m",
            limits: [
                Limit::sliding_window_counter(rate("4/10s")),
                Limit::sliding_window_counter(rate("6/m")),
            ],
            shared: false,
            steps: alternating(5, 7_000, 10),
        },
        Pairing {
            name: "token buckets: 4/s and 10/m",
            limits: [
                Limit::token_bucket(rate("4/s")),
                Limit::token_bucket(rate("10/m")),
            ],
            shared: false,
            steps: alternating(5, 1_500, 12),
        },
        Pairing {
            name: "leaky buckets: 3/3s and 6/m",
            limits: [
                Limit::leaky_bucket(rate("3/3s")),
                Limit::leaky_bucket(rate("6/m")),
            ],
            shared: false,
            steps: alternating(5, 2_000, 10),
        },
        Pairing {
            name: "one rate, two algorithms: fixed window and token bucket (5/m)",
            limits: [
                Limit::fixed_window(rate("5/m")),
                Limit::token_bucket(rate("5/m")),
            ],
            shared: false,
            steps: alternating(3, 40_000, 12),
        },
        Pairing {
            name: "one rate, two algorithms: sliding window and sliding window counter (4/10s)",
            limits: [
                Limit::sliding_window(rate("4/10s")),
                Limit::sliding_window_counter(rate("4/10s")),
            ],
            shared: false,
            steps: alternating(4, 6_000, 10),
        },
        Pairing {
            name: "one rate, two algorithms: token bucket and leaky bucket (3/3s)",
            limits: [
                Limit::token_bucket(rate("3/3s")),
                Limit::leaky_bucket(rate("3/3s")),
            ],
            shared: false,
            steps: alternating(4, 2_000, 8),
        },
        Pairing {
            name: "token buckets of one rate and different bucket sizes",
            limits: [
                Limit::token_bucket(rate("2/s")).bucket_size(4),
                Limit::token_bucket(rate("2/s")).bucket_size(8),
            ],
            shared: false,
            steps: alternating(3, 3_000, 16),
        },
        Pairing {
            name: "a compound rate beside one of its own quotas' periods (2/s;4/m and 6/m)",
            limits: [
                Limit::fixed_window(rate("2/s;4/m")),
                Limit::fixed_window(rate("6/m")),
            ],
            shared: false,
            steps: alternating(4, 1_000, 8),
        },
        Pairing {
            name: "identical limits share one state (the meaning of a shared group)",
            limits: [
                Limit::fixed_window(rate("5/m")),
                Limit::fixed_window(rate("5/m")),
            ],
            shared: true,
            steps: alternating(2, 60_000, 8),
        },
    ]
}

/// Runs every scenario and every pairing on a fresh backend made by `make_backend` with a
/// clock at [`T0_MS`], each on its own keys under `key_prefix`. Returns every step that
/// differed.
pub async fn run<F, Fut>(mut make_backend: F, key_prefix: &str) -> Vec<Mismatch>
where
    F: FnMut(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    let mut mismatches = run_scenarios(&mut make_backend, key_prefix).await;
    for (index, pairing) in pairings().into_iter().enumerate() {
        let clock = ManualClock::new(T0_MS);
        let backend = make_backend(clock.clone()).await;
        let key = format!("{key_prefix}pairing:{index}");
        mismatches.extend(run_pairing(&*backend, &clock, &pairing, &key).await.0);
    }
    mismatches
}

/// The decisions of a pairing: each step on the shared `key`, against the same limit alone on
/// a key of its own (one key for both when the limits are identical). Returns the steps that
/// differed and the decisions the limits made alone.
pub async fn run_pairing(
    backend: &dyn Backend,
    clock: &ManualClock,
    pairing: &Pairing,
    key: &str,
) -> (Vec<Mismatch>, Vec<Result<Expect, String>>) {
    let alone_keys = if pairing.shared {
        [format!("{key}:alone"), format!("{key}:alone")]
    } else {
        [format!("{key}:alone-0"), format!("{key}:alone-1")]
    };
    let outcome = |decision: Result<Decision, ratelimit_core::BackendError>| {
        decision
            .map(|decision| expect_of(&decision))
            .map_err(|error| error.to_string())
    };
    let mut mismatches = Vec::new();
    let mut alone_decisions = Vec::new();
    for (step_index, step) in pairing.steps.iter().enumerate() {
        clock.advance(Duration::from_millis(step.advance_ms));
        let limit = &pairing.limits[step.which];
        let together = outcome(backend.check_n(key, limit, step.cost).await);
        let alone = outcome(
            backend
                .check_n(&alone_keys[step.which], limit, step.cost)
                .await,
        );
        match (&together, &alone) {
            (_, Ok(expected)) if together.as_ref() != Ok(expected) => mismatches.push(Mismatch {
                scenario: pairing.name,
                step: step_index,
                expected: *expected,
                actual: together.clone(),
            }),
            (_, Err(error)) => mismatches.push(Mismatch {
                scenario: pairing.name,
                step: step_index,
                expected: ok(0, 0, 0),
                actual: Err(format!("alone: {error}")),
            }),
            _ => {}
        }
        alone_decisions.push(alone);
    }
    (mismatches, alone_decisions)
}

/// Runs every scenario of [`scenarios`]; see [`run`].
async fn run_scenarios<F, Fut>(make_backend: &mut F, key_prefix: &str) -> Vec<Mismatch>
where
    F: FnMut(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    let mut mismatches = Vec::new();
    for (index, scenario) in scenarios().into_iter().enumerate() {
        let clock = ManualClock::new(T0_MS);
        let backend = make_backend(clock.clone()).await;
        let key = format!("{key_prefix}conformance:{index}");
        for (step_index, step) in scenario.steps.iter().enumerate() {
            clock.advance(Duration::from_millis(step.advance_ms));
            let decision = match step.op {
                Op::Reset => match backend.reset(&key).await {
                    Ok(()) => continue,
                    Err(error) => Err(error),
                },
                Op::Check => backend.check_n(&key, &scenario.limit, step.cost).await,
                Op::Peek => backend.peek_n(&key, &scenario.limit, step.cost).await,
            };
            let actual = decision
                .map(|decision| expect_of(&decision))
                .map_err(|error| error.to_string());
            if actual.as_ref() != Ok(&step.expect) {
                mismatches.push(Mismatch {
                    scenario: scenario.name,
                    step: step_index,
                    expected: step.expect,
                    actual,
                });
            }
        }
    }
    mismatches
}

fn expect_of(decision: &Decision) -> Expect {
    Expect {
        allowed: decision.allowed,
        limit: decision.limit,
        remaining: decision.remaining,
        reset_after_ms: millis(decision.reset_after),
        retry_after_ms: decision.retry_after.map(millis),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
