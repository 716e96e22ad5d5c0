//! Bucket keys: `<group>:<kind>:<value>`, written so that two different inputs never share one
//! key, whatever `:` any part holds.
//!
//! - **group**: kept as written, except that a `:` is written `%3A` unless it is one of a `::`
//!   pair between two other characters (module paths read as usual), and `%` is written `%25`.
//!   So the first lone `:` of a key always ends its group.
//! - **kind**: `ip`, `anon` (anonymous clients of `key = "user"`, per IP), `user`, `global`, or
//!   `header:`, `query:`, `path:`, `custom:` followed by a name (header, parameter or key
//!   function), written like a group. The kind says whether a name follows; the next lone `:`
//!   ends it.
//! - **value**: the rest, from the raw bytes the request holds. It stays readable when it is
//!   valid UTF-8 of at most 128 bytes without `{`, `}` or control or format characters, does
//!   not start with `sha256:` (nor, after a name, with `:`), and was not read from a header.
//!   Any other value is written `sha256:<hex digest of its bytes>`: a client can then neither
//!   pick a Redis Cluster slot nor put line breaks or invisible text into keys and logs, and
//!   header values (API keys, tokens: secrets) are never stored in the clear.
//!
//! `app::login:ip:192.0.2.1`, `app::login:anon:2001:db8:1:2::/64`, `g%3Auser:user:u`,
//! `search:query:a%3Ab:c`, `api:custom:keys::tenant:acme`,
//! `api:header:x-api-key:sha256:9f86d0…`.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::client_ip::{MAX_GROUPED_LEN, write_grouped};

/// Values up to this many bytes are kept readable in keys.
pub const MAX_RAW_VALUE_BYTES: usize = 128;

/// What a limit counts by: the middle part of a bucket key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind<'a> {
    /// The client IP (`key = "ip"`, and every fallback to it).
    Ip,
    /// The IP of an anonymous client under `key = "user"`, apart from `ip` buckets.
    Anon,
    /// The user id.
    User,
    /// One bucket for everyone (the value is empty).
    Global,
    /// A request header's value (lower-case name); always stored as a digest.
    Header(&'a str),
    /// A query parameter's decoded value.
    Query(&'a str),
    /// A path parameter's value.
    Path(&'a str),
    /// A key function's value; the name tells key functions apart (the macro writes the
    /// function's path).
    Custom(&'a str),
}

/// The bucket key of one limit (`group`) for one client: what `#[rate_limit]` and
/// [`crate::RateLimitLayer`] pass to the store, and what `ratelimit inspect` / `reset` take.
/// For a limit checked by hand (e.g. on a value from the request body), use the group and kind
/// the key is to share buckets with.
///
/// ```
/// use ratelimit_axum::{KeyKind, bucket_key};
///
/// assert_eq!(bucket_key("app::login", KeyKind::Ip, "192.0.2.1"), "app::login:ip:192.0.2.1");
/// assert_eq!(bucket_key("login", KeyKind::Custom("username"), "ann"), "login:custom:username:ann");
/// assert!(bucket_key("api", KeyKind::Header("x-api-key"), "k1").starts_with("api:header:x-api-key:sha256:"));
/// ```
#[must_use]
pub fn bucket_key(group: &str, kind: KeyKind<'_>, value: impl AsRef<[u8]>) -> String {
    let value = value.as_ref();
    let mut key = String::with_capacity(group.len() + 16 + value.len().min(72));
    write_bucket_key(&mut key, group, kind, value);
    key
}

/// Which IP kind an IP key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpKind {
    Ip,
    Anon,
}

impl IpKind {
    fn as_kind(self) -> KeyKind<'static> {
        match self {
            Self::Ip => KeyKind::Ip,
            Self::Anon => KeyKind::Anon,
        }
    }
}

/// [`bucket_key`] in a reused buffer.
#[inline]
pub(crate) fn key(group: &str, kind: KeyKind<'_>, value: &[u8]) -> Key {
    let mut key = Key::with_capacity(group.len() + 16 + value.len().min(72));
    write_bucket_key(&mut key.0, group, kind, value);
    key
}

/// The bucket key of one limit for a client IP, written straight into one reused buffer: the
/// same text as `bucket_key(group, kind, grouped(ip, ipv6_prefix))` (a grouped IP is always
/// readable) without the intermediate string.
#[inline]
pub(crate) fn ip_bucket_key(group: &str, kind: IpKind, ip: IpAddr, ipv6_prefix: u8) -> Key {
    let mut key = Key::with_capacity(group.len() + 6 + MAX_GROUPED_LEN);
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

fn write_bucket_key(out: &mut String, group: &str, kind: KeyKind<'_>, value: &[u8]) {
    write_part(out, group);
    out.push(':');
    write_kind(out, kind);
    out.push(':');
    let named = matches!(
        kind,
        KeyKind::Header(_) | KeyKind::Query(_) | KeyKind::Path(_) | KeyKind::Custom(_)
    );
    let secret = matches!(kind, KeyKind::Header(_));
    match readable(value, named) {
        Some(text) if !secret => out.push_str(text),
        _ => write_digest(out, value),
    }
}

fn write_ip_key(out: &mut String, group: &str, kind: IpKind, ip: IpAddr, ipv6_prefix: u8) {
    write_part(out, group);
    out.push(':');
    write_kind(out, kind.as_kind());
    out.push(':');
    write_grouped(out, ip, ipv6_prefix);
}

fn write_kind(out: &mut String, kind: KeyKind<'_>) {
    let (tag, name) = match kind {
        KeyKind::Ip => ("ip", None),
        KeyKind::Anon => ("anon", None),
        KeyKind::User => ("user", None),
        KeyKind::Global => ("global", None),
        KeyKind::Header(name) => ("header", Some(name)),
        KeyKind::Query(name) => ("query", Some(name)),
        KeyKind::Path(name) => ("path", Some(name)),
        KeyKind::Custom(name) => ("custom", Some(name)),
    };
    out.push_str(tag);
    if let Some(name) = name {
        out.push(':');
        write_part(out, name);
    }
}

/// Appends a group or a kind's name: `%` as `%25`, and every `:` as `%3A` except the two of a
/// `::` between other characters. The part then holds no lone `:`, and neither starts nor
/// ends with one, so the `:` after it is the first lone one.
fn write_part(out: &mut String, part: &str) {
    let bytes = part.as_bytes();
    // `part[copied..index]` is still to be copied as it is.
    let mut copied = 0;
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                out.push_str(&part[copied..index]);
                out.push_str("%25");
                index += 1;
                copied = index;
            }
            b':' => {
                let run = bytes[index..].iter().take_while(|&&b| b == b':').count();
                let end = index + run;
                let pair_inside = run == 2 && index > 0 && end < bytes.len();
                if !pair_inside {
                    out.push_str(&part[copied..index]);
                    for _ in 0..run {
                        out.push_str("%3A");
                    }
                    copied = end;
                }
                index = end;
            }
            _ => index += 1,
        }
    }
    out.push_str(&part[copied..]);
}

/// The value as readable text, or `None` when it must be hashed (see the module docs).
fn readable(value: &[u8], after_name: bool) -> Option<&str> {
    if value.len() > MAX_RAW_VALUE_BYTES
        || value.starts_with(b"sha256:")
        || (after_name && value.first() == Some(&b':'))
    {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let plain = if text.is_ascii() {
        !text
            .bytes()
            .any(|byte| byte == b'{' || byte == b'}' || byte.is_ascii_control())
    } else {
        !text
            .chars()
            .any(|c| c == '{' || c == '}' || is_invisible(c))
    };
    plain.then_some(text)
}

/// Control characters (`Cc`, with U+0085), format characters (`Cf` as of Unicode 15: soft hyphen,
/// zero-width characters, bidirectional controls, the byte order mark, tags, ...) and the line
/// and paragraph separators U+2028 / U+2029: characters that move, hide or break text in logs
/// and terminals.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

fn write_digest(out: &mut String, value: &[u8]) {
    out.push_str("sha256:");
    for byte in Sha256::digest(value) {
        let _ = write!(out, "{byte:02x}");
    }
}

/// A short digest of a key, for log lines: enough to tell keys apart while reading, without
/// the client's value.
pub(crate) fn log_digest(key: &str) -> String {
    let mut digest = String::with_capacity(12);
    for byte in &Sha256::digest(key.as_bytes())[..6] {
        let _ = write!(digest, "{byte:02x}");
    }
    digest
}

thread_local! {
    /// The last IP key this thread wrote. A keep-alive connection sends request after request
    /// from one client, so the next key is usually the same text, and copying it is cheaper
    /// than writing the group, the kind and the address again.
    static LAST_IP_KEY: RefCell<LastIpKey> = const {
        RefCell::new(LastIpKey {
            ip: None,
            ipv6_prefix: 0,
            kind: IpKind::Ip,
            group: String::new(),
            text: String::new(),
        })
    };
}

/// `text` is the key [`write_ip_key`] writes for these inputs (`group` as given, before
/// escaping).
struct LastIpKey {
    ip: Option<IpAddr>,
    ipv6_prefix: u8,
    kind: IpKind,
    group: String,
    text: String,
}

impl LastIpKey {
    /// Appends the key to `out`: the memo when the inputs are the same, otherwise written anew
    /// and remembered.
    fn write(&mut self, out: &mut String, group: &str, kind: IpKind, ip: IpAddr, ipv6_prefix: u8) {
        if self.ip == Some(ip)
            && self.ipv6_prefix == ipv6_prefix
            && self.kind == kind
            && self.group == group
        {
            out.push_str(&self.text);
            return;
        }
        let start = out.len();
        write_ip_key(out, group, kind, ip, ipv6_prefix);
        self.ip = Some(ip);
        self.ipv6_prefix = ipv6_prefix;
        self.kind = kind;
        self.group.clear();
        self.group.push_str(group);
        self.text.clear();
        self.text.push_str(&out[start..]);
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

impl Drop for Key {
    fn drop(&mut self) {
        if self.0.capacity() <= MAX_SPARE_CAPACITY {
            let key = std::mem::take(&mut self.0);
            // A key dropped while its thread is torn down is simply freed.
            let _ = SPARE_KEY.try_with(|spare| spare.set(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_ip::grouped;

    const EVERY_KIND: [KeyKind<'static>; 8] = [
        KeyKind::Ip,
        KeyKind::Anon,
        KeyKind::User,
        KeyKind::Global,
        KeyKind::Header("h"),
        KeyKind::Query("q"),
        KeyKind::Path("p"),
        KeyKind::Custom("c"),
    ];

    #[test]
    fn common_keys_stay_readable() {
        assert_eq!(
            bucket_key("app::login", KeyKind::Ip, "192.0.2.1"),
            "app::login:ip:192.0.2.1"
        );
        assert_eq!(
            bucket_key("app::login", KeyKind::Anon, "2001:db8:1:2::/64"),
            "app::login:anon:2001:db8:1:2::/64"
        );
        assert_eq!(bucket_key("g", KeyKind::User, "ключ"), "g:user:ключ");
        assert_eq!(bucket_key("g", KeyKind::Global, ""), "g:global:");
        assert_eq!(
            bucket_key("search", KeyKind::Query("q"), "rust lang"),
            "search:query:q:rust lang"
        );
        assert_eq!(
            bucket_key("items", KeyKind::Path("id"), "42"),
            "items:path:id:42"
        );
        assert_eq!(
            bucket_key("api", KeyKind::Custom("keys::tenant"), "acme"),
            "api:custom:keys::tenant:acme"
        );
    }

    #[test]
    fn header_values_are_always_digests() {
        for value in ["", "k", "tok3n", "a:b"] {
            let key = bucket_key("g", KeyKind::Header("authorization"), value);
            assert_eq!(
                key,
                format!("g:header:authorization:sha256:{:x}", Sha256::digest(value))
            );
        }
    }

    #[test]
    fn long_braced_control_format_and_hash_like_values_are_digests() {
        let long = "a".repeat(129);
        for value in [
            long.as_str(),
            "{slot}",
            "a}",
            "a\nb",
            "\0",
            "a\u{7f}",
            "sha256:abc",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{2029}b",
            "\u{202e}txt.exe",
            "a\u{2066}b",
            "a\u{200b}b",
            "a\u{200f}b",
            "\u{feff}a",
            "a\u{ad}b",
            "a\u{e0041}b",
        ] {
            for kind in EVERY_KIND {
                let key = bucket_key("g", kind, value);
                let digest = format!("sha256:{:x}", Sha256::digest(value));
                assert!(
                    key.ends_with(&format!(":{digest}")),
                    "{kind:?} {value:?}: {key}"
                );
            }
        }
        assert_eq!(
            bucket_key("g", KeyKind::User, "a".repeat(128)),
            format!("g:user:{}", "a".repeat(128))
        );
        assert_eq!(bucket_key("g", KeyKind::User, "é ü"), "g:user:é ü");
    }

    #[test]
    fn values_are_their_bytes_never_a_lossy_text() {
        let ff = bucket_key("g", KeyKind::Query("k"), b"\xff");
        let fe = bucket_key("g", KeyKind::Query("k"), b"\xfe");
        let replacement = bucket_key("g", KeyKind::Query("k"), "\u{fffd}");
        assert_ne!(ff, fe);
        assert_ne!(ff, replacement);
        assert_eq!(
            ff,
            format!("g:query:k:sha256:{:x}", Sha256::digest(b"\xff"))
        );
    }

    /// Pairs of inputs that made one key when the parts were joined with `:` as they were.
    #[test]
    fn no_part_can_pose_as_another() {
        let pairs = [
            // A query name holding `:`, and a value holding it.
            (
                ("colons", KeyKind::Query("a:b"), "c"),
                ("colons", KeyKind::Query("a"), "b:c"),
            ),
            // Two key functions in one group.
            (
                ("g", KeyKind::Custom("tenant"), "x"),
                ("g", KeyKind::Custom("region"), "x"),
            ),
            // A group holding `:` and a kind, and a value holding them.
            (
                ("g:user", KeyKind::User, "u"),
                ("g", KeyKind::User, "user:u"),
            ),
            (
                ("a:ip", KeyKind::Ip, "1.2.3.4"),
                ("a", KeyKind::Ip, "ip:1.2.3.4"),
            ),
            // A group holding `::` at its end, or a kind after it.
            (("g::", KeyKind::User, "u"), ("g", KeyKind::User, ":u")),
            (
                ("g", KeyKind::Path("p"), "::x"),
                ("g", KeyKind::Path("p::"), "x"),
            ),
            (
                ("g", KeyKind::Custom("a"), "::b:c"),
                ("g", KeyKind::Custom("a::b"), "c"),
            ),
            (
                ("g", KeyKind::Query(""), ":x"),
                ("g", KeyKind::Query(":"), "x"),
            ),
            // A user id that looks like an IP.
            (
                ("g", KeyKind::User, "192.0.2.1"),
                ("g", KeyKind::Ip, "192.0.2.1"),
            ),
            (
                ("g", KeyKind::Anon, "192.0.2.1"),
                ("g", KeyKind::Ip, "192.0.2.1"),
            ),
            // An escape written by hand, and the character it escapes.
            (("g%3Au", KeyKind::User, "x"), ("g:u", KeyKind::User, "x")),
            (
                ("g", KeyKind::Query("a%3Ab"), "x"),
                ("g", KeyKind::Query("a:b"), "x"),
            ),
            // A value that looks like a digest.
            (
                (
                    "g",
                    KeyKind::User,
                    "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
                ),
                ("g", KeyKind::User, "x"),
            ),
        ];
        for ((group, kind, value), (other_group, other_kind, other_value)) in pairs {
            assert_ne!(
                bucket_key(group, kind, value),
                bucket_key(other_group, other_kind, other_value),
                "{group:?} {kind:?} {value:?} vs {other_group:?} {other_kind:?} {other_value:?}"
            );
        }
    }

    #[test]
    fn a_group_keeps_its_module_path_and_escapes_every_other_colon() {
        for (group, written) in [
            ("app::login", "app::login"),
            ("a::b::c", "a::b::c"),
            ("layer:/api/", "layer%3A/api/"),
            ("g:", "g%3A"),
            ("::g", "%3A%3Ag"),
            ("g::", "g%3A%3A"),
            ("a:::b", "a%3A%3A%3Ab"),
            ("50%", "50%25"),
            ("", ""),
        ] {
            assert_eq!(
                bucket_key(group, KeyKind::Global, ""),
                format!("{written}:global:")
            );
        }
    }

    #[test]
    fn a_remembered_key_is_reused_only_for_the_same_inputs() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        // Each case right after another that differs in one part; `:` and escapes moved
        // between the group and an IPv6 address must not fool the memo.
        let cases = [
            ("a", IpKind::Ip, v4, 64),
            ("a", IpKind::Ip, v4, 64),
            ("a", IpKind::Anon, v4, 64),
            ("b", IpKind::Anon, v4, 64),
            ("b", IpKind::Anon, v6, 64),
            ("b", IpKind::Anon, v6, 32),
            ("b:anon", IpKind::Anon, v6, 32),
            ("b%3Aanon", IpKind::Anon, v6, 32),
            ("b:anon", IpKind::Anon, v6, 32),
            ("b", IpKind::Anon, v6, 32),
            ("b", IpKind::Ip, v6, 32),
        ];
        for (group, kind, ip, prefix) in cases {
            assert_eq!(
                ip_bucket_key(group, kind, ip, prefix).as_str(),
                bucket_key(group, kind.as_kind(), grouped(ip, prefix))
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
            for kind in [IpKind::Ip, IpKind::Anon] {
                for group in ["app::h", "layer:/api/", &"g".repeat(200)] {
                    assert_eq!(
                        ip_bucket_key(group, kind, ip, prefix).as_str(),
                        bucket_key(group, kind.as_kind(), grouped(ip, prefix))
                    );
                }
            }
        }
    }

    #[test]
    fn log_digests_are_short_and_differ_per_key() {
        let first = log_digest("g:user:ann");
        assert_eq!(first.len(), 12);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first, log_digest("g:user:bob"));
    }
}
