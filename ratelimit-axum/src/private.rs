//! What `#[rate_limit]` expansions refer to. Not a public API: names and shapes change with the
//! macro.

pub use axum::response::{IntoResponse, Response};
pub use http::Method;
pub use http::request::Parts;
pub use inventory;
pub use ratelimit_core::{Algorithm, Limit, OnError, Quota, Rate, RegisteredLimit};

pub use crate::guard::Guard;
pub use crate::spec::{
    AlgorithmConfig, CostSource, HandlerSpec, KeySource, LimitSpec, RateSource, handler_id,
};

/// A quota of `count` per `period_ms` for a `const`; the macro only writes periods it parsed,
/// which are never zero.
#[must_use]
pub const fn quota(count: u64, period_ms: u64) -> Quota {
    match std::num::NonZeroU64::new(period_ms) {
        Some(period_ms) => Quota::new(count, period_ms),
        None => panic!("a rate period is never zero"),
    }
}
