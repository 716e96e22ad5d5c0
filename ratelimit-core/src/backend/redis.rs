//! Redis and Redis Cluster: at most one round trip per check (EVALSHA of a Lua script per
//! algorithm), time from the Redis server, every key with a TTL.
//!
//! On a single server, checks of one algorithm made while a call is in flight share the next
//! call, which decides them in order (`redis/batch.rs`): the server's fixed cost per call is
//! paid once per batch instead of once per check.
//!
//! Why server time: every app server sharing a Redis then decides on one clock, so a host
//! whose clock runs a few seconds off neither grants extra requests nor locks clients out. A
//! clock injected with [`RedisBackendBuilder::clock`] (tests) overrides it.
//!
//! Keys: `<prefix>{<key>}:<algorithm>:<quota>` (and `…:seq` for the sliding log), `<algorithm>`
//! being `f`, `sw`, `c`, `t` or `l`. The `{..}` hash tag puts every quota of one key in one
//! Cluster slot, so a compound rate is still one atomic script call. Values: the sliding log is
//! a sorted set plus a counter; every other state is one string of packed doubles written with
//! `SET … PX`, so a check costs the server at most one `GET` and one `SET` per quota, and a
//! key checked several times in one batch is read and written once (see `redis/prelude.lua`).

mod batch;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::{Backend, BackendError};
use crate::clock::Clock;
use crate::decision::Decision;
use crate::health::{HealthStatus, HealthTracker};
use crate::limit::{Limit, LimitError};
use crate::rate::MAX_QUOTAS;
use batch::Batcher;
use scripts::ScriptCall;

/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "ratelimit:";

/// The default time a call may take, connection included, before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// A rate-limit store in Redis or Redis Cluster.
pub struct RedisBackend {
    connection: Connection,
    /// Checks and peeks on a single server go through here, in batches; `None` on a Cluster.
    batcher: Option<Arc<Batcher>>,
    key_prefix: String,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    health: Arc<HealthTracker>,
}

#[derive(Clone)]
enum Connection {
    /// One server, multiplexed and reconnecting.
    Single(ConnectionManager),
    /// A cluster, routed by slot.
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field(
                "mode",
                &match self.connection {
                    Connection::Single(_) => "single",
                    Connection::Cluster(_) => "cluster",
                },
            )
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to one Redis server (`redis://host:port/db`).
    ///
    /// # Errors
    /// An invalid URL, or a server that does not answer within the default timeout.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::builder(url).build().await
    }

    /// Connects to a Redis Cluster through any of its nodes.
    ///
    /// # Errors
    /// Invalid URLs, or no node answering within the default timeout.
    pub async fn cluster<I>(urls: I) -> Result<Self, BackendError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::cluster_builder(urls).build().await
    }

    /// Every setting, for a cluster reached through any of `urls`.
    #[must_use]
    pub fn cluster_builder<I>(urls: I) -> RedisBackendBuilder
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let urls = urls
            .into_iter()
            .map(|url| url.as_ref().to_owned())
            .collect();
        RedisBackendBuilder::new(Target::Cluster(urls))
    }

    /// Every setting, for one server.
    #[must_use]
    pub fn builder(url: &str) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Target::Single(url.to_owned()))
    }

    /// The key of one quota's state: `<prefix>{<key>}:<algorithm>:<quota>`.
    fn state_key(&self, key: &str, tag: &str, quota: usize) -> String {
        format!("{}{{{key}}}:{tag}:{quota}", self.key_prefix)
    }

    async fn decide(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
        record: bool,
    ) -> Result<Decision, BackendError> {
        if cost == 0 {
            return Err(LimitError::ZeroCost.into());
        }
        let policies = limit.policies()?;
        let algorithm = limit.algorithm();
        let tag = scripts::key_tag(algorithm);
        let quotas = limit.rate().quotas().len();
        let mut call = ScriptCall::new(algorithm, cost, record, quotas);
        for (index, policy) in policies.clone().enumerate() {
            let state_key = self.state_key(key, tag, index);
            let sequence_key =
                scripts::has_sequence_key(algorithm).then(|| format!("{state_key}:seq"));
            call.keys.push(state_key);
            call.keys.extend(sequence_key);
            call.push_policy(&policy);
        }
        let reply = match &self.batcher {
            Some(batcher) => batcher.run(call).await?,
            None => {
                let now_ms = self.clock.as_ref().map(|clock| clock.now_millis());
                self.call(|mut connection| async move {
                    let invocation = scripts::invocation(algorithm, now_ms, std::iter::once(&call));
                    match &mut connection {
                        Connection::Single(manager) => invocation.invoke_async(manager).await,
                        Connection::Cluster(cluster) => invocation.invoke_async(cluster).await,
                    }
                })
                .await?
            }
        };
        let verdicts = policies
            .zip(reply.chunks(scripts::REPLY_PER_QUOTA))
            .map(|(policy, chunk)| scripts::verdict(&policy, chunk))
            .collect::<Option<Vec<_>>>()
            .filter(|verdicts| verdicts.len() == quotas)
            .ok_or(BackendError::UnexpectedReply { backend: "redis" })?;
        let decision = Decision::combine(verdicts)
            .ok_or(BackendError::UnexpectedReply { backend: "redis" })?;
        tracing::trace!(
            allowed = decision.allowed,
            remaining = decision.remaining,
            "redis decision"
        );
        Ok(decision)
    }

    /// Runs one round trip under the timeout, recording health.
    async fn call<T, F, Fut>(&self, round_trip: F) -> Result<T, BackendError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = bounded(self.timeout, round_trip(self.connection.clone())).await;
        self.health.record(result.as_ref().err(), started.elapsed());
        result
    }
}

/// Awaits one round trip for at most `timeout`.
async fn bounded<T>(
    timeout: Duration,
    round_trip: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(timeout, round_trip).await {
        Ok(Ok(value)) => Ok(value),
        // The connection's own response timeout (the same duration) may fire first.
        Ok(Err(error)) if !error.is_timeout() => Err(BackendError::Redis(error)),
        Ok(Err(_)) | Err(_) => Err(BackendError::Timeout {
            backend: "redis",
            after: timeout,
        }),
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.decide(key, limit, cost, true).await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.decide(key, limit, cost, false).await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        let mut command = redis::cmd("DEL");
        for algorithm in crate::Algorithm::ALL {
            let tag = scripts::key_tag(algorithm);
            for quota in 0..MAX_QUOTAS {
                let state_key = self.state_key(key, tag, quota);
                if scripts::has_sequence_key(algorithm) {
                    command.arg(format!("{state_key}:seq"));
                }
                command.arg(state_key);
            }
        }
        let _: i64 = self
            .call(|mut connection| async move {
                match &mut connection {
                    Connection::Single(manager) => command.query_async(manager).await,
                    Connection::Cluster(cluster) => command.query_async(cluster).await,
                }
            })
            .await?;
        Ok(())
    }

    async fn health(&self) -> HealthStatus {
        let ping = redis::cmd("PING");
        let _ = self
            .call(|mut connection| async move {
                match &mut connection {
                    Connection::Single(manager) => ping.query_async::<String>(manager).await,
                    Connection::Cluster(cluster) => ping.query_async::<String>(cluster).await,
                }
            })
            .await;
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        self.health.snapshot()
    }

    /// Nothing to do: every key carries its own TTL.
    async fn cleanup(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

enum Target {
    Single(String),
    Cluster(Vec<String>),
}

/// Settings for a [`RedisBackend`].
pub struct RedisBackendBuilder {
    target: Target,
    key_prefix: String,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackendBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            clock: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Prepended to every key (default `ratelimit:`).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Decides on this clock instead of the Redis server's `TIME` (tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The most a call (and the initial connection) may take before it fails (default 500 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// Invalid URLs, or no answer within the timeout.
    pub async fn build(self) -> Result<RedisBackend, BackendError> {
        let connecting = async {
            match &self.target {
                Target::Single(url) => {
                    let client = redis::Client::open(url.as_str())?;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout));
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map(Connection::Single)
                }
                Target::Cluster(urls) => {
                    let client = ClusterClient::builder(urls.clone())
                        .connection_timeout(self.timeout)
                        .response_timeout(self.timeout)
                        .build()?;
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            }
        };
        let connection = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| BackendError::Timeout {
                backend: "redis",
                after: self.timeout,
            })??;
        let health = Arc::new(HealthTracker::new("redis"));
        let batcher = match &connection {
            Connection::Single(manager) => Some(Arc::new(Batcher::new(
                manager.clone(),
                self.clock.clone(),
                self.timeout,
                Arc::clone(&health),
            ))),
            Connection::Cluster(_) => None,
        };
        Ok(RedisBackend {
            connection,
            batcher,
            key_prefix: self.key_prefix,
            clock: self.clock,
            timeout: self.timeout,
            health,
        })
    }
}
