//! Rate limiting for axum. The guard, headers and `#[rate_limit]` land with the macro issue;
//! today the crate re-exports the core so `ratelimit_axum::core` is the one path users need.

pub use ratelimit_core as core;
