//! The Cluster hash tag of a key: a keyed digest, so that the slot a key's state lands in is
//! the server's choice, not the client's.
//!
//! Keys are often chosen by clients (a header, a path segment, a user name). Were the key its
//! own hash tag, a client could pick values that all hash to one slot and pile its load onto
//! one master. A digest under a secret the client does not know spreads its keys like any
//! others'. Every app instance sharing the Redis must compute the same tag for a key (or one
//! client's count would split between two slots), so the secret is shared: set by the
//! application, or else created once in Redis and read back by every instance
//! ([`load_shared`]).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use siphasher::sip::SipHasher13;
use siphasher::sip128::SipHasher13 as SipHasher13x128;

use super::Connection;
use crate::backend::BackendError;

/// The fewest bytes a secret may have: SipHash's key is 128 bits, and a shorter secret would
/// leave fewer to guess.
pub(super) const MIN_SECRET_BYTES: usize = 16;

/// Random bytes in a secret this backend creates (stored as twice as many hex digits).
const NEW_SECRET_BYTES: usize = 32;

/// Stores a fresh secret unless one is there, then returns the one that is, in one round
/// trip. A script rather than `SET … NX GET`, which servers before Redis 7 refuse.
static LOAD_OR_CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('SET', KEYS[1], ARGV[1], 'NX')\n\
         return redis.call('GET', KEYS[1])",
    )
});

/// The secret's bytes. Never shown: `Debug` prints a placeholder.
#[derive(Clone)]
pub(super) struct Secret(Vec<u8>);

impl Secret {
    pub(super) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// A secret of at least [`MIN_SECRET_BYTES`], else the error naming where it came from.
    fn checked(self, origin: &'static str) -> Result<Self, BackendError> {
        if self.0.len() < MIN_SECRET_BYTES {
            return Err(BackendError::WeakHashTagSecret {
                origin,
                len: self.0.len(),
            });
        }
        Ok(self)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Computes hash tags under one secret.
#[derive(Clone)]
pub(super) struct HashTagger {
    sip: SipHasher13,
}

impl fmt::Debug for HashTagger {
    // The hasher's keys are the secret in another form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashTagger(..)")
    }
}

impl HashTagger {
    /// The tagger for a secret checked by [`Secret::checked`] (or by the caller, in tests).
    pub(super) fn new(secret: &Secret) -> Self {
        // A secret of any length becomes SipHash's 128-bit key through SipHash-1-3-128 under a
        // fixed key: a secret longer than 16 bytes keeps every byte's say.
        const DERIVE_K0: u64 = 0x7261_7465_6c69_6d69; // "ratelimi"
        const DERIVE_K1: u64 = 0x7461_672d_6b65_7931; // "tag-key1"
        let derived = SipHasher13x128::new_with_keys(DERIVE_K0, DERIVE_K1).hash(&secret.0);
        Self {
            sip: SipHasher13::new_with_keys(derived.h1, derived.h2),
        }
    }

    /// The tag of `key`: 16 lower-case hex digits.
    pub(super) fn tag(&self, key: &str) -> String {
        format!("{:016x}", self.sip.hash(key.as_bytes()))
    }
}

/// The secret that every instance using `prefix` on this Redis shares: the one stored under
/// `<prefix>hash-tag-secret`, which the first instance to get here creates at random.
///
/// The key has no TTL: it is configuration, not state, and a new secret would move every
/// count to new keys (a fresh budget for every client). Under an `allkeys-*` eviction policy
/// Redis may still evict it; set the secret in the application
/// ([`super::RedisBackendBuilder::hash_tag_secret`]) there.
pub(super) async fn load_shared(
    connection: &mut Connection,
    prefix: &str,
    timeout: Duration,
) -> Result<Secret, BackendError> {
    let mut fresh = [0_u8; NEW_SECRET_BYTES];
    getrandom::fill(&mut fresh).map_err(|error| BackendError::NoRandomness {
        reason: error.to_string(),
    })?;
    // Hex, so that an operator can copy the stored value into the application's settings.
    let fresh: String = fresh.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut invocation = LOAD_OR_CREATE.prepare_invoke();
    invocation
        .key(format!("{prefix}hash-tag-secret"))
        .arg(fresh);
    let stored: Vec<u8> = super::bounded(timeout, async {
        match connection {
            Connection::Single(manager) => invocation.invoke_async(manager).await,
            Connection::Cluster(cluster) => invocation.invoke_async(cluster).await,
        }
    })
    .await?;
    Secret::new(stored).checked("stored in Redis under `<prefix>hash-tag-secret`")
}

/// A secret the application set, checked.
pub(super) fn configured(secret: Secret) -> Result<Secret, BackendError> {
    secret.checked("set with `RedisBackendBuilder::hash_tag_secret`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagger(secret: &[u8]) -> HashTagger {
        HashTagger::new(&Secret::new(secret.to_vec()))
    }

    #[test]
    fn tags_are_sixteen_hex_digits_fixed_by_the_secret() {
        let one = tagger(b"0123456789abcdef0123456789abcdef");
        let same = tagger(b"0123456789abcdef0123456789abcdef");
        let other = tagger(b"0123456789abcdef0123456789abcdeF");
        let tag = one.tag("user:1");
        assert_eq!(tag.len(), 16);
        assert!(
            tag.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(tag, same.tag("user:1"));
        assert_ne!(tag, other.tag("user:1"));
        assert_ne!(tag, one.tag("user:2"));
        // A key's braces are just bytes of the digest's input.
        assert_ne!(one.tag("{a}"), one.tag("{a}b"));
    }

    #[test]
    fn secrets_shorter_than_sixteen_bytes_are_refused_without_showing_them() {
        let short = configured(Secret::new(b"hunter2hunter2!".to_vec()));
        let error = short
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("15 bytes"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert!(configured(Secret::new(vec![7; MIN_SECRET_BYTES])).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new(b"do-not-print-me-0123456789".to_vec());
        let shown = format!("{secret:?} {:?}", HashTagger::new(&secret));
        assert!(!shown.contains("do-not-print"), "{shown}");
    }
}
