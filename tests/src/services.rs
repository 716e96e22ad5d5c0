//! Finding the Redis, PostgreSQL and MySQL servers that backend tests talk to.
//!
//! ```no_run
//! use ratelimit_tests::services;
//!
//! # async fn a_test() {
//! // `None` skips the test; with RATELIMIT_REQUIRE_SERVICES=1 a missing server panics instead.
//! let Some(redis) = services::redis().await else { return };
//! // Keys under this prefix belong to this test alone, even with tests running in parallel.
//! let prefix = services::unique_prefix("token_bucket_refills");
//! # let _ = (redis.url(), prefix);
//! # }
//! ```
//!
//! Each kind of server is looked up once per test binary, in this order:
//!
//! 1. the URL in `REDIS_URL` / `DATABASE_URL` / `MYSQL_URL`, used as given;
//! 2. the default loopback port (6379, 5432, 3306), if the server there speaks the protocol and
//!    accepts the login the tests use: `PING` without a password; `postgres` with trust
//!    authentication into database `test`; `root` without a password into database `test`;
//! 3. a private server started from the installed binaries on a free loopback port, shared by
//!    every test of the binary and stopped when the binary exits (see [`PrivateRedis`]).
//!
//! When all three fail, [`redis`], [`postgres`] and [`mysql`] log why and return `None`, unless
//! `RATELIMIT_REQUIRE_SERVICES=1`: then a missing service is a failure, not a skip, and they
//! panic with the reasons. [`discover`] returns the reasons instead.
//!
//! Fault tests never stop the shared servers: they start their own with [`PrivateRedis::start`],
//! [`PrivatePostgres::start`] or [`PrivateMysql::start`], and may kill them.

mod mysql;
mod postgres;
mod probe;
mod process;
mod redis;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::OnceCell;

pub use mysql::PrivateMysql;
pub use postgres::PrivatePostgres;
pub use process::ServerError;
pub use redis::PrivateRedis;

use process::ServerProcess;

/// Environment variable that turns a missing service from a skip into a failure when it is `1`.
pub const REQUIRE_SERVICES_VAR: &str = "RATELIMIT_REQUIRE_SERVICES";

/// A kind of server the backends talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Redis, Self::Postgres, Self::Mysql];

    /// The environment variable holding this kind's URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Redis => "REDIS_URL",
            Self::Postgres => "DATABASE_URL",
            Self::Mysql => "MYSQL_URL",
        }
    }

    /// The port a server of this kind listens on by default.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Redis => 6379,
            Self::Postgres => 5432,
            Self::Mysql => 3306,
        }
    }

    /// The URL tests use for a server of this kind on a loopback `port`.
    pub fn loopback_url(self, port: u16) -> String {
        match self {
            Self::Redis => format!("redis://127.0.0.1:{port}"),
            Self::Postgres => format!("postgres://postgres@127.0.0.1:{port}/test"),
            Self::Mysql => format!("mysql://root@127.0.0.1:{port}/test"),
        }
    }

    /// Checks that the server at `address` (`host:port`) speaks this kind's protocol and accepts
    /// the login of [`Kind::loopback_url`]; the error says why not.
    pub async fn probe(self, address: &str) -> Result<(), String> {
        match self {
            Self::Redis => redis::probe(address).await,
            Self::Postgres => postgres::probe(address).await,
            Self::Mysql => mysql::probe(address).await,
        }
    }

    /// Whether `url` from [`Kind::env_var`] is meant for this kind (`DATABASE_URL` in particular
    /// may name another database).
    fn accepts_url(self, url: &str) -> bool {
        let schemes: &[&str] = match self {
            Self::Redis => &["redis://", "rediss://", "redis+unix://", "unix://"],
            Self::Postgres => &["postgres://", "postgresql://"],
            Self::Mysql => &["mysql://", "mariadb://"],
        };
        schemes.iter().any(|scheme| url.starts_with(scheme))
    }

    async fn start_private(self) -> Result<ServerProcess, ServerError> {
        match self {
            Self::Redis => PrivateRedis::start().await.map(PrivateRedis::into_process),
            Self::Postgres => PrivatePostgres::start()
                .await
                .map(PrivatePostgres::into_process),
            Self::Mysql => PrivateMysql::start().await.map(PrivateMysql::into_process),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Redis => "Redis",
            Self::Postgres => "PostgreSQL",
            Self::Mysql => "MySQL",
        })
    }
}

/// Where a [`Service`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The URL came from the kind's environment variable.
    Env,
    /// A server was already listening on the default loopback port.
    DefaultPort,
    /// A private server was started for this test binary.
    Private,
}

/// A server tests may use, shared by every test of the binary.
#[derive(Debug, Clone)]
pub struct Service {
    kind: Kind,
    url: String,
    origin: Origin,
    /// Keeps a private server running: discovered services live in statics, which are never
    /// dropped, so it runs until the test binary exits.
    _server: Option<Arc<ServerProcess>>,
}

impl Service {
    /// The URL to connect to, e.g. `redis://127.0.0.1:6379`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kind of server.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where the server was found.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The `host:port` part of the URL (for raw TCP, e.g. a fault-injecting proxy), if it has one.
    pub fn address(&self) -> Option<&str> {
        let (_, rest) = self.url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, after)| after);
        (!host_port.is_empty()).then_some(host_port)
    }
}

/// Why no server of a kind could be found or started: one reason per place looked at.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no {kind} server: {}", .reasons.join("; "))]
pub struct Unavailable {
    kind: Kind,
    reasons: Vec<String>,
}

impl Unavailable {
    /// The kind that is missing.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What was tried and why it failed, in lookup order.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

/// The Redis server for tests; `None` (after a warning) skips the test.
///
/// # Panics
/// When no server is available and `RATELIMIT_REQUIRE_SERVICES=1`.
pub async fn redis() -> Option<Service> {
    available(Kind::Redis).await
}

/// The PostgreSQL server for tests; `None` (after a warning) skips the test.
///
/// # Panics
/// When no server is available and `RATELIMIT_REQUIRE_SERVICES=1`.
pub async fn postgres() -> Option<Service> {
    available(Kind::Postgres).await
}

/// The MySQL server for tests; `None` (after a warning) skips the test.
///
/// # Panics
/// When no server is available and `RATELIMIT_REQUIRE_SERVICES=1`.
pub async fn mysql() -> Option<Service> {
    available(Kind::Mysql).await
}

async fn available(kind: Kind) -> Option<Service> {
    match discover(kind).await {
        Ok(service) => Some(service),
        Err(unavailable) => skip_or_fail(unavailable),
    }
}

/// Finds (or starts) the server of `kind`; the lookup runs once per test binary and its result,
/// success or failure, is shared by every later call.
///
/// # Errors
/// When no server was configured, none listens on the default port, and none could be started.
pub async fn discover(kind: Kind) -> Result<Service, Unavailable> {
    static REDIS: OnceCell<Result<Service, Unavailable>> = OnceCell::const_new();
    static POSTGRES: OnceCell<Result<Service, Unavailable>> = OnceCell::const_new();
    static MYSQL: OnceCell<Result<Service, Unavailable>> = OnceCell::const_new();
    let cell = match kind {
        Kind::Redis => &REDIS,
        Kind::Postgres => &POSTGRES,
        Kind::Mysql => &MYSQL,
    };
    cell.get_or_init(|| look_up(kind)).await.clone()
}

async fn look_up(kind: Kind) -> Result<Service, Unavailable> {
    let mut reasons = Vec::new();
    let found = |url: String, origin, server| {
        tracing::info!(%kind, %url, ?origin, "using test server");
        Ok(Service {
            kind,
            url,
            origin,
            _server: server,
        })
    };

    let var = kind.env_var();
    match std::env::var(var) {
        Ok(url) if kind.accepts_url(&url) => return found(url, Origin::Env, None),
        Ok(url) if url.is_empty() => reasons.push(format!("{var} is empty")),
        Ok(url) => reasons.push(format!("{var}={url:?} is not a {kind} URL")),
        Err(error) => reasons.push(format!("{var}: {error}")),
    }

    let port = kind.default_port();
    match kind.probe(&format!("127.0.0.1:{port}")).await {
        Ok(()) => return found(kind.loopback_url(port), Origin::DefaultPort, None),
        Err(error) => reasons.push(format!("default port: {error}")),
    }

    match kind.start_private().await {
        Ok(server) => {
            let url = server.url().to_owned();
            found(url, Origin::Private, Some(Arc::new(server)))
        }
        Err(error) => {
            reasons.push(format!("private server: {error}"));
            Err(Unavailable { kind, reasons })
        }
    }
}

/// Whether a missing service must fail the test (`RATELIMIT_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VAR).is_ok_and(|value| value.trim() == "1")
}

/// Skips (logs `why` and returns `None`) or, when [`services_required`], panics with `why`.
///
/// # Panics
/// When `RATELIMIT_REQUIRE_SERVICES=1`.
pub fn skip_or_fail<T>(why: impl fmt::Display) -> Option<T> {
    if services_required() {
        panic!("{why}\n({REQUIRE_SERVICES_VAR}=1, so a missing service fails the test)");
    }
    tracing::warn!("SKIPPED: {why} (set {REQUIRE_SERVICES_VAR}=1 to fail instead)");
    None
}

/// A key prefix no other test shares, in this process or any other: the test name (sanitized,
/// at most 48 characters), the process id, a per-process counter and the time, ending in `:`.
pub fn unique_prefix(test_name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let name: String = test_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    format!("{name}:{}:{sequence}:{nanos:x}:", std::process::id())
}

/// A SQL table prefix no other test shares: `test` (cut to fit) and [`unique_prefix`]'s unique
/// tail, lower-case letters, digits and `_`, at most 40 characters (the backend's limit).
#[must_use]
pub fn unique_sql_prefix(test: &str) -> String {
    let sanitize = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let unique_tail = sanitize(&unique_prefix(""));
    let name: String = sanitize(test)
        .chars()
        .take(40_usize.saturating_sub(unique_tail.len()))
        .collect();
    format!("{name}{unique_tail}")
}
