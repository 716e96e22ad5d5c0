//! ns per check: the memory backend against governor's keyed limiter, on the same `String` keys
//! in the same run. Results and how to read them: `BENCHMARKS.md` at the repository root.
//!
//! Rows: 1 hot key, 10,000 keys, 1,000,000 keys, each visited round-robin. Columns: governor
//! `check_key`, and our fixed window and token bucket, each through `MemoryBackend::check_now`
//! (sync), through `Backend::check_n_now` on `&dyn Backend` (what the guard and the layer call
//! first) and through the boxed future of `Backend::check` on `&dyn Backend` (the async path
//! every store has).
//!
//! Every quota is large enough that no check is ever rejected, and every table is pre-warmed
//! with every key, so all rows measure the same steady-state "allowed, key already stored" path.
//! A final check after each measurement asserts that nothing was rejected.
//!
//! `cargo bench --bench memory_vs_governor` runs criterion. With `MEMORY_VS_GOVERNOR_INTERLEAVED=1`
//! it instead alternates short batches of every limiter of a row, round after round, and reports
//! the median of the per-round ratios to governor: on a busy machine both sides of each ratio
//! then see the same background load.
//!
//! With `MEMORY_VS_GOVERNOR_ONLY=<limiter>:<checks>` (e.g. `token_bucket_sync:2100000`) it only
//! runs that many checks of one limiter on the hot key, for an instruction count under
//! `valgrind --tool=callgrind`: the difference between two counts, divided by the difference
//! in checks, is the cost of one check without start-up (see BENCHMARKS.md).

// Benches are not library code: a setup that cannot run should abort loudly, and the
// interleaved report goes to stdout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ratelimit_core::{Backend, Limit, MemoryBackend};
use tokio::runtime::Runtime;

const KEY_COUNTS: [usize; 3] = [1, 10_000, 1_000_000];

const CONTESTANTS: [&str; 7] = [
    "governor",
    "fixed_window_sync",
    "fixed_window_dyn",
    "fixed_window_async",
    "token_bucket_sync",
    "token_bucket_dyn",
    "token_bucket_async",
];

/// Twice the largest key count: the store's bound is per shard (`max_keys / 64`), so with
/// exactly `max_keys` keys the fuller shards would evict, and this bench measures checks, not
/// eviction.
const MAX_KEYS: usize = 2 * 1_000_000;

/// A bucket no run can drain (a hot key sees a few hundred million checks per run at most).
const BUCKET_SIZE: u32 = 1_000_000_000;

/// Whether a run asks for the interleaved ratios instead of criterion.
const INTERLEAVED_ENV: &str = "MEMORY_VS_GOVERNOR_INTERLEAVED";

/// Whether a run asks for one limiter's checks only, and which.
const ONLY_ENV: &str = "MEMORY_VS_GOVERNOR_ONLY";

/// Rounds of the interleaved mode; each runs one batch of every limiter of the row.
const ROUNDS: usize = 15;

/// Checks per interleaved batch: a whole pass over the keys, and at least enough to take tens
/// of milliseconds.
fn batch_checks(key_count: usize) -> usize {
    key_count.max(300_000)
}

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
}

fn fixed_window() -> Limit {
    // One day, epoch-aligned: the window only rolls over at 00:00 UTC.
    Limit::fixed_window(format!("{BUCKET_SIZE}/d").parse().unwrap())
}

/// One token per hour: a touched bucket stays below full for the whole run, so its state stays
/// stored (a full bucket means the same as no state and is dropped) and the 1,000,000-key row
/// measures a table that really holds every key.
fn token_bucket() -> Limit {
    Limit::token_bucket("1/h".parse().unwrap()).bucket_size(u64::from(BUCKET_SIZE))
}

/// The same burst as the token bucket, refilled at 1 per second: governor keeps
/// `burst × refill period` in u64 nanoseconds, which 1e9 × 1 hour would overflow. Governor's
/// work per check does not depend on the quota and it never drops a key's state, so only our
/// side needs the slow refill.
fn governor_quota() -> Quota {
    Quota::per_second(NonZeroU32::new(1).unwrap())
        .allow_burst(NonZeroU32::new(BUCKET_SIZE).unwrap())
}

/// One limiter, checked the way one column of the table checks it.
enum Contestant {
    Governor(DefaultKeyedRateLimiter<String>),
    Sync(MemoryBackend, Limit),
    Dyn(MemoryBackend, Limit),
    Async(MemoryBackend, Limit, Runtime),
}

impl Contestant {
    /// A new limiter for the column `name`, holding every key of `keys`.
    fn warmed_up(name: &str, keys: &[String]) -> Self {
        let limit = if name.starts_with("fixed_window") {
            fixed_window()
        } else {
            token_bucket()
        };
        let contestant = match name {
            "governor" => Self::Governor(RateLimiter::keyed(governor_quota())),
            _ if name.ends_with("_sync") => Self::Sync(memory_backend(), limit),
            _ if name.ends_with("_dyn") => Self::Dyn(memory_backend(), limit),
            _ => Self::Async(
                memory_backend(),
                limit,
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap(),
            ),
        };
        for key in keys {
            assert!(contestant.check_once(key), "{name}: warm-up rejected {key}");
        }
        if let Self::Sync(backend, _) | Self::Dyn(backend, _) | Self::Async(backend, ..) =
            &contestant
        {
            assert_eq!(backend.len(), keys.len(), "warm-up must store every key");
        }
        contestant
    }

    fn check_once(&self, key: &String) -> bool {
        match self {
            Self::Governor(limiter) => limiter.check_key(key).is_ok(),
            Self::Sync(backend, limit)
            | Self::Dyn(backend, limit)
            | Self::Async(backend, limit, _) => backend.check_now(key, limit, 1).unwrap().allowed,
        }
    }

    fn bench(&self, b: &mut criterion::Bencher<'_>, keys: &mut RoundRobin<'_>) {
        match self {
            Self::Governor(limiter) => b.iter(|| black_box(limiter.check_key(keys.next_key()))),
            Self::Sync(backend, limit) => {
                b.iter(|| black_box(backend.check_now(keys.next_key(), limit, 1)));
            }
            Self::Dyn(backend, limit) => {
                let backend: &dyn Backend = backend;
                b.iter(|| black_box(backend.check_n_now(keys.next_key(), limit, 1)));
            }
            Self::Async(backend, limit, runtime) => {
                let backend: &dyn Backend = backend;
                b.to_async(runtime).iter(|| {
                    let key = keys.next_key();
                    async move { black_box(backend.check(key, limit).await) }
                });
            }
        }
    }

    /// How long `checks` checks take, in one timed batch.
    fn time_batch(&self, keys: &mut RoundRobin<'_>, checks: usize) -> Duration {
        let start = Instant::now();
        match self {
            Self::Governor(limiter) => {
                for _ in 0..checks {
                    black_box(limiter.check_key(keys.next_key())).ok();
                }
            }
            Self::Sync(backend, limit) => {
                for _ in 0..checks {
                    black_box(backend.check_now(keys.next_key(), limit, 1)).ok();
                }
            }
            Self::Dyn(backend, limit) => {
                let backend: &dyn Backend = backend;
                for _ in 0..checks {
                    black_box(backend.check_n_now(keys.next_key(), limit, 1));
                }
            }
            Self::Async(backend, limit, runtime) => {
                let backend: &dyn Backend = backend;
                runtime.block_on(async {
                    for _ in 0..checks {
                        black_box(backend.check(keys.next_key(), limit).await).ok();
                    }
                });
            }
        }
        start.elapsed()
    }
}

fn memory_backend() -> MemoryBackend {
    MemoryBackend::builder().max_keys(MAX_KEYS).build()
}

fn bench_key_count(c: &mut Criterion, key_count: usize) {
    let key_strings = make_keys(key_count);
    let mut keys = RoundRobin::new(&key_strings);
    let mut group = c.benchmark_group(format!("keys_{key_count}"));
    group.throughput(Throughput::Elements(1));
    // One limiter at a time: at 1,000,000 keys each holds ~100 MB.
    for name in CONTESTANTS {
        let contestant = Contestant::warmed_up(name, &key_strings);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            contestant.bench(b, &mut keys);
        });
        assert!(contestant.check_once(keys.next_key()), "{name} rejected");
    }
    group.finish();
}

fn memory_vs_governor(c: &mut Criterion) {
    for key_count in KEY_COUNTS {
        bench_key_count(c, key_count);
    }
}

/// Every limiter of every row, batch after batch; prints the median per-round ratio to
/// governor, which background load on a shared machine moves far less than absolute times.
fn interleaved() {
    println!(
        "interleaved: {ROUNDS} rounds; ns/check is the median over rounds, ratio the median of the per-round ratios to governor\n"
    );
    println!("| row | limiter | ns/check (median) | ns/check (min) | ratio to governor |");
    println!("|---|---|---:|---:|---:|");
    let mut json_rows = Vec::new();
    for key_count in KEY_COUNTS {
        let key_strings = make_keys(key_count);
        let mut keys = RoundRobin::new(&key_strings);
        let contestants: Vec<_> = CONTESTANTS
            .iter()
            .map(|name| Contestant::warmed_up(name, &key_strings))
            .collect();
        let checks = batch_checks(key_count);
        let mut nanos = vec![Vec::with_capacity(ROUNDS); CONTESTANTS.len()];
        for round in 0..ROUNDS {
            // Rotate who goes first, so no limiter always runs right after the same one.
            for offset in 0..CONTESTANTS.len() {
                let index = (round + offset) % CONTESTANTS.len();
                let elapsed = contestants[index].time_batch(&mut keys, checks);
                nanos[index].push(elapsed.as_nanos() as f64 / checks as f64);
            }
        }
        for (name, contestant) in CONTESTANTS.iter().zip(&contestants) {
            assert!(contestant.check_once(keys.next_key()), "{name} rejected");
        }
        for (index, name) in CONTESTANTS.iter().enumerate() {
            let ratios: Vec<f64> = nanos[index]
                .iter()
                .zip(&nanos[0])
                .map(|(ours, governor)| ours / governor)
                .collect();
            let (median_ns, min_ns, max_ns, ratio) = (
                median(&nanos[index]),
                min(&nanos[index]),
                max(&nanos[index]),
                median(&ratios),
            );
            println!("| {key_count} | {name} | {median_ns:.0} | {min_ns:.0} | {ratio:.2}x |");
            json_rows.push(format!(
                "{{\"keys\": {key_count}, \"limiter\": \"{name}\", \"median_ns\": {median_ns:.1}, \"min_ns\": {min_ns:.1}, \"max_ns\": {max_ns:.1}, \"ratio_to_governor\": {ratio:.3}}}"
            ));
        }
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("interleaved.json");
    std::fs::write(&path, format!("[\n  {}\n]\n", json_rows.join(",\n  "))).unwrap();
    println!("\nwritten to {}", path.display());
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// `checks` checks of one limiter on the hot key, nothing else: what an instruction count of a
/// check needs.
fn only(setting: &str) {
    let (name, checks) = setting
        .split_once(':')
        .and_then(|(name, checks)| Some((name, checks.parse::<usize>().ok()?)))
        .filter(|(name, _)| CONTESTANTS.contains(name))
        .unwrap_or_else(|| {
            panic!(
                "{ONLY_ENV}={setting}: expected <limiter>:<checks>, limiter one of {CONTESTANTS:?}"
            )
        });
    let key_strings = make_keys(1);
    let contestant = Contestant::warmed_up(name, &key_strings);
    let elapsed = contestant.time_batch(&mut RoundRobin::new(&key_strings), checks);
    assert!(contestant.check_once(&key_strings[0]), "{name} rejected");
    println!("{name}: {checks} checks in {elapsed:?}");
}

fn main() {
    if let Ok(setting) = std::env::var(ONLY_ENV) {
        only(&setting);
        return;
    }
    if std::env::var_os(INTERLEAVED_ENV).is_some() {
        interleaved();
        return;
    }
    // Short enough that the whole run finishes in a few minutes on a 2-core machine.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    memory_vs_governor(&mut criterion);
    criterion.final_summary();
}
