//! How much forgetting a state would change, for eviction: how little of its limit the state
//! had left when it was last written, in four steps that fit in two bits of a compact slot.
//!
//! A slot does not know its policy, so it cannot work out its headroom when the store needs
//! room; the call that writes it can, from its verdict's `remaining` and `limit`. Until the
//! next write the step is exact for a fixed window (its count only changes by a write, and
//! the window's end is the slot's expiry) and an upper bound for a bucket, which refills or
//! drains in between.

/// Ordered from the state whose loss changes least to the one whose loss changes most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Pressure {
    /// More than half of the limit left: a fresh key, a client far from its limit. Forgetting
    /// it gives back at most half a limit.
    #[default]
    Low = 0,
    /// At most half left.
    Half = 1,
    /// At most a quarter left.
    High = 2,
    /// Nothing left: the state rejects the next request, and forgetting it would admit a
    /// whole limit more (a login window at its limit).
    AtLimit = 3,
}

impl Pressure {
    /// The step of a state with `remaining` of `limit` left. The first test settles the common
    /// case (a state far from its limit), so a store's hot path pays one comparison.
    #[inline(always)]
    pub(super) fn of(remaining: u64, limit: u64) -> Self {
        if remaining > limit / 2 {
            Self::Low
        } else if remaining > limit / 4 {
            Self::Half
        } else if remaining > 0 {
            Self::High
        } else {
            Self::AtLimit
        }
    }

    /// The step as two bits.
    #[inline(always)]
    pub(super) fn bits(self) -> u32 {
        self as u32
    }

    /// The step whose [`Pressure::bits`] are the low two bits of `bits`.
    pub(super) fn from_bits(bits: u32) -> Self {
        match bits & 0b11 {
            0 => Self::Low,
            1 => Self::Half,
            2 => Self::High,
            _ => Self::AtLimit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_headroom_left() {
        assert_eq!(Pressure::of(999, 1_000), Pressure::Low);
        assert_eq!(Pressure::of(501, 1_000), Pressure::Low);
        assert_eq!(Pressure::of(500, 1_000), Pressure::Half);
        assert_eq!(Pressure::of(250, 1_000), Pressure::High);
        assert_eq!(Pressure::of(1, 1_000), Pressure::High);
        assert_eq!(Pressure::of(0, 1_000), Pressure::AtLimit);
        // A login window of 5: one used is far from the limit, four used is near it.
        assert_eq!(Pressure::of(4, 5), Pressure::Low);
        assert_eq!(Pressure::of(2, 5), Pressure::Half);
        assert_eq!(Pressure::of(1, 5), Pressure::High);
        assert_eq!(Pressure::of(0, 5), Pressure::AtLimit);
        assert_eq!(Pressure::of(0, 1), Pressure::AtLimit);
        assert_eq!(Pressure::of(u64::MAX, u64::MAX), Pressure::Low);
    }

    #[test]
    fn bits_round_trip_and_order_like_the_steps() {
        let steps = [
            Pressure::Low,
            Pressure::Half,
            Pressure::High,
            Pressure::AtLimit,
        ];
        for pair in steps.windows(2) {
            assert!(pair[0] < pair[1] && pair[0].bits() < pair[1].bits());
        }
        for step in steps {
            assert_eq!(Pressure::from_bits(step.bits()), step);
        }
    }
}
