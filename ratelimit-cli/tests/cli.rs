//! The built `ratelimit` binary against live backends (the shared Redis, SQLite files), dead
//! ones (a Redis URL on a port nobody listens on) and none (the zero configuration): exit
//! codes, `--json` output, usage errors and `--help`.
//!
//! Every run gets its own temporary config file and its environment cleared of `RATELIMIT_*`
//! variables, so tests run in parallel and never depend on the caller's environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use ratelimit_core::config::ENV_VARS;
use ratelimit_core::{Backend, Limit, ManualClock, Rate, RedisBackend, SqlBackend};
use ratelimit_tests::services;
use serde_json::Value;

/// What one run of the binary produced.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:?}"))
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }
}

/// Runs `ratelimit` with `args`, the config file (if any) and extra environment variables.
fn ratelimit(config: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ratelimit"));
    for var in ENV_VARS {
        command.env_remove(var);
    }
    command.env_remove("RUST_LOG");
    if let Some(path) = config {
        command.arg("--config").arg(path);
    }
    command.args(args).envs(env.iter().copied());
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run ratelimit: {error}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, extension: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!(
            "ratelimit-cli-{name}-{}-{sequence}.{extension}",
            std::process::id()
        )))
    }

    fn config(name: &str, text: &str) -> Self {
        let file = Self::new(name, "toml");
        std::fs::write(&file.0, text).unwrap_or_else(|error| panic!("{error}"));
        file
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A Redis URL on a loopback port nobody listens on.
fn dead_redis_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("{error}"));
    format!("redis://127.0.0.1:{port}")
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

/// The entry of `name` in a report's `backends` array.
fn backend<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["backends"]
        .as_array()
        .and_then(|backends| backends.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in {report}"))
}

// ---- help and usage ----

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let run = ratelimit(None, &["--help"], &[]);
    run.assert_code(0);
    for command in [
        "health",
        "cleanup",
        "inspect",
        "reset",
        "--config",
        "Exit codes",
    ] {
        assert!(run.stdout.contains(command), "{command}: {}", run.stdout);
    }
    let run = ratelimit(None, &["cleanup", "--help"], &[]);
    run.assert_code(0);
    for option in ["--dry-run", "--batch-size", "--json"] {
        assert!(run.stdout.contains(option), "{option}: {}", run.stdout);
    }
}

#[test]
fn a_missing_command_is_a_usage_error() {
    ratelimit(None, &[], &[]).assert_code(2);
    ratelimit(None, &["frobnicate"], &[]).assert_code(2);
}

#[test]
fn batch_size_zero_is_a_usage_error_that_says_why() {
    let run = ratelimit(None, &["cleanup", "--batch-size", "0"], &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("--batch-size"), "{}", run.stderr);
    assert!(run.stderr.contains("at least 1"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let run = ratelimit(None, &["cleanup", "--batch-size", "many"], &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("many"), "{}", run.stderr);
}

#[test]
fn an_invalid_rate_is_a_usage_error() {
    let run = ratelimit(None, &["inspect", "k", "--rate", "5/M"], &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("5/M"), "{}", run.stderr);
    assert!(run.stderr.contains("lower case"), "{}", run.stderr);
}

#[test]
fn an_invalid_config_names_the_field_and_exits_2() {
    let config = TempFile::config(
        "invalid",
        "[circuit_breaker]\nrecovery_timeout = \"sixty\"\n",
    );
    let run = ratelimit(Some(config.path()), &["health"], &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("circuit_breaker.recovery_timeout"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("sixty"), "{}", run.stderr);
}

#[test]
fn an_invalid_variable_names_it_and_exits_2() {
    let run = ratelimit(
        None,
        &["health"],
        &[("RATELIMIT_ON_BACKEND_ERROR", "sometimes")],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("RATELIMIT_ON_BACKEND_ERROR"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("sometimes"), "{}", run.stderr);
}

#[test]
fn a_missing_config_file_exits_2() {
    let run = ratelimit(
        Some(Path::new("/nonexistent/ratelimit.toml")),
        &["health"],
        &[],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("/nonexistent/ratelimit.toml"),
        "{}",
        run.stderr
    );
}

// ---- health ----

#[test]
fn zero_config_health_is_one_memory_backend_and_says_it_is_for_smoke_tests() {
    let run = ratelimit(None, &["health", "--json"], &[]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["default_backend"], "memory");
    assert_eq!(report["backends"].as_array().map(Vec::len), Some(1));
    assert_eq!(backend(&report, "memory")["healthy"], true);
    assert!(run.stderr.contains("smoke tests"), "{}", run.stderr);

    let run = ratelimit(None, &["health"], &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("memory"), "{}", run.stdout);
    assert!(run.stdout.contains("healthy"), "{}", run.stdout);
}

#[test]
fn a_dead_redis_is_unhealthy_and_exits_1() {
    let url = dead_redis_url();
    let config = TempFile::config(
        "dead-redis",
        &format!("backend = \"redis\"\n[redis]\nurl = \"{url}\"\n"),
    );
    let run = ratelimit(Some(config.path()), &["health", "--json"], &[]);
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report["healthy"], false);
    let redis = backend(&report, "redis");
    assert_eq!(redis["healthy"], false);
    assert_eq!(redis["type"], "redis");
    assert_eq!(redis["url"], url.as_str());
    assert!(
        redis["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("not connected")),
        "{redis}"
    );
    assert_eq!(backend(&report, "memory")["healthy"], true);

    let run = ratelimit(Some(config.path()), &["health", "--verbose"], &[]);
    run.assert_code(1);
    assert!(run.stdout.contains("UNHEALTHY"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&url),
        "verbose shows the URL: {}",
        run.stdout
    );
}

#[test]
fn a_dead_failover_member_exits_1_though_the_failover_can_serve() {
    let config = TempFile::config(
        "dead-member",
        &format!(
            "backend = \"multi\"\n[[backends]]\nname = \"primary\"\ntype = \"redis\"\nurl = \"{}\"\n[multi]\nbackends = [\"primary\", \"memory\"]\n",
            dead_redis_url()
        ),
    );
    let run = ratelimit(Some(config.path()), &["health", "--json"], &[]);
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report["healthy"], false);
    let multi = backend(&report, "multi");
    assert_eq!(multi["healthy"], true, "memory can still serve: {multi}");
    let members = multi["members"].as_array().cloned().unwrap_or_default();
    let health = |name: &str| {
        members
            .iter()
            .find(|member| member["name"] == name)
            .map(|member| member["healthy"].clone())
    };
    assert_eq!(health("primary"), Some(Value::Bool(false)));
    assert_eq!(health("memory"), Some(Value::Bool(true)));
}

#[test]
fn variables_override_the_config_file() {
    let config = TempFile::config("env-override", "backend = \"memory\"\n");
    let url = dead_redis_url();
    let run = ratelimit(
        Some(config.path()),
        &["health", "--json"],
        &[
            ("RATELIMIT_BACKEND", "redis"),
            ("RATELIMIT_REDIS_URL", url.as_str()),
        ],
    );
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report["default_backend"], "redis");
    assert_eq!(backend(&report, "redis")["url"], url.as_str());
}

#[tokio::test]
async fn a_live_redis_is_healthy_and_exits_0() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = services::unique_prefix("cli_health");
    let config = TempFile::config(
        "live-redis",
        &format!(
            "backend = \"redis\"\nkey_prefix = \"{prefix}\"\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    );
    let run = ratelimit(Some(config.path()), &["health", "--json"], &[]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["healthy"], true);
    let entry = backend(&report, "redis");
    assert_eq!(entry["healthy"], true);
    assert!(entry["latency_ms"].is_number(), "{entry}");
}

// ---- credentials ----

/// The secrets [`secret_config`] hides in its URLs.
const SECRETS: [&str; 2] = ["s3cr3t", "hunter2"];

fn assert_no_secret(run: &Run) {
    for secret in SECRETS {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} shown: {run:#?}"
        );
    }
}

/// Backends on dead loopback ports (and a missing socket) whose URLs hold credentials in
/// every form: a password with `#`, `/`, `?` or `@`, and `password`, `pass`, `token`, `auth`,
/// `secret`, `sslpassword` parameters in any case.
fn secret_config() -> TempFile {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("{error}"));
    let backends = [
        (
            "redis",
            format!("redis://:s3cr3t#/?@@127.0.0.1:{port}/0?auth=hunter2"),
        ),
        (
            "redis",
            format!("redis://u:s3cr3t@127.0.0.1:{port}?Token=hunter2"),
        ),
        (
            "redis",
            "redis+unix:///nonexistent/redis.sock?db=1&pass=hunter2&secret=s3cr3t".to_owned(),
        ),
        (
            "database",
            format!("postgres://u:s3cr3t#/?x@127.0.0.1:{port}/app?password=hunter2"),
        ),
        (
            "database",
            format!("postgres://app@127.0.0.1:{port}/app?sslmode=disable&SSLPassword=hunter2"),
        ),
        (
            "database",
            format!("mysql://u:s3cr3t/@127.0.0.1:{port}/app?PASSWORD=hunter2"),
        ),
    ];
    let mut text = "backend = \"secret0\"\n".to_owned();
    for (index, (kind, url)) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[backends]]\nname = \"secret{index}\"\ntype = \"{kind}\"\nurl = \"{url}\"\n"
        ));
    }
    text.push_str("[multi]\nbackends = [\"secret1\", \"secret3\", \"memory\"]\n");
    TempFile::config("secrets", &text)
}

/// Logs of our crates at `debug`, so a leak in a log line fails the test too.
const VERBOSE_LOGS: (&str, &str) = (
    "RUST_LOG",
    "ratelimit_core=debug,ratelimit_cli=debug,ratelimit=debug",
);

#[test]
fn health_never_shows_a_credential() {
    let config = secret_config();
    let run = ratelimit(Some(config.path()), &["health", "--json"], &[VERBOSE_LOGS]);
    run.assert_code(1);
    assert_no_secret(&run);
    let report = run.json();
    let first = backend(&report, "secret0");
    assert_eq!(first["healthy"], false, "{first}");
    assert!(
        first["url"].as_str().is_some_and(
            |url| url.starts_with("redis://:***@127.0.0.1:") && url.ends_with("?auth=***")
        ),
        "the host stays, the secrets go: {first}"
    );
    for index in 0..6 {
        let entry = backend(&report, &format!("secret{index}"));
        assert!(
            entry["url"].as_str().is_some_and(|url| url.contains("***")),
            "{entry}"
        );
    }

    for args in [&["health", "--verbose"][..], &["health"]] {
        let run = ratelimit(Some(config.path()), args, &[VERBOSE_LOGS]);
        run.assert_code(1);
        assert_no_secret(&run);
        assert!(run.stdout.contains("UNHEALTHY"), "{run:#?}");
    }
    let verbose = ratelimit(Some(config.path()), &["health", "--verbose"], &[]);
    assert!(
        verbose.stdout.contains("postgres://u:***@127.0.0.1:"),
        "verbose shows where, masked: {}",
        verbose.stdout
    );
}

#[test]
fn inspect_reset_and_cleanup_never_show_a_credential() {
    let config = secret_config();
    for index in 0..6 {
        let name = format!("secret{index}");
        for args in [
            &["inspect", "k", "--backend", name.as_str()][..],
            &["inspect", "k", "--json", "--backend", name.as_str()],
            &["reset", "k", "--backend", name.as_str()],
        ] {
            let run = ratelimit(Some(config.path()), args, &[VERBOSE_LOGS]);
            run.assert_code(1);
            assert_no_secret(&run);
        }
    }
    let run = ratelimit(Some(config.path()), &["inspect", "k"], &[VERBOSE_LOGS]);
    run.assert_code(1);
    assert_no_secret(&run);
    let run = ratelimit(Some(config.path()), &["cleanup", "--json"], &[VERBOSE_LOGS]);
    run.assert_code(1);
    assert_no_secret(&run);
}

#[test]
fn variables_with_credentials_are_masked_too() {
    let run = ratelimit(
        None,
        &["health", "--json"],
        &[
            ("RATELIMIT_BACKEND", "database"),
            (
                "RATELIMIT_DATABASE_URL",
                "postgres://u:s3cr3t@127.0.0.1:1/app?sslpassword=hunter2",
            ),
            VERBOSE_LOGS,
        ],
    );
    run.assert_code(1);
    assert_no_secret(&run);
    let run = ratelimit(
        None,
        &["health"],
        &[("RATELIMIT_REDIS_URL", "http://u:s3cr3t@h/?pass=hunter2")],
    );
    run.assert_code(2);
    assert_no_secret(&run);
    assert!(run.stderr.contains("RATELIMIT_REDIS_URL"), "{}", run.stderr);
}

#[test]
fn a_config_syntax_error_names_the_line_not_the_password_on_it() {
    let config = TempFile::config(
        "secret-syntax",
        "backend = \"database\"\n[database]\nurl = \"postgres://u:s3cr3t@db/app?password=hunter2\n",
    );
    for args in [&["health", "--json"][..], &["inspect", "k"]] {
        let run = ratelimit(Some(config.path()), args, &[VERBOSE_LOGS]);
        run.assert_code(2);
        assert_no_secret(&run);
        assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    }
}

// ---- inspect and reset ----

#[test]
fn zero_config_inspect_uses_the_documented_default_rate() {
    let run = ratelimit(None, &["inspect", "some:key", "--json"], &[]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["rate"], "1000/h");
    assert_eq!(report["algorithm"], "fixed_window");
    assert_eq!(report["allowed"], true);
    assert_eq!(report["limit"], 1000);
    assert_eq!(report["remaining"], 999);
}

#[test]
fn inspect_takes_the_middleware_default_rate_and_algorithm() {
    let config = TempFile::config(
        "middleware",
        "[middleware]\ndefault_rate = \"7/m\"\nalgorithm = \"token_bucket\"\n",
    );
    let run = ratelimit(Some(config.path()), &["inspect", "k", "--json"], &[]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["rate"], "7/m");
    assert_eq!(report["algorithm"], "token_bucket");
    let run = ratelimit(Some(config.path()), &["inspect", "k", "--cost", "9"], &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("REJECTED"), "{}", run.stdout);
}

#[test]
fn inspect_on_an_unknown_backend_exits_2_and_lists_the_configured() {
    let run = ratelimit(None, &["inspect", "k", "--backend", "nope"], &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
    assert!(run.stderr.contains("memory"), "{}", run.stderr);
}

#[test]
fn inspect_and_reset_on_a_dead_redis_exit_1() {
    let config = TempFile::config(
        "dead-inspect",
        &format!(
            "backend = \"redis\"\n[redis]\nurl = \"{}\"\n",
            dead_redis_url()
        ),
    );
    let run = ratelimit(Some(config.path()), &["inspect", "k"], &[]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("backend `redis` failed"),
        "{}",
        run.stderr
    );
    let run = ratelimit(Some(config.path()), &["reset", "k", "--json"], &[]);
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert_eq!(backend(&report, "redis")["reset"], false);
    assert_eq!(backend(&report, "memory")["reset"], true);
}

#[tokio::test]
async fn inspect_sees_live_redis_counts_and_reset_clears_them() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = services::unique_prefix("cli_inspect");
    let config = TempFile::config(
        "live-inspect",
        &format!(
            "backend = \"redis\"\nkey_prefix = \"{prefix}\"\n[redis]\nurl = \"{}\"\n[multi]\nbackends = [\"redis\", \"memory\"]\n",
            redis.url()
        ),
    );
    let store = RedisBackend::builder(redis.url())
        .key_prefix(prefix.clone())
        .build()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let limit = Limit::fixed_window(rate("5/m"));
    for _ in 0..2 {
        let decision = store.check("app::login:ip:192.0.2.7", &limit).await;
        assert!(decision.is_ok_and(|d| d.allowed));
    }
    let inspect = || {
        ratelimit(
            Some(config.path()),
            &[
                "inspect",
                "app::login:ip:192.0.2.7",
                "--rate",
                "5/m",
                "--json",
            ],
            &[],
        )
    };
    let run = inspect();
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["backend"], "redis");
    assert_eq!(report["limit"], 5);
    assert_eq!(report["remaining"], 2, "two counted, the peek counts none");
    assert_eq!(inspect().json()["remaining"], 2, "inspect counts nothing");

    let run = ratelimit(
        Some(config.path()),
        &["reset", "app::login:ip:192.0.2.7", "--json"],
        &[],
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["ok"], true);
    assert_eq!(backend(&report, "redis")["reset"], true);
    assert!(
        backend(&report, "multi")["note"].is_string(),
        "a failover is skipped: its members are reset: {report}"
    );
    assert_eq!(inspect().json()["remaining"], 4);

    let run = ratelimit(
        Some(config.path()),
        &["reset", "app::login:ip:192.0.2.7"],
        &[],
    );
    run.assert_code(0);
    assert!(run.stdout.contains("reset"), "{}", run.stdout);
}

// ---- cleanup ----

#[test]
fn cleanup_without_sql_removes_nothing_and_says_why() {
    let config = TempFile::config(
        "no-sql",
        &format!(
            "[redis]\nurl = \"{}\"\n[multi]\nbackends = [\"redis\", \"memory\"]\n",
            dead_redis_url()
        ),
    );
    let run = ratelimit(Some(config.path()), &["cleanup", "--json"], &[]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["removed"], 0);
    for name in ["memory", "redis"] {
        let entry = backend(&report, name);
        assert_eq!(entry["removed"], 0, "{entry}");
        assert!(entry["note"].is_string(), "{entry}");
    }
    assert_eq!(backend(&report, "multi")["removed"], Value::Null);
    let run = ratelimit(Some(config.path()), &["cleanup"], &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("TTL"), "{}", run.stdout);
}

#[test]
fn cleanup_of_an_unreachable_database_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("{error}"));
    let config = TempFile::config(
        "dead-db",
        &format!("[database]\nurl = \"postgres://postgres@127.0.0.1:{port}/test\"\n"),
    );
    let run = ratelimit(Some(config.path()), &["cleanup", "--json"], &[]);
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert!(
        backend(&report, "database")["error"].is_string(),
        "{report}"
    );
}

#[tokio::test]
async fn cleanup_counts_then_removes_expired_sql_rows_in_batches() {
    let database = TempFile::new("cleanup", "sqlite");
    let url = format!("sqlite://{}?mode=rwc", database.path().display());
    let config = TempFile::config(
        "sqlite",
        &format!("backend = \"database\"\n[database]\nurl = \"{url}\"\ntable_prefix = \"cli_\"\n"),
    );
    // Rows written an hour ago under a one-second limit: expired by the database's clock now.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| {
            u64::try_from(now.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_sub(3_600_000)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    {
        let store = SqlBackend::builder(&url)
            .table_prefix("cli_")
            .clock(ManualClock::new(an_hour_ago))
            .build()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::fixed_window(rate("1/s"));
        for key in 0..5 {
            let decision = store.check(&format!("key:{key}"), &limit).await;
            assert!(decision.is_ok_and(|d| d.allowed));
        }
    }

    let dry_run = || {
        ratelimit(
            Some(config.path()),
            &["cleanup", "--dry-run", "--json"],
            &[],
        )
    };
    let run = dry_run();
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["would_remove"], 5);
    assert_eq!(report["removed"], 0);
    assert_eq!(backend(&report, "database")["would_remove"], 5);
    assert_eq!(
        dry_run().json()["would_remove"],
        5,
        "a dry run removes nothing"
    );

    let run = ratelimit(
        Some(config.path()),
        &["cleanup", "--batch-size", "2", "--json"],
        &[],
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["removed"], 5);
    assert_eq!(report["batch_size"], 2);
    assert_eq!(backend(&report, "database")["removed"], 5);
    assert_eq!(dry_run().json()["would_remove"], 0);

    let run = ratelimit(Some(config.path()), &["cleanup", "--dry-run"], &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("Dry run"), "{}", run.stdout);
}

#[tokio::test]
async fn inspect_finds_a_token_bucket_only_with_its_own_settings() {
    let database = TempFile::new("inspect-bucket", "sqlite");
    let url = format!("sqlite://{}?mode=rwc", database.path().display());
    let config = TempFile::config(
        "inspect-bucket",
        &format!("backend = \"database\"\n[database]\nurl = \"{url}\"\n"),
    );
    {
        let store = SqlBackend::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::token_bucket(rate("10/h")).bucket_size(20);
        let decision = store.check_n("api:ip:192.0.2.7", &limit, 5).await;
        assert!(decision.is_ok_and(|d| d.allowed && d.remaining == 15));
    }
    let inspect = |extra: &[&str]| {
        let mut args = vec![
            "inspect",
            "api:ip:192.0.2.7",
            "--rate",
            "10/h",
            "--algorithm",
            "token_bucket",
            "--json",
        ];
        args.extend_from_slice(extra);
        ratelimit(Some(config.path()), &args, &[])
    };
    let run = inspect(&["--bucket-size", "20"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["remaining"],
        14,
        "15 left, minus the imagined request"
    );
    let run = inspect(&["--bucket-size", "30"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["remaining"],
        29,
        "another limit: a full bucket of its own"
    );
    let run = inspect(&["--capacity", "3"]);
    run.assert_code(2);
    assert!(run.stderr.contains("capacity"), "{}", run.stderr);
}
