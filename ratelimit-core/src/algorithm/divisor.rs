//! Division by a divisor fixed in advance, as a multiply and a shift.
//!
//! A bucket's hot path divides scaled levels by the flow's unit and amount; a 64-bit `div`
//! costs tens of cycles on common server CPUs, several times the rest of the arithmetic. The
//! divisor of a flow is known when the limit is resolved, so the reciprocal is computed once.

/// Numerators below this divide by multiplication; validated levels and waits stay below it.
const FAST_LIMIT: u64 = 1 << 53;

/// `n / divisor` for any `n`, exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Divisor {
    divisor: u64,
    /// `ceil(2^(64 + shift) / divisor)`; 0 for a power of two, which is a plain shift.
    multiplier: u64,
    /// Applied to the high word of `n × multiplier`, or to `n` for a power of two.
    shift: u32,
}

impl Divisor {
    /// A divisor of `divisor`, or of 1 for 0 (callers check for a zero flow themselves).
    pub(super) const fn new(divisor: u64) -> Self {
        let divisor = if divisor == 0 { 1 } else { divisor };
        if divisor.is_power_of_two() {
            return Self {
                divisor,
                multiplier: 0,
                shift: divisor.trailing_zeros(),
            };
        }
        // Why this is exact for every n < 2^53, with s = 64 + shift >= 53 + ceil(log2(divisor)):
        // multiplier × divisor = 2^s + e with 0 <= e < divisor, so n × multiplier / 2^s =
        // n / divisor + n × e / (divisor × 2^s), and the second term is below 2^53 / 2^s <=
        // 1 / divisor: too small to carry n / divisor past the next integer. The multiplier
        // stays below 2^64 because s < 64 + log2(divisor) for a divisor that is not a power of
        // two.
        let log2_ceil = u64::BITS - (divisor - 1).leading_zeros();
        let total_shift = if 53 + log2_ceil > 64 {
            53 + log2_ceil
        } else {
            64
        };
        let multiplier = (1_u128 << total_shift).div_ceil(divisor as u128);
        Self {
            divisor,
            multiplier: multiplier as u64,
            shift: total_shift - 64,
        }
    }

    pub(super) const fn get(self) -> u64 {
        self.divisor
    }

    /// `n / divisor`, rounded down.
    #[inline(always)]
    pub(super) fn divide(self, n: u64) -> u64 {
        if self.multiplier == 0 {
            n >> self.shift
        } else if n < FAST_LIMIT {
            let high = (u128::from(n) * u128::from(self.multiplier)) >> 64;
            (high as u64) >> self.shift
        } else {
            n / self.divisor
        }
    }

    /// `n / divisor`, rounded up.
    #[inline(always)]
    pub(super) fn divide_ceil(self, n: u64) -> u64 {
        let quotient = self.divide(n);
        if quotient * self.divisor < n {
            quotient + 1
        } else {
            quotient
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn edges() {
        for divisor in [
            1,
            2,
            3,
            7,
            1_000,
            3_600_000,
            (1 << 53) - 1,
            1 << 53,
            u64::MAX,
        ] {
            let reduced = Divisor::new(divisor);
            for n in [
                0,
                1,
                divisor - 1,
                divisor,
                divisor.saturating_add(1),
                FAST_LIMIT - 1,
                FAST_LIMIT,
                u64::MAX,
            ] {
                assert_eq!(reduced.divide(n), n / divisor, "{n} / {divisor}");
                assert_eq!(
                    reduced.divide_ceil(n),
                    n.div_ceil(divisor),
                    "{n} / {divisor}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_division(divisor in 1..u64::MAX, n in 0..FAST_LIMIT, big in any::<u64>()) {
            let reduced = Divisor::new(divisor);
            prop_assert_eq!(reduced.divide(n), n / divisor);
            prop_assert_eq!(reduced.divide_ceil(n), n.div_ceil(divisor));
            prop_assert_eq!(reduced.divide(big), big / divisor);
        }

        #[test]
        fn agrees_with_division_by_small_divisors(divisor in 1..10_000_000_u64, n in 0..FAST_LIMIT) {
            let reduced = Divisor::new(divisor);
            prop_assert_eq!(reduced.divide(n), n / divisor);
            prop_assert_eq!(reduced.divide_ceil(n), n.div_ceil(divisor));
        }
    }
}
