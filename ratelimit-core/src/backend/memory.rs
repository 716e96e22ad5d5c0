//! The in-process store: sharded, lock-light and bounded.
//!
//! Keys are hashed into shards, each a `Mutex` around a hash table; every quota of one key lives
//! in the same shard, so a compound rate is decided under one lock, and no lock is ever held
//! across an `.await` (a check never awaits). Expired state is swept by the writes themselves
//! (amortised, no background thread). When `max_keys` is reached, expired entries go first,
//! then the entries closest to expiry — which forgets their counts, so size `max_keys` above
//! your live key count.

mod key_hash;
mod shard;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use self::key_hash::{KeyHash, KeyHasher};
use self::shard::{Entry, Occupancy, Shard};
use super::{Backend, BackendError};
use crate::algorithm::{Policy, State, WindowState};
use crate::clock::{Clock, SystemClock};
use crate::decision::Decision;
use crate::health::HealthStatus;
use crate::limit::{Limit, LimitError};
use crate::rate::MAX_QUOTAS;

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
    clock: Arc<dyn Clock>,
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
        let policies = limit.policies()?;
        let key = self.hasher.hash(key);
        let now_ms = self.clock.now_millis();
        let mut shard = self.shard(key);
        if !limit.rate().is_compound() {
            return Ok(self.decide_single(&mut shard, key, policies, now_ms, cost, commit));
        }
        let verdicts = policies.clone().enumerate().map(|(index, policy)| {
            policy.evaluate(shard.get(key.for_quota(index), now_ms), now_ms, cost)
        });
        let Some(decision) = Decision::combine(verdicts) else {
            unreachable!("a rate always has at least one quota")
        };
        if commit == Commit::No {
            return Ok(decision);
        }
        for (index, policy) in policies.enumerate() {
            let quota_key = key.for_quota(index);
            let state = if decision.allowed {
                Some(policy.admit(shard.take(quota_key, now_ms, &self.occupancy), now_ms, cost))
            } else if shard.get(quota_key, now_ms).is_none() {
                policy.state_after_first_rejection(now_ms)
            } else {
                None
            };
            if let Some(state) = state {
                let expires_at = policy.expires_at(&state, now_ms);
                shard.insert(
                    quota_key,
                    Entry { expires_at, state },
                    now_ms,
                    &self.occupancy,
                );
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

impl MemoryBackend {
    /// The common case of one quota: one table lookup, updated in place.
    fn decide_single(
        &self,
        shard: &mut Shard,
        key: KeyHash,
        mut policies: impl Iterator<Item = Policy>,
        now_ms: u64,
        cost: u64,
        commit: Commit,
    ) -> Decision {
        let Some(policy) = policies.next() else {
            unreachable!("a rate always has at least one quota")
        };
        let quota_key = key.for_quota(0);
        let verdict = if let Some(entry) = shard.live_mut(quota_key, now_ms) {
            let verdict = policy.evaluate(Some(&entry.state), now_ms, cost);
            if commit == Commit::Yes && verdict.allowed {
                let previous = std::mem::replace(&mut entry.state, PLACEHOLDER);
                entry.state = policy.admit(Some(previous), now_ms, cost);
                entry.expires_at = policy.expires_at(&entry.state, now_ms);
            }
            verdict
        } else {
            let verdict = policy.evaluate(None, now_ms, cost);
            if commit == Commit::Yes {
                let state = if verdict.allowed {
                    Some(policy.admit(None, now_ms, cost))
                } else {
                    policy.state_after_first_rejection(now_ms)
                };
                if let Some(state) = state {
                    let expires_at = policy.expires_at(&state, now_ms);
                    shard.insert(
                        quota_key,
                        Entry { expires_at, state },
                        now_ms,
                        &self.occupancy,
                    );
                }
            }
            verdict
        };
        let Some(decision) = Decision::combine([verdict]) else {
            unreachable!("one verdict combines into one decision")
        };
        decision
    }
}

/// Stands in for a state for the instant it is moved out to be updated.
const PLACEHOLDER: State = State::Window(WindowState {
    window_start: 0,
    count: 0,
});

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
/// is a single insert or remove, so the data is still consistent and the store keeps serving.
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

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        Ok(self.peek_now(key, limit, cost)?)
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        let key = self.hasher.hash(key);
        let mut shard = self.shard(key);
        for index in 0..MAX_QUOTAS {
            shard.remove(key.for_quota(index), &self.occupancy);
        }
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
            let swept = lock(shard).sweep(now_ms);
            self.occupancy.removed_by_sweep(swept);
            removed += swept as u64;
        }
        Ok(removed)
    }
}

/// Settings for a [`MemoryBackend`].
#[derive(Debug)]
pub struct MemoryBackendBuilder {
    max_keys: usize,
    shards: usize,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryBackendBuilder {
    fn default() -> Self {
        Self {
            max_keys: DEFAULT_MAX_KEYS,
            shards: DEFAULT_SHARDS,
            clock: Arc::new(SystemClock::new()),
        }
    }
}

impl MemoryBackendBuilder {
    /// The most quota states kept (default 1,000,000); see the module docs for eviction.
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
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> MemoryBackend {
        MemoryBackend {
            shards: (0..self.shards).map(|_| Mutex::default()).collect(),
            occupancy: Occupancy::new(self.max_keys),
            hasher: KeyHasher::random(),
            clock: self.clock,
        }
    }
}
