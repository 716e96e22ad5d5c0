//! Checks per second through `SqlBackend` on PostgreSQL against `pgbench` running the least any
//! SQL limiter can do in one round trip: a single-row upsert that adds one to a counter. Results
//! and how to read them: `BENCHMARKS.md` at the repository root.
//!
//! Ours: 16 tokio tasks (2 worker threads) share one `SqlBackend` with a pool of 16 connections;
//! each loops `backend.check(&key, &limit)` on its own key for a fixed time, timing every call.
//! Rows: fixed window and token bucket, with a limit ("1000000000/h") that never rejects, so
//! every check writes; and the sliding log on a full key: each task's `20000/h` log holds 20,000
//! entries (admitted before the first round, on the database's clock, so none expires during a
//! default run), and every check is a rejection that reads it. A check with another outcome, or
//! an error, aborts the bench.
//!
//! The peer: `pgbench -n -M prepared -c 16 -j 2 -T <seconds>` with a one-statement script,
//! `INSERT .. ON CONFLICT (key) DO UPDATE SET count = count + 1` on the row of its client id:
//! 16 connections, one key per connection, one round trip per transaction, as ours.
//!
//! Rounds alternate: each round runs the peer and each of our rows in an order rotated by one
//! every round, so that a load spike from other work on the machine lands on both sides. The
//! ratio reported is the median over rounds of ours / peer within a round.
//!
//! Where the time goes, per run: PostgreSQL's CPU time per check (every `postgres` process's
//! user + system time from `/proc`, plus what the postmaster collected from exited backends) and
//! the client's CPU time per check (`/proc/self/stat`: our own for ours, the waited-for child's
//! for pgbench).
//!
//! Settings (environment): `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! loopback only), `SQL_BENCH_ROUNDS` (3), `SQL_BENCH_SECONDS` per run (8), `SQL_BENCH_TASKS` (16).
//! A default run is 12 runs of 8 s, after the sliding logs are filled (320,000 checks). Its tables
//! live under a prefix unique to the run and are dropped at the end, also when the bench fails.
//! Results are also written to `target/tmp/sql_throughput.json` for `scripts/plot_sql.py`.

// A bench is not library code: a setup that cannot run should abort loudly, and the report goes
// to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Backend, Limit, Rate, SqlBackend};
use tokio::runtime::{Builder, Runtime};

#[path = "../../bench-support/machine.rs"]
mod machine;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Never reached in a run: every check is allowed, so every run measures the same path.
const RATE: &str = "1000000000/h";

/// The sliding-log row's limit, each task's key filled with [`FULL_LOG_ENTRIES`] entries of
/// cost 1 before the first round: every check of a run is then a rejection.
const FULL_LOG_RATE: &str = "20000/h";
const FULL_LOG_ENTRIES: u64 = 20_000;

/// Checks in flight per key while the full logs are filled.
const FILL_PARALLEL: u64 = 64;

/// The kernel's clock ticks per second for `/proc/*/stat` times (`getconf CLK_TCK`).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contestant {
    Pgbench,
    FixedWindow,
    TokenBucket,
    SlidingLogFull,
}

impl Contestant {
    const ALL: [Self; 4] = [
        Self::Pgbench,
        Self::FixedWindow,
        Self::TokenBucket,
        Self::SlidingLogFull,
    ];

    fn id(self) -> &'static str {
        match self {
            Self::Pgbench => "pgbench",
            Self::FixedWindow => "fixed_window",
            Self::TokenBucket => "token_bucket",
            Self::SlidingLogFull => "sliding_log_full",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Pgbench => "pgbench single-row upsert (peer)",
            Self::FixedWindow => "ours fixed window",
            Self::TokenBucket => "ours token bucket",
            Self::SlidingLogFull => "ours sliding log, full (rejects)",
        }
    }
}

struct Settings {
    url: String,
    rounds: usize,
    seconds: u64,
    tasks: usize,
    /// `SqlBackendBuilder::batch_size` and `batches_in_flight`; `None` for the defaults.
    batch_size: Option<usize>,
    batches_in_flight: Option<usize>,
    /// Prefix of every table of this run.
    prefix: String,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse().ok())
                .filter(|value| *value > 0)
                .unwrap_or(default)
        };
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let host = host_of(&url);
        assert!(
            ["127.0.0.1", "localhost", "[::1]"].contains(&host) || host.starts_with("127."),
            "DATABASE_URL must point at a loopback address, not {host:?}"
        );
        Self {
            url,
            rounds: usize::try_from(number("SQL_BENCH_ROUNDS", 3)).unwrap(),
            seconds: number("SQL_BENCH_SECONDS", 8),
            tasks: usize::try_from(number("SQL_BENCH_TASKS", 16)).unwrap(),
            batch_size: optional_number("SQL_BENCH_BATCH_SIZE"),
            batches_in_flight: optional_number("SQL_BENCH_BATCHES_IN_FLIGHT"),
            prefix: format!("bench_sql_{}_", std::process::id()),
        }
    }
}

fn optional_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// The host of `scheme://user@host:port/db`.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match host_port.strip_prefix('[') {
        Some(_) => host_port.split_inclusive(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    }
}

/// One run of one contestant.
#[derive(Clone, Copy, Default)]
struct Sample {
    checks_per_second: f64,
    mean_ms: f64,
    /// `None` for pgbench, which reports only the mean.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    server_cpu_us_per_check: f64,
    client_cpu_us_per_check: f64,
}

fn main() {
    let settings = Settings::from_env();
    let runtime = runtime();
    let setup = runtime.block_on(connect(&settings));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&settings)));
    runtime.block_on(async {
        setup.drop_tables().await.unwrap();
        let peer = format!("DROP TABLE IF EXISTS {}peer", settings.prefix);
        sqlx_execute(&settings.url, &peer).await;
    });
    println!("cleanup: dropped the tables of {}*", settings.prefix);
    if let Err(panic) = outcome {
        panic::resume_unwind(panic);
    }
}

fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(settings: &Settings) -> SqlBackend {
    let mut builder = SqlBackend::builder(&settings.url)
        .table_prefix(&settings.prefix)
        .pool_size(u32::try_from(settings.tasks).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(checks) = settings.batch_size {
        builder = builder.batch_size(checks);
    }
    if let Some(batches) = settings.batches_in_flight {
        builder = builder.batches_in_flight(batches);
    }
    builder
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to {}: {error}", settings.url))
}

async fn sqlx_execute(url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
}

fn run(settings: &Settings) {
    let script = prepare_peer(settings);
    fill_full_logs(settings);
    let version = server_version(settings);
    println!(
        "PostgreSQL {} · {} tasks · {} rounds of {} s · load average {}",
        version,
        settings.tasks,
        settings.rounds,
        settings.seconds,
        machine::load_average()
    );
    let mut rounds: Vec<Vec<(Contestant, Sample)>> = Vec::new();
    for round in 0..settings.rounds {
        let mut order = Contestant::ALL.to_vec();
        order.rotate_left(round % Contestant::ALL.len());
        let mut samples = Vec::new();
        for contestant in order {
            let sample = match contestant {
                Contestant::Pgbench => run_peer(settings, &script),
                Contestant::FixedWindow => run_ours(settings, Limit::fixed_window(rate()), true),
                Contestant::TokenBucket => run_ours(settings, Limit::token_bucket(rate()), true),
                Contestant::SlidingLogFull => run_ours(settings, full_log_limit(), false),
            };
            println!(
                "round {} {:<34} {:>9.0} checks/s  mean {:.2} ms  server {:.1} µs/check  client {:.1} µs/check  (load {})",
                round + 1,
                contestant.label(),
                sample.checks_per_second,
                sample.mean_ms,
                sample.server_cpu_us_per_check,
                sample.client_cpu_us_per_check,
                machine::load_average()
            );
            samples.push((contestant, sample));
        }
        rounds.push(samples);
    }
    let report = Report {
        rounds,
        server_version: version,
    };
    println!("\n{}", report.table());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sql_throughput.json");
    std::fs::write(&path, report.json(settings)).unwrap();
    println!("results written to {}", path.display());
    let _ = std::fs::remove_file(script);
}

fn rate() -> Rate {
    Rate::parse(RATE).unwrap()
}

fn full_log_limit() -> Limit {
    Limit::sliding_window(Rate::parse(FULL_LOG_RATE).unwrap())
}

/// Fills every task's sliding log to its limit, [`FILL_PARALLEL`] checks per key at a time.
fn fill_full_logs(settings: &Settings) {
    let started = Instant::now();
    runtime().block_on(async {
        let backend = Arc::new(connect(settings).await);
        let fillers: Vec<_> = (0..settings.tasks)
            .flat_map(|task| (0..FILL_PARALLEL).map(move |filler| (task, filler)))
            .map(|(task, filler)| {
                let backend = Arc::clone(&backend);
                let key = format!("task:{task}");
                let checks = FULL_LOG_ENTRIES / FILL_PARALLEL
                    + u64::from(filler < FULL_LOG_ENTRIES % FILL_PARALLEL);
                tokio::spawn(async move {
                    for _ in 0..checks {
                        check_expecting(Arc::clone(&backend), key.clone(), full_log_limit(), true)
                            .await;
                    }
                })
            })
            .collect();
        for filler in fillers {
            filler.await.unwrap();
        }
    });
    println!(
        "filled {} sliding logs with {FULL_LOG_ENTRIES} entries each in {:.1} s",
        settings.tasks,
        started.elapsed().as_secs_f64()
    );
}

/// Creates the peer's table with one row per client and writes its pgbench script.
fn prepare_peer(settings: &Settings) -> std::path::PathBuf {
    let table = format!("{}peer", settings.prefix);
    let rows: Vec<String> = (1..=settings.tasks)
        .map(|client| format!("({client}, 0, 0)"))
        .collect();
    runtime().block_on(sqlx_execute(
        &settings.url,
        &format!(
            "CREATE TABLE {table} (key int PRIMARY KEY, count bigint NOT NULL, \
             expires_at_ms bigint NOT NULL); INSERT INTO {table} VALUES {};",
            rows.join(", ")
        ),
    ));
    let script = std::env::temp_dir().join(format!("{}peer.sql", settings.prefix));
    // pgbench numbers its clients from 0.
    std::fs::write(
        &script,
        format!(
            "INSERT INTO {table} AS s (key, count, expires_at_ms) VALUES (:client_id + 1, 1, 0) \
             ON CONFLICT (key) DO UPDATE SET count = s.count + 1, expires_at_ms = 0;\n"
        ),
    )
    .unwrap();
    script
}

fn run_peer(settings: &Settings, script: &std::path::Path) -> Sample {
    let server_before = ServerCpu::read();
    let client_before = ClientCpu::read();
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(settings.tasks.to_string())
        .arg("-T")
        .arg(settings.seconds.to_string())
        .arg("-f")
        .arg(script)
        .arg(&settings.url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("running pgbench (is it installed?): {error}"));
    let server = ServerCpu::read().since(server_before);
    let client = ClientCpu::read().children_since(client_before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |prefix: &str| -> f64 {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in pgbench output:\n{stdout}"))
    };
    let tps = field("tps = ");
    let transactions = field("number of transactions actually processed: ");
    Sample {
        checks_per_second: tps,
        mean_ms: field("latency average = "),
        p50_ms: None,
        p99_ms: None,
        server_cpu_us_per_check: micros(server) / transactions,
        client_cpu_us_per_check: micros(client) / transactions,
    }
}

/// Our run of `limit`, every check of which must be `allowed` (or rejected).
fn run_ours(settings: &Settings, limit: Limit, allowed: bool) -> Sample {
    let runtime = runtime();
    runtime.block_on(async {
        let backend = Arc::new(connect(settings).await);
        let keys: Vec<String> = (0..settings.tasks)
            .map(|task| format!("task:{task}"))
            .collect();
        // Every connection open and every key stored before the clock starts.
        let warm_up: Vec<_> = keys
            .iter()
            .map(|key| check_expecting(Arc::clone(&backend), key.clone(), limit.clone(), allowed))
            .collect();
        for task in warm_up {
            tokio::spawn(task).await.unwrap();
        }
        let server_before = ServerCpu::read();
        let client_before = ClientCpu::read();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(settings.seconds);
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let backend = Arc::clone(&backend);
                let limit = limit.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let call = Instant::now();
                        check_expecting(Arc::clone(&backend), key.clone(), limit.clone(), allowed)
                            .await;
                        latencies.push(nanos(call.elapsed()));
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed();
        let server = ServerCpu::read().since(server_before);
        let client = ClientCpu::read().own_since(client_before);
        latencies.sort_unstable();
        let checks = latencies.len() as f64;
        let total: u64 = latencies.iter().sum();
        Sample {
            checks_per_second: checks / elapsed.as_secs_f64(),
            mean_ms: total as f64 / checks / 1e6,
            p50_ms: Some(percentile_ms(&latencies, 0.50)),
            p99_ms: Some(percentile_ms(&latencies, 0.99)),
            server_cpu_us_per_check: micros(server) / checks,
            client_cpu_us_per_check: micros(client) / checks,
        }
    })
}

async fn check_expecting(backend: Arc<SqlBackend>, key: String, limit: Limit, allowed: bool) {
    match backend.check(&key, &limit).await {
        Ok(decision) if decision.allowed == allowed => {}
        Ok(decision) => panic!("{key}: expected allowed = {allowed}: {decision:?}"),
        Err(error) => panic!("{key}: {error}"),
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn percentile_ms(sorted: &[u64], quantile: f64) -> f64 {
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

fn server_version(settings: &Settings) -> String {
    let output = Command::new("psql")
        .args(["-At", "-c", "SHOW server_version", &settings.url])
        .output();
    output.map_or_else(
        |_| "(version unknown)".to_owned(),
        |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

/// `utime + stime` and `cutime + cstime` (fields 14–17) of `/proc/<pid>/stat`, in ticks.
fn stat_times(pid: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<u64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [utime, stime, cutime, cstime] = fields[..] else {
        return None;
    };
    Some((utime + stime, cutime + cstime))
}

fn ticks(ticks: u64) -> Duration {
    Duration::from_micros(ticks * 1_000_000 / CLOCK_TICKS_PER_SECOND)
}

/// PostgreSQL's CPU time so far: every live `postgres` process, plus what the postmaster (the
/// one whose parent is not `postgres`) collected from backends that exited.
#[derive(Clone, Copy)]
struct ServerCpu(u64);

impl ServerCpu {
    fn read() -> Self {
        let mut total = 0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Self(0);
        };
        let postgres: Vec<String> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|pid| pid.bytes().all(|byte| byte.is_ascii_digit()))
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "postgres")
            })
            .collect();
        for pid in &postgres {
            let Some((own, children)) = stat_times(pid) else {
                continue;
            };
            total += own;
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            if !postgres.contains(&parent) {
                total += children;
            }
        }
        Self(total)
    }

    fn since(self, earlier: Self) -> Duration {
        ticks(self.0.saturating_sub(earlier.0))
    }
}

/// This process's CPU time and its waited-for children's.
#[derive(Clone, Copy)]
struct ClientCpu {
    own: u64,
    children: u64,
}

impl ClientCpu {
    fn read() -> Self {
        let (own, children) = stat_times("self").unwrap_or_default();
        Self { own, children }
    }

    fn own_since(self, earlier: Self) -> Duration {
        ticks(self.own.saturating_sub(earlier.own))
    }

    fn children_since(self, earlier: Self) -> Duration {
        ticks(self.children.saturating_sub(earlier.children))
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

struct Report {
    rounds: Vec<Vec<(Contestant, Sample)>>,
    server_version: String,
}

impl Report {
    fn samples(&self, contestant: Contestant) -> Vec<Sample> {
        self.rounds
            .iter()
            .flat_map(|round| round.iter())
            .filter(|(who, _)| *who == contestant)
            .map(|(_, sample)| *sample)
            .collect()
    }

    /// Each round's ours / peer.
    fn ratios(&self, contestant: Contestant) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|round| {
                let of = |wanted: Contestant| {
                    round
                        .iter()
                        .find(|(who, _)| *who == wanted)
                        .map(|(_, sample)| sample.checks_per_second)
                };
                Some(of(contestant)? / of(Contestant::Pgbench)?)
            })
            .collect()
    }

    fn table(&self) -> String {
        let mut table = String::from(
            "| contestant | checks/s (median) | vs peer (median of rounds) | mean ms | p50 ms | p99 ms | server CPU µs/check | client CPU µs/check |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for contestant in Contestant::ALL {
            let samples = self.samples(contestant);
            let of = |field: fn(&Sample) -> f64| median(samples.iter().map(field).collect());
            let optional = |field: fn(&Sample) -> Option<f64>| {
                let values: Vec<f64> = samples.iter().filter_map(field).collect();
                if values.is_empty() {
                    "–".to_owned()
                } else {
                    format!("{:.2}", median(values))
                }
            };
            let _ = writeln!(
                table,
                "| {} | {:.0} | {:.2}x | {:.2} | {} | {} | {:.1} | {:.1} |",
                contestant.label(),
                of(|s| s.checks_per_second),
                median(self.ratios(contestant)),
                of(|s| s.mean_ms),
                optional(|s| s.p50_ms),
                optional(|s| s.p99_ms),
                of(|s| s.server_cpu_us_per_check),
                of(|s| s.client_cpu_us_per_check),
            );
        }
        table
    }

    fn json(&self, settings: &Settings) -> String {
        let optional = |value: Option<f64>| value.map_or("null".to_owned(), |v| format!("{v:.4}"));
        let mut rounds = Vec::new();
        for (index, round) in self.rounds.iter().enumerate() {
            for (contestant, sample) in round {
                rounds.push(format!(
                    "    {{\"round\": {}, \"contestant\": \"{}\", \"label\": \"{}\", \"checks_per_second\": {:.1}, \"mean_ms\": {:.4}, \"p50_ms\": {}, \"p99_ms\": {}, \"server_cpu_us_per_check\": {:.2}, \"client_cpu_us_per_check\": {:.2}}}",
                    index + 1,
                    contestant.id(),
                    contestant.label(),
                    sample.checks_per_second,
                    sample.mean_ms,
                    optional(sample.p50_ms),
                    optional(sample.p99_ms),
                    sample.server_cpu_us_per_check,
                    sample.client_cpu_us_per_check,
                ));
            }
        }
        format!(
            "{{\n  \"server_version\": \"{}\",\n  \"tasks\": {},\n  \"seconds\": {},\n  \"samples\": [\n{}\n  ]\n}}\n",
            self.server_version.replace('"', "'"),
            settings.tasks,
            settings.seconds,
            rounds.join(",\n")
        )
    }
}
