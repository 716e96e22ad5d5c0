//! Where a key's state lives in Redis, and how a reset recognises it again.
//!
//! `<prefix>{<tag>}:<key>:<algorithm>:<policy id>`, plus `:seq` for the sliding log's
//! sequence number and running total. Everything up to the key's closing `:` is the key's *stem*, shared by
//! every state of that key. The policy ids of a key's states are not enumerable (any limit a
//! program builds has one), so a reset searches for the stem and recognises the states by
//! their exact shape ([`is_state_of`]).

use crate::algorithm::{Algorithm, PolicyId};

/// Short names keep keys small; each algorithm has its own keys, so switching a limit's
/// algorithm never meets a state of the wrong shape. The string-valued states are named
/// apart from the hashes earlier versions wrote (`fw`, `swc`, `tb`, `lb`), so a server
/// still holding those never returns a value of the wrong type; they expire by their TTL.
fn algorithm_tag(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => "f",
        Algorithm::SlidingWindow => "sw",
        Algorithm::SlidingWindowCounter => "c",
        Algorithm::TokenBucket => "t",
        Algorithm::LeakyBucket => "l",
    }
}

/// Whether the algorithm keeps a second key (the sliding log's sequence counter) per quota.
fn has_sequence_key(algorithm: Algorithm) -> bool {
    algorithm == Algorithm::SlidingWindow
}

const SEQUENCE_SUFFIX: &str = ":seq";

/// `<prefix>{<tag>}`: the start of every key in the tag's Cluster slot.
pub(super) fn slot(prefix: &str, tag: &str) -> String {
    let mut slot = String::with_capacity(prefix.len() + tag.len() + 2);
    slot.push_str(prefix);
    slot.push('{');
    slot.push_str(tag);
    slot.push('}');
    slot
}

/// `<slot>:<key>:`, the start of every state key of `key` (`slot` from [`slot`]).
pub(super) fn stem(slot: &str, key: &str) -> String {
    let mut stem = String::with_capacity(slot.len() + key.len() + 2);
    stem.push_str(slot);
    stem.push(':');
    stem.push_str(key);
    stem.push(':');
    stem
}

/// The state key of one policy, and the sliding log's sequence key beside it.
pub(super) fn state_keys(
    stem: &str,
    algorithm: Algorithm,
    policy: PolicyId,
) -> (String, Option<String>) {
    let state = format!("{stem}{}:{policy}", algorithm_tag(algorithm));
    let sequence = has_sequence_key(algorithm).then(|| format!("{state}{SEQUENCE_SUFFIX}"));
    (state, sequence)
}

/// A `SCAN … MATCH` pattern for every state key of `stem`, with Redis's glob characters in
/// the prefix and key escaped: a key such as `a*` must not match `ab`'s states, nor `a[`
/// fail to match its own.
pub(super) fn scan_pattern(stem: &str) -> String {
    let mut pattern = String::with_capacity(stem.len() + 2);
    for character in stem.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('*');
    pattern
}

/// Whether `name` is one of the state keys of `stem`: the stem, then an algorithm's tag and a
/// policy id, then `:seq` for the sliding log. The stem holds the key in clear, so a key that
/// merely starts like this one (`a` and `a:b`) or that shares its digest is never taken for
/// it; keys of other programs under the prefix are left alone.
pub(super) fn is_state_of(name: &[u8], stem: &str) -> bool {
    let Some(rest) = name.strip_prefix(stem.as_bytes()) else {
        return false;
    };
    let (rest, sequence) = match rest.strip_suffix(SEQUENCE_SUFFIX.as_bytes()) {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    // `<algorithm>:<16 hex digits>`
    let Some((algorithm, id)) = rest.split_at_checked(rest.len().saturating_sub(17)) else {
        return false;
    };
    let Some(id) = id.strip_prefix(b":") else {
        return false;
    };
    id.len() == 16
        && id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && Algorithm::ALL.into_iter().any(|candidate| {
            algorithm_tag(candidate).as_bytes() == algorithm
                && (!sequence || has_sequence_key(candidate))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Policy;

    fn id() -> PolicyId {
        Policy::FixedWindow {
            limit: 5,
            window_ms: 60_000,
        }
        .id()
    }

    #[test]
    fn every_state_key_of_a_stem_is_recognised() {
        let stem = stem(&slot("rl:", "0123456789abcdef"), "user:1");
        assert_eq!(stem, "rl:{0123456789abcdef}:user:1:");
        for algorithm in Algorithm::ALL {
            let (state, sequence) = state_keys(&stem, algorithm, id());
            assert!(is_state_of(state.as_bytes(), &stem), "{state}");
            assert_eq!(sequence.is_some(), algorithm == Algorithm::SlidingWindow);
            if let Some(sequence) = sequence {
                assert!(is_state_of(sequence.as_bytes(), &stem), "{sequence}");
            }
        }
    }

    #[test]
    fn keys_that_only_start_alike_are_not_taken() {
        // The same tag, as if two keys' digests collided: the clear key still tells them apart.
        let tag = "0123456789abcdef";
        let short = stem(&slot("rl:", tag), "a");
        let (of_short, _) = state_keys(&short, Algorithm::FixedWindow, id());
        for other in ["ab", "a:f", "a:b", "a:f:0123456789abcdef", ""] {
            let other = stem(&slot("rl:", tag), other);
            let (state, sequence) = state_keys(&other, Algorithm::SlidingWindow, id());
            assert!(!is_state_of(state.as_bytes(), &short), "{state}");
            assert!(sequence.is_none_or(|s| !is_state_of(s.as_bytes(), &short)));
            let (state, _) = state_keys(&other, Algorithm::FixedWindow, id());
            assert!(!is_state_of(state.as_bytes(), &short), "{state}");
            assert!(!is_state_of(of_short.as_bytes(), &other), "{of_short}");
        }
        for stranger in [
            "rl:{0123456789abcdef}:a:f:0123456789ABCDEF",
            "rl:{0123456789abcdef}:a:f:0123456789abcde",
            "rl:{0123456789abcdef}:a:x:0123456789abcdef",
            "rl:{0123456789abcdef}:a:f:0123456789abcdef:seq",
            "rl:{0123456789abcdef}:a:sw:0123456789abcdef:seq:seq",
            "rl:{0123456789abcdef}:a:",
            "rl:hash-tag-secret",
        ] {
            assert!(!is_state_of(stranger.as_bytes(), &short), "{stranger}");
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        let stem = stem(&slot("p*[x]?:", "0123456789abcdef"), r"k\*?[]");
        assert_eq!(
            scan_pattern(&stem),
            r"p\*\[x\]\?:{0123456789abcdef}:k\\\*\?\[\]:*"
        );
    }
}
