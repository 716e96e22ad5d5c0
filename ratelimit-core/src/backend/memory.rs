//! The in-process store: sharded, lock-light, compact and bounded.
//!
//! Keys are hashed into shards, each a `Mutex` around its tables. Every limit keeps its own
//! state per key (one per quota: `5/m` and `10/h` on one key are two counts), all in the key's
//! shard, so a compound rate is decided under one lock, and no lock is ever held across an
//! `.await` (a check never awaits). A key is kept as a 64-bit keyed digest, never as
//! text; fixed windows and buckets sit in 28-byte slots, about 61 bytes per key
//! with the table's overhead. A check is one table probe that decides and updates
//! the slot in place. Expired state is swept by the inserts themselves (amortised, no
//! background thread).
//!
//! # Eviction
//!
//! When `max_keys` is reached, the shard that receives a new key makes room: its expired
//! entries go first, and only if it has none, the eighth of its entries whose loss changes
//! least — most headroom left, then soonest expiry. Each write records how close its state is
//! to its limit (more than half left, at most half, at most a quarter, nothing), in two bits
//! of the slot, from the verdict's `remaining` and `limit`: exact for a fixed window until
//! its window ends, an upper bound for a bucket, which refills or drains after the write. So
//! a flood of fresh keys (rotating header values, IPv6 /64s), each far from its limit, evicts
//! its own kind: a login window at its limit goes only after every fresher key of its shard.
//!
//! Evicting still forgets counts, so size `max_keys` above your live key count. Evictions are
//! counted (`ratelimit_memory_evictions_total`, feature `metrics`) and logged at `warn` at
//! most once per few seconds, with the number of lines held back.

mod key_hash;
mod occupancy;
mod pressure;
mod shard;
mod slot;
mod table;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use self::key_hash::{KeyHash, KeyHasher};
use self::occupancy::Occupancy;
use self::shard::Shard;
use self::slot::Epoch;
use self::table::{Record, Request, Store};
use super::{Backend, BackendError};
use crate::clock::{Clock, SystemClock};
use crate::decision::Decision;
use crate::health::HealthStatus;
use crate::limit::{Limit, LimitError};

/// The default bound on stored keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Enough shards that two cores rarely meet on one lock, few enough that each shard's table
/// stays dense.
const DEFAULT_SHARDS: usize = 64;

/// The in-process backend; the registry's default.
///
/// ```
/// # tokio_test_block_on(async {
/// use ratelimit_core::{Backend, Limit, MemoryBackend};
/// let backend = MemoryBackend::new();
/// let limit = Limit::fixed_window("2/m".parse()?);
/// assert!(backend.check("user:1", &limit).await?.allowed);
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    shards: Box<[Mutex<Shard>]>,
    occupancy: Occupancy,
    hasher: KeyHasher,
    clock: TimeSource,
    epoch: Epoch,
}

impl MemoryBackend {
    /// A store with the process clock and the default `max_keys`.
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A store that reads time from `clock` (tests inject a [`crate::ManualClock`]).
    #[must_use]
    pub fn with_clock(clock: impl Clock + 'static) -> Self {
        Self::builder().clock(clock).build()
    }

    /// Every setting.
    #[must_use]
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder::default()
    }

    /// How many quota states are stored (expired ones not yet swept included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.occupancy.stored()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The check without the async wrapper: memory never waits, so callers that hold a concrete
    /// `MemoryBackend` can decide synchronously.
    ///
    /// # Errors
    /// An invalid limit or a cost of 0.
    pub fn check_now(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, LimitError> {
        self.decide(key, limit, cost, Commit::Yes)
    }

    /// [`MemoryBackend::check_now`] without recording anything.
    ///
    /// # Errors
    /// An invalid limit or a cost of 0.
    pub fn peek_now(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, LimitError> {
        self.decide(key, limit, cost, Commit::No)
    }

    fn shard(&self, key: KeyHash) -> MutexGuard<'_, Shard> {
        lock(&self.shards[key.shard_index(self.shards.len())])
    }

    fn store(&self) -> Store<'_> {
        Store {
            occupancy: &self.occupancy,
            epoch: self.epoch,
        }
    }

    fn decide(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
        commit: Commit,
    ) -> Result<Decision, LimitError> {
        if cost == 0 {
            return Err(LimitError::ZeroCost);
        }
        let resolved = limit.resolved()?;
        let key = self.hasher.hash(key);
        let request = Request {
            now_ms: self.clock.now_millis(),
            cost,
        };
        let store = self.store();
        let mut shard = self.shard(key);
        // One quota, recorded if allowed: the hot path decides on the stored state in one
        // probe, unless it is missing or no longer live.
        if commit == Commit::Yes
            && let Some(verdict) = shard.check_live(key, resolved, request, store)
        {
            drop(shard);
            return Ok(Decision::from(verdict));
        }
        // One quota otherwise: one probe decides and records.
        let (policies, ids) = (resolved.policies(), resolved.ids());
        if let ([policy], [id]) = (policies, ids) {
            let record = match commit {
                Commit::Yes => Record::IfAllowed,
                Commit::No => Record::Nothing,
            };
            let verdict = shard.apply(key, *id, policy, request, record, store);
            drop(shard);
            return Ok(Decision::from(verdict));
        }
        // A compound rate: every quota must allow before any records, all under one lock.
        let decision =
            decision_of(policies.iter().zip(ids).map(|(policy, id)| {
                shard.apply(key, *id, policy, request, Record::Nothing, store)
            }));
        if commit == Commit::Yes {
            let record = Record::Decided {
                allowed: decision.allowed,
            };
            for (policy, id) in policies.iter().zip(ids) {
                shard.apply(key, *id, policy, request, record, store);
            }
        }
        tracing::trace!(
            allowed = decision.allowed,
            remaining = decision.remaining,
            "memory decision"
        );
        Ok(decision)
    }
}

fn decision_of(verdicts: impl IntoIterator<Item = crate::algorithm::Verdict>) -> Decision {
    let Some(decision) = Decision::combine(verdicts) else {
        unreachable!("a rate always has at least one quota")
    };
    decision
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    Yes,
    No,
}

/// A poisoned shard only means another thread panicked mid-update of plain data; every update
/// is a single insert, remove or in-place write, so the data is still consistent and the store
/// keeps serving.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Backend for MemoryBackend {
    // `check` and `peek` are overridden so a call boxes one future, not two.
    async fn check(&self, key: &str, limit: &Limit) -> Result<Decision, BackendError> {
        Ok(self.check_now(key, limit, 1)?)
    }

    async fn peek(&self, key: &str, limit: &Limit) -> Result<Decision, BackendError> {
        Ok(self.peek_now(key, limit, 1)?)
    }

    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        Ok(self.check_now(key, limit, cost)?)
    }

    fn check_n_now(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> Option<Result<Decision, BackendError>> {
        Some(self.check_now(key, limit, cost).map_err(BackendError::from))
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        Ok(self.peek_now(key, limit, cost)?)
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        let key = self.hasher.hash(key);
        let removed = self.shard(key).remove(key);
        self.occupancy.removed(removed);
        Ok(())
    }

    async fn health(&self) -> HealthStatus {
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        HealthStatus::healthy("memory", None)
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        let now_ms = self.clock.now_millis();
        let mut removed = 0;
        for shard in &*self.shards {
            let swept = lock(shard).sweep(now_ms, self.store());
            self.occupancy.removed(swept);
            removed += swept as u64;
        }
        Ok(removed)
    }
}

/// Where a store reads time: the process clock, called directly so the hot path can inline
/// it, or an injected one behind a pointer.
#[derive(Debug)]
enum TimeSource {
    System(SystemClock),
    Injected(Arc<dyn Clock>),
}

impl TimeSource {
    #[inline]
    fn now_millis(&self) -> u64 {
        match self {
            Self::System(clock) => clock.now_millis(),
            Self::Injected(clock) => clock.now_millis(),
        }
    }
}

/// Settings for a [`MemoryBackend`].
#[derive(Debug)]
pub struct MemoryBackendBuilder {
    max_keys: usize,
    shards: usize,
    clock: Option<Arc<dyn Clock>>,
}

impl Default for MemoryBackendBuilder {
    fn default() -> Self {
        Self {
            max_keys: DEFAULT_MAX_KEYS,
            shards: DEFAULT_SHARDS,
            clock: None,
        }
    }
}

impl MemoryBackendBuilder {
    /// The most quota states kept (default 1,000,000); see
    /// [the module docs](crate::backend::memory#eviction) for what goes when the store is full.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// How many independently locked shards (default 64).
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// The time source (default: [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> MemoryBackend {
        let clock = self.clock.map_or_else(
            || TimeSource::System(SystemClock::new()),
            TimeSource::Injected,
        );
        MemoryBackend {
            shards: (0..self.shards).map(|_| Mutex::default()).collect(),
            occupancy: Occupancy::new(self.max_keys),
            hasher: KeyHasher::random(),
            epoch: Epoch {
                millis: clock.now_millis(),
            },
            clock,
        }
    }
}
