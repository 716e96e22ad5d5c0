//! Bucket keys: `<group>:<key kind>:<value>`.
//!
//! Values come from clients, so a value longer than 128 bytes, or holding `{`, `}` or control
//! bytes, is replaced by `sha256:<hex digest>`: a client can then never pick a Redis Cluster
//! hash slot (`{..}` hash tags) nor put newlines into a store's key, and two different inputs
//! never share a key (a raw value that itself starts with `sha256:` is hashed too, so no raw
//! value can pose as a digest).

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::client_ip::{MAX_GROUPED_LEN, write_grouped};

/// Values up to this many bytes are kept readable in keys.
pub const MAX_RAW_VALUE_BYTES: usize = 128;

/// The bucket key of one limit for one client.
#[must_use]
pub fn bucket_key(group: &str, kind: &str, value: &str) -> String {
    let mut key = String::with_capacity(group.len() + kind.len() + value.len().min(72) + 2);
    key.push_str(group);
    key.push(':');
    key.push_str(kind);
    key.push(':');
    if needs_hashing(value) {
        key.push_str("sha256:");
        for byte in Sha256::digest(value.as_bytes()) {
            let _ = write!(key, "{byte:02x}");
        }
    } else {
        key.push_str(value);
    }
    key
}

/// The bucket key of one limit for a client IP, written straight into one reused buffer. A
/// grouped IP (digits, `.`, `:`, hex, `/`, at most 43 bytes) never needs hashing, so this is
/// exactly `bucket_key(group, kind, &grouped(ip, ipv6_prefix))` without the intermediate
/// string.
pub(crate) fn ip_bucket_key(group: &str, kind: &str, ip: IpAddr, ipv6_prefix: u8) -> Key {
    let mut key = Key::with_capacity(group.len() + kind.len() + 2 + MAX_GROUPED_LEN);
    key.0.push_str(group);
    key.0.push(':');
    key.0.push_str(kind);
    key.0.push(':');
    write_grouped(&mut key.0, ip, ipv6_prefix);
    key
}

thread_local! {
    /// A key buffer to reuse: the guard builds one key per limit per request, and taking this
    /// one is cheaper than allocating (and freeing) a new `String` each time.
    static SPARE_KEY: Cell<String> = const { Cell::new(String::new()) };
}

/// Keys longer than this are not kept for reuse (a rare hashed or very long key should not pin
/// its buffer to the thread).
const MAX_SPARE_CAPACITY: usize = 256;

/// A bucket key in a buffer borrowed from the thread's spare, returned to it on drop.
#[derive(Debug)]
pub(crate) struct Key(String);

impl Key {
    fn with_capacity(capacity: usize) -> Self {
        // `try_with`: during thread teardown the spare is gone, and a fresh buffer does.
        let mut key = SPARE_KEY.try_with(Cell::take).unwrap_or_default();
        key.clear();
        key.reserve(capacity);
        Self(key)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Key {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if self.0.capacity() <= MAX_SPARE_CAPACITY {
            let key = std::mem::take(&mut self.0);
            // A key dropped while its thread is torn down is simply freed.
            let _ = SPARE_KEY.try_with(|spare| spare.set(key));
        }
    }
}

fn needs_hashing(value: &str) -> bool {
    value.len() > MAX_RAW_VALUE_BYTES
        || value.starts_with("sha256:")
        || value
            .bytes()
            .any(|byte| byte == b'{' || byte == b'}' || byte.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_ip::grouped;

    #[test]
    fn short_plain_values_stay_readable() {
        assert_eq!(
            bucket_key("app::login", "ip", "192.0.2.1"),
            "app::login:ip:192.0.2.1"
        );
        assert_eq!(
            bucket_key("g", "header:x-api-key", "ключ"),
            "g:header:x-api-key:ключ"
        );
    }

    #[test]
    fn long_braced_control_and_hash_like_values_are_hashed() {
        let long = "a".repeat(129);
        for value in [long.as_str(), "{slot}", "a\nb", "\0", "sha256:abc"] {
            let key = bucket_key("g", "k", value);
            assert!(key.starts_with("g:k:sha256:"), "{key}");
            assert_eq!(key.len(), "g:k:sha256:".len() + 64);
        }
        assert_ne!(bucket_key("g", "k", "{a}"), bucket_key("g", "k", "{b}"));
        assert_eq!(bucket_key("g", "k", &"a".repeat(128)).len(), 4 + 128);
    }

    #[test]
    fn ip_keys_equal_keys_of_the_grouped_ip() {
        for (ip, prefix) in [
            ("192.0.2.7", 64),
            ("::ffff:198.51.100.1", 64),
            ("2001:db8:1:2:3:4:5:6", 64),
            ("2001:db8:1:2:3:4:5:6", 128),
            ("2001:db8::1", 0),
        ] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
            assert_eq!(
                ip_bucket_key("app::h", "anon", ip, prefix).as_str(),
                bucket_key("app::h", "anon", &grouped(ip, prefix))
            );
            let long_group = "g".repeat(200);
            assert_eq!(
                ip_bucket_key(&long_group, "ip", ip, prefix).as_str(),
                bucket_key(&long_group, "ip", &grouped(ip, prefix))
            );
        }
    }
}
