//! Redis: the sliding log against the fixed window on one full key. Results and how to read
//! them: `BENCHMARKS.md` at the repository root.
//!
//! Each algorithm gets a `20000/h` limit on one key, used up before the clock starts (the
//! sliding log then holds 20,000 entries), so every timed check is a rejection. 50 tokio tasks
//! share one `RedisBackend` and loop `backend.check` on that key for a fixed time, timing every
//! call; redis-server's CPU time (`INFO cpu`) is read around each run. The cost ratio is the
//! fixed window's checks/s over the sliding log's (goal: at most 1.5), and the same for the
//! server's CPU time per check.
//!
//! Rounds alternate the two algorithms, in an order swapped every round, so that a load spike
//! from other work on the machine lands on both; the report gives medians over rounds, and the
//! ratios are medians of each round's ratio.
//!
//! Settings (environment): `REDIS_URL` (default `redis://127.0.0.1:6379`, loopback only),
//! `REDIS_BENCH_ROUNDS` (5), `REDIS_BENCH_SECONDS` per run (2), `REDIS_BENCH_TASKS` (50). Every
//! key lives under a prefix unique to the run and is deleted at the end (SCAN + DEL), also when
//! the bench fails. The results are also written to `target/tmp/redis_sliding_log.json`.

// A bench is not library code: a setup that cannot run should abort loudly, and the report goes
// to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Backend, Limit, Rate, RedisBackend};
use tokio::runtime::Builder;

#[path = "../../bench-support/machine.rs"]
mod machine;
#[path = "../../bench-support/redis_server.rs"]
mod redis_server;
#[path = "../../bench-support/stats.rs"]
mod stats;

use redis_server::{Server, Settings};
use stats::{median, nanos, percentile_ms};

/// Used up before every run, so the sliding log holds this many entries.
const RATE: &str = "20000/h";
const FULL: u64 = 20_000;

const KEY: &str = "full";

const ALGORITHMS: [&str; 2] = ["fixed_window", "sliding_window"];

fn limit(algorithm: &str) -> Limit {
    let rate = Rate::parse(RATE).unwrap();
    let limit = match algorithm {
        "fixed_window" => Limit::fixed_window(rate),
        "sliding_window" => Limit::sliding_window(rate),
        other => panic!("no limit for {other}"),
    };
    limit.validate().unwrap();
    limit
}

/// One timed run of one algorithm.
#[derive(Clone, Copy)]
struct Sample {
    checks_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// redis-server CPU time (user + system) per check, in µs.
    server_cpu_us: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let settings = Settings::from_env("ratelimit-bench-sliding");
    redis_server::run_and_clean_up(&settings, run);
}

fn run(settings: &Settings, server: &Server) {
    let machine = machine::Machine::read();
    println!(
        "redis {} at {}; {} CPUs ({}), load average {}; {} rounds of {:?} per algorithm, {} tasks",
        server.version(),
        settings.url,
        machine.cpus,
        machine.cpu_model,
        machine.load_average,
        settings.rounds,
        settings.run_time,
        settings.tasks
    );
    let runtime = Builder::new_multi_thread().enable_all().build().unwrap();
    let backends: Vec<Arc<RedisBackend>> = ALGORITHMS
        .iter()
        .map(|algorithm| {
            let backend = runtime.block_on(
                RedisBackend::builder(&settings.url)
                    .key_prefix(format!("{}{algorithm}:", settings.prefix))
                    .build(),
            );
            let backend = Arc::new(
                backend.unwrap_or_else(|error| panic!("connecting to {}: {error}", settings.url)),
            );
            runtime.block_on(fill(&backend, &limit(algorithm), settings.tasks));
            backend
        })
        .collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); ALGORITHMS.len()];
    for round in 0..settings.rounds {
        let mut order: Vec<usize> = (0..ALGORITHMS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let cpu_before = server.cpu();
            let (checks, elapsed, latencies) = runtime.block_on(run_rejections(
                &backends[index],
                &limit(ALGORITHMS[index]),
                settings,
            ));
            let cpu = server.cpu().saturating_sub(cpu_before);
            samples[index].push(Sample {
                checks_per_sec: checks as f64 / elapsed.as_secs_f64(),
                p50_ms: percentile_ms(&latencies, 0.50),
                p99_ms: percentile_ms(&latencies, 0.99),
                server_cpu_us: cpu.as_secs_f64() * 1e6 / checks as f64,
            });
        }
    }
    drop(backends);
    drop(runtime);
    let report = Report { samples };
    println!("{}", report.table());
    println!(
        "load average after: {}",
        machine::Machine::read().load_average
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis_sliding_log.json");
    std::fs::write(&path, report.json()).unwrap();
    println!("wrote {}", path.display());
}

/// Uses up the key's quota: `FULL` admitted checks from `tasks` tasks at once (the sliding log
/// then holds `FULL` entries), then one more that must be rejected.
async fn fill(backend: &Arc<RedisBackend>, limit: &Limit, tasks: usize) {
    let tasks = tasks.max(1) as u64;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let backend = Arc::clone(backend);
            let limit = limit.clone();
            let share = FULL / tasks + u64::from(task < FULL % tasks);
            tokio::spawn(async move {
                for _ in 0..share {
                    let decision = backend.check(KEY, &limit).await.unwrap();
                    assert!(decision.allowed, "filling: rejected early: {decision:?}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let decision = backend.check(KEY, limit).await.unwrap();
    assert!(!decision.allowed, "the key is not full: {decision:?}");
}

/// `settings.tasks` tasks check the full key until the run time is up; every check must be
/// rejected. Returns the checks made, the time taken and every call's latency (ns, sorted).
async fn run_rejections(
    backend: &Arc<RedisBackend>,
    limit: &Limit,
    settings: &Settings,
) -> (usize, Duration, Vec<u64>) {
    let start = Instant::now();
    let deadline = start + settings.run_time;
    let handles: Vec<_> = (0..settings.tasks)
        .map(|_| {
            let backend = Arc::clone(backend);
            let limit = limit.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4_096);
                loop {
                    let call = Instant::now();
                    if call >= deadline {
                        break latencies;
                    }
                    let decision = backend.check(KEY, &limit).await.unwrap();
                    assert!(!decision.allowed, "the full key admitted: {decision:?}");
                    latencies.push(nanos(call.elapsed()));
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    (latencies.len(), elapsed, latencies)
}

struct Report {
    /// Per algorithm (in `ALGORITHMS` order), one sample per round.
    samples: Vec<Vec<Sample>>,
}

impl Report {
    fn median_of(&self, index: usize, field: fn(&Sample) -> f64) -> f64 {
        median(self.samples[index].iter().map(field).collect())
    }

    /// The median over rounds of the sliding log's cost relative to the fixed window's.
    fn ratio(&self, cost: fn(&Sample) -> f64) -> f64 {
        let [fixed, sliding] = [&self.samples[0], &self.samples[1]];
        median(
            fixed
                .iter()
                .zip(sliding)
                .map(|(fixed, sliding)| cost(sliding) / cost(fixed))
                .collect(),
        )
    }

    fn table(&self) -> String {
        let mut table = String::from(
            "| algorithm | checks/s | p50 ms | p99 ms | redis-server CPU µs/check |\n\
             |---|---|---|---|---|\n",
        );
        for (index, algorithm) in ALGORITHMS.iter().enumerate() {
            table += &format!(
                "| {algorithm} | {:.0} | {:.3} | {:.3} | {:.2} |\n",
                self.median_of(index, |sample| sample.checks_per_sec),
                self.median_of(index, |sample| sample.p50_ms),
                self.median_of(index, |sample| sample.p99_ms),
                self.median_of(index, |sample| sample.server_cpu_us),
            );
        }
        table += &format!(
            "\nsliding log / fixed window: time per check {:.2}x, server CPU per check {:.2}x \
             (medians of the per-round ratios; goal <= 1.5x)",
            self.ratio(|sample| 1.0 / sample.checks_per_sec),
            self.ratio(|sample| sample.server_cpu_us),
        );
        table
    }

    fn json(&self) -> String {
        let algorithms: Vec<String> = ALGORITHMS
            .iter()
            .zip(&self.samples)
            .map(|(algorithm, samples)| {
                let rounds: Vec<String> = samples
                    .iter()
                    .map(|sample| {
                        format!(
                            "{{\"checks_per_sec\": {:.1}, \"p50_ms\": {:.4}, \"p99_ms\": {:.4}, \
                             \"server_cpu_us\": {:.3}}}",
                            sample.checks_per_sec,
                            sample.p50_ms,
                            sample.p99_ms,
                            sample.server_cpu_us
                        )
                    })
                    .collect();
                format!("\"{algorithm}\": [{}]", rounds.join(", "))
            })
            .collect();
        format!("{{{}}}\n", algorithms.join(", "))
    }
}
