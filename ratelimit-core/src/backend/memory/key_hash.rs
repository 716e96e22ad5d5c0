//! Keys are stored as 64-bit keyed SipHash-1-3 digests: a fixed 8 bytes per key whatever its
//! length, and with a random per-backend key an attacker cannot craft two inputs that share a
//! count.
//!
//! Why 64 bits is enough: an accidental collision among a million live keys has odds of about
//! one in forty million (n² / 2⁶⁵), and a collision can only make two clients share one count,
//! so each is rejected earlier, never admitted past its own limit. Halving the digest is what
//! keeps a stored key within a 28-byte table slot.

use siphasher::sip::SipHasher13;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::algorithm::PolicyId;

/// The digest of one user key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyHash(u64);

impl KeyHash {
    /// The table key of the state of `policy` for this user key: every policy of one user key
    /// (each quota of a compound rate, each of several limits) gets its own slot, all in the
    /// key's shard. Two pairs share a slot only if their digests differ by exactly the
    /// difference of their policy ids, which the random per-backend key makes a 2⁻⁶⁴ chance
    /// that no client can steer.
    pub(super) fn slot_key(self, policy: PolicyId) -> u64 {
        self.0 ^ policy.get()
    }

    /// The shard of this key, from the digest's low half: the table places slots by the
    /// lowest bits and filters them by the top seven, so the shard must come from bits that
    /// neither uses, or a shard's keys would all share them.
    pub(super) fn shard_index(self, shard_count: usize) -> usize {
        // Multiply-shift maps 32 bits onto 0..shard_count without a division.
        (((self.0 >> 8) & 0xffff_ffff).wrapping_mul(shard_count as u64) >> 32) as usize
    }
}

/// Hashes user keys with keys drawn once per backend from the OS's randomness.
#[derive(Clone, Debug)]
pub(super) struct KeyHasher {
    sip: SipHasher13,
}

impl KeyHasher {
    pub(super) fn random() -> Self {
        let random = RandomState::new();
        let key0 = random.hash_one(0x5eed_u64);
        let key1 = random.hash_one(0xc0ffee_u64);
        Self {
            sip: SipHasher13::new_with_keys(key0, key1),
        }
    }

    pub(super) fn hash(&self, key: &str) -> KeyHash {
        // The one-shot form: no tail buffering for a `write` that may be followed by more.
        KeyHash(self.sip.hash(key.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_of_a_key_has_its_own_slot() {
        let hasher = KeyHasher::random();
        let key = hasher.hash("user:1");
        let policies = [(5, 60_000), (10, 3_600_000), (5, 3_600_000), (10, 60_000)]
            .map(|(limit, window_ms)| crate::algorithm::Policy::FixedWindow { limit, window_ms });
        let mut slots: Vec<u64> = policies
            .iter()
            .map(|policy| key.slot_key(policy.id()))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), policies.len());
    }

    #[test]
    fn shards_spread_evenly() {
        let hasher = KeyHasher::random();
        let mut counts = [0_u32; 64];
        for i in 0..64_000 {
            counts[hasher.hash(&format!("client-{i}")).shard_index(64)] += 1;
        }
        // 1,000 expected per shard; a broken spread would leave shards empty or doubled.
        assert!(
            counts.iter().all(|&count| (800..1_200).contains(&count)),
            "{counts:?}"
        );
    }
}
