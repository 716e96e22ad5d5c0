//! What the guard tells the handler and later layers about a request.

use ratelimit_core::Decision;

/// Inserted into the request extensions on every counted request (limited or not), so the
/// handler can take `Extension<RateLimitStatus>`. With `block = false` this is how a handler
/// learns it is over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Whether a limit rejected the request (only possible to observe with `block = false`).
    pub limited: bool,
    /// The decision reported in the headers: the rejecting limit's, or the most restrictive.
    pub decision: Decision,
}

/// The authenticated user, as an auth layer inserts it into the request extensions; the default
/// user resolver for `key = "user"` and `key = "user_or_ip"` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub String);
