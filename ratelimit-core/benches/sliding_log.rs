//! ns per check on one key: the sliding log against the fixed window, through
//! `MemoryBackend::check_now`, on a frozen or ticking `ManualClock`.
//!
//! - `full_20000`: the key's quota (`20000/h`) is used up and the clock is frozen, so every
//!   check is a rejection reading a full state: a sliding log of 20,000 entries (binary
//!   searches over running totals) against a fixed-window counter.
//! - `steady_1000`: `2000/s` with the clock one ms further on each check, so every check is
//!   admitted (by the counter's estimate too) and the sliding log, 1,000 entries long, drops
//!   one expired entry and appends one.
//!
//! The sliding window counter, stored like the log in a general slot but O(1), shows what the
//! general slot costs by itself.
//!
//! `cargo bench -p ratelimit-core --bench sliding_log`. The goal: the log within 1.5 times the
//! fixed window in both rows.

// Benches are not library code: a setup that cannot run should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ratelimit_core::{Algorithm, Limit, ManualClock, MemoryBackend, Rate};

const KEY: &str = "hot";

fn limit(rate: &str, algorithm: Algorithm) -> Limit {
    Limit::new(rate.parse::<Rate>().unwrap(), algorithm)
}

fn full(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_20000");
    group.throughput(Throughput::Elements(1));
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingWindow,
    ] {
        let clock = ManualClock::new(1_700_000_000_000);
        let backend = MemoryBackend::with_clock(clock.clone());
        let limit = limit("20000/h", algorithm);
        for _ in 0..20_000 {
            clock.advance(Duration::from_millis(1));
            assert!(backend.check_now(KEY, &limit, 1).unwrap().allowed);
        }
        group.bench_function(BenchmarkId::from_parameter(algorithm), |b| {
            b.iter(|| {
                let decision = backend.check_now(black_box(KEY), &limit, 1).unwrap();
                assert!(!decision.allowed);
                black_box(decision)
            });
        });
    }
    group.finish();
}

fn steady(c: &mut Criterion) {
    let mut group = c.benchmark_group("steady_1000");
    group.throughput(Throughput::Elements(1));
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingWindow,
    ] {
        let clock = ManualClock::new(1_700_000_000_000);
        let backend = MemoryBackend::with_clock(clock.clone());
        let limit = limit("2000/s", algorithm);
        group.bench_function(BenchmarkId::from_parameter(algorithm), |b| {
            b.iter(|| {
                clock.advance(Duration::from_millis(1));
                let decision = backend.check_now(black_box(KEY), &limit, 1).unwrap();
                assert!(decision.allowed);
                black_box(decision)
            });
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    full(&mut criterion);
    steady(&mut criterion);
    criterion.final_summary();
}
