#![doc = include_str!("../README.md")]

pub mod algorithm;
pub mod clock;
pub mod decision;
pub mod limit;
pub mod log_throttle;
pub mod rate;
pub mod redact;

#[cfg(feature = "memory")]
pub mod backend;
#[cfg(feature = "memory")]
pub mod circuit;
#[cfg(feature = "memory")]
pub mod client_ip;
#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "memory")]
pub mod handlers;
#[cfg(feature = "memory")]
pub mod health;
pub mod metrics;
#[cfg(feature = "memory")]
pub mod registry;

pub use algorithm::{Algorithm, Policy, PolicyId, State, UnknownAlgorithm, Verdict};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::Decision;
pub use limit::{Limit, LimitError};
pub use log_throttle::LogThrottle;
pub use rate::{Quota, Rate, RateParseError, RateParseErrorKind};

#[cfg(feature = "memory")]
pub use async_trait::async_trait;
#[cfg(feature = "memory")]
pub use backend::{Backend, BackendError, MemoryBackend, MultiBackend, MultiBackendBuilder};
#[cfg(feature = "redis")]
pub use backend::{RedisBackend, RedisBackendBuilder};
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use backend::{SqlBackend, SqlBackendBuilder};
#[cfg(feature = "memory")]
pub use circuit::{CircuitBreaker, CircuitBreakerConfig};
#[cfg(feature = "memory")]
pub use client_ip::{ClientIpHeader, InvalidNetwork, UnknownClientIpHeader};
#[cfg(feature = "config")]
pub use config::{Config, ConfigError};
#[cfg(feature = "memory")]
pub use handlers::{RegisteredLimit, registered_limits};
#[cfg(feature = "memory")]
pub use health::{CircuitState, HealthStatus, MemberHealth};
#[cfg(feature = "memory")]
pub use registry::{OnError, Registry, RegistryBuilder, RegistryError};
