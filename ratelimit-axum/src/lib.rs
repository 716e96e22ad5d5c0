#![doc = include_str!("../README.md")]

mod client_ip;
mod enforce;
mod future;
mod guard;
mod guard_future;
mod header_cache;
mod header_template;
pub mod headers;
mod health;
mod key;
mod key_source;
mod layer;
#[cfg(feature = "config")]
mod layer_config;
mod probe_cache;
mod rejection;
mod service;
mod settings;
mod spec;
mod status;
mod unix_seconds;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use ratelimit_core as core;
pub use ratelimit_macros::rate_limit;

pub use client_ip::{
    MissingPeerAddress, canonical as canonical_ip, client_ip, grouped as grouped_ip,
};
pub use future::ResponseFuture;
pub use health::health_handler;
pub use key::{KeyKind, bucket_key};
pub use layer::{LayerError, RateLimitLayer, RateLimitLayerBuilder};
pub use rejection::{BackendUnavailable, BlockedResponse, GuardRejection, RateLimited};
pub use service::RateLimitService;
pub use settings::{
    AlreadyInstalled, DEFAULT_HEALTH_INTERVAL, GuardSettings, GuardSettingsBuilder, HeaderFields,
    InvalidNetwork, MissingKey, Scope, UserResolver,
};
pub use spec::{AlgorithmConfig, CostSource, HandlerSpec, KeySource, LimitSpec, RateSource};
pub use status::{RateLimitStatus, UserId};
