//! The child process of `tests/wall_clock.rs`: runs one sequence of checks, stepping this
//! process's wall clock back and forth by an hour between them when asked to, and prints the
//! decisions.
//!
//! ```text
//! wall_clock_jump memory
//! wall_clock_jump redis <url> <key prefix>
//! ```
//!
//! With `CLOCK_JUMP_FILE` set, the wall clock steps by writing libfaketime's timestamp file
//! (the parent preloads libfaketime with `FAKETIME_TIMESTAMP_FILE` naming that file,
//! `FAKETIME_NO_CACHE=1` and `DONT_FAKE_MONOTONIC=1`, so only the wall clock moves, as an NTP
//! step does). Output, one line each: `jump <asked> <seen>` (seconds the wall clock was to move
//! and moved) for every step, then
//! `<limit> <decisions>` with `A` for allowed and `R` for rejected.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratelimit_core::{Backend, Limit, MemoryBackend, Rate, RedisBackend};

/// Where the parent asks for jumps: libfaketime's timestamp file.
const JUMP_FILE_VAR: &str = "CLOCK_JUMP_FILE";

/// Where the wall clock stands after each step, in seconds from the real time.
const STEPS: [i64; 2] = [-3_600, 3_600];

/// Checks per limit before the first step (all allowed), and after each step (all rejected).
const FIRST_CHECKS: usize = 5;
const CHECKS_PER_STEP: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&format!("no runtime: {error}")));
    let output = runtime.block_on(run(&args));
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(output.as_bytes()) {
        fail(&format!("writing the decisions: {error}"));
    }
}

fn fail(why: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "wall_clock_jump: {why}");
    std::process::exit(2);
}

async fn run(args: &[String]) -> String {
    let backend: Box<dyn Backend> = match args {
        [kind] if kind == "memory" => Box::new(MemoryBackend::new()),
        [kind, url, prefix] if kind == "redis" => Box::new(
            RedisBackend::builder(url)
                .key_prefix(prefix)
                .build()
                .await
                .unwrap_or_else(|error| fail(&format!("connecting to {url}: {error}"))),
        ),
        _ => fail("usage: wall_clock_jump memory | wall_clock_jump redis <url> <key prefix>"),
    };
    let jump_file = std::env::var_os(JUMP_FILE_VAR).map(PathBuf::from);
    away_from_a_minute_boundary().await;
    let limits = limits();
    let mut decisions = vec![String::new(); limits.len()];
    let mut output = String::new();
    check_all(backend.as_ref(), &limits, &mut decisions, FIRST_CHECKS).await;
    let mut offset = 0;
    for step in STEPS {
        if let Some(file) = &jump_file {
            let seen = step_wall_clock(file, step);
            output.push_str(&format!("jump {} {seen}\n", step - offset));
            offset = step;
        }
        check_all(backend.as_ref(), &limits, &mut decisions, CHECKS_PER_STEP).await;
    }
    if let Some(file) = &jump_file {
        step_wall_clock(file, 0);
    }
    for ((name, _), decisions) in limits.iter().zip(decisions) {
        output.push_str(&format!("{name} {decisions}\n"));
    }
    output
}

/// `5/m` under three algorithms: a fixed window is aligned to the wall-clock minute, a log
/// slides and a bucket refills with time, so a decision made on the stepped wall clock would
/// allow again after either step.
fn limits() -> Vec<(&'static str, Limit)> {
    let rate = Rate::parse("5/m").unwrap_or_else(|error| fail(&error.to_string()));
    vec![
        ("fixed_window", Limit::fixed_window(rate.clone())),
        ("sliding_window", Limit::sliding_window(rate.clone())),
        ("token_bucket", Limit::token_bucket(rate)),
    ]
}

async fn check_all(
    backend: &dyn Backend,
    limits: &[(&str, Limit)],
    decisions: &mut [String],
    times: usize,
) {
    for _ in 0..times {
        for ((name, limit), decisions) in limits.iter().zip(decisions.iter_mut()) {
            let decision = backend
                .check(&format!("wall-clock:{name}"), limit)
                .await
                .unwrap_or_else(|error| fail(&format!("{name}: {error}")));
            decisions.push(if decision.allowed { 'A' } else { 'R' });
        }
    }
}

/// Waits while the minute is in its last seconds, so that the sequence runs within one
/// fixed window of the real clock, with or without steps.
async fn away_from_a_minute_boundary() {
    let second_of_minute = wall_secs() % 60;
    if second_of_minute >= 55 {
        tokio::time::sleep(Duration::from_secs(61 - second_of_minute.unsigned_abs())).await;
    }
}

/// Sets the wall clock `offset` seconds from the real time; returns how far it moved.
fn step_wall_clock(file: &Path, offset: i64) -> i64 {
    let before = wall_secs();
    std::fs::write(file, format!("{offset:+}\n"))
        .unwrap_or_else(|error| fail(&format!("writing {}: {error}", file.display())));
    wall_secs() - before
}

fn wall_secs() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}
