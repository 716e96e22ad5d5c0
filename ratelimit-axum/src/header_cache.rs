//! The two rate-limit header values that depend only on the limit (`X-RateLimit-Limit` and
//! `RateLimit-Policy`), built once per (limit, window) and then copied for free.
//!
//! The values are leaked `'static` bytes, so a clone is a pointer copy and a drop does nothing
//! (no allocation, no reference count). To keep the leak bounded whatever per-request rates a
//! program uses, the cache is a fixed table of [`SLOTS`] write-once slots: a (limit, window)
//! whose slot is taken by another pair is simply built per request, as it would be without a
//! cache.

use std::sync::OnceLock;

use bytes::Bytes;
use http::HeaderValue;

use crate::headers::{StackText, header_value};

/// Distinct (limit, window) pairs kept: far more than the literal rates of a typical program.
const SLOTS: usize = 64;

/// `X-RateLimit-Limit` and `RateLimit-Policy` for one (limit, window).
#[derive(Clone, Debug)]
pub(crate) struct ConstantHeaders {
    pub(crate) limit: HeaderValue,
    pub(crate) policy: HeaderValue,
}

struct Slot {
    limit: u64,
    window_secs: u64,
    headers: ConstantHeaders,
}

static CACHE: [OnceLock<Slot>; SLOTS] = [const { OnceLock::new() }; SLOTS];

/// The constant values for `limit` requests per `window_secs`.
pub(crate) fn for_limit(limit: u64, window_secs: u64) -> ConstantHeaders {
    let slot = &CACHE[slot_index(limit, window_secs)];
    let cached = slot.get_or_init(|| Slot {
        limit,
        window_secs,
        headers: leaked(build(limit, window_secs)),
    });
    if cached.limit == limit && cached.window_secs == window_secs {
        cached.headers.clone()
    } else {
        build(limit, window_secs)
    }
}

fn slot_index(limit: u64, window_secs: u64) -> usize {
    // A multiplicative mix: literal rates differ in few bits (10/s, 100/s, 5/m, ...).
    let mixed = (limit ^ window_secs.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    usize::try_from(mixed >> 58).unwrap_or(0) % SLOTS
}

/// The two values as ordinary (allocated) header values.
fn build(limit: u64, window_secs: u64) -> ConstantHeaders {
    let limit_text = itoa::Buffer::new().format(limit).as_bytes().to_vec();
    let mut policy = StackText::<64>::new();
    policy.push(b"\"default\";q=");
    policy.push(&limit_text);
    policy.push(b";w=");
    policy.push(itoa::Buffer::new().format(window_secs).as_bytes());
    ConstantHeaders {
        limit: header_value(&limit_text),
        policy: header_value(policy.as_bytes()),
    }
}

/// The same values backed by leaked `'static` bytes (at most [`SLOTS`] pairs per process).
fn leaked(headers: ConstantHeaders) -> ConstantHeaders {
    let to_static = |value: HeaderValue| {
        let bytes: &'static [u8] = Box::leak(value.as_bytes().to_vec().into_boxed_slice());
        HeaderValue::from_maybe_shared(Bytes::from_static(bytes)).unwrap_or(value)
    };
    ConstantHeaders {
        limit: to_static(headers.limit),
        policy: to_static(headers.policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_limit_and_window() {
        for (limit, window) in [
            (5, 60),
            (1_000_000_000, 1),
            (0, 3_600),
            (u64::MAX, u64::MAX),
        ] {
            for _ in 0..2 {
                let headers = for_limit(limit, window);
                assert_eq!(headers.limit.as_bytes(), limit.to_string().as_bytes());
                assert_eq!(
                    headers.policy.as_bytes(),
                    format!("\"default\";q={limit};w={window}").as_bytes()
                );
            }
        }
    }

    #[test]
    fn colliding_pairs_are_still_right() {
        // More pairs than slots: some share a slot and must be built fresh, correctly.
        for limit in 0..(SLOTS as u64 * 3) {
            let headers = for_limit(limit, 60);
            assert_eq!(headers.limit.as_bytes(), limit.to_string().as_bytes());
        }
    }
}
