//! Redis and Redis Cluster: at most one round trip per check (EVALSHA of a Lua script per
//! algorithm), time from the Redis server, every key with a TTL.
//!
//! On a single server, checks of one algorithm made while a call is in flight share the next
//! call, which decides them in order (`redis/batch.rs`): the server's fixed cost per call is
//! paid once per batch instead of once per check. At most
//! [`RedisBackendBuilder::max_queued`] checks (default [`DEFAULT_MAX_QUEUED`]) wait at once;
//! one more fails at once with [`BackendError::Overloaded`].
//!
//! Why server time: every app server sharing a Redis then decides on one clock, so a host
//! whose clock runs a few seconds off neither grants extra requests nor locks clients out. A
//! clock injected with [`RedisBackendBuilder::clock`] (tests) overrides it.
//!
//! Keys: `<prefix>{<tag>}:<key>:<algorithm>:<policy>` (and `…:seq` beside a sliding log),
//! `<algorithm>` being `f`, `sw`, `c`, `t` or `l` and `<policy>` the 16 hex digits of the
//! quota's [`PolicyId`](crate::PolicyId), a digest of the algorithm and every parameter. So
//! each policy of a key has its own state: `5/m` and `10/h` on one key, or a token bucket and a
//! fixed window of one rate, never count in each other's state, while identical limits (a
//! shared `group`) share theirs. `<tag>` is 16 hex digits of a keyed SipHash-1-3 of the key
//! (`redis/hash_tag.rs`): as the `{..}` hash tag it puts every state of one key in one Cluster
//! slot, so a compound rate is still one atomic script call, and because it is keyed a client
//! cannot pick the slot by picking its key. Every instance sharing the Redis must agree on the
//! secret: set it with [`RedisBackendBuilder::hash_tag_secret`], or let the first instance
//! create one at random under `<prefix>hash-tag-secret` for the others to read. The key itself
//! follows in clear, for operators and so that two keys are never taken for one.
//!
//! Values: the sliding log is a sorted set plus a string `<seq>:<total>` (its last sequence
//! number and the running total of its costs, so a check never reads the whole log: see
//! `redis/sliding_window.lua`); every other state is one string of packed doubles written with
//! `SET … PX`, so a check costs the server at most one `GET` and one `SET` per quota, and a key
//! checked several times in one batch is read and written once (see `redis/prelude.lua`). Each
//! call adds one `GET` and one `SET` of its marker, `<prefix>{<tag>}#<id>` (below).
//!
//! Failures: a call that finds its connection broken (the server restarted, a connection
//! reset) is sent once more on the fresh connection the connection manager opens, within what
//! is left of the timeout. Whether the script ran before the connection broke is unknown, so
//! each call carries a marker that the script stores with its reply for twice the timeout (at
//! least a second): a call sent again gets the first run's reply and counts nothing twice
//! (`redis/invoke.rs`). A server that is away for less than the timeout (a quick restart) costs
//! the checks waiting for it that wait, and no error; the reconnecting pauses are capped at a
//! quarter of the timeout so that a server that is back is found in time. A server away longer
//! fails each check with [`BackendError::Timeout`] or [`BackendError::Redis`] (connection
//! refused) within the timeout, and the next check after its return succeeds. A server that has
//! forgotten the scripts (a restart, `SCRIPT FLUSH`) answers `NOSCRIPT`, and the call goes again
//! as `EVAL` with the source, which loads it: one extra round trip per script and connection.
//!
//! [`Backend::reset`] cannot list a key's states by name (any limit has a policy id), so it
//! searches: on a single server `SCAN … MATCH <prefix>{<tag>}:<key>:*`, which walks the whole
//! keyspace in steps of [`RESET_SCAN_COUNT`] keys, one round trip each; on a Cluster,
//! `CLUSTER GETKEYSINSLOT` on the master of the key's slot, which lists that one slot's keys.
//! Both then delete the matches in one `DEL`. A reset is an operator's action (the CLI's
//! `reset`, a support tool), not something to run per request.

mod batch;
mod hash_tag;
mod invoke;
mod keys;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::{Backend, BackendError};
use crate::clock::Clock;
use crate::decision::Decision;
use crate::health::{HealthStatus, HealthTracker};
use crate::limit::{Limit, LimitError};
use batch::Batcher;
use hash_tag::{HashTagger, Secret};
use invoke::ScriptCaller;
use scripts::ScriptCall;

/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "ratelimit:";

/// The default time a call may take, connection included, before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The default most checks waiting at once on a single server, queued for a batch or in one
/// at the server (see [`RedisBackendBuilder::max_queued`]).
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// The first pause before reconnecting (the connection manager's default), shorter when a
/// quarter of the timeout is.
const RECONNECT_MIN_PAUSE: Duration = Duration::from_millis(100);

/// How many keys each `SCAN` step of a reset on a single server walks. Larger steps mean fewer
/// round trips and longer single commands; a thousand keys take the server well under a
/// millisecond.
pub const RESET_SCAN_COUNT: u32 = 1_000;

/// A rate-limit store in Redis or Redis Cluster.
pub struct RedisBackend {
    connection: Connection,
    /// Checks and peeks on a single server go through here, in batches; `None` on a Cluster.
    batcher: Option<Arc<Batcher>>,
    key_prefix: String,
    /// Keyed by the shared secret; never shown by `Debug`.
    hash_tags: HashTagger,
    /// Sends the script calls of a Cluster (the batcher has the same one).
    scripts: Arc<ScriptCaller>,
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

    /// The prefix of every key this backend writes.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The Redis keys that hold `key`'s state under `limit`, one per quota (two for a sliding
    /// log: the log, then its sequence counter; a quota the rate names twice once), in the
    /// order of the rate's quotas. For
    /// operators looking at the server, and for tests.
    ///
    /// # Errors
    /// When [`Limit::validate`] fails.
    pub fn state_keys(&self, key: &str, limit: &Limit) -> Result<Vec<String>, BackendError> {
        let stem = self.stem(key);
        let mut names = Vec::new();
        for (_, id) in limit.policies_with_ids()? {
            let (state, sequence) = keys::state_keys(&stem, limit.algorithm(), id);
            names.push(state);
            names.extend(sequence);
        }
        Ok(names)
    }

    /// `<prefix>{<tag>}` of `key`: where its states live, in its Cluster slot.
    fn slot(&self, key: &str) -> String {
        keys::slot(&self.key_prefix, &self.hash_tags.tag(key))
    }

    /// `<prefix>{<tag>}:<key>:`, the start of every state key of `key`.
    fn stem(&self, key: &str) -> String {
        keys::stem(&self.slot(key), key)
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
        let algorithm = limit.algorithm();
        let policies: Vec<_> = limit.policies_with_ids()?.collect();
        let quotas = policies.len();
        let slot = self.slot(key);
        let stem = keys::stem(&slot, key);
        let mut call = ScriptCall::new(algorithm, slot, cost, record, quotas);
        for (policy, id) in &policies {
            let (state_key, sequence_key) = keys::state_keys(&stem, algorithm, *id);
            call.keys.push(state_key);
            call.keys.extend(sequence_key);
            call.push_policy(policy);
        }
        let reply = match &self.batcher {
            Some(batcher) => batcher.run(call).await?,
            None => self.call_unbatched(&call).await?,
        };
        let verdicts = policies
            .iter()
            .zip(reply.chunks(scripts::REPLY_PER_QUOTA))
            .map(|((policy, _), chunk)| scripts::verdict(policy, chunk))
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

    /// One script call for `call` alone (on a Cluster, where checks are not batched).
    async fn call_unbatched(&self, call: &ScriptCall) -> Result<Vec<i64>, BackendError> {
        let now_ms = self.clock.as_ref().map(|clock| clock.now_millis());
        let invocation = self
            .scripts
            .invocation(call.algorithm, now_ms, std::iter::once(call));
        let started = Instant::now();
        let reply = match &self.connection {
            Connection::Single(manager) => self.scripts.run(|| manager.clone(), &invocation).await,
            Connection::Cluster(cluster) => self.scripts.run(|| cluster.clone(), &invocation).await,
        };
        self.health.record(reply.as_ref().err(), started.elapsed());
        reply
    }

    /// Every state key of `stem` on a single server: `SCAN` over the whole keyspace with a
    /// `MATCH` on the stem (its glob characters escaped), each name then checked exactly.
    async fn find_states_single(&self, stem: &str) -> Result<Vec<Vec<u8>>, BackendError> {
        let pattern = keys::scan_pattern(stem);
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(RESET_SCAN_COUNT);
            let (next, names): (u64, Vec<Vec<u8>>) = self
                .call(|mut connection| async move {
                    match &mut connection {
                        Connection::Single(manager) => scan.query_async(manager).await,
                        Connection::Cluster(cluster) => scan.query_async(cluster).await,
                    }
                })
                .await?;
            found.extend(
                names
                    .into_iter()
                    .filter(|name| keys::is_state_of(name, stem)),
            );
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Every state key of `stem` on a Cluster: they all share the stem's slot, so the master
    /// of that slot lists the slot's keys (`CLUSTER COUNTKEYSINSLOT`, then `GETKEYSINSLOT` for
    /// that many), and each name is checked exactly. Costs three round trips and a reply as
    /// long as the slot's key count (a 16384th of the keyspace, on average).
    async fn find_states_cluster(&self, stem: &str) -> Result<Vec<Vec<u8>>, BackendError> {
        let mut keyslot = redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(stem);
        let slot: u16 = self.on_slot_master(stem, keyslot).await?;
        let mut count = redis::cmd("CLUSTER");
        count.arg("COUNTKEYSINSLOT").arg(slot);
        let keys_in_slot: u64 = self.on_slot_master(stem, count).await?;
        if keys_in_slot == 0 {
            return Ok(Vec::new());
        }
        // The count bounds the reply: servers before Redis 7 allocate for as many keys as asked.
        let mut list = redis::cmd("CLUSTER");
        list.arg("GETKEYSINSLOT").arg(slot).arg(keys_in_slot);
        let names: Vec<Vec<u8>> = self.on_slot_master(stem, list).await?;
        Ok(names
            .into_iter()
            .filter(|name| keys::is_state_of(name, stem))
            .collect())
    }

    /// One command on the master of the slot `key` hashes to (on a single server, that
    /// server). `CLUSTER …` commands name no key, so the cluster client would otherwise send
    /// them to any node.
    async fn on_slot_master<T: redis::FromRedisValue>(
        &self,
        key: &str,
        command: redis::Cmd,
    ) -> Result<T, BackendError> {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_key(key, SlotAddr::Master),
        ));
        self.call(|connection| async move {
            let value = match connection {
                Connection::Cluster(mut cluster) => cluster.route_command(command, routing).await?,
                Connection::Single(mut manager) => command.query_async(&mut manager).await?,
            };
            Ok(redis::from_redis_value(value)?)
        })
        .await
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

    /// Searches for the key's states, then deletes them (see the module docs for the cost).
    /// A check racing with the reset may write a state after the search; like a request
    /// arriving just after the reset, it counts.
    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        let stem = self.stem(key);
        let found = match &self.connection {
            Connection::Single(_) => self.find_states_single(&stem).await?,
            Connection::Cluster(_) => self.find_states_cluster(&stem).await?,
        };
        tracing::debug!(states = found.len(), "redis reset");
        if found.is_empty() {
            return Ok(());
        }
        let mut delete = redis::cmd("DEL");
        delete.arg(found);
        let _: i64 = self
            .call(|mut connection| async move {
                match &mut connection {
                    Connection::Single(manager) => delete.query_async(manager).await,
                    Connection::Cluster(cluster) => delete.query_async(cluster).await,
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
    hash_tag_secret: Option<Secret>,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    max_queued: usize,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("key_prefix", &self.key_prefix)
            .field(
                "hash_tag_secret",
                &match self.hash_tag_secret {
                    Some(_) => "set",
                    None => "shared through redis",
                },
            )
            .field("timeout", &self.timeout)
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

impl RedisBackendBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            hash_tag_secret: None,
            clock: None,
            timeout: DEFAULT_TIMEOUT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }

    /// Prepended to every key (default `ratelimit:`).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The secret that keys the hash tag of every key (at least 16 bytes; 32 random bytes is
    /// plenty). Every instance sharing the Redis must use the same one, or a client's count
    /// would split between two keys.
    ///
    /// Without it, [`RedisBackendBuilder::build`] uses the secret stored in Redis under
    /// `<prefix>hash-tag-secret`, creating it at random if none is there yet: instances agree
    /// without configuration. Set it here to keep it out of Redis's keyspace, or under an
    /// `allkeys-*` eviction policy, which may evict the stored one (that key has no TTL).
    /// Never logged, and not shown by `Debug`.
    #[must_use]
    pub fn hash_tag_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.hash_tag_secret = Some(Secret::new(secret.into()));
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

    /// The most checks that may wait at once on a single server, queued for a batch or in one
    /// at the server (default [`DEFAULT_MAX_QUEUED`], 10,000; at least 1). One more fails at
    /// once with [`BackendError::Overloaded`], which follows the failure policy like any
    /// backend failure (a [`MultiBackend`](crate::MultiBackend) tries its next member, the
    /// limit's `on_error` decides), instead of queueing for the timeout while the server is
    /// stalled. Size it above the checks one process makes in one timeout at its peak. On a
    /// Cluster each check is its own call and nothing queues here.
    #[must_use]
    pub fn max_queued(mut self, checks: usize) -> Self {
        self.max_queued = checks.max(1);
        self
    }

    /// Connects, and without a [`RedisBackendBuilder::hash_tag_secret`] reads (or creates)
    /// the shared one: one more round trip, under the timeout too.
    ///
    /// # Errors
    /// Invalid URLs, no answer within the timeout, or a hash-tag secret shorter than 16 bytes.
    pub async fn build(self) -> Result<RedisBackend, BackendError> {
        let configured_secret = self.hash_tag_secret.map(hash_tag::configured).transpose()?;
        let connecting = async {
            match &self.target {
                Target::Single(url) => {
                    let client = redis::Client::open(url.as_str())?;
                    // The connection manager reconnects with exponential backoff; capped at a
                    // quarter of the timeout, the pauses still find a server that is back while
                    // the checks waiting for it have time left.
                    let pause = self.timeout / 4;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_min_delay(pause.min(RECONNECT_MIN_PAUSE))
                        .set_max_delay(pause);
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
        let mut connection = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| BackendError::Timeout {
                backend: "redis",
                after: self.timeout,
            })??;
        let secret = match configured_secret {
            Some(secret) => secret,
            None => hash_tag::load_shared(&mut connection, &self.key_prefix, self.timeout).await?,
        };
        let health = Arc::new(HealthTracker::new("redis"));
        let scripts = Arc::new(ScriptCaller::new(self.timeout)?);
        let batcher = match &connection {
            Connection::Single(manager) => Some(Arc::new(Batcher::new(
                manager.clone(),
                Arc::clone(&scripts),
                self.clock.clone(),
                self.timeout,
                Arc::clone(&health),
                self.max_queued,
            ))),
            Connection::Cluster(_) => None,
        };
        Ok(RedisBackend {
            connection,
            batcher,
            key_prefix: self.key_prefix,
            hash_tags: HashTagger::new(&secret),
            scripts,
            clock: self.clock,
            timeout: self.timeout,
            health,
        })
    }
}
