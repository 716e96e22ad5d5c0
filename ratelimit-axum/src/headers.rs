//! Rate-limit response headers.
//!
//! Every counted response carries the de-facto `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (unix seconds), and the IETF fields of
//! draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "default";q=<limit>;w=<window s>`
//! and `RateLimit: "default";r=<remaining>;t=<seconds to reset>`. A rejection adds
//! `Retry-After` (seconds, rounded up, at least 1) when the request can ever pass.
//!
//! This runs on every counted response, so it is written for speed: an admitted response gets
//! its fields from a per-thread template of its header layout (`header_template`) rather than
//! by inserting them one by one, the two values that depend only on the limit come from
//! `header_cache`, and the others are formatted on the stack.

use std::cell::RefCell;
use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use ratelimit_core::Decision;

use crate::header_cache;
use crate::header_template;
use crate::settings::HeaderFields;
use crate::unix_seconds;

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The most headers this module writes, plus the `content-length` axum adds after the
/// handler: a handler's response map is sized for its own headers only, and growing it once
/// up front is cheaper than growing it in the middle of the inserts.
const ADDED_HEADERS: usize = 7;

/// Writes the rate-limit headers of `decision`; `Retry-After` only when `with_retry_after`.
pub fn insert(headers: &mut HeaderMap, decision: &Decision, with_retry_after: bool) {
    insert_fields(headers, decision, with_retry_after, HeaderFields::All);
}

/// [`insert`] with only the header `fields` chosen in the settings (`Retry-After` whatever
/// they are).
pub fn insert_fields(
    headers: &mut HeaderMap,
    decision: &Decision,
    with_retry_after: bool,
    fields: HeaderFields,
) {
    let mut values = Values::new(decision, fields);
    // A 429 is rare and carries one more field; only admitted responses use the template.
    if with_retry_after || !header_template::apply(headers, &mut values, fields) {
        headers.reserve(ADDED_HEADERS);
        for &field in layout(fields) {
            headers.insert(field.name(), values.of(field));
        }
    }
    if with_retry_after && let Some(retry_after) = decision.retry_after_secs() {
        headers.insert(http::header::RETRY_AFTER, number(retry_after));
    }
}

/// One rate-limit header field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Limit,
    Remaining,
    Reset,
    Policy,
    RateLimit,
}

impl Field {
    pub(crate) fn name(self) -> HeaderName {
        match self {
            Self::Limit => X_RATELIMIT_LIMIT,
            Self::Remaining => X_RATELIMIT_REMAINING,
            Self::Reset => X_RATELIMIT_RESET,
            Self::Policy => RATELIMIT_POLICY,
            Self::RateLimit => RATELIMIT,
        }
    }

    /// Whether the value can change between two responses of the same limit.
    pub(crate) fn is_per_response(self) -> bool {
        !matches!(self, Self::Limit | Self::Policy)
    }
}

/// The fields `fields` selects, in the order they are written.
pub(crate) fn layout(fields: HeaderFields) -> &'static [Field] {
    match fields {
        HeaderFields::All => &[
            Field::Limit,
            Field::Remaining,
            Field::Reset,
            Field::Policy,
            Field::RateLimit,
        ],
        HeaderFields::Ietf => &[Field::Policy, Field::RateLimit],
        HeaderFields::XRateLimit => &[Field::Limit, Field::Remaining, Field::Reset],
    }
}

/// The header values of one decision.
pub(crate) struct Values<'a> {
    decision: &'a Decision,
    reset_secs: u64,
    /// `X-RateLimit-Remaining` and `RateLimit`, built up front (together when both are sent, see
    /// [`remaining_and_ratelimit`]) and taken by [`Self::of`].
    remaining: Option<HeaderValue>,
    ratelimit: Option<HeaderValue>,
}

impl<'a> Values<'a> {
    fn new(decision: &'a Decision, fields: HeaderFields) -> Self {
        let reset_secs = decision.reset_after_secs();
        let (remaining, ratelimit) = match fields {
            HeaderFields::All => {
                let (remaining, ratelimit) =
                    remaining_and_ratelimit(decision.remaining, reset_secs);
                (Some(remaining), Some(ratelimit))
            }
            HeaderFields::Ietf => (None, None),
            HeaderFields::XRateLimit => (Some(number(decision.remaining)), None),
        };
        Self {
            decision,
            reset_secs,
            remaining,
            ratelimit,
        }
    }

    /// The unix second `X-RateLimit-Reset` shows: now plus the time to reset.
    #[inline]
    pub(crate) fn reset_at_secs(&self) -> u64 {
        unix_seconds::now().saturating_add(self.reset_secs)
    }

    /// The limit and window the constant fields depend on.
    pub(crate) fn limit_and_window(&self) -> (u64, u64) {
        (self.decision.limit, self.decision.window.as_secs())
    }

    /// The value of `field`. Each per-response value is built once: asked for twice, the second
    /// is built anew.
    #[inline]
    pub(crate) fn of(&mut self, field: Field) -> HeaderValue {
        match field {
            Field::Remaining => self
                .remaining
                .take()
                .unwrap_or_else(|| number(self.decision.remaining)),
            Field::Reset => reset_at(self.reset_at_secs()),
            Field::RateLimit => self.ratelimit.take().unwrap_or_else(|| {
                let (text, _) = ratelimit_text(self.decision.remaining, self.reset_secs);
                header_value(text.as_bytes())
            }),
            Field::Limit => {
                let (limit, window_secs) = self.limit_and_window();
                header_cache::for_limit(limit, window_secs).limit
            }
            Field::Policy => {
                let (limit, window_secs) = self.limit_and_window();
                header_cache::for_limit(limit, window_secs).policy
            }
        }
    }
}

/// Writes the headers of `decision` unless the response already carries a decision with as
/// little or less remaining (a `#[rate_limit]` inside a `RateLimitLayer`): the more restrictive
/// one is what the client must respect.
pub fn insert_unless_more_restrictive(headers: &mut HeaderMap, decision: &Decision) {
    insert_fields_unless_more_restrictive(headers, decision, HeaderFields::All);
}

/// [`insert_unless_more_restrictive`] with only the header `fields` chosen in the settings.
pub fn insert_fields_unless_more_restrictive(
    headers: &mut HeaderMap,
    decision: &Decision,
    fields: HeaderFields,
) {
    if remaining_in(headers).is_none_or(|remaining| remaining > decision.remaining) {
        insert_fields(headers, decision, false, fields);
    }
}

/// The remaining count a response already reports, from whichever family it carries.
fn remaining_in(headers: &HeaderMap) -> Option<u64> {
    if let Some(value) = headers.get(&X_RATELIMIT_REMAINING) {
        return value.to_str().ok()?.parse().ok();
    }
    // `"default";r=<remaining>;t=<reset>`
    let field = headers.get(&RATELIMIT)?.to_str().ok()?;
    let remaining = field.split(';').find_map(|part| part.strip_prefix("r="))?;
    remaining.parse().ok()
}

/// A decimal number as a header value: one allocation, no `String` in between.
fn number(value: u64) -> HeaderValue {
    header_value(itoa::Buffer::new().format(value).as_bytes())
}

thread_local! {
    /// The last `X-RateLimit-Reset` value this thread wrote. Within a window every response
    /// carries the same one, so it is shared (a reference count) instead of formatted and
    /// allocated per response.
    static LAST_RESET: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// `X-RateLimit-Reset` for `at_secs`, the thread's last value when it is the same.
#[inline]
pub(crate) fn reset_at(at_secs: u64) -> HeaderValue {
    // `try_with`: while the thread is torn down the cache is gone; the value is then built anew.
    LAST_RESET
        .try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            match &*last {
                Some((secs, value)) if *secs == at_secs => Some(value.clone()),
                _ => {
                    let value = number(at_secs);
                    *last = Some((at_secs, value.clone()));
                    Some(value)
                }
            }
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| number(at_secs))
}

/// `"default";r=<remaining>;t=<reset s>`, assembled on the stack, and where the digits of
/// `remaining` lie in it.
fn ratelimit_text(remaining: u64, reset_secs: u64) -> (StackText<64>, Range<usize>) {
    let mut field = StackText::<64>::new();
    field.push(b"\"default\";r=");
    let digits_start = field.len;
    field.push(itoa::Buffer::new().format(remaining).as_bytes());
    let digits = digits_start..field.len;
    field.push(b";t=");
    field.push(itoa::Buffer::new().format(reset_secs).as_bytes());
    (field, digits)
}

/// `X-RateLimit-Remaining` and `RateLimit` in one allocation: the `r=` digits of `RateLimit`
/// are exactly `X-RateLimit-Remaining`, so the first is a slice of the second's buffer (the
/// text and its reference count in one block, moved there from the stack), rather than two
/// allocations each freed on its own.
fn remaining_and_ratelimit(remaining: u64, reset_secs: u64) -> (HeaderValue, HeaderValue) {
    let (text, digits) = ratelimit_text(remaining, reset_secs);
    let field = Bytes::from_owner(text);
    (shared_value(field.slice(digits)), shared_value(field))
}

/// Digits, quotes, `;`, `=` and ASCII letters are always a valid value.
fn shared_value(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Digits, quotes, `;`, `=` and ASCII letters are always a valid value; copying them into
/// `Bytes` is the one allocation.
pub(crate) fn header_value(text: &[u8]) -> HeaderValue {
    shared_value(Bytes::copy_from_slice(text))
}

/// A fixed-size text buffer for header values, so formatting them allocates nothing. Two u64
/// and the field's punctuation need 57 bytes, so 64 never overflows; if it did, the part that
/// does not fit is dropped rather than panicking.
pub(crate) struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    pub(crate) const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends `text` whole, or (never for the values here) drops it when it does not fit. Not
    /// cut to fit: a copy of known length then compiles to a few moves instead of a call.
    pub(crate) fn push(&mut self, text: &[u8]) {
        let end = self.len + text.len();
        if let Some(free) = self.bytes.get_mut(self.len..end) {
            free.copy_from_slice(text);
            self.len = end;
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// So that a `Bytes` can own the text in place (`Bytes::from_owner`).
impl<const N: usize> AsRef<[u8]> for StackText<N> {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn decision(remaining: u64, reset_after: Duration) -> Decision {
        Decision {
            allowed: true,
            limit: u64::MAX,
            remaining,
            reset_after,
            retry_after: None,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn per_response_values_are_the_formatted_numbers_for_every_field_choice() {
        for remaining in [0, 7, 999_999_999, u64::MAX] {
            for reset_after in [Duration::ZERO, Duration::from_millis(1_500), Duration::MAX] {
                let decision = decision(remaining, reset_after);
                let reset_secs = decision.reset_after_secs();
                let ratelimit = format!("\"default\";r={remaining};t={reset_secs}");
                for fields in [
                    HeaderFields::All,
                    HeaderFields::Ietf,
                    HeaderFields::XRateLimit,
                ] {
                    let mut values = Values::new(&decision, fields);
                    // Asked twice: the second is built anew, with the same text.
                    for _ in 0..2 {
                        assert_eq!(
                            values.of(Field::Remaining).as_bytes(),
                            remaining.to_string().as_bytes()
                        );
                        assert_eq!(values.of(Field::RateLimit).as_bytes(), ratelimit.as_bytes());
                    }
                }
            }
        }
    }

    #[test]
    fn shared_values_outlive_each_other() {
        let (remaining, ratelimit) = remaining_and_ratelimit(42, 3);
        drop(ratelimit);
        assert_eq!(remaining.as_bytes(), b"42");
        let (remaining, ratelimit) = remaining_and_ratelimit(42, 3);
        drop(remaining);
        assert_eq!(ratelimit.as_bytes(), b"\"default\";r=42;t=3");
    }
}
