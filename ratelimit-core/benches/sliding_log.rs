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
//!
//! With `SLIDING_LOG_ONLY=<row>/<algorithm>:<checks>` (e.g. `full_20000/sliding_window:200000`)
//! it only runs that many checks of one row, for an instruction count under
//! `valgrind --tool=callgrind`: the difference between two counts, divided by the difference in
//! checks, is the cost of one check without the set-up (see BENCHMARKS.md).

// Benches are not library code: a setup that cannot run should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ratelimit_core::{Algorithm, Limit, ManualClock, MemoryBackend, Rate};

const KEY: &str = "hot";

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindowCounter,
    Algorithm::SlidingWindow,
];

/// Whether a run asks for one row's checks only, and which.
const ONLY_ENV: &str = "SLIDING_LOG_ONLY";

/// One row of the bench: a store set up for it, and one measured check.
struct Row {
    name: &'static str,
    setup: fn(Algorithm) -> Bench,
}

struct Bench {
    backend: MemoryBackend,
    clock: ManualClock,
    limit: Limit,
    /// Milliseconds the clock moves before each check.
    tick_ms: u64,
    /// What every measured check must decide.
    allowed: bool,
}

impl Bench {
    fn check(&self) {
        if self.tick_ms > 0 {
            self.clock.advance(Duration::from_millis(self.tick_ms));
        }
        let decision = self
            .backend
            .check_now(black_box(KEY), &self.limit, 1)
            .unwrap();
        assert_eq!(decision.allowed, self.allowed);
        black_box(decision);
    }
}

fn store(rate: &str, algorithm: Algorithm) -> (MemoryBackend, ManualClock, Limit) {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = MemoryBackend::with_clock(clock.clone());
    let limit = Limit::new(rate.parse::<Rate>().unwrap(), algorithm);
    (backend, clock, limit)
}

fn full(algorithm: Algorithm) -> Bench {
    let (backend, clock, limit) = store("20000/h", algorithm);
    for _ in 0..20_000 {
        clock.advance(Duration::from_millis(1));
        assert!(backend.check_now(KEY, &limit, 1).unwrap().allowed);
    }
    Bench {
        backend,
        clock,
        limit,
        tick_ms: 0,
        allowed: false,
    }
}

fn steady(algorithm: Algorithm) -> Bench {
    let (backend, clock, limit) = store("2000/s", algorithm);
    Bench {
        backend,
        clock,
        limit,
        tick_ms: 1,
        allowed: true,
    }
}

const ROWS: [Row; 2] = [
    Row {
        name: "full_20000",
        setup: full,
    },
    Row {
        name: "steady_1000",
        setup: steady,
    },
];

/// `SLIDING_LOG_ONLY=<row>/<algorithm>:<checks>`: that many checks, nothing else.
fn run_only(spec: &str) {
    let (which, checks) = spec.split_once(':').expect("<row>/<algorithm>:<checks>");
    let (row_name, algorithm_name) = which.split_once('/').expect("<row>/<algorithm>");
    let row = ROWS
        .iter()
        .find(|row| row.name == row_name)
        .expect("a row name");
    let algorithm = ALGORITHMS
        .into_iter()
        .find(|algorithm| algorithm.to_string() == algorithm_name)
        .expect("an algorithm name");
    let bench = (row.setup)(algorithm);
    for _ in 0..checks.parse::<u64>().expect("a number of checks") {
        bench.check();
    }
}

fn main() {
    if let Ok(spec) = std::env::var(ONLY_ENV) {
        run_only(&spec);
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for row in &ROWS {
        let mut group = criterion.benchmark_group(row.name);
        group.throughput(Throughput::Elements(1));
        for algorithm in ALGORITHMS {
            let bench = (row.setup)(algorithm);
            group.bench_function(BenchmarkId::from_parameter(algorithm), |b| {
                b.iter(|| bench.check());
            });
        }
        group.finish();
    }
    criterion.final_summary();
}
