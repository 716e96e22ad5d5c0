//! Bucket keys: `<group>:<key kind>:<value>`.
//!
//! Values come from clients, so a value longer than 128 bytes, or holding `{`, `}` or control
//! bytes, is replaced by `sha256:<hex digest>`: a client can then never pick a Redis Cluster
//! hash slot (`{..}` hash tags) nor put newlines into a store's key, and two different inputs
//! never share a key (a raw value that itself starts with `sha256:` is hashed too, so no raw
//! value can pose as a digest).

use std::cell::{Cell, RefCell};
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
#[inline]
pub(crate) fn ip_bucket_key(group: &str, kind: &str, ip: IpAddr, ipv6_prefix: u8) -> Key {
    let mut key = Key::with_capacity(group.len() + kind.len() + 2 + MAX_GROUPED_LEN);
    // `try_with`: while the thread is torn down the memo is gone; the key is then written anew.
    let written = LAST_IP_KEY
        .try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            last.write(&mut key.0, group, kind, ip, ipv6_prefix);
            Some(())
        })
        .ok()
        .flatten();
    if written.is_none() {
        write_ip_key(&mut key.0, group, kind, ip, ipv6_prefix);
    }
    key
}

fn write_ip_key(out: &mut String, group: &str, kind: &str, ip: IpAddr, ipv6_prefix: u8) {
    out.push_str(group);
    out.push(':');
    out.push_str(kind);
    out.push(':');
    write_grouped(out, ip, ipv6_prefix);
}

thread_local! {
    /// The last IP key this thread wrote. A keep-alive connection sends request after request
    /// from one client, so the next key is usually the same text, and copying it is cheaper
    /// than writing the group, the kind and the address again.
    static LAST_IP_KEY: RefCell<LastIpKey> = const {
        RefCell::new(LastIpKey {
            ip: None,
            ipv6_prefix: 0,
            text: String::new(),
            address_at: 0,
        })
    };
}

/// `text` is the key [`write_ip_key`] writes for `ip` grouped by `ipv6_prefix` and some group
/// and kind; the address starts at `address_at`.
struct LastIpKey {
    ip: Option<IpAddr>,
    ipv6_prefix: u8,
    text: String,
    address_at: usize,
}

impl LastIpKey {
    /// Appends the key to `out`: the memo when it is the same text, otherwise written anew and
    /// remembered.
    fn write(&mut self, out: &mut String, group: &str, kind: &str, ip: IpAddr, ipv6_prefix: u8) {
        if self.ip == Some(ip) && self.ipv6_prefix == ipv6_prefix && self.starts_with(group, kind) {
            out.push_str(&self.text);
            return;
        }
        let start = out.len();
        write_ip_key(out, group, kind, ip, ipv6_prefix);
        self.ip = Some(ip);
        self.ipv6_prefix = ipv6_prefix;
        self.text.clear();
        self.text.push_str(&out[start..]);
        self.address_at = group.len() + kind.len() + 2;
    }

    /// Whether the memo's text before the address is `<group>:<kind>:` (the same length, so the
    /// rest is exactly the address: an IPv6 address holds `:` too).
    fn starts_with(&self, group: &str, kind: &str) -> bool {
        group.len() + kind.len() + 2 == self.address_at
            && self
                .text
                .strip_prefix(group)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|rest| rest.strip_prefix(kind))
                .is_some_and(|rest| rest.starts_with(':'))
    }
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
    fn a_remembered_key_is_reused_only_for_the_same_text() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        // Each case right after another that differs in one part; `:` moved between the group,
        // the kind and an IPv6 address must not fool the memo.
        let cases = [
            ("a", "ip", v4, 64),
            ("a", "ip", v4, 64),
            ("a", "anon", v4, 64),
            ("b", "anon", v4, 64),
            ("b", "anon", v6, 64),
            ("b", "anon", v6, 32),
            ("b:anon", "2001", v6, 32),
            ("b", "anon:2001", v6, 32),
            ("b", "anon", v6, 32),
        ];
        for (group, kind, ip, prefix) in cases {
            assert_eq!(
                ip_bucket_key(group, kind, ip, prefix).as_str(),
                bucket_key(group, kind, &grouped(ip, prefix))
            );
        }
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
