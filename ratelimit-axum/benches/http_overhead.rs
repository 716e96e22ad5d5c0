//! What `#[rate_limit]` costs over HTTP: one axum server on loopback serving the same trivial
//! route four ways — unguarded (`/plain`), behind `#[rate_limit]` on the zero-config memory
//! backend (`/guarded`), behind tower_governor's `GovernorLayer` keyed by peer IP
//! (`/governor`, its default: no headers on success; the goal is measured against this one),
//! and the same with tower_governor's `.use_headers()` (`/governor-headers`: its
//! `x-ratelimit-limit` and `x-ratelimit-remaining` on every response, for a like-for-like look)
//! — driven by `wrk` in alternating rounds, the route order rotated every round so that drift
//! (other processes, thermal state) spreads over all four.
//!
//! ```text
//! cargo bench -p ratelimit-axum --bench http_overhead
//! ```
//!
//! Needs `wrk` on the `PATH` (`apt-get install -y wrk`, or `scripts/bench_http.sh`). Settings,
//! all optional: `HTTP_BENCH_ROUNDS` (5), `HTTP_BENCH_SECONDS` per run (5),
//! `HTTP_BENCH_WARMUP_SECONDS` per route before the first round (2), `HTTP_BENCH_CONNECTIONS`
//! (32), `HTTP_BENCH_WORKERS` server worker threads (1, leaving the second core of a 2-core
//! machine to `wrk`), `HTTP_BENCH_PIN` (1: with `taskset`, the server on CPU 0 and `wrk` on
//! CPU 1; 0: wherever the scheduler puts them), `HTTP_BENCH_ONLY` (`plain`, `guarded`,
//! `governor` or `governor-headers`: load that route once and print only its run, e.g. under
//! `perf record`),
//! `HTTP_BENCH_HEADER_FIELDS` (`all`, the default and what SPEC §7 requires; `ietf` or
//! `x-ratelimit` to measure what one family costs). Writes
//! `target/tmp/http_overhead.json` for `scripts/plot_http_overhead.py`.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it only checks that the four routes
//! answer, and needs no `wrk`.

// A bench binary reports to the terminal that ran it: printing is its whole output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::error::Error;
use std::fmt::Display;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ratelimit_axum::{GuardSettings, HeaderFields};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

#[path = "../../bench-support/machine.rs"]
mod machine;
#[path = "support/routes.rs"]
mod routes;

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// The guarded route's rate, as its response header shows it.
const GUARDED_LIMIT: &str = "1000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Plain,
    Guarded,
    Governor,
    GovernorHeaders,
}

impl Route {
    const ALL: [Self; 4] = [
        Self::Plain,
        Self::Guarded,
        Self::Governor,
        Self::GovernorHeaders,
    ];

    fn path(self) -> &'static str {
        match self {
            Self::Plain => routes::PLAIN,
            Self::Guarded => routes::GUARDED,
            Self::Governor => routes::GOVERNOR,
            Self::GovernorHeaders => routes::GOVERNOR_HEADERS,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Plain => "unguarded",
            Self::Guarded => "#[rate_limit]",
            Self::Governor => "tower_governor",
            Self::GovernorHeaders => "tower_governor + headers",
        }
    }
}

#[derive(Debug)]
struct Config {
    rounds: usize,
    seconds: u64,
    warmup_seconds: u64,
    connections: u32,
    workers: usize,
    /// Pin the server to CPU 0 and `wrk` to CPU 1 (`taskset`), so neither migrates onto the
    /// other's core.
    pin: bool,
    /// Load only this route, once, without comparing (for a profiler attached to the server).
    only: Option<Route>,
}

impl Config {
    fn from_env() -> BenchResult<Self> {
        let config = Self {
            rounds: env_or("HTTP_BENCH_ROUNDS", 5)?,
            seconds: env_or("HTTP_BENCH_SECONDS", 5)?,
            warmup_seconds: env_or("HTTP_BENCH_WARMUP_SECONDS", 2)?,
            connections: env_or("HTTP_BENCH_CONNECTIONS", 32)?,
            workers: env_or("HTTP_BENCH_WORKERS", 1)?,
            pin: env_or("HTTP_BENCH_PIN", 1)? == 1,
            only: match std::env::var("HTTP_BENCH_ONLY") {
                Ok(name) => Some(
                    Route::ALL
                        .into_iter()
                        .find(|route| route.path().trim_start_matches('/') == name.trim())
                        .ok_or_else(|| {
                            format!(
                                "HTTP_BENCH_ONLY={name:?}: expected plain, guarded, governor or \
                                 governor-headers"
                            )
                        })?,
                ),
                Err(_) => None,
            },
        };
        if config.rounds == 0 || config.seconds == 0 || config.connections == 0 {
            return Err("HTTP_BENCH_ROUNDS, HTTP_BENCH_SECONDS and HTTP_BENCH_CONNECTIONS must be at least 1".into());
        }
        if config.workers == 0 {
            return Err("HTTP_BENCH_WORKERS must be at least 1".into());
        }
        Ok(config)
    }

    fn estimated_seconds(&self) -> u64 {
        let runs = u64::try_from(self.rounds * Route::ALL.len()).unwrap_or(u64::MAX);
        runs.saturating_mul(self.seconds)
            .saturating_add(3 * self.warmup_seconds)
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> BenchResult<T>
where
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|error| format!("{name}={value:?}: {error}").into()),
        Err(_) => Ok(default),
    }
}

/// Serves [`app`] on an ephemeral loopback port with the peer address that both limiters key on.
fn start_server(runtime: &Runtime) -> BenchResult<SocketAddr> {
    let listener = runtime.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = listener.local_addr()?;
    let app = routes::app()?;
    runtime.spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            eprintln!("server stopped: {error}");
        }
    });
    Ok(addr)
}

/// One `GET` on a fresh connection; the raw response, lower-cased.
fn fetch(addr: SocketAddr, path: &str) -> BenchResult<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.to_ascii_lowercase())
}

/// Every route answers 200 with the same body, only `/guarded` carries the guard's rate-limit
/// headers (so the guard really runs, with the huge limit), and only `/governor-headers`
/// tower_governor's.
fn check_routes(addr: SocketAddr) -> BenchResult<()> {
    for route in Route::ALL {
        let response = fetch(addr, route.path())?;
        let ok = response.starts_with("http/1.1 200") && response.ends_with(routes::BODY);
        // Either family shows that the guard ran (`HTTP_BENCH_HEADER_FIELDS` may drop one).
        let headed = response.contains(&format!("x-ratelimit-limit: {GUARDED_LIMIT}\r\n"))
            || response.contains(&format!(
                "ratelimit-policy: \"default\";q={GUARDED_LIMIT};w=1\r\n"
            ));
        let governor_headed = response.contains("x-ratelimit-remaining: ") && !headed;
        if !ok
            || headed != (route == Route::Guarded)
            || governor_headed != (route == Route::GovernorHeaders)
        {
            return Err(format!("{} answered unexpectedly:\n{response}", route.path()).into());
        }
    }
    Ok(())
}

/// What one `wrk` run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    /// CPU time the server process spent per request: unlike requests/s, barely moved by other
    /// processes taking turns on the cores.
    server_cpu_ns_per_request: f64,
}

fn wrk_version() -> String {
    Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            text.lines().next().map(|line| {
                line.split(" Copyright")
                    .next()
                    .unwrap_or(line)
                    .trim()
                    .to_owned()
            })
        })
        .unwrap_or_default()
}

/// Runs `wrk` (one thread) against `route` and parses its report. A `wrk` that outlives its
/// duration by 15 s is killed, so the bench always ends.
fn wrk(addr: SocketAddr, route: Route, config: &Config, seconds: u64) -> BenchResult<Run> {
    let url = format!("http://{addr}{}", route.path());
    let connections = config.connections;
    let mut command = if config.pin {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "1", "wrk"]);
        taskset
    } else {
        Command::new("wrk")
    };
    let mut child = command
        .args([
            "-t1".to_owned(),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".to_owned(),
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run wrk ({error}); install it: apt-get install -y wrk"))?;
    let cpu_before = server_cpu_ns();
    let deadline = Instant::now() + Duration::from_secs(seconds + 15);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            return Err(format!("wrk against {} did not stop; killed", route.path()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu_ns = server_cpu_ns().saturating_sub(cpu_before);
    let output = child.wait_with_output()?;
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let errors = String::from_utf8_lossy(&output.stderr);
        return Err(format!("wrk failed ({}): {report}{errors}", output.status).into());
    }
    let mut run =
        parse_wrk(&report).ok_or_else(|| format!("cannot read wrk's report:\n{report}"))?;
    run.server_cpu_ns_per_request = cpu_ns as f64 / run.requests.max(1) as f64;
    Ok(run)
}

/// CPU time of every thread of this process (the server's runtime; the main thread only waits
/// for `wrk`), in nanoseconds, from the scheduler's own accounting.
fn server_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn parse_wrk(report: &str) -> Option<Run> {
    let mut run = Run::default();
    let mut found = (false, false, false);
    for line in report.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(value)) => {
                run.requests_per_sec = value.parse().ok()?;
                found.0 = true;
            }
            (Some("50%"), Some(value)) => {
                run.p50_us = micros(value)?;
                found.1 = true;
            }
            (Some("99%"), Some(value)) => {
                run.p99_us = micros(value)?;
                found.2 = true;
            }
            (Some(count), Some("requests")) => run.requests = count.parse().ok()?,
            (Some("Non-2xx"), _) => run.non_2xx = line.rsplit(' ').next()?.parse().ok()?,
            (Some("Socket"), Some("errors:")) => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                run.socket_errors = line
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|number| number.parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    (found == (true, true, true)).then_some(run)
}

/// `wrk`'s durations ("812.00us", "1.25ms", "1.00s", "2.00m") in microseconds.
fn micros(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * scale)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => f64::midpoint(sorted[len / 2 - 1], sorted[len / 2]),
    }
}

/// Moves every thread of this process (the server's runtime) to CPU 0; `wrk` gets CPU 1.
fn pin_server() -> BenchResult<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run taskset ({error}); set HTTP_BENCH_PIN=0"))?;
    if !status.success() {
        return Err(format!("taskset failed ({status}); set HTTP_BENCH_PIN=0").into());
    }
    Ok(())
}

/// Medians over the rounds of one route.
#[derive(Clone, Copy, Debug)]
struct Summary {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    server_cpu_ns_per_request: f64,
}

fn summarize(runs: &[Run]) -> Summary {
    let of = |field: fn(&Run) -> f64| median(&runs.iter().map(field).collect::<Vec<_>>());
    Summary {
        requests_per_sec: of(|run| run.requests_per_sec),
        p50_us: of(|run| run.p50_us),
        p99_us: of(|run| run.p99_us),
        server_cpu_ns_per_request: of(|run| run.server_cpu_ns_per_request),
    }
}

fn measure(config: &Config, addr: SocketAddr) -> BenchResult<()> {
    let wrk_version = wrk_version();
    // Before pinning, which leaves this process one CPU.
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    if config.pin {
        pin_server()?;
    }
    let load_before = machine::load_average();
    println!(
        "http_overhead: server {addr} with {} worker thread(s){}; wrk -t1 -c{} -d{}s, {} rounds, \
         about {} s; wrk: {wrk_version}; load average {load_before}",
        config.workers,
        if config.pin {
            " on CPU 0, wrk on CPU 1"
        } else {
            ""
        },
        config.connections,
        config.seconds,
        config.rounds,
        config.estimated_seconds()
    );
    if let Some(route) = config.only {
        // Profiling mode: one route, one run, no comparison.
        let run = wrk(addr, route, config, config.seconds)?;
        println!(
            "  {:<24} {:>10.0} req/s  {} requests  server CPU {:>6.2} us/request",
            route.label(),
            run.requests_per_sec,
            run.requests,
            run.server_cpu_ns_per_request / 1e3
        );
        return Ok(());
    }
    if config.warmup_seconds > 0 {
        for route in Route::ALL {
            wrk(addr, route, config, config.warmup_seconds)?;
        }
    }
    let mut runs: [Vec<Run>; 4] = Default::default();
    for round in 0..config.rounds {
        for slot in 0..Route::ALL.len() {
            let index = (slot + round) % Route::ALL.len();
            let route = Route::ALL[index];
            let run = wrk(addr, route, config, config.seconds)?;
            println!(
                "  round {} {:<24} {:>10.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us  \
                 server CPU {:>6.2} us/request{}",
                round + 1,
                route.label(),
                run.requests_per_sec,
                run.p50_us,
                run.p99_us,
                run.server_cpu_ns_per_request / 1e3,
                if run.non_2xx + run.socket_errors > 0 {
                    format!(
                        "  ({} non-2xx, {} socket errors)",
                        run.non_2xx, run.socket_errors
                    )
                } else {
                    String::new()
                }
            );
            runs[index].push(run);
        }
    }
    let load_after = machine::load_average();
    let summaries = runs.each_ref().map(|route_runs| summarize(route_runs));
    let [plain, guarded, governor, governor_headers] = summaries;
    let over_plain = guarded.requests_per_sec / plain.requests_per_sec;
    let over_governor = guarded.requests_per_sec / governor.requests_per_sec;
    // Within one round the four routes ran seconds apart, so these ratios see similar load.
    let paired = |numerator: usize, denominator: usize| {
        let ratios: Vec<f64> = runs[numerator]
            .iter()
            .zip(&runs[denominator])
            .map(|(top, bottom)| top.requests_per_sec / bottom.requests_per_sec)
            .collect();
        median(&ratios)
    };
    let paired_over_plain = paired(1, 0);
    let paired_over_governor = paired(1, 2);
    let paired_over_governor_headers = paired(1, 3);
    let over_governor_headers = guarded.requests_per_sec / governor_headers.requests_per_sec;
    let cpu_over_governor_headers =
        governor_headers.server_cpu_ns_per_request / guarded.server_cpu_ns_per_request;
    // What each route would serve with the server's core to itself: 1 / CPU per request.
    let cpu_over_plain = plain.server_cpu_ns_per_request / guarded.server_cpu_ns_per_request;
    let cpu_over_governor = governor.server_cpu_ns_per_request / guarded.server_cpu_ns_per_request;
    let failures: u64 = runs
        .iter()
        .flatten()
        .map(|run| run.non_2xx + run.socket_errors)
        .sum();

    println!();
    print!("{:<24}", "route");
    for round in 1..=config.rounds {
        print!(" {:>9}", format!("round {round}"));
    }
    println!(
        " {:>12} {:>9} {:>9} {:>14}",
        "median req/s", "p50 us", "p99 us", "CPU us/request"
    );
    for (index, route) in Route::ALL.into_iter().enumerate() {
        print!("{:<24}", route.label());
        for run in &runs[index] {
            print!(" {:>9.0}", run.requests_per_sec);
        }
        let summary = summaries[index];
        println!(
            " {:>12.0} {:>9.1} {:>9.1} {:>14.2}",
            summary.requests_per_sec,
            summary.p50_us,
            summary.p99_us,
            summary.server_cpu_ns_per_request / 1e3
        );
    }
    println!();
    println!(
        "#[rate_limit] / unguarded:      {over_plain:.3}x (goal >= 0.90x: {})",
        verdict(over_plain >= 0.90)
    );
    println!(
        "#[rate_limit] / tower_governor: {over_governor:.3}x (goal >= 1.00x: {})",
        verdict(over_governor >= 1.0)
    );
    println!(
        "#[rate_limit] / tower_governor with its headers (for comparison, no goal): \
         {over_governor_headers:.3}x"
    );
    println!(
        "median of per-round ratios: {paired_over_plain:.3}x unguarded, \
         {paired_over_governor:.3}x tower_governor, \
         {paired_over_governor_headers:.3}x tower_governor with headers"
    );
    println!(
        "from server CPU per request: {cpu_over_plain:.3}x unguarded, \
         {cpu_over_governor:.3}x tower_governor, \
         {cpu_over_governor_headers:.3}x tower_governor with headers"
    );
    let extra = |summary: Summary| {
        (summary.server_cpu_ns_per_request - plain.server_cpu_ns_per_request) / 1e3
    };
    println!(
        "server CPU per request over unguarded: #[rate_limit] {:+.2} us, tower_governor \
         {:+.2} us, tower_governor with headers {:+.2} us",
        extra(guarded),
        extra(governor),
        extra(governor_headers)
    );
    println!("load average before {load_before}, after {load_after}");
    if failures > 0 {
        println!("WARNING: {failures} non-2xx responses or socket errors; the numbers are suspect");
    }

    let routes: Vec<_> = Route::ALL
        .into_iter()
        .zip(&runs)
        .zip(summaries)
        .map(|((route, route_runs), summary)| {
            json!({
                "route": route.path(),
                "label": route.label(),
                "median_requests_per_sec": summary.requests_per_sec,
                "median_p50_us": summary.p50_us,
                "median_p99_us": summary.p99_us,
                "median_server_cpu_ns_per_request": summary.server_cpu_ns_per_request,
                "runs": route_runs.iter().map(|run| json!({
                    "requests_per_sec": run.requests_per_sec,
                    "p50_us": run.p50_us,
                    "p99_us": run.p99_us,
                    "requests": run.requests,
                    "non_2xx": run.non_2xx,
                    "socket_errors": run.socket_errors,
                    "server_cpu_ns_per_request": run.server_cpu_ns_per_request,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let results = json!({
        "config": {
            "rounds": config.rounds,
            "seconds": config.seconds,
            "warmup_seconds": config.warmup_seconds,
            "connections": config.connections,
            "server_workers": config.workers,
            "pinned": config.pin,
            "wrk_threads": 1,
            "guarded_rate": format!("{GUARDED_LIMIT}/s"),
            "header_fields": std::env::var("HTTP_BENCH_HEADER_FIELDS")
                .unwrap_or_else(|_| "all".to_owned()),
        },
        "machine": {
            "cpus": cpus,
            "cpu_model": machine::cpu_model(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "wrk_version": wrk_version,
        "routes": routes,
        "ratios": {
            "guarded_over_plain": over_plain,
            "guarded_over_governor": over_governor,
            "paired_guarded_over_plain": paired_over_plain,
            "paired_guarded_over_governor": paired_over_governor,
            "cpu_guarded_over_plain": cpu_over_plain,
            "cpu_guarded_over_governor": cpu_over_governor,
            "guarded_over_governor_headers": over_governor_headers,
            "paired_guarded_over_governor_headers": paired_over_governor_headers,
            "cpu_guarded_over_governor_headers": cpu_over_governor_headers,
        },
        "failures": failures,
    });
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("http_overhead.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// `HTTP_BENCH_HEADER_FIELDS`: `all` (default, SPEC §7), `ietf` or `x-ratelimit`, for
/// measuring what the header families cost; installed before the first request.
fn install_header_fields() -> BenchResult<&'static str> {
    let name = std::env::var("HTTP_BENCH_HEADER_FIELDS").unwrap_or_else(|_| "all".to_owned());
    let fields = match name.trim() {
        "all" => return Ok("all"),
        "ietf" => HeaderFields::Ietf,
        "x-ratelimit" => HeaderFields::XRateLimit,
        other => {
            return Err(format!(
                "HTTP_BENCH_HEADER_FIELDS={other:?}: expected all, ietf or x-ratelimit"
            )
            .into());
        }
    };
    GuardSettings::builder()
        .header_fields(fields)
        .install()
        .map_err(|error| error.to_string())?;
    Ok(if fields == HeaderFields::Ietf {
        "ietf"
    } else {
        "x-ratelimit"
    })
}

fn main() -> BenchResult<()> {
    let config = Config::from_env()?;
    let header_fields = install_header_fields()?;
    if header_fields != "all" {
        println!("http_overhead: #[rate_limit] sends only the {header_fields} header fields");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .enable_all()
        .build()?;
    let addr = start_server(&runtime)?;
    check_routes(addr)?;
    if std::env::args().any(|arg| arg == "--bench") {
        measure(&config, addr)?;
    } else {
        println!("http_overhead: the four routes answer; run `cargo bench` to measure");
    }
    runtime.shutdown_background();
    Ok(())
}
