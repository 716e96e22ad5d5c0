//! A step of the host's wall clock (NTP, an operator, a VM resumed) changes no decision: the
//! memory store counts on a monotonic clock anchored to wall time once, and Redis decides on
//! the server's `TIME`. Checked for real: a child process (`src/bin/wall_clock_jump.rs`) runs
//! `5/m` checks while libfaketime steps its wall clock back an hour, then forward two (its
//! monotonic clock untouched, as with a real step), and its decisions must be those of the
//! same sequence without the steps: five allowed, then rejected.
//!
//! Needs libfaketime (Debian package `faketime`); without it the tests skip, or fail when
//! `RATELIMIT_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ratelimit_tests::expiry_audit;
use ratelimit_tests::services::{self, unique_prefix};

/// What every limit of the child's sequence decides, stepped or not: five allowed, then the
/// two checks after each step rejected.
const EXPECTED: &str = "AAAAARRRR";

/// The child's limits, as it names them.
const LIMITS: [&str; 3] = ["fixed_window", "sliding_window", "token_bucket"];

/// Where distributions install libfaketime's multi-threaded variant.
const LIBRARY_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime",
    "/usr/lib/aarch64-linux-gnu/faketime",
    "/usr/lib/faketime",
    "/usr/local/lib/faketime",
];

fn libfaketime() -> Option<PathBuf> {
    LIBRARY_DIRS
        .iter()
        .map(|dir| Path::new(dir).join("libfaketimeMT.so.1"))
        .find(|library| library.is_file())
}

/// Runs the child with `args`, its wall clock stepped through libfaketime at `library` when
/// given; returns its output.
fn run_child(args: &[String], library: Option<&Path>, test: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wall_clock_jump"));
    child.args(args);
    // Kept alive until the child has exited: it is the child's clock.
    let mut timestamp_file = None;
    if let Some(library) = library {
        let file = std::env::temp_dir().join(format!("{}faketime", unique_prefix(test)));
        std::fs::write(&file, "+0\n").unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        child
            .env("LD_PRELOAD", library)
            .env("FAKETIME_TIMESTAMP_FILE", &file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("DONT_FAKE_MONOTONIC", "1")
            .env("CLOCK_JUMP_FILE", &file);
        timestamp_file = Some(file);
    }
    let output = child
        .output()
        .unwrap_or_else(|e| panic!("running the wall_clock_jump child: {e}"));
    if let Some(file) = timestamp_file {
        let _ = std::fs::remove_file(file);
    }
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The child's decisions per limit, after checking that every step it reports moved its wall
/// clock as asked (a library that failed to load would step nothing and prove nothing).
fn decisions(output: &str, stepped: bool) -> Vec<(String, String)> {
    let mut steps = 0;
    let mut decisions = Vec::new();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["jump", asked, seen] => {
                let asked: i64 = asked.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
                let seen: i64 = seen.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
                assert!(
                    (seen - asked).abs() <= 5,
                    "the wall clock moved {seen} s, not {asked} s"
                );
                steps += 1;
            }
            [limit, seen] => decisions.push(((*limit).to_owned(), (*seen).to_owned())),
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }
    assert_eq!(steps, if stepped { 2 } else { 0 }, "{output}");
    decisions
}

/// Runs the sequence with and without steps (`args` gives the child's arguments for each run,
/// named `steady` and `stepped`) and compares both with [`EXPECTED`].
fn assert_steps_change_nothing(args: impl Fn(&str) -> Vec<String>, test: &str) {
    let Some(library) = libfaketime() else {
        services::skip_or_fail::<()>(format!(
            "libfaketime is not installed (looked in {LIBRARY_DIRS:?}; \
             `apt-get install faketime` installs it)"
        ));
        return;
    };
    let steady = decisions(&run_child(&args("steady"), None, test), false);
    let stepped = decisions(&run_child(&args("stepped"), Some(&library), test), true);
    let expected: Vec<(String, String)> = LIMITS
        .iter()
        .map(|limit| ((*limit).to_owned(), EXPECTED.to_owned()))
        .collect();
    assert_eq!(steady, expected, "without steps");
    assert_eq!(
        stepped, expected,
        "with the wall clock stepped -1 h, then +2 h"
    );
}

#[test]
fn memory_decisions_ignore_wall_clock_steps() {
    assert_steps_change_nothing(|_| vec!["memory".to_owned()], "wall_clock_memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_decisions_ignore_wall_clock_steps() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let url = redis.url().to_owned();
    let prefix = unique_prefix("wall_clock_redis");
    let run = {
        let (url, prefix) = (url.clone(), prefix.clone());
        // Each run on keys of its own, under the test's prefix.
        move || {
            let args = |run: &str| vec!["redis".to_owned(), url.clone(), format!("{prefix}{run}:")];
            assert_steps_change_nothing(args, "wall_clock_redis");
        }
    };
    if let Err(error) = tokio::task::spawn_blocking(run).await {
        std::panic::resume_unwind(error.into_panic());
    }
    for run in ["steady", "stepped"] {
        expiry_audit::assert_redis_keys_expire(&url, &format!("{prefix}{run}:")).await;
    }
}
