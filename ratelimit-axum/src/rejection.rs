//! Why the guard stopped a request, as named responses.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::RETRY_AFTER;
use std::time::Duration;

use ratelimit_core::log_throttle::{LOG_INTERVAL, LogThrottle};
use ratelimit_core::{Decision, LimitError};
use serde_json::json;

use crate::headers;
use crate::settings::{GuardSettings, HeaderFields};

/// A misconfigured server answers every request with the same error: one line every few
/// seconds says so, with the count of those held back.
static MISCONFIGURED: LogThrottle = LogThrottle::new(LOG_INTERVAL);

/// An invalid per-request limit is a bug in the program: one line per handler a minute says
/// which handler and what is wrong, however many requests it fails.
static INVALID_LIMIT: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// The guard's rejection: the response a stopped request gets.
#[derive(Debug)]
#[non_exhaustive]
pub enum GuardRejection {
    /// Over the limit with `block = true`: 429.
    RateLimited(RateLimited),
    /// No backend could decide and the failure policy is `deny`: 503, never a 429.
    BackendUnavailable(BackendUnavailable),
    /// The client's address is on the deny list: 403.
    Forbidden,
    /// The peer address is unknown (server not set up for it): 500 with how to fix it.
    MissingPeerAddress,
    /// The key's header / query / path value is missing and the settings say reject: 400.
    MissingKeyValue(&'static str),
    /// A limit names a backend the registry lacks (install() reports this at startup): 500.
    UnknownBackend(String),
    /// The handler's limits are not registered (a linker dropped them): 500.
    UnregisteredHandler,
    /// A per-request rate or cost that does not fit the handler's settings (e.g. a compound
    /// rate with bucket settings): 500 with a generic body. A bug in the program, not a store
    /// failure, so never the failure policy: `on_error = "allow"` must not let it through.
    InvalidLimit {
        /// `module::path::handler`, or `layer:<path prefix>`.
        handler: String,
        /// What is wrong with the limit.
        problem: LimitError,
    },
}

/// A request over its limit.
#[derive(Clone, Debug)]
pub struct RateLimited {
    /// The rejecting limit's decision.
    pub decision: Decision,
    /// `module::path::handler`, or `layer:<path prefix>` for a middleware rule.
    pub handler: String,
    /// The rate as written, for the message.
    pub rate: String,
}

impl RateLimited {
    /// The default 429: headers, `Retry-After` and
    /// `{"error":"rate_limited","detail":"...","retry_after":N}` (`null` when it never passes).
    #[must_use]
    pub fn default_response(&self) -> Response {
        let retry_after = self.decision.retry_after_secs();
        let detail = match retry_after {
            Some(seconds) => format!(
                "Rate limit of {} exceeded. Try again in {seconds} second{}.",
                self.rate,
                if seconds == 1 { "" } else { "s" }
            ),
            None => format!(
                "Rate limit of {} exceeded; this request can never pass.",
                self.rate
            ),
        };
        let body = json!({ "error": "rate_limited", "detail": detail, "retry_after": retry_after });
        (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
    }

    /// The 429 the guard sends under `settings`: their blocked response (or the default one)
    /// with the rate-limit headers and `Retry-After`. For a limit checked in a handler (e.g.
    /// on a value from the body), so that its rejection looks like the guard's.
    #[must_use]
    pub fn to_response(&self, settings: &GuardSettings) -> Response {
        self.response_with(settings.blocked_response, settings.header_fields)
    }

    fn response_with(&self, blocked: Option<BlockedResponse>, fields: HeaderFields) -> Response {
        let mut response = blocked.map_or_else(|| self.default_response(), |build| build(self));
        headers::insert_fields(response.headers_mut(), &self.decision, true, fields);
        response
    }
}

/// Every backend failed and the failure policy is `deny`.
#[derive(Clone, Copy, Debug)]
pub struct BackendUnavailable {
    /// Seconds for `Retry-After`.
    pub retry_after_secs: u64,
}

/// A function that builds the 429 response, configured once in [`crate::GuardSettings`]. The
/// guard adds the rate-limit headers to whatever it returns.
pub type BlockedResponse = fn(&RateLimited) -> Response;

impl GuardRejection {
    pub(crate) fn into_response_with(
        self,
        blocked: Option<BlockedResponse>,
        fields: HeaderFields,
    ) -> Response {
        match self {
            Self::RateLimited(limited) => limited.response_with(blocked, fields),
            Self::BackendUnavailable(unavailable) => {
                let body = json!({
                    "error": "rate_limit_unavailable",
                    "detail": "The rate limiter is unavailable; try again later.",
                    "retry_after": unavailable.retry_after_secs,
                });
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, unavailable.retry_after_secs.into());
                response
            }
            Self::Forbidden => error(StatusCode::FORBIDDEN, "forbidden", "Access denied."),
            Self::MissingPeerAddress => {
                if let Some(suppressed) = MISCONFIGURED.admit(&"missing peer address") {
                    tracing::error!(
                        suppressed,
                        "rate limiting needs the client address: serve the app with \
                         `app.into_make_service_with_connect_info::<std::net::SocketAddr>()`"
                    );
                }
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rate_limit_misconfigured",
                    "Rate limiting needs the client address: serve the app with \
                     `axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())`.",
                )
            }
            Self::MissingKeyValue(what) => error(
                StatusCode::BAD_REQUEST,
                "rate_limit_key_missing",
                &format!("The request has no {what}, which identifies it for rate limiting."),
            ),
            Self::UnknownBackend(name) => {
                if let Some(suppressed) = MISCONFIGURED.admit(&("unknown backend", &name)) {
                    tracing::error!(
                        backend = name,
                        suppressed,
                        "rate limit names a backend that is not configured"
                    );
                }
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rate_limit_misconfigured",
                    "A rate limit names a backend that is not configured.",
                )
            }
            Self::InvalidLimit { handler, problem } => {
                if let Some(suppressed) = INVALID_LIMIT.admit(&handler) {
                    tracing::error!(
                        handler,
                        %problem,
                        suppressed,
                        "a per-request rate limit is invalid; answering 500"
                    );
                }
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rate_limit_misconfigured",
                    "A rate limit of this endpoint is invalid.",
                )
            }
            Self::UnregisteredHandler => {
                if let Some(suppressed) = MISCONFIGURED.admit(&"unregistered handler") {
                    tracing::error!(
                        suppressed,
                        "a #[rate_limit] handler's limits were not registered"
                    );
                }
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rate_limit_misconfigured",
                    "The handler's rate limits are not registered.",
                )
            }
        }
    }
}

impl IntoResponse for GuardRejection {
    fn into_response(self) -> Response {
        self.into_response_with(None, HeaderFields::All)
    }
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({ "error": code, "detail": detail }))).into_response()
}
