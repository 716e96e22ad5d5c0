//! Checks per second through `RedisBackend` against `redis-benchmark` running the least any
//! Redis limiter can do in one round trip: `EVAL "INCR; PEXPIRE"` on one key. Results and how
//! to read them: `BENCHMARKS.md` at the repository root.
//!
//! Ours: 50 tokio tasks share one `RedisBackend` (one multiplexed connection) and each loops
//! `backend.check(&key, &limit)` for a fixed time, timing every call. Rows: fixed window and
//! token bucket, on one hot key (every task on the same key) and on one key per task, each on a
//! multi-thread runtime with 1 and with 2 worker threads. The limit ("1000000000/s") never
//! rejects during a run; a rejection or an error aborts the bench.
//!
//! The peer: `redis-benchmark -c 50 -P 1` (50 connections, one request in flight on each) with
//! the same key shape: one key, or 50 keys through `-r 50`. Its request count is sized from its
//! previous round so that it runs about as long as ours.
//!
//! Rounds alternate: each round runs every one of our rows and the peer for both key shapes, in
//! an order rotated by one every round, so that a load spike from the other work on the machine
//! lands on both sides. The table reports medians over rounds; the ratio is the median of each
//! round's ours / peer.
//!
//! Settings (environment): `REDIS_URL` (default `redis://127.0.0.1:6379`, loopback only),
//! `REDIS_BENCH_ROUNDS` (5), `REDIS_BENCH_SECONDS` per run (2), `REDIS_BENCH_TASKS` (50). The
//! default run takes about 100 s. Every key lives under a prefix unique to the run and is
//! deleted at the end (SCAN + DEL), also when the bench fails. The results are also written to
//! `target/tmp/redis_throughput.json` for `scripts/plot_redis.py`.

// A bench is not library code: a setup that cannot run should abort loudly, and the report goes
// to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::fmt::Write as _;
use std::process::{Command, Stdio};
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

/// The peer's script: one counter and its TTL, the floor of any Redis limiter.
const PEER_SCRIPT: &str =
    "redis.call('INCR', KEYS[1]); return redis.call('PEXPIRE', KEYS[1], 60000)";

/// Never reached in a run: every check is allowed, so every run measures the same path.
const RATE: &str = "1000000000/s";

const WORKER_COUNTS: [usize; 2] = [1, 2];

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyShape {
    /// Every task on one key.
    Hot,
    /// One key per task.
    PerTask,
}

impl KeyShape {
    const ALL: [Self; 2] = [Self::Hot, Self::PerTask];

    fn label(self) -> &'static str {
        match self {
            Self::Hot => "1 hot key",
            Self::PerTask => "1 key per task",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::PerTask => "per_task",
        }
    }
}

#[derive(Clone, Copy)]
enum Contestant {
    Ours {
        algorithm: &'static str,
        workers: usize,
    },
    Peer,
}

impl Contestant {
    fn id(self) -> String {
        match self {
            Self::Ours { algorithm, workers } => format!("{algorithm}_{workers}w"),
            Self::Peer => "redis_benchmark".to_owned(),
        }
    }

    fn label(self) -> String {
        match self {
            Self::Ours { algorithm, workers } => format!(
                "ours {}, {workers} worker{}",
                algorithm.replace('_', " "),
                if workers == 1 { "" } else { "s" }
            ),
            Self::Peer => "redis-benchmark EVAL INCR+PEXPIRE".to_owned(),
        }
    }
}

fn contestants() -> Vec<Contestant> {
    let mut all = Vec::new();
    for algorithm in ["fixed_window", "token_bucket"] {
        for workers in WORKER_COUNTS {
            all.push(Contestant::Ours { algorithm, workers });
        }
    }
    // In the middle, so that in the first round the peer is not the first or last run.
    all.insert(2, Contestant::Peer);
    all
}

fn limit(algorithm: &str) -> Limit {
    let rate = Rate::parse(RATE).unwrap();
    let limit = match algorithm {
        "fixed_window" => Limit::fixed_window(rate),
        "token_bucket" => Limit::token_bucket(rate),
        other => panic!("no limit for {other}"),
    };
    limit.validate().unwrap();
    limit
}

/// One run of one contestant.
#[derive(Clone)]
struct Sample {
    checks: u64,
    checks_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// redis-benchmark reports no p99.9.
    p999_ms: Option<f64>,
    /// redis-server CPU time (user + system, from `INFO cpu`) per check, in µs.
    server_cpu_us: f64,
    /// Of that, the time inside the script command (EVALSHA for ours, EVAL for the peer, from
    /// `INFO commandstats`) per check, in µs; the rest is reading, parsing, writing, the event loop.
    /// Redis times commands on the wall clock, so on a busy machine this includes preemption and
    /// can exceed the CPU time.
    script_us: f64,
    /// Checks per script call: how many checks one EVALSHA of ours carried on average (1 for
    /// the peer).
    checks_per_call: f64,
    /// The client's CPU time per check, in µs: this process for ours, the child for the peer.
    client_cpu_us: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let settings = Settings::from_env("ratelimit-bench");
    redis_server::run_and_clean_up(&settings, run);
}

fn run(settings: &Settings, server: &Server) {
    let server_version = server.version();
    let peer_version = Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|error| {
            panic!("redis-benchmark not found ({error}); apt-get install redis-tools")
        });
    let machine = machine::Machine::read();
    println!(
        "redis-server {server_version}; {peer_version}; {} CPUs ({}); load average before: {}",
        machine.cpus, machine.cpu_model, machine.load_average
    );
    println!(
        "{} tasks, {} rounds of {:.1} s per run, rows rotated every round; prefix {:?}",
        settings.tasks,
        settings.rounds,
        settings.run_time.as_secs_f64(),
        settings.prefix
    );

    // Warm-up: loads our scripts into the server, sizes the peer's first run.
    for algorithm in ["fixed_window", "token_bucket"] {
        run_ours(
            settings,
            algorithm,
            2,
            KeyShape::PerTask,
            Duration::from_millis(300),
        );
    }
    let mut peer_rate = KeyShape::ALL.map(|shape| {
        run_peer(settings, shape, 20_000.max(settings.tasks as u64 * 100)).checks_per_sec
    });

    let order = contestants();
    // samples[shape][contestant] = one Sample per round.
    let mut samples: Vec<Vec<Vec<Sample>>> = KeyShape::ALL
        .iter()
        .map(|_| vec![Vec::new(); order.len()])
        .collect();
    let started = Instant::now();
    for round in 0..settings.rounds {
        for (shape_index, shape) in KeyShape::ALL.into_iter().enumerate() {
            for offset in 0..order.len() {
                let index = (offset + round) % order.len();
                let script_command = match order[index] {
                    Contestant::Ours { .. } => "evalsha",
                    Contestant::Peer => "eval",
                };
                let server_before = server.cpu();
                let script_before = server.command_stats(script_command);
                let client_before = CpuTimes::read();
                let mut sample = match order[index] {
                    Contestant::Ours { algorithm, workers } => {
                        run_ours(settings, algorithm, workers, shape, settings.run_time)
                    }
                    Contestant::Peer => {
                        let requests = (peer_rate[shape_index] * settings.run_time.as_secs_f64())
                            .max(5_000.0) as u64;
                        let sample = run_peer(settings, shape, requests);
                        peer_rate[shape_index] = sample.checks_per_sec;
                        sample
                    }
                };
                let client = CpuTimes::read().since(&client_before);
                let per_check = |cpu: Duration| cpu.as_secs_f64() * 1e6 / sample.checks as f64;
                sample.server_cpu_us = per_check(server.cpu().saturating_sub(server_before));
                let script = server.command_stats(script_command).since(&script_before);
                // Per check, not per call: one EVALSHA of ours may carry a batch of checks.
                sample.script_us = script.usec as f64 / sample.checks.max(1) as f64;
                sample.checks_per_call = sample.checks as f64 / script.calls.max(1) as f64;
                sample.client_cpu_us = per_check(match order[index] {
                    Contestant::Ours { .. } => client.own,
                    Contestant::Peer => client.children,
                });
                samples[shape_index][index].push(sample);
            }
        }
        println!(
            "round {}/{} done after {:.0} s; load average: {}",
            round + 1,
            settings.rounds,
            started.elapsed().as_secs_f64(),
            machine::load_average()
        );
    }

    let load_after = machine::load_average();
    let report = Report {
        settings,
        machine: &machine,
        server_version: &server_version,
        peer_version: &peer_version,
        load_after: &load_after,
        order: &order,
        samples: &samples,
    };
    println!("{}", report.table());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis_throughput.json");
    std::fs::write(&path, report.json()).unwrap();
    println!("wrote {}", path.display());
}

/// CPU time of this process and of its waited-for children, from `/proc/self/stat`.
struct CpuTimes {
    own: Duration,
    children: Duration,
}

impl CpuTimes {
    /// Linux reports these in USER_HZ, which is 100 on every architecture it exports them for.
    const TICK: Duration = Duration::from_millis(10);

    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // After the command name (which may hold spaces) come fields 3.. ; utime, stime,
        // cutime and cstime are fields 14 to 17.
        let fields: Vec<u32> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|field| field.parse().unwrap())
            .collect();
        Self {
            own: Self::TICK * (fields[0] + fields[1]),
            children: Self::TICK * (fields[2] + fields[3]),
        }
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            own: self.own.saturating_sub(earlier.own),
            children: self.children.saturating_sub(earlier.children),
        }
    }
}

/// One run of ours on a fresh runtime with `workers` worker threads and a fresh backend (its
/// connection task lives on that runtime).
fn run_ours(
    settings: &Settings,
    algorithm: &'static str,
    workers: usize,
    shape: KeyShape,
    run_time: Duration,
) -> Sample {
    let runtime = Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let limit = Arc::new(limit(algorithm));
    let (checks, elapsed, mut latencies) = runtime.block_on(async {
        let backend = Arc::new(
            RedisBackend::builder(&settings.url)
                .key_prefix(settings.prefix.clone())
                .build()
                .await
                .unwrap_or_else(|error| panic!("connecting to {}: {error}", settings.url)),
        );
        let keys: Vec<String> = (0..settings.tasks)
            .map(|task| match shape {
                KeyShape::Hot => "hot".to_owned(),
                KeyShape::PerTask => format!("task-{task}"),
            })
            .collect();
        // Every key stored before the clock starts, so that every timed check is the
        // "allowed, key already stored" path.
        for key in &keys {
            check_allowed(&*backend, key, &limit).await;
        }
        let start = Instant::now();
        let deadline = start + run_time;
        let handles: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let backend = Arc::clone(&backend);
                let limit = Arc::clone(&limit);
                tokio::spawn(async move {
                    // ~40k checks/s shared by 50 tasks: far below this per task and second.
                    let mut latencies = Vec::with_capacity(4_096);
                    loop {
                        let call = Instant::now();
                        if call >= deadline {
                            break latencies;
                        }
                        check_allowed(&*backend, &key, &limit).await;
                        latencies.push(nanos(call.elapsed()));
                    }
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for handle in handles {
            latencies.extend(handle.await.unwrap());
        }
        (latencies.len(), start.elapsed(), latencies)
    });
    // The runtime goes first: its worker threads and the connection task end here.
    drop(runtime);
    latencies.sort_unstable();
    Sample {
        checks: latencies.len() as u64,
        checks_per_sec: checks as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        p999_ms: Some(percentile_ms(&latencies, 0.999)),
        server_cpu_us: 0.0,
        script_us: 0.0,
        checks_per_call: 0.0,
        client_cpu_us: 0.0,
    }
}

async fn check_allowed(backend: &dyn Backend, key: &str, limit: &Limit) {
    let decision = backend
        .check(key, limit)
        .await
        .unwrap_or_else(|error| panic!("check of {key:?} failed: {error}"));
    assert!(decision.allowed, "{key:?} was rejected: {decision:?}");
}

/// The peer's command line (without the program name).
fn peer_args(settings: &Settings, shape: KeyShape, requests: u64) -> Vec<String> {
    let mut args: Vec<String> = [
        "-u",
        &settings.url,
        "-c",
        &settings.tasks.to_string(),
        "-n",
        &requests.to_string(),
        "-P",
        "1",
        "--precision",
        "3",
        "--csv",
    ]
    .map(str::to_owned)
    .into();
    let key = match shape {
        KeyShape::Hot => format!("{}peer:hot", settings.prefix),
        KeyShape::PerTask => {
            // `-r N` replaces `__rand_int__` with one of N numbers in every request.
            args.extend(["-r".to_owned(), settings.tasks.to_string()]);
            format!("{}peer:__rand_int__", settings.prefix)
        }
    };
    args.extend([
        "EVAL".to_owned(),
        PEER_SCRIPT.to_owned(),
        "1".to_owned(),
        key,
    ]);
    args
}

fn run_peer(settings: &Settings, shape: KeyShape, requests: u64) -> Sample {
    let args = peer_args(settings, shape, requests);
    let mut child = Command::new("redis-benchmark")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting redis-benchmark: {error}"));
    // Bounded even if the server stops answering: a run should take about `run_time`.
    let limit = Duration::from_secs(30).max(settings.run_time * 10);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("redis-benchmark {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "redis-benchmark {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_peer_csv(&stdout, requests)
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {stdout}"))
}

/// `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
/// "p99_latency_ms","max_latency_ms"`; the test name holds commas, so fields are read from the
/// end.
fn parse_peer_csv(stdout: &str, requests: u64) -> Option<Sample> {
    let row = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .nth(1)?;
    let fields: Vec<f64> = row
        .rsplitn(8, ',')
        .take(7)
        .map(|field| field.trim().trim_matches('"').parse())
        .collect::<Result<_, _>>()
        .ok()?;
    // Reversed: max, p99, p95, p50, min, avg, rps.
    let [_max, p99, _p95, p50, _min, _avg, rps] = fields[..] else {
        return None;
    };
    Some(Sample {
        checks: requests,
        checks_per_sec: rps,
        p50_ms: p50,
        p99_ms: p99,
        p999_ms: None,
        server_cpu_us: 0.0,
        script_us: 0.0,
        checks_per_call: 0.0,
        client_cpu_us: 0.0,
    })
}

struct Report<'a> {
    settings: &'a Settings,
    machine: &'a machine::Machine,
    server_version: &'a str,
    peer_version: &'a str,
    load_after: &'a str,
    order: &'a [Contestant],
    samples: &'a [Vec<Vec<Sample>>],
}

/// Medians over rounds of one contestant on one key shape.
struct Summary {
    checks_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: Option<f64>,
    server_cpu_us: f64,
    script_us: f64,
    checks_per_call: f64,
    client_cpu_us: f64,
    /// Median of the per-round ratios to the peer; 1.0 for the peer.
    ratio: f64,
    per_round: Vec<f64>,
}

impl Report<'_> {
    fn peer_index(&self) -> usize {
        self.order
            .iter()
            .position(|contestant| matches!(contestant, Contestant::Peer))
            .unwrap()
    }

    fn summary(&self, shape_index: usize, index: usize) -> Summary {
        let runs = &self.samples[shape_index][index];
        let peer = &self.samples[shape_index][self.peer_index()];
        let field = |pick: fn(&Sample) -> f64| median(runs.iter().map(pick).collect());
        Summary {
            checks_per_sec: field(|sample| sample.checks_per_sec),
            p50_ms: field(|sample| sample.p50_ms),
            p99_ms: field(|sample| sample.p99_ms),
            p999_ms: runs[0]
                .p999_ms
                .map(|_| field(|sample| sample.p999_ms.unwrap_or_default())),
            server_cpu_us: field(|sample| sample.server_cpu_us),
            script_us: field(|sample| sample.script_us),
            checks_per_call: field(|sample| sample.checks_per_call),
            client_cpu_us: field(|sample| sample.client_cpu_us),
            ratio: median(
                runs.iter()
                    .zip(peer)
                    .map(|(ours, peer)| ours.checks_per_sec / peer.checks_per_sec)
                    .collect(),
            ),
            per_round: runs.iter().map(|sample| sample.checks_per_sec).collect(),
        }
    }

    fn table(&self) -> String {
        let mut table = String::new();
        writeln!(
            table,
            "\n{:<15} {:<38} {:>9} {:>7} {:>7} {:>7} {:>10} {:>10} {:>11} {:>10} {:>8}",
            "keys",
            "contestant",
            "checks/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "server µs",
            "script µs",
            "checks/call",
            "client µs",
            "vs peer"
        )
        .unwrap();
        for (shape_index, shape) in KeyShape::ALL.into_iter().enumerate() {
            for (index, contestant) in self.order.iter().enumerate() {
                let summary = self.summary(shape_index, index);
                writeln!(
                    table,
                    "{:<15} {:<38} {:>9.0} {:>7.3} {:>7.3} {:>7} {:>10.1} {:>10.1} {:>11.1} {:>10.1} {:>7.2}x",
                    shape.label(),
                    contestant.label(),
                    summary.checks_per_sec,
                    summary.p50_ms,
                    summary.p99_ms,
                    summary
                        .p999_ms
                        .map_or_else(|| "-".to_owned(), |value| format!("{value:.3}")),
                    summary.server_cpu_us,
                    summary.script_us,
                    summary.checks_per_call,
                    summary.client_cpu_us,
                    summary.ratio
                )
                .unwrap();
            }
        }
        write!(
            table,
            "\nMedians over {} rounds. server µs: redis-server CPU time per check (INFO cpu); \
             script µs: of that, inside EVALSHA / EVAL (INFO commandstats); checks/call: checks per script call; client µs: the client's CPU time per check; vs peer: median of the per-round \
             ratios to redis-benchmark on the same key shape. Load average after: {}",
            self.settings.rounds, self.load_after
        )
        .unwrap();
        table
    }

    fn json(&self) -> String {
        let mut rows = Vec::new();
        for (shape_index, shape) in KeyShape::ALL.into_iter().enumerate() {
            for (index, contestant) in self.order.iter().enumerate() {
                let summary = self.summary(shape_index, index);
                let per_round = summary
                    .per_round
                    .iter()
                    .map(|value| format!("{value:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                rows.push(format!(
                    "    {{\"keys\": \"{}\", \"keys_label\": \"{}\", \"contestant\": \"{}\", \
                     \"label\": \"{}\", \"checks_per_sec\": {:.0}, \"p50_ms\": {:.3}, \
                     \"p99_ms\": {:.3}, \"p999_ms\": {}, \"server_cpu_us\": {:.2}, \
                     \"script_us\": {:.2}, \"checks_per_call\": {:.1}, \"client_cpu_us\": {:.2}, \
                     \"ratio\": {:.3}, \
                     \"per_round\": [{per_round}]}}",
                    shape.id(),
                    shape.label(),
                    contestant.id(),
                    contestant.label(),
                    summary.checks_per_sec,
                    summary.p50_ms,
                    summary.p99_ms,
                    summary
                        .p999_ms
                        .map_or_else(|| "null".to_owned(), |value| format!("{value:.3}")),
                    summary.server_cpu_us,
                    summary.script_us,
                    summary.checks_per_call,
                    summary.client_cpu_us,
                    summary.ratio
                ));
            }
        }
        format!(
            "{{\n  \"redis_version\": \"{}\",\n  \"peer_version\": \"{}\",\n  \"cpus\": {},\n  \
             \"cpu_model\": \"{}\",\n  \"load_before\": \"{}\",\n  \"load_after\": \"{}\",\n  \
             \"tasks\": {},\n  \"rounds\": {},\n  \"seconds_per_run\": {},\n  \"rows\": [\n{}\n  ]\n}}\n",
            self.server_version,
            self.peer_version,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.load_average,
            self.load_after,
            self.settings.tasks,
            self.settings.rounds,
            self.settings.run_time.as_secs_f64(),
            rows.join(",\n")
        )
    }
}
