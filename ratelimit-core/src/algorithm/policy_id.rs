//! A policy's identity: the part of a store key that keeps two limits on one key apart.
//!
//! Stores keep state per (key, policy): `5/m` and `10/h` on one key are two counts, and a
//! token bucket and a fixed window of one rate are two states. Identical policies share their
//! state, which is what a shared `group` means. The identity is a digest of every parameter
//! (algorithm, count, period, bucket settings), the same in every process and every version
//! that keeps this encoding, so app instances sharing Redis or SQL agree on it.

use std::fmt;

use super::Policy;

/// The identity of a [`Policy`]: equal for equal policies, different (but for a 2⁻⁶⁴ chance)
/// otherwise. Stable across processes, platforms and builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(u64);

impl PolicyId {
    /// The identity as a number, e.g. for a SQL `BIGINT` column (the same bits, signed).
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The identity's bits as a signed integer, for stores whose integers are signed.
    #[must_use]
    pub const fn as_i64(self) -> i64 {
        i64::from_ne_bytes(self.0.to_ne_bytes())
    }
}

/// Sixteen lower-case hex digits, the form used in Redis keys.
impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Policy {
    /// This policy's identity (see [`PolicyId`]). Computed from the parameters; a store that
    /// checks often uses the identity a resolved [`crate::Limit`] keeps.
    #[must_use]
    pub fn id(&self) -> PolicyId {
        // The encoding's version comes first, so a future change of encoding changes every id.
        const ENCODING: u64 = 1;
        let words: [u64; 7] = match *self {
            Self::FixedWindow { limit, window_ms } => [ENCODING, 1, limit, window_ms, 0, 0, 0],
            Self::SlidingWindow { limit, window_ms } => [ENCODING, 2, limit, window_ms, 0, 0, 0],
            Self::SlidingWindowCounter { limit, window_ms } => {
                [ENCODING, 3, limit, window_ms, 0, 0, 0]
            }
            Self::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => [
                ENCODING,
                4,
                bucket_size,
                window_ms,
                refill.amount,
                refill.per_ms,
                initial_tokens,
            ],
            Self::LeakyBucket {
                capacity,
                leak,
                window_ms,
            } => [
                ENCODING,
                5,
                capacity,
                window_ms,
                leak.amount,
                leak.per_ms,
                0,
            ],
        };
        PolicyId(fnv1a(words))
    }
}

/// FNV-1a over the words' little-endian bytes, then a final avalanche (splitmix64's), so that
/// ids spread over all 64 bits. The inputs are a program's own limits, never a client's bytes,
/// so a keyed hash would buy nothing, and this one is fixed forever.
fn fnv1a(words: [u64; 7]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in words.iter().flat_map(|word| word.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Flow;

    #[test]
    fn ids_are_fixed_forever() {
        // Stores shared by several processes (and versions) must agree on every id: a change
        // here starts every count afresh, so it needs a new ENCODING, not a new expectation.
        let policy = Policy::FixedWindow {
            limit: 5,
            window_ms: 60_000,
        };
        assert_eq!(
            policy.id().to_string(),
            format!("{:016x}", policy.id().get())
        );
        assert_eq!(policy.id(), PolicyId(fnv1a([1, 1, 5, 60_000, 0, 0, 0])));
        assert_eq!(policy.id().get(), 0xecd0_2c62_fd11_62d3, "{}", policy.id());
    }

    #[test]
    fn every_parameter_and_the_algorithm_tell_policies_apart() {
        let flow = Flow::per_period(10, 60_000);
        let policies = [
            Policy::FixedWindow {
                limit: 5,
                window_ms: 60_000,
            },
            Policy::FixedWindow {
                limit: 10,
                window_ms: 3_600_000,
            },
            Policy::FixedWindow {
                limit: 5,
                window_ms: 3_600_000,
            },
            Policy::SlidingWindow {
                limit: 5,
                window_ms: 60_000,
            },
            Policy::SlidingWindowCounter {
                limit: 5,
                window_ms: 60_000,
            },
            Policy::TokenBucket {
                bucket_size: 10,
                refill: flow,
                initial_tokens: 10,
                window_ms: 60_000,
            },
            Policy::TokenBucket {
                bucket_size: 10,
                refill: flow,
                initial_tokens: 0,
                window_ms: 60_000,
            },
            Policy::TokenBucket {
                bucket_size: 20,
                refill: flow,
                initial_tokens: 10,
                window_ms: 60_000,
            },
            Policy::TokenBucket {
                bucket_size: 10,
                refill: Flow::per_period(1, 1_000),
                initial_tokens: 10,
                window_ms: 60_000,
            },
            Policy::LeakyBucket {
                capacity: 10,
                leak: flow,
                window_ms: 60_000,
            },
        ];
        let mut ids: Vec<PolicyId> = policies.iter().map(Policy::id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), policies.len());
        assert_eq!(policies[5].id(), policies[5].id());
    }

    #[test]
    fn signed_form_keeps_the_bits() {
        let id = PolicyId(u64::MAX - 1);
        assert_eq!(id.as_i64(), -2);
        assert_eq!(id.as_i64().cast_unsigned(), id.get());
    }
}
