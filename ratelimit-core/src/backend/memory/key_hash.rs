//! Keys are stored as 128-bit keyed SipHash digests: a fixed 16 bytes per key whatever its
//! length, and with a random per-process key an attacker cannot craft two inputs that share a
//! bucket (a 64-bit digest would make an accidental collision among a million keys about one
//! in forty million; 128 bits make it negligible).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

/// The stored identity of one quota's state for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyHash {
    /// Picks the slot in the table; differs per quota of a compound rate.
    low: u64,
    /// Picks the shard; the same for every quota of a key, so one lock covers them all.
    high: u64,
}

impl KeyHash {
    /// The identity of quota number `quota_index` of this key.
    pub(super) fn for_quota(self, quota_index: usize) -> Self {
        Self {
            low: self.low.wrapping_add(quota_index as u64),
            high: self.high,
        }
    }

    pub(super) fn shard_index(self, shard_count: usize) -> usize {
        // Multiply-shift maps the digest onto 0..shard_count without a division.
        ((u128::from(self.high) * shard_count as u128) >> 64) as usize
    }
}

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.low);
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
        let mut hasher = self.sip;
        hasher.write(key.as_bytes());
        let digest = hasher.finish128();
        KeyHash {
            low: digest.h1,
            high: digest.h2,
        }
    }
}

/// The table's hasher: the key is already a uniform random digest, so hashing it again would
/// only cost time.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> Self::Hasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug)]
pub(super) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `KeyHash` is hashed with this, through `write_u64`; fold anything else anyway so
        // the hasher stays correct if that ever changes.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
