//! Bucket keys: `<group>:<key kind>:<value>`.
//!
//! Values come from clients, so a value longer than 128 bytes, or holding `{`, `}` or control
//! bytes, is replaced by `sha256:<hex digest>`: a client can then never pick a Redis Cluster
//! hash slot (`{..}` hash tags) nor put newlines into a store's key, and two different inputs
//! never share a key (a raw value that itself starts with `sha256:` is hashed too, so no raw
//! value can pose as a digest).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

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
}
