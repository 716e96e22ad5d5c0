//! Exact refill and leak rates for the buckets.
//!
//! A bucket's level is kept in integer *scaled units*: one token is `per_ms` units, and the
//! flow adds (or drains) `amount` units every millisecond. `10/h` becomes 10 tokens per
//! 3,600,000 ms, so after `e` ms a bucket gains exactly `10 * e` units — no floating point, so
//! `retry_after` is exact and Rust, Lua and SQL agree to the unit.

use super::divisor::Divisor;

/// Levels must stay exact in a Lua number (an IEEE double) too.
pub const MAX_EXACT_UNITS: u128 = 1 << 53;

/// `amount` tokens every `per_ms` milliseconds, in lowest terms.
///
/// Build one with [`Flow::new`], [`Flow::per_period`] or [`Flow::per_second`]: it also keeps
/// both numbers as precomputed divisors for the buckets' hot path (used only while they still
/// match the public fields; see `Flow::pace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Tokens per `per_ms` ms; also the scaled units gained or drained per ms.
    pub amount: u64,
    /// The period of `amount` in ms; also how many scaled units make one token.
    pub per_ms: u64,
    amount_divisor: Divisor,
    unit_divisor: Divisor,
}

impl Flow {
    /// `amount` tokens every `per_ms` ms, as given (see [`Flow::per_period`] for lowest terms).
    #[must_use]
    pub const fn new(amount: u64, per_ms: u64) -> Self {
        Self {
            amount,
            per_ms,
            amount_divisor: Divisor::new(amount),
            unit_divisor: Divisor::new(per_ms),
        }
    }

    /// `count` tokens every `period_ms` milliseconds (a rate's own pace).
    #[must_use]
    pub fn per_period(count: u64, period_ms: u64) -> Self {
        if count == 0 {
            // Nothing ever flows; keep a scale of 1 so levels stay tiny.
            return Self::new(0, 1);
        }
        let divisor = gcd(count, period_ms.max(1));
        Self::new(count / divisor, period_ms.max(1) / divisor)
    }

    /// A flow in tokens per second, written with at most six decimals (`2.0`, `0.5`, `0.125`).
    /// `None` for anything else (NaN, negative, zero, or more precision than a decimal of six
    /// places).
    #[must_use]
    pub fn per_second(per_second: f64) -> Option<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let mut decimals_scale: u64 = 1;
        while decimals_scale <= 1_000_000 {
            let numerator = (per_second * decimals_scale as f64).round();
            // The decimal numerator/scale must be the very number given, not an approximation.
            if numerator >= 1.0
                && numerator < u64::MAX as f64
                && numerator / decimals_scale as f64 == per_second
            {
                return Some(Self::per_period(numerator as u64, decimals_scale * 1_000));
            }
            decimals_scale *= 10;
        }
        None
    }

    /// One token in scaled units.
    #[inline]
    #[must_use]
    pub fn unit(&self) -> u64 {
        self.per_ms
    }

    /// Scaled units that flow in `elapsed_ms`, capped at `cap`.
    #[inline]
    #[must_use]
    pub fn over(&self, elapsed_ms: u64, cap: u64) -> u64 {
        self.pace().over(elapsed_ms, cap)
    }

    /// Milliseconds until `units` scaled units have flowed (rounded up); `None` if nothing
    /// flows.
    #[inline]
    #[must_use]
    pub fn millis_for(&self, units: u64) -> Option<u64> {
        self.pace().millis_for(units)
    }

    /// Whole tokens in `units` scaled units (rounded down).
    #[inline]
    #[must_use]
    pub fn tokens_in(&self, units: u64) -> u64 {
        self.pace().tokens_in(units)
    }

    /// The arithmetic of this flow with divisors that match its fields: the ones cached at
    /// construction, unless the public fields were changed since.
    #[inline]
    pub(super) fn pace(&self) -> Pace {
        let matching = |cached: Divisor, value: u64| {
            // `Divisor::new` reads 0 as 1; a flow of 0 never divides by its amount anyway.
            if cached.get() == value.max(1) {
                cached
            } else {
                Divisor::new(value)
            }
        };
        Pace {
            amount: self.amount,
            unit: self.per_ms,
            amount_divisor: matching(self.amount_divisor, self.amount),
            unit_divisor: matching(self.unit_divisor, self.per_ms),
        }
    }
}

/// A [`Flow`]'s arithmetic with both divisors known to match it, so a bucket whose parameters
/// are prepared once divides without checking them on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pace {
    amount: u64,
    unit: u64,
    amount_divisor: Divisor,
    unit_divisor: Divisor,
}

impl Pace {
    /// One token in scaled units.
    #[inline(always)]
    pub(super) fn unit(&self) -> u64 {
        self.unit
    }

    /// Scaled units that flow in `elapsed_ms`, capped at `cap`. Levels are validated to stay
    /// below 2^53, so u64 maths (with a saturating product) is exact and avoids 128-bit division
    /// on the hot path.
    #[inline(always)]
    pub(super) fn over(&self, elapsed_ms: u64, cap: u64) -> u64 {
        self.flowed_in(elapsed_ms).min(cap)
    }

    /// Scaled units that flow in `elapsed_ms`, saturating at `u64::MAX`.
    #[inline(always)]
    pub(super) fn flowed_in(&self, elapsed_ms: u64) -> u64 {
        elapsed_ms.saturating_mul(self.amount)
    }

    /// Milliseconds until `units` scaled units have flowed (rounded up); `None` if nothing
    /// flows.
    #[inline(always)]
    pub(super) fn millis_for(&self, units: u64) -> Option<u64> {
        if units == 0 {
            return Some(0);
        }
        if self.amount == 0 {
            return None;
        }
        Some(self.amount_divisor.divide_ceil(units))
    }

    /// Whole tokens in `units` scaled units (rounded down).
    #[inline(always)]
    pub(super) fn tokens_in(&self, units: u64) -> u64 {
        self.unit_divisor.divide(units)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_reduce_to_lowest_terms() {
        assert_eq!(Flow::per_period(10, 3_600_000), Flow::new(1, 360_000));
        assert_eq!(Flow::per_period(0, 60_000), Flow::new(0, 1));
        assert_eq!(Flow::per_second(2.0), Some(Flow::new(1, 500)));
        assert_eq!(Flow::per_second(0.1), Some(Flow::new(1, 10_000)));
        assert_eq!(Flow::per_second(0.125), Some(Flow::new(1, 8_000)));
    }

    #[test]
    fn unrepresentable_rates_are_refused() {
        assert_eq!(Flow::per_second(f64::NAN), None);
        assert_eq!(Flow::per_second(-1.0), None);
        assert_eq!(Flow::per_second(0.0), None);
        assert_eq!(Flow::per_second(1.0 / 3.0), None);
        assert_eq!(Flow::per_second(0.000_000_1), None);
    }

    #[test]
    fn waits_round_up() {
        let flow = Flow::new(3, 1_000);
        assert_eq!(flow.millis_for(7), Some(3));
        assert_eq!(flow.millis_for(0), Some(0));
        assert_eq!(Flow::new(0, 1).millis_for(1), None);
    }
}
