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

use super::slot::StateKind;
use crate::rate::MAX_QUOTAS;

/// The digest of one user key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyHash(u64);

impl KeyHash {
    /// The table key of quota number `quota_index` kept in layout `kind`: every quota and
    /// every layout of one user key gets its own slot, all in the key's shard.
    pub(super) fn slot_key(self, kind: StateKind, quota_index: usize) -> u64 {
        // Multiplying by an odd constant spreads the variant over every bit, so neighbouring
        // digests do not collide on their neighbours' quotas.
        const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;
        let variant = (kind.index() * MAX_QUOTAS + quota_index) as u64;
        self.0.wrapping_add(variant.wrapping_mul(SPREAD))
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
    fn every_quota_and_layout_of_a_key_has_its_own_slot_in_one_shard() {
        let hasher = KeyHasher::random();
        let key = hasher.hash("user:1");
        let mut slots: Vec<u64> = StateKind::ALL
            .iter()
            .flat_map(|kind| (0..MAX_QUOTAS).map(move |quota| key.slot_key(*kind, quota)))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), StateKind::ALL.len() * MAX_QUOTAS);
        assert!(key.shard_index(64) < 64);
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
