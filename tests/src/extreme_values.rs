//! Extreme values against any backend: periods up to the longest a limit may have, counts up
//! to what stores keep exact, costs up to `u64::MAX`, and clock steps of several periods. Every
//! call on a valid limit must be a decision (no server error, no panic) with
//! `remaining <= limit`, and a cost above the limit is never admitted.
//!
//! Cases come from a fixed-seed generator, so a failure names a case that reproduces.

use std::time::Duration;

use ratelimit_core::limit::MAX_PERIOD;
use ratelimit_core::{Algorithm, Backend, Limit, ManualClock, Quota, Rate};

/// A small xorshift generator: reproducible cases without an async-unfriendly test runner.
struct Cases(u64);

impl Cases {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        let index = usize::try_from(self.next() % choices.len() as u64).unwrap_or(0);
        choices[index]
    }
}

/// Runs `cases` random cases of up to eight steps each on `backend`, whose clock is `clock`,
/// on keys under `key_prefix`. Returns a description of every call that broke the contract,
/// and how many calls were made (cases whose limit is invalid are skipped).
pub async fn run(
    backend: &dyn Backend,
    clock: &ManualClock,
    key_prefix: &str,
    cases: usize,
) -> (Vec<String>, usize) {
    let longest_ms = u64::try_from(MAX_PERIOD.as_millis()).unwrap_or(u64::MAX);
    let mut random = Cases(0x9e37_79b9_7f4a_7c15);
    let mut broken = Vec::new();
    let mut calls = 0;
    for case in 0..cases {
        let algorithm = random.pick(&Algorithm::ALL);
        let count = random.pick(&[0, 1, 5, 1 << 20, 1 << 40]);
        let period_ms = random.pick(&[1, 999, 60_000, longest_ms / 7, longest_ms]);
        let period = std::num::NonZeroU64::new(period_ms).unwrap_or(std::num::NonZeroU64::MIN);
        let limit = Limit::new(Rate::from_quota(Quota::new(count, period)), algorithm);
        if limit.validate().is_err() {
            continue;
        }
        let key = format!("{key_prefix}extreme:{case}");
        for step in 0..8 {
            let advance_ms = random.pick(&[0, 1, 1_000, longest_ms / 3, longest_ms]);
            let cost = random.pick(&[1, 2, 1 << 30, 1 << 53, u64::MAX]);
            clock.advance(Duration::from_millis(advance_ms));
            calls += 1;
            let what = format!("case {case} step {step}: {limit:?}, cost {cost}");
            let decided = if random.next().is_multiple_of(4) {
                backend.peek_n(&key, &limit, cost).await
            } else {
                backend.check_n(&key, &limit, cost).await
            };
            match decided {
                Ok(decision) if decision.remaining > decision.limit => {
                    broken.push(format!("{what}: remaining above limit: {decision:?}"));
                }
                Ok(decision) if decision.allowed && cost > decision.limit => {
                    broken.push(format!(
                        "{what}: admitted a cost above the limit: {decision:?}"
                    ));
                }
                Ok(_) => {}
                Err(error) => broken.push(format!("{what}: {error}")),
            }
        }
    }
    (broken, calls)
}
