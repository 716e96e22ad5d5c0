//! The Redis server a bench runs against, through a plain connection of its own (version, CPU
//! time, command statistics, cleanup of the bench's keys), and the settings of a run, whose URL
//! must be on loopback.
//! Included by path, like `machine.rs`.

// Each bench reads only part of this.
#![allow(dead_code)]

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::runtime::{Builder, Runtime};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// What a Redis load bench runs, from the environment: `REDIS_URL` (default
/// `redis://127.0.0.1:6379`, loopback only), `REDIS_BENCH_ROUNDS` (5), `REDIS_BENCH_SECONDS` per
/// run (2), `REDIS_BENCH_TASKS` (50), and a key prefix unique to the run.
pub struct Settings {
    pub url: String,
    pub rounds: usize,
    pub run_time: Duration,
    pub tasks: usize,
    pub prefix: String,
}

impl Settings {
    /// The settings of a run whose keys go under `<prefix_name>:<pid>-<start µs>:`.
    pub fn from_env(prefix_name: &str) -> Self {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let host = host_of(&url);
        assert!(
            is_loopback(host),
            "REDIS_URL {url:?} is not on loopback (host {host:?}); this bench only targets \
             127.0.0.1, ::1 or localhost"
        );
        let number = |name: &str, default: f64| -> f64 {
            std::env::var(name).map_or(default, |value| {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
            })
        };
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Self {
            url,
            rounds: number("REDIS_BENCH_ROUNDS", 5.0) as usize,
            run_time: Duration::from_secs_f64(number("REDIS_BENCH_SECONDS", 2.0)),
            tasks: number("REDIS_BENCH_TASKS", 50.0) as usize,
            prefix: format!(
                "{prefix_name}:{}-{}:",
                std::process::id(),
                started.as_micros()
            ),
        }
    }
}

/// Runs `run` against the server of `settings`, then deletes every key under the run's prefix
/// (also when `run` panics) and fails if any is left.
pub fn run_and_clean_up(settings: &Settings, run: impl FnOnce(&Settings, &Server)) {
    let server = Server::connect(&settings.url);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(settings, &server)));
    let deleted = server.delete_prefix(&settings.prefix);
    let left = server.scan_prefix(&settings.prefix).len();
    println!(
        "cleanup: deleted {deleted} keys under {:?}; {left} left",
        settings.prefix
    );
    if let Err(payload) = outcome {
        panic::resume_unwind(payload);
    }
    assert_eq!(left, 0, "keys left under {:?}", settings.prefix);
}

/// The host of `redis://[user[:password]@]host[:port][/db]`.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Some(bracketed) = host_port.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    host_port.split(':').next().unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The Redis under test, through a plain connection of its own: version, CPU time, cleanup.
pub struct Server {
    runtime: Runtime,
    connection: redis::aio::MultiplexedConnection,
}

impl Server {
    pub fn connect(url: &str) -> Self {
        let runtime = Builder::new_current_thread().enable_all().build().unwrap();
        let client = redis::Client::open(url).unwrap();
        let connection = runtime
            .block_on(client.get_multiplexed_async_connection())
            .unwrap_or_else(|error| panic!("no Redis at {url}: {error}"));
        Self {
            runtime,
            connection,
        }
    }

    pub fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let mut connection = self.connection.clone();
        self.runtime
            .block_on(command.query_async(&mut connection))
            .unwrap()
    }

    pub fn info_field(&self, section: &str, field: &str) -> String {
        let info: String = self.query(redis::cmd("INFO").arg(section));
        info.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
            .trim()
            .to_owned()
    }

    pub fn version(&self) -> String {
        self.info_field("server", "redis_version")
    }

    /// The server's CPU time so far, user and system, over all its threads. Includes whatever
    /// other clients of a shared server make it do.
    pub fn cpu(&self) -> Duration {
        let seconds = |field| -> f64 { self.info_field("cpu", field).parse().unwrap() };
        Duration::from_secs_f64(seconds("used_cpu_user") + seconds("used_cpu_sys"))
    }

    /// Calls of one command so far and the µs spent in them (zero before the first call).
    pub fn command_stats(&self, command: &str) -> CommandStats {
        let info: String = self.query(redis::cmd("INFO").arg("commandstats"));
        let prefix = format!("cmdstat_{command}:");
        let Some(line) = info.lines().find_map(|line| line.strip_prefix(&prefix)) else {
            return CommandStats { calls: 0, usec: 0 };
        };
        // calls=N,usec=N,usec_per_call=F,...
        let field = |name: &str| -> u64 {
            line.split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .parse()
                .unwrap()
        };
        CommandStats {
            calls: field("calls"),
            usec: field("usec"),
        }
    }

    pub fn scan_prefix(&self, prefix: &str) -> Vec<String> {
        // The prefix is ours and holds no glob characters.
        let pattern = format!("{prefix}*");
        let mut keys = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self.query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1_000),
            );
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// SCAN + DEL until a full SCAN finds nothing; returns how many keys were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> usize {
        let mut deleted = 0;
        loop {
            let keys = self.scan_prefix(prefix);
            if keys.is_empty() {
                return deleted;
            }
            for batch in keys.chunks(500) {
                deleted += self.query::<usize>(redis::cmd("DEL").arg(batch));
            }
        }
    }
}

pub struct CommandStats {
    pub calls: u64,
    pub usec: u64,
}

impl CommandStats {
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            calls: self.calls.saturating_sub(earlier.calls),
            usec: self.usec.saturating_sub(earlier.usec),
        }
    }
}
