//! What one request costs while the primary Redis is down, with its circuit breaker open vs
//! closed: the breaker must remove the timeout cost. Results and how to read them: the section
//! "Failover: breaker open vs closed" of `BENCHMARKS.md`.
//!
//! Setup: a `redis-server` of the bench's own (`PrivateRedis`, never the shared one) behind a
//! `FaultProxy`; a `MultiBackend` with `RedisBackend::builder(proxy).timeout(200 ms)` as
//! primary and a `MemoryBackend` as fallback. Each scenario gets its own proxy and backends,
//! connected and warmed up while the primary is healthy, then put in its fault:
//!
//! - stalled: the proxy in `Fault::Stall` (connections stay open, nothing comes back), the worst
//!   case, where every call to the primary waits for the full timeout;
//! - refused: the proxy in `Fault::Cut` for 100 ms (the open connection is reset), then in
//!   `Fault::Refuse` (every reconnect is reset as soon as it is accepted);
//! - killed: the `redis-server` itself `SIGKILL`ed, the proxy passing, so reconnects find
//!   nobody behind it.
//!
//! For each fault, "breaker closed" is a breaker that never opens (`failure_threshold =
//! u32::MAX`), so every request tries the primary first; "breaker open" is the default breaker
//! (threshold 5), opened by the first requests (timed apart, as the cost of opening it) before
//! the measured ones. Baselines: the primary healthy (proxy passing) and the `MemoryBackend`
//! alone. Every measured request is one sequential `check` of one key, timed with `Instant`
//! around the await; every one must be allowed (so the fallback served it), and the breakers'
//! failure counts confirm which member answered.
//!
//! Settings (environment): `BREAKER_BENCH_SLOW_REQUESTS` (100), the requests of each
//! breaker-closed scenario, which may each take the full timeout; `BREAKER_BENCH_FAST_REQUESTS`
//! (5000) for the others. The default run takes about a minute and stops by itself; its
//! `redis-server` is killed at the end (and when the process exits). The results are also
//! written to `target/tmp/breaker_latency.json` for `scripts/plot_breaker.py`.

// A bench is not library code: a setup that cannot run should abort loudly, and the report goes
// to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ratelimit_core::{
    Backend, CircuitBreakerConfig, CircuitState, Limit, MemoryBackend, MultiBackend, Rate,
    RedisBackend,
};
use ratelimit_tests::fault_proxy::{Fault, FaultProxy};
use ratelimit_tests::services::{PrivateRedis, unique_prefix};
use tokio::runtime::Builder;

#[path = "../../bench-support/machine.rs"]
mod machine;

/// The primary's timeout: what a request costs when it waits for a primary that never answers.
const TIMEOUT: Duration = Duration::from_millis(200);

/// Never reached: every check is allowed, so every request takes the same path.
const RATE: &str = "1000000000/s";

const KEY: &str = "client:bench";
const PRIMARY: &str = "redis";
const FALLBACK: &str = "memory";

/// Unmeasured requests before a baseline (connection up, script loaded, caches warm).
const WARMUP: usize = 200;

/// How long the proxy cuts before it refuses: enough for the client to see its connection reset.
const CUT_FOR: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    Stalled,
    Refused,
    Killed,
}

impl Outage {
    const ALL: [Self; 3] = [Self::Stalled, Self::Refused, Self::Killed];

    fn id(self) -> &'static str {
        match self {
            Self::Stalled => "stalled",
            Self::Refused => "refused",
            Self::Killed => "killed",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Stalled => "primary stalled (proxy Stall)",
            Self::Refused => "primary refusing (proxy Cut, then Refuse)",
            Self::Killed => "primary killed (redis-server SIGKILL)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Breaker {
    /// `failure_threshold = u32::MAX`: every request tries the primary.
    NeverOpens,
    /// The default breaker, opened before the measured requests.
    Open,
}

impl Breaker {
    fn id(self) -> &'static str {
        match self {
            Self::NeverOpens => "closed",
            Self::Open => "open",
        }
    }

    fn config(self) -> CircuitBreakerConfig {
        match self {
            Self::NeverOpens => CircuitBreakerConfig {
                failure_threshold: u32::MAX,
                ..CircuitBreakerConfig::default()
            },
            Self::Open => CircuitBreakerConfig::default(),
        }
    }
}

struct Settings {
    slow_requests: usize,
    fast_requests: usize,
}

impl Settings {
    fn from_env() -> Self {
        let count = |name: &str, default: usize| match std::env::var(name) {
            Ok(value) => value
                .parse::<usize>()
                .ok()
                .filter(|count| *count > 0)
                .unwrap_or_else(|| panic!("{name}={value:?} is not a positive integer")),
            Err(_) => default,
        };
        Self {
            slow_requests: count("BREAKER_BENCH_SLOW_REQUESTS", 100),
            fast_requests: count("BREAKER_BENCH_FAST_REQUESTS", 5000),
        }
    }
}

/// Latency summary of one scenario.
struct Stats {
    requests: usize,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut latencies: Vec<Duration>) -> Self {
        assert!(!latencies.is_empty(), "no latencies to summarise");
        latencies.sort_unstable();
        let requests = latencies.len();
        let total: Duration = latencies.iter().sum();
        let count = u32::try_from(requests).unwrap();
        Self {
            requests,
            mean: total / count,
            p50: nearest_rank(&latencies, 50),
            p99: nearest_rank(&latencies, 99),
            max: latencies[requests - 1],
        }
    }
}

/// The nearest-rank percentile of sorted `latencies`: the smallest value with at least
/// `percent`% of the values at or below it.
fn nearest_rank(latencies: &[Duration], percent: usize) -> Duration {
    let rank = (latencies.len() * percent).div_ceil(100).max(1);
    latencies[rank - 1]
}

struct Row {
    id: String,
    scenario: String,
    breaker: &'static str,
    stats: Stats,
}

struct Opening {
    outage: Outage,
    latencies: Vec<Duration>,
}

fn row_id(outage: Outage, breaker: Breaker) -> String {
    format!("{}_{}", outage.id(), breaker.id())
}

fn limit() -> Limit {
    let limit = Limit::fixed_window(Rate::parse(RATE).unwrap());
    limit.validate().unwrap();
    limit
}

/// Sequential checks of one key, each timed; every one must be allowed.
async fn timed_checks(backend: &dyn Backend, limit: &Limit, requests: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let decision = backend.check(KEY, limit).await;
        latencies.push(started.elapsed());
        match decision {
            Ok(decision) => assert!(decision.allowed, "a roomy limit rejected: {decision:?}"),
            Err(error) => panic!("a request failed instead of failing over: {error}"),
        }
    }
    latencies
}

/// A primary behind its own proxy, with the memory fallback, connected and warmed up while the
/// primary is healthy.
struct Failover {
    proxy: FaultProxy,
    multi: MultiBackend,
}

impl Failover {
    async fn start(redis: &PrivateRedis, breaker: Breaker, limit: &Limit) -> Self {
        let proxy = FaultProxy::start(&format!("127.0.0.1:{}", redis.port()))
            .await
            .unwrap();
        let primary = RedisBackend::builder(&format!("redis://{}", proxy.address()))
            .key_prefix(unique_prefix("breaker_latency"))
            .timeout(TIMEOUT)
            .build()
            .await
            .unwrap_or_else(|error| panic!("connecting through the proxy: {error}"));
        let multi = MultiBackend::builder()
            .backend(PRIMARY, primary)
            .backend(FALLBACK, MemoryBackend::new())
            .circuit_breaker(breaker.config())
            .build();
        timed_checks(&multi, limit, 1).await;
        let failover = Self { proxy, multi };
        assert_eq!(failover.primary_failures(), 0, "the healthy primary failed");
        failover
    }

    fn breaker_state(&self) -> CircuitState {
        self.multi.breaker(PRIMARY).unwrap().state()
    }

    fn primary_failures(&self) -> u32 {
        self.multi.breaker(PRIMARY).unwrap().failure_count()
    }

    /// Puts the primary down the way `outage` says (a killed server is killed by the caller).
    async fn fail(&self, outage: Outage) {
        match outage {
            Outage::Stalled => self.proxy.set(Fault::Stall),
            Outage::Refused => {
                self.proxy.set(Fault::Cut);
                tokio::time::sleep(CUT_FOR).await;
                self.proxy.set(Fault::Refuse);
            }
            Outage::Killed => {}
        }
    }

    /// Requests until the breaker opens; returns their latencies.
    async fn open_breaker(&self, limit: &Limit) -> Vec<Duration> {
        let threshold = usize::try_from(Breaker::Open.config().failure_threshold).unwrap();
        let mut latencies = Vec::new();
        while self.breaker_state() != CircuitState::Open {
            assert!(
                latencies.len() < threshold,
                "the breaker is still {:?} after {threshold} requests",
                self.breaker_state()
            );
            latencies.extend(timed_checks(&self.multi, limit, 1).await);
        }
        latencies
    }

    /// The measured requests of one down-primary scenario, checked to have gone where they should.
    async fn measure_down(&self, breaker: Breaker, limit: &Limit, requests: usize) -> Stats {
        let failures_before = self.primary_failures();
        let latencies = timed_checks(&self.multi, limit, requests).await;
        match breaker {
            Breaker::NeverOpens => {
                assert_eq!(self.breaker_state(), CircuitState::Closed);
                assert_eq!(
                    u64::from(self.primary_failures() - failures_before),
                    u64::try_from(requests).unwrap(),
                    "every request tried the primary and failed over"
                );
            }
            Breaker::Open => {
                assert_eq!(
                    self.breaker_state(),
                    CircuitState::Open,
                    "the breaker stayed open"
                );
                assert_eq!(
                    self.primary_failures(),
                    failures_before,
                    "no request reached the primary"
                );
            }
        }
        Stats::of(latencies)
    }
}

async fn run(settings: &Settings) -> (Vec<Row>, Vec<Opening>) {
    let limit = limit();
    let mut redis = PrivateRedis::start()
        .await
        .unwrap_or_else(|error| panic!("this bench needs redis-server: {error}"));
    let mut rows = Vec::new();
    let mut openings = Vec::new();

    let memory = MemoryBackend::new();
    timed_checks(&memory, &limit, WARMUP).await;
    rows.push(Row {
        id: "memory_alone".to_owned(),
        scenario: "MemoryBackend alone (no MultiBackend, no Redis)".to_owned(),
        breaker: "none",
        stats: Stats::of(timed_checks(&memory, &limit, settings.fast_requests).await),
    });
    println!("measured: memory alone");

    let healthy = Failover::start(&redis, Breaker::Open, &limit).await;
    timed_checks(&healthy.multi, &limit, WARMUP).await;
    let latencies = timed_checks(&healthy.multi, &limit, settings.fast_requests).await;
    assert_eq!(healthy.primary_failures(), 0, "the healthy primary failed");
    assert_eq!(healthy.breaker_state(), CircuitState::Closed);
    rows.push(Row {
        id: "healthy".to_owned(),
        scenario: "primary healthy (proxy Pass), served by Redis".to_owned(),
        breaker: "closed",
        stats: Stats::of(latencies),
    });
    drop(healthy);
    println!("measured: primary healthy");

    for outage in Outage::ALL {
        // Both are connected before the fault: a killed server cannot be connected to.
        let closed = Failover::start(&redis, Breaker::NeverOpens, &limit).await;
        let open = Failover::start(&redis, Breaker::Open, &limit).await;
        if outage == Outage::Killed {
            redis.kill().await.unwrap();
        }

        closed.fail(outage).await;
        rows.push(Row {
            id: row_id(outage, Breaker::NeverOpens),
            scenario: outage.label().to_owned(),
            breaker: "closed (never opens)",
            stats: closed
                .measure_down(Breaker::NeverOpens, &limit, settings.slow_requests)
                .await,
        });
        drop(closed);

        open.fail(outage).await;
        openings.push(Opening {
            outage,
            latencies: open.open_breaker(&limit).await,
        });
        rows.push(Row {
            id: row_id(outage, Breaker::Open),
            scenario: outage.label().to_owned(),
            breaker: "open",
            stats: open
                .measure_down(Breaker::Open, &limit, settings.fast_requests)
                .await,
        });
        drop(open);
        println!("measured: {}", outage.id());
    }
    (rows, openings)
}

fn main() {
    let settings = Settings::from_env();
    let machine = machine::Machine::read();
    let started = Instant::now();
    // Two workers, like the failover tests: the proxy's relays run beside the client.
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (rows, openings) = runtime.block_on(run(&settings));
    // Dropping the runtime ends the proxies' tasks and the clients' reconnect loops.
    drop(runtime);
    let report = Report {
        settings: &settings,
        machine,
        load_after: machine::load_average(),
        elapsed: started.elapsed(),
        rows: &rows,
        openings: &openings,
    };
    print!("{}", report.markdown());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("breaker_latency.json");
    std::fs::write(&path, report.json()).unwrap();
    println!("\nresults: {}", path.display());
}

struct Report<'a> {
    settings: &'a Settings,
    machine: machine::Machine,
    load_after: String,
    elapsed: Duration,
    rows: &'a [Row],
    openings: &'a [Opening],
}

fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else if ms >= 0.1 {
        format!("{ms:.3} ms")
    } else {
        format!("{:.2} µs", ms * 1e3)
    }
}

/// `ratio` rounded, with thousands separated: `551,368`.
fn grouped(ratio: f64) -> String {
    let digits = format!("{ratio:.0}");
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

impl Report<'_> {
    fn row(&self, id: &str) -> &Row {
        self.rows.iter().find(|row| row.id == id).unwrap()
    }

    /// `(outage, closed / open)` of the mean, p50 and p99.
    fn ratios(&self) -> Vec<(Outage, [f64; 3])> {
        Outage::ALL
            .iter()
            .map(|&outage| {
                let closed = &self.row(&row_id(outage, Breaker::NeverOpens)).stats;
                let open = &self.row(&row_id(outage, Breaker::Open)).stats;
                let ratio =
                    |of: fn(&Stats) -> Duration| of(closed).as_secs_f64() / of(open).as_secs_f64();
                (
                    outage,
                    [
                        ratio(|stats| stats.mean),
                        ratio(|stats| stats.p50),
                        ratio(|stats| stats.p99),
                    ],
                )
            })
            .collect()
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        writeln!(
            out,
            "\nmachine: {} CPUs, {}; load average {} before, {} after; run took {:.1} s",
            machine.cpus,
            machine.cpu_model,
            machine.load_average,
            self.load_after,
            self.elapsed.as_secs_f64()
        )
        .unwrap();
        writeln!(
            out,
            "primary timeout {} ms; breaker-closed scenarios {} requests, others {}\n",
            TIMEOUT.as_millis(),
            self.settings.slow_requests,
            self.settings.fast_requests
        )
        .unwrap();
        writeln!(
            out,
            "| scenario | breaker | requests | p50 | p99 | max | mean |\n|---|---|---:|---:|---:|---:|---:|"
        )
        .unwrap();
        for row in self.rows {
            let stats = &row.stats;
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.scenario,
                row.breaker,
                stats.requests,
                millis(stats.p50),
                millis(stats.p99),
                millis(stats.max),
                millis(stats.mean)
            )
            .unwrap();
        }
        writeln!(
            out,
            "\n| primary down | closed / open, mean | p50 | p99 | saved per request (mean) |\n|---|---:|---:|---:|---:|"
        )
        .unwrap();
        for (outage, [mean, p50, p99]) in self.ratios() {
            let closed = self.row(&row_id(outage, Breaker::NeverOpens)).stats.mean;
            let open = self.row(&row_id(outage, Breaker::Open)).stats.mean;
            writeln!(
                out,
                "| {} | {}× | {}× | {}× | {} |",
                outage.id(),
                grouped(mean),
                grouped(p50),
                grouped(p99),
                millis(closed.saturating_sub(open))
            )
            .unwrap();
        }
        writeln!(out, "\nrequests that opened the default breaker:").unwrap();
        for opening in self.openings {
            let each: Vec<String> = opening.latencies.iter().map(|&d| millis(d)).collect();
            writeln!(out, "- {}: {}", opening.outage.id(), each.join(", ")).unwrap();
        }
        out
    }

    fn json(&self) -> String {
        let mut out = String::from("{\n");
        let machine = &self.machine;
        writeln!(
            out,
            "  \"machine\": {{\"cpus\": {}, \"cpu_model\": {:?}, \"load_before\": {:?}, \"load_after\": {:?}}},",
            machine.cpus, machine.cpu_model, machine.load_average, self.load_after
        )
        .unwrap();
        writeln!(
            out,
            "  \"timeout_ms\": {}, \"slow_requests\": {}, \"fast_requests\": {}, \"elapsed_s\": {:.1},",
            TIMEOUT.as_millis(),
            self.settings.slow_requests,
            self.settings.fast_requests,
            self.elapsed.as_secs_f64()
        )
        .unwrap();
        out.push_str("  \"rows\": [\n");
        for (index, row) in self.rows.iter().enumerate() {
            let stats = &row.stats;
            let comma = if index + 1 < self.rows.len() { "," } else { "" };
            writeln!(
                out,
                "    {{\"id\": {:?}, \"scenario\": {:?}, \"breaker\": {:?}, \"requests\": {}, \"p50_us\": {:.2}, \"p99_us\": {:.2}, \"max_us\": {:.2}, \"mean_us\": {:.2}}}{comma}",
                row.id,
                row.scenario,
                row.breaker,
                stats.requests,
                micros(stats.p50),
                micros(stats.p99),
                micros(stats.max),
                micros(stats.mean)
            )
            .unwrap();
        }
        out.push_str("  ],\n  \"ratios\": [\n");
        let ratios = self.ratios();
        for (index, (outage, [mean, p50, p99])) in ratios.iter().enumerate() {
            let comma = if index + 1 < ratios.len() { "," } else { "" };
            writeln!(
                out,
                "    {{\"outage\": {:?}, \"mean\": {mean:.1}, \"p50\": {p50:.1}, \"p99\": {p99:.1}}}{comma}",
                outage.id()
            )
            .unwrap();
        }
        out.push_str("  ],\n  \"openings\": [\n");
        for (index, opening) in self.openings.iter().enumerate() {
            let comma = if index + 1 < self.openings.len() {
                ","
            } else {
                ""
            };
            let each: Vec<String> = opening
                .latencies
                .iter()
                .map(|&d| format!("{:.2}", micros(d)))
                .collect();
            writeln!(
                out,
                "    {{\"outage\": {:?}, \"latencies_us\": [{}]}}{comma}",
                opening.outage.id(),
                each.join(", ")
            )
            .unwrap();
        }
        out.push_str("  ]\n}\n");
        out
    }
}
