//! ns per check: the memory backend against governor's keyed limiter, on the same `String` keys
//! in the same run. Results and how to read them: `BENCHMARKS.md` at the repository root.
//!
//! Rows: 1 hot key, 10,000 keys, 1,000,000 keys, each visited round-robin. Columns: governor
//! `check_key`, and our fixed window and token bucket, each through `MemoryBackend::check_now`
//! (sync) and through `Backend::check` on `&dyn Backend` (the registry's async path).
//!
//! Every quota is large enough that no check is ever rejected, and every table is pre-warmed
//! with every key, so all rows measure the same steady-state "allowed, key already stored" path.
//! A final check after each benchmark asserts that nothing was rejected.

// Benches are not library code: a setup that cannot run should abort loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ratelimit_core::{Backend, Limit, MemoryBackend};

const KEY_COUNTS: [usize; 3] = [1, 10_000, 1_000_000];

/// Twice the largest key count: the store's bound is per shard (`max_keys / 64`), so with
/// exactly `max_keys` keys the fuller shards would evict, and this bench measures checks, not
/// eviction.
const MAX_KEYS: usize = 2 * 1_000_000;

/// A bucket no run can drain (a hot key sees ~2e8 checks per benchmark at most).
const BUCKET_SIZE: u32 = 1_000_000_000;

/// One token per second: slow enough that a touched bucket stays below full, so its state
/// stays stored (a full bucket means the same as no state and would be dropped) and the
/// 1,000,000-key row measures a table that really holds every key.
const REFILL_PER_SECOND: u32 = 1;

/// Passes over every key before measuring: inserts every key, and leaves each token bucket
/// that many seconds away from full, longer than the gap before the first measured pass.
const WARM_UP_PASSES: usize = 3;

fn make_keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("user:{i}")).collect()
}

/// Cycles through a row's keys; every limiter of the row sees the same `String`s.
struct RoundRobin<'a> {
    keys: &'a [String],
    next: usize,
}

impl<'a> RoundRobin<'a> {
    fn new(keys: &'a [String]) -> Self {
        Self { keys, next: 0 }
    }

    fn next_key(&mut self) -> &'a String {
        let key = &self.keys[self.next];
        self.next += 1;
        if self.next == self.keys.len() {
            self.next = 0;
        }
        key
    }

    fn warm_up(&self, mut check: impl FnMut(&String) -> bool) {
        for _ in 0..WARM_UP_PASSES {
            for key in self.keys {
                assert!(check(key), "warm-up check of {key} was rejected");
            }
        }
    }
}

fn fixed_window() -> Limit {
    // One day, epoch-aligned: the window only rolls over at 00:00 UTC.
    Limit::fixed_window(format!("{BUCKET_SIZE}/d").parse().unwrap())
}

fn token_bucket() -> Limit {
    Limit::token_bucket(format!("{REFILL_PER_SECOND}/s").parse().unwrap())
        .bucket_size(u64::from(BUCKET_SIZE))
}

fn governor_quota() -> Quota {
    Quota::per_second(NonZeroU32::new(REFILL_PER_SECOND).unwrap())
        .allow_burst(NonZeroU32::new(BUCKET_SIZE).unwrap())
}

fn memory_backend() -> MemoryBackend {
    MemoryBackend::builder().max_keys(MAX_KEYS).build()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn bench_key_count(c: &mut Criterion, key_count: usize) {
    let key_strings = make_keys(key_count);
    let mut keys = RoundRobin::new(&key_strings);
    let mut group = c.benchmark_group(format!("keys_{key_count}"));
    group.throughput(Throughput::Elements(1));

    {
        let limiter: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(governor_quota());
        keys.warm_up(|key| limiter.check_key(key).is_ok());
        group.bench_function(BenchmarkId::from_parameter("governor"), |b| {
            b.iter(|| black_box(limiter.check_key(keys.next_key())));
        });
        assert!(
            limiter.check_key(keys.next_key()).is_ok(),
            "governor rejected"
        );
    }

    for (name, limit) in [
        ("fixed_window", fixed_window()),
        ("token_bucket", token_bucket()),
    ] {
        let backend = memory_backend();
        keys.warm_up(|key| backend.check_now(key, &limit, 1).unwrap().allowed);
        assert_eq!(backend.len(), key_count, "warm-up must store every key");
        group.bench_function(BenchmarkId::from_parameter(format!("{name}_sync")), |b| {
            b.iter(|| black_box(backend.check_now(keys.next_key(), &limit, 1)));
        });
        let last = backend.check_now(keys.next_key(), &limit, 1).unwrap();
        assert!(last.allowed, "{name} (sync) rejected");
        drop(backend);

        // A fresh store, so the async row does not start from a bucket the sync row drained.
        let backend = memory_backend();
        keys.warm_up(|key| backend.check_now(key, &limit, 1).unwrap().allowed);
        let dyn_backend: &dyn Backend = &backend;
        let runtime = current_thread_runtime();
        group.bench_function(BenchmarkId::from_parameter(format!("{name}_async")), |b| {
            b.to_async(&runtime).iter(|| {
                let key = keys.next_key();
                let limit = &limit;
                async move { black_box(dyn_backend.check(key, limit).await) }
            });
        });
        let last = backend.check_now(keys.next_key(), &limit, 1).unwrap();
        assert!(last.allowed, "{name} (async) rejected");
    }
    group.finish();
}

fn memory_vs_governor(c: &mut Criterion) {
    for key_count in KEY_COUNTS {
        bench_key_count(c, key_count);
    }
}

criterion_group! {
    name = benches;
    // Short enough that the whole run finishes in a few minutes on a 2-core machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = memory_vs_governor
}
criterion_main!(benches);
