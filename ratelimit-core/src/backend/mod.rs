//! Where counts live: the [`Backend`] trait and its implementations.

pub mod memory;
pub mod multi;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub mod sql;

use async_trait::async_trait;

use crate::decision::Decision;
use crate::health::HealthStatus;
use crate::limit::{Limit, LimitError};

pub use memory::{MemoryBackend, MemoryBackendBuilder};
pub use multi::{MultiBackend, MultiBackendBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisBackendBuilder};
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use sql::{SqlBackend, SqlBackendBuilder};

/// A store that applies the algorithms atomically per key.
///
/// A store keeps one state per key and policy: each quota of a [`Limit`] has a
/// [`crate::PolicyId`] (see [`Limit::policies_with_ids`]), and two limits checked on one key
/// keep separate counts unless they are identical. The conformance suite checks this by
/// interleaving two limits on one key.
///
/// Implement it (with [`macro@async_trait`]) for a custom store; the registry holds backends
/// as `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Checks and, when every quota allows, counts a request of `cost` for `key`.
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError>;

    /// [`Backend::check_n`] without a future, for stores that decide without waiting (memory):
    /// `Some` with exactly what `check_n` would return, or `None` (the default) when the
    /// caller must await `check_n`. Hot paths try this first to skip boxing a future.
    fn check_n_now(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> Option<Result<Decision, BackendError>> {
        let _ = (key, limit, cost);
        None
    }

    /// [`Backend::check_n`] with cost 1.
    async fn check(&self, key: &str, limit: &Limit) -> Result<Decision, BackendError> {
        self.check_n(key, limit, 1).await
    }

    /// Exactly what [`Backend::check_n`] with the same cost would return now; records nothing.
    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError>;

    /// [`Backend::peek_n`] with cost 1.
    async fn peek(&self, key: &str, limit: &Limit) -> Result<Decision, BackendError> {
        self.peek_n(key, limit, 1).await
    }

    /// Forgets every state of `key`, for every limit and quota.
    async fn reset(&self, key: &str) -> Result<(), BackendError>;

    /// Probes the store (a round trip where there is one) and reports its health.
    async fn health(&self) -> HealthStatus;

    /// The last known health, without any I/O.
    fn health_status(&self) -> HealthStatus;

    /// Removes expired state; returns how many entries it removed.
    async fn cleanup(&self) -> Result<u64, BackendError>;
}

/// Why a backend could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The limit's settings do not fit together, or the cost is 0.
    #[error("invalid limit: {0}")]
    InvalidLimit(#[from] LimitError),
    /// The Redis server or cluster answered with an error, or the connection failed.
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The SQL database answered with an error, refused the connection, or no pooled
    /// connection was free in time.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),
    /// A database URL whose scheme no enabled SQL engine handles.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    #[error(
        "unsupported database URL scheme `{scheme}`; expected postgres://, postgresql://, mysql://, mariadb:// or sqlite: with the matching feature of ratelimit-core enabled"
    )]
    UnsupportedUrl { scheme: String },
    /// A SQL table prefix that is not a plain identifier.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    #[error(
        "table prefix `{prefix}` must be 1 to 40 lower-case ASCII letters, digits or `_`, starting with a letter or `_` (e.g. `ratelimit_`)"
    )]
    InvalidTablePrefix { prefix: String },
    /// A value a SQL `BIGINT` cannot hold (e.g. a period of more than 292 million years).
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    #[error("{what} = {value} does not fit a SQL BIGINT")]
    SqlValueOutOfRange { what: &'static str, value: u64 },
    /// The Redis hash-tag secret is shorter than 16 bytes (its length is shown, never the
    /// secret).
    #[cfg(feature = "redis")]
    #[error(
        "the Redis hash-tag secret {origin} has {len} bytes; it needs at least 16 (e.g. 32 random bytes)"
    )]
    WeakHashTagSecret { origin: &'static str, len: usize },
    /// The OS gave no random bytes for a new Redis hash-tag secret.
    #[cfg(feature = "redis")]
    #[error("no random bytes for a new Redis hash-tag secret: {reason}")]
    NoRandomness { reason: String },
    /// A call took longer than the backend's timeout.
    #[error("{backend} did not answer within {after:?}")]
    Timeout {
        backend: &'static str,
        after: std::time::Duration,
    },
    /// The backend's queue of checks is full: `queued` checks already wait on it, queued for a
    /// batch or in one at the server, which is as many as its builder's `max_queued` allows
    /// (default 10,000). The check was refused at once, without waiting, so a stalled store
    /// cannot pile up memory and waiting requests without end; like any backend failure, it
    /// follows the failure policy (a [`MultiBackend`] tries its next member, a limit's
    /// `on_error` decides).
    #[error(
        "{backend} is overloaded: {queued} checks already wait on it, as many as `max_queued` on its builder allows"
    )]
    Overloaded {
        backend: &'static str,
        queued: usize,
    },
    /// A backend that connects on first use (a `[multi]` member from the config) has not
    /// connected: `cause` is the error of the connection attempt the call waited for. One
    /// attempt is shared by every call that waits on it, so they all get the same `cause`.
    #[error("{backend} is not connected: {cause}")]
    NotConnected {
        backend: &'static str,
        #[source]
        cause: std::sync::Arc<BackendError>,
    },
    /// A store answered something the backend does not understand (e.g. a script edited by
    /// hand on the server).
    #[error("{backend} returned an unexpected reply")]
    UnexpectedReply { backend: &'static str },
    /// Every backend of a failover backend failed or had its circuit open.
    #[error("every backend failed: {failures:?}")]
    AllBackendsFailed {
        /// Each member's name and what went wrong with it.
        failures: Vec<(String, String)>,
        /// When the soonest open circuit lets a trial call through.
        retry_after: Option<std::time::Duration>,
    },
    /// A user-defined backend failed; built-in backends report their own named variants.
    #[error("custom backend failed: {0}")]
    Custom(Box<dyn std::error::Error + Send + Sync>),
}
