//! Rate-limit response headers.
//!
//! Every counted response carries the de-facto `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (unix seconds), and the IETF fields of
//! draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "default";q=<limit>;w=<window s>`
//! and `RateLimit: "default";r=<remaining>;t=<seconds to reset>`. A rejection adds
//! `Retry-After` (seconds, rounded up, at least 1) when the request can ever pass.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use ratelimit_core::Decision;

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Writes the rate-limit headers of `decision`; `Retry-After` only when `with_retry_after`.
pub fn insert(headers: &mut HeaderMap, decision: &Decision, with_retry_after: bool) {
    let reset_secs = decision.reset_after_secs();
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_secs());
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(
        X_RATELIMIT_RESET,
        HeaderValue::from(now_secs.saturating_add(reset_secs)),
    );
    headers.insert(
        RATELIMIT_POLICY,
        number_header(&format!(
            "\"default\";q={};w={}",
            decision.limit,
            decision.window.as_secs()
        )),
    );
    headers.insert(
        RATELIMIT,
        number_header(&format!(
            "\"default\";r={};t={reset_secs}",
            decision.remaining
        )),
    );
    if with_retry_after && let Some(retry_after) = decision.retry_after_secs() {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
}

/// Writes the headers of `decision` unless the response already carries a decision with as
/// little or less remaining (a `#[rate_limit]` inside a `RateLimitLayer`): the more restrictive
/// one is what the client must respect.
pub fn insert_unless_more_restrictive(headers: &mut HeaderMap, decision: &Decision) {
    let existing = headers
        .get(&X_RATELIMIT_REMAINING)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if existing.is_none_or(|remaining| remaining > decision.remaining) {
        insert(headers, decision, false);
    }
}

/// A header value built only from digits, quotes, `;`, `=` and ASCII letters: always valid.
fn number_header(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
