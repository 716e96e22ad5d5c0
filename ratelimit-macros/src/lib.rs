//! The `#[rate_limit]` attribute of smart-ratelimit. Use it through `ratelimit_axum::rate_limit`.
//!
//! The attribute itself lands with the macro issue; this crate already links
//! `ratelimit-core` without default features so that compile-time and run-time rate parsing
//! share one grammar.
