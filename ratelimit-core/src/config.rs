//! Configuration from a TOML file and `RATELIMIT_*` environment variables (feature `config`).
//!
//! ```
//! use ratelimit_core::{Config, Registry};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml_str(
//!     r#"
//!     backend = "memory"
//!     on_backend_error = "deny"
//!     trusted_proxies = ["10.0.0.0/8"]
//!     [middleware]
//!     default_rate = "1000/h"
//!     "#,
//! )?
//! // RATELIMIT_* variables override the file; tests pass pairs instead of reading the process
//! // environment.
//! .with_env_vars([("RATELIMIT_KEY_PREFIX", "shop:")])?;
//! let registry = Registry::from_config(&config).await?;
//! assert_eq!(registry.default_backend_name(), "memory");
//! assert_eq!(config.key_prefix(), "shop:");
//! # Ok(()) }
//! ```
//!
//! # Loading
//!
//! | call | reads |
//! | --- | --- |
//! | [`Config::load`]`(Some(path))` | the file, then the environment over it (what a server or the CLI wants) |
//! | [`Config::load`]`(None)`, [`Config::from_env`] | the environment over the defaults |
//! | [`Config::from_toml_file`], [`Config::from_toml_str`] | the file (or text) alone |
//! | [`Config::with_env_overrides`] | the environment over an already loaded config |
//! | [`Config::from_env_vars`], [`Config::with_env_vars`] | given `(name, value)` pairs instead of the process environment |
//!
//! Every value is checked while loading: rates are parsed with [`Rate::parse`], durations,
//! URLs, networks and names are checked, and every backend a field names must be configured.
//! An error names the field (a dotted path such as `circuit_breaker.recovery_timeout` or
//! `middleware.rate_limits."/api/"`, or the environment variable), the value, and what is
//! expected. Unknown fields are errors, so a misspelt one never silently does nothing. A TOML
//! syntax or type error names the line, column and field but never the text written there,
//! and every value an error shows has its credentials masked ([`crate::redact`]).
//!
//! # The file
//!
//! ```toml
//! backend = "redis"                 # default backend: memory | redis | database | multi | a [[backends]] name
//! key_prefix = "ratelimit:"         # Redis key prefix (default "ratelimit:")
//! on_backend_error = "allow"        # allow | deny (default allow)
//! trusted_proxies = ["10.0.0.0/8"]  # CIDRs or addresses whose client IP header is believed
//! client_ip_header = "X-Forwarded-For"  # the one header read from trusted proxies (default); or
//!                                   # Forwarded, X-Real-IP, CF-Connecting-IP, True-Client-IP,
//!                                   # Fly-Client-IP (any case)
//! ipv6_prefix = 64                  # IPv6 clients are grouped by this prefix (0..=128, default 64)
//! [redis]
//! url = "redis://127.0.0.1:6379"    # the backend named "redis"
//! [database]
//! url = "postgres://postgres@127.0.0.1:5432/test"   # the backend named "database"
//! table_prefix = "ratelimit_"       # optional; tables <prefix>state_v2 and <prefix>log_v3
//! [[backends]]                      # more named backends, for failover and `backend = ".."`
//! name = "primary_redis"
//! type = "redis"                    # memory | redis | database
//! url = "redis://10.0.0.5:6379"     # required for redis and database; table_prefix optional
//! [multi]                           # the backend named "multi": failover, first healthy wins
//! backends = ["primary_redis", "memory"]
//! [circuit_breaker]                 # for every member of [multi]; defaults shown
//! failure_threshold = 5
//! recovery_timeout = "60s"          # durations: a whole number and ms, s, m, h or d
//! reset_timeout = "300s"
//! half_open_max_calls = 1
//! backoff_multiplier = 2.0
//! backoff_max = "300s"
//! [middleware]                      # rules for ratelimit_axum::RateLimitLayer
//! default_rate = "1000/h"
//! skip_paths = ["/health"]
//! algorithm = "fixed_window"        # optional, default fixed_window
//! backend = "redis"                 # optional, default: the default backend
//! [middleware.rate_limits]          # path prefix = rate; the longest matching prefix wins
//! "/api/auth/" = "10/m"
//! "/api/" = "500/h"
//! ```
//!
//! Backend names: `memory` always exists (an in-process store); `redis` exists when a Redis URL
//! is set, `database` when a database URL is set, `multi` when `[multi]` is present, and each
//! `[[backends]]` entry adds its own name (which may not be one of those four). `backend`
//! defaults to `memory`, even when a Redis URL is set: choose the store explicitly.
//!
//! # The environment
//!
//! | variable | overrides |
//! | --- | --- |
//! | `RATELIMIT_BACKEND` | `backend` |
//! | `RATELIMIT_REDIS_URL` | `[redis] url` |
//! | `RATELIMIT_DATABASE_URL` | `[database] url` |
//! | `RATELIMIT_KEY_PREFIX` | `key_prefix` |
//! | `RATELIMIT_ON_BACKEND_ERROR` | `on_backend_error` |
//! | `RATELIMIT_TRUSTED_PROXIES` | `trusted_proxies`, comma-separated |
//! | `RATELIMIT_CLIENT_IP_HEADER` | `client_ip_header` |
//!
//! A variable that is unset or empty leaves the file's value alone; other `RATELIMIT_*`
//! variables are not read.

mod build;
mod env;
mod error;
mod file;
#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
mod lazy;
mod load;
mod value;

use std::fmt;
use std::path::Path;

use ipnet::IpNet;

use crate::algorithm::Algorithm;
use crate::circuit::CircuitBreakerConfig;
use crate::client_ip::ClientIpHeader;
use crate::rate::Rate;
use crate::redact;
use crate::registry::{DEFAULT_BACKEND_NAME, DEFAULT_IPV6_PREFIX, OnError};

pub use build::ConnectPolicy;
pub use env::ENV_VARS;
pub use error::ConfigError;

/// The key prefix unless configured: the Redis backend's default.
pub const DEFAULT_KEY_PREFIX: &str = "ratelimit:";

/// The SQL table prefix unless configured: the SQL backend's default.
pub const DEFAULT_TABLE_PREFIX: &str = "ratelimit_";

/// The name of the backend configured by `[redis]`.
pub const REDIS_BACKEND_NAME: &str = "redis";

/// The name of the backend configured by `[database]`.
pub const DATABASE_BACKEND_NAME: &str = "database";

/// The name of the backend configured by `[multi]`.
pub const MULTI_BACKEND_NAME: &str = "multi";

/// A loaded and checked configuration; see the module docs for the format.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    default_backend: Option<String>,
    /// Where `default_backend` came from (`backend` or `RATELIMIT_BACKEND`), for messages.
    default_backend_field: &'static str,
    key_prefix: String,
    on_backend_error: OnError,
    trusted_proxies: Vec<IpNet>,
    client_ip_header: ClientIpHeader,
    ipv6_prefix: u8,
    /// Built-in and named backends in registry order: memory, redis, database, the
    /// `[[backends]]` entries, multi.
    backends: Vec<BackendConfig>,
    circuit_breaker: CircuitBreakerConfig,
    middleware: Option<MiddlewareConfig>,
}

/// One backend the registry will hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    name: String,
    kind: BackendKind,
    /// Where it was configured (`redis.url`, `backends[0]`, `RATELIMIT_REDIS_URL`, ..).
    source: String,
}

impl BackendConfig {
    /// Its name in the registry.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it is and where it connects.
    #[must_use]
    pub fn kind(&self) -> &BackendKind {
        &self.kind
    }

    /// The field (or environment variable) that configured it, e.g. `backends[0]`.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The store behind a [`BackendConfig`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// An in-process [`crate::MemoryBackend`].
    Memory,
    /// A `RedisBackend` at `url`, with the config's `key_prefix`.
    Redis { url: String },
    /// A `SqlBackend` at `url` (the scheme picks the engine).
    Database { url: String, table_prefix: String },
    /// A [`crate::MultiBackend`] over the named backends, in order.
    Multi { members: Vec<String> },
}

impl BackendKind {
    /// `memory`, `redis`, `database` or `multi`.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis { .. } => "redis",
            Self::Database { .. } => "database",
            Self::Multi { .. } => "multi",
        }
    }
}

// URLs may hold passwords: never print them whole.
impl fmt::Debug for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redact::url(url))
                .finish(),
            Self::Database { url, table_prefix } => f
                .debug_struct("Database")
                .field("url", &redact::url(url))
                .field("table_prefix", table_prefix)
                .finish(),
            Self::Multi { members } => f.debug_struct("Multi").field("members", members).finish(),
        }
    }
}

/// The `[middleware]` section: rules for `ratelimit_axum::RateLimitLayer`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MiddlewareConfig {
    /// The rate of paths no prefix matches.
    pub default_rate: Option<Rate>,
    /// Paths (prefix match) that are never counted.
    pub skip_paths: Vec<String>,
    /// Path prefix and rate, longest prefix first (the order the layer matches in).
    pub rate_limits: Vec<(String, Rate)>,
    /// The algorithm of every rule (default fixed window).
    pub algorithm: Algorithm,
    /// The backend the rules count in (default: the registry's default backend).
    pub backend: Option<String>,
}

impl Default for Config {
    /// The zero configuration: one memory backend, failures allowed, no trusted proxies.
    fn default() -> Self {
        Self {
            default_backend: None,
            default_backend_field: "backend",
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            on_backend_error: OnError::default(),
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::default(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            backends: vec![BackendConfig {
                name: DEFAULT_BACKEND_NAME.to_owned(),
                kind: BackendKind::Memory,
                source: "built-in".to_owned(),
            }],
            circuit_breaker: CircuitBreakerConfig::default(),
            middleware: None,
        }
    }
}

impl Config {
    /// The file at `path` (if any), then the process environment over it.
    ///
    /// # Errors
    /// An unreadable file, or any invalid field or variable (see [`ConfigError`]).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::from_toml_file(path)?.with_env_overrides(),
            None => Self::from_env(),
        }
    }

    /// The file at `path` alone (no environment).
    ///
    /// # Errors
    /// An unreadable file, or any invalid field.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file(file::parse(&text, &path.display().to_string())?)
    }

    /// TOML text alone (no environment).
    ///
    /// # Errors
    /// Any invalid field.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_file(file::parse(text, "TOML text")?)
    }

    /// The defaults with the process environment over them.
    ///
    /// # Errors
    /// Any invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::default().with_env_overrides()
    }

    /// The defaults with `vars` over them, as if they were the environment.
    ///
    /// # Errors
    /// Any invalid variable.
    pub fn from_env_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::default().with_env_vars(vars)
    }

    /// This configuration with the process environment's `RATELIMIT_*` variables over it.
    ///
    /// # Errors
    /// Any invalid variable (one that is not UTF-8 included), or a combination that no longer
    /// works (e.g. `RATELIMIT_BACKEND=redis` with no Redis URL).
    pub fn with_env_overrides(self) -> Result<Self, ConfigError> {
        let vars = env::read_process_env()?;
        self.with_env_vars(vars)
    }

    /// This configuration with `vars` over it, as if they were the environment. Names other
    /// than [`ENV_VARS`] are ignored.
    ///
    /// # Errors
    /// Any invalid variable, or a combination that no longer works.
    pub fn with_env_vars<I, K, V>(mut self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (name, value) in vars {
            env::apply(&mut self, name.as_ref(), value.as_ref())?;
        }
        self.check_references()?;
        Ok(self)
    }

    /// The backend of limits that name none (`memory` unless configured).
    #[must_use]
    pub fn default_backend(&self) -> &str {
        self.default_backend
            .as_deref()
            .unwrap_or(DEFAULT_BACKEND_NAME)
    }

    /// The prefix of every Redis key.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The failure policy of limits that set none.
    #[must_use]
    pub fn on_backend_error(&self) -> OnError {
        self.on_backend_error
    }

    /// Networks whose client IP header is believed.
    #[must_use]
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// The one header that carries the client address when the peer is a trusted proxy.
    #[must_use]
    pub fn client_ip_header(&self) -> ClientIpHeader {
        self.client_ip_header
    }

    /// How many leading bits of an IPv6 address identify one client.
    #[must_use]
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// Every backend, in registry order: memory, redis, database, `[[backends]]`, multi.
    #[must_use]
    pub fn backends(&self) -> &[BackendConfig] {
        &self.backends
    }

    /// The backend named `name`.
    #[must_use]
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|backend| backend.name == name)
    }

    /// The circuit breaker of every failover member.
    #[must_use]
    pub fn circuit_breaker(&self) -> &CircuitBreakerConfig {
        &self.circuit_breaker
    }

    /// The `[middleware]` section, if present.
    #[must_use]
    pub fn middleware(&self) -> Option<&MiddlewareConfig> {
        self.middleware.as_ref()
    }

    /// Sets the `redis` backend's URL, adding the backend after `memory` if it is new.
    fn set_redis_url(&mut self, url: String, source: &str) {
        let kind = BackendKind::Redis { url };
        self.set_builtin(REDIS_BACKEND_NAME, kind, source, 1);
    }

    /// Sets the `database` backend's URL (and table prefix, if given), adding the backend after
    /// `memory` and `redis` if it is new.
    fn set_database(&mut self, url: String, table_prefix: Option<String>, source: &str) {
        let table_prefix =
            table_prefix.unwrap_or_else(|| match self.backend_kind(DATABASE_BACKEND_NAME) {
                Some(BackendKind::Database { table_prefix, .. }) => table_prefix.clone(),
                _ => DEFAULT_TABLE_PREFIX.to_owned(),
            });
        let position = 1 + usize::from(self.backend(REDIS_BACKEND_NAME).is_some());
        let kind = BackendKind::Database { url, table_prefix };
        self.set_builtin(DATABASE_BACKEND_NAME, kind, source, position);
    }

    fn backend_kind(&self, name: &str) -> Option<&BackendKind> {
        self.backend(name).map(BackendConfig::kind)
    }

    fn set_builtin(&mut self, name: &str, kind: BackendKind, source: &str, position: usize) {
        let backend = BackendConfig {
            name: name.to_owned(),
            kind,
            source: source.to_owned(),
        };
        match self
            .backends
            .iter_mut()
            .find(|existing| existing.name == name)
        {
            Some(existing) => *existing = backend,
            None => self
                .backends
                .insert(position.min(self.backends.len()), backend),
        }
    }

    /// Checks that every backend a field names is configured: the failover members, the
    /// default backend and the middleware's backend. Runs again after environment overrides,
    /// which may add (or need) a URL.
    fn check_references(&self) -> Result<(), ConfigError> {
        if let Some(BackendKind::Multi { members }) = self.backend_kind(MULTI_BACKEND_NAME) {
            for (index, member) in members.iter().enumerate() {
                self.require_backend(format!("multi.backends[{index}]"), member, Members::Stores)?;
            }
        }
        if let Some(name) = &self.default_backend {
            self.require_backend(self.default_backend_field.to_owned(), name, Members::Any)?;
        }
        if let Some(name) = self.middleware.as_ref().and_then(|m| m.backend.as_ref()) {
            self.require_backend("middleware.backend".to_owned(), name, Members::Any)?;
        }
        Ok(())
    }

    /// Checks that `field`'s `name` is a configured backend of the `allowed` kinds.
    fn require_backend(
        &self,
        field: String,
        name: &str,
        allowed: Members,
    ) -> Result<(), ConfigError> {
        if self.backend(name).is_some() && (allowed == Members::Any || name != MULTI_BACKEND_NAME) {
            return Ok(());
        }
        match name {
            REDIS_BACKEND_NAME => Err(ConfigError::MissingUrl {
                field,
                value: name.to_owned(),
                kind: "Redis",
                fix: "add `[redis] url = \"redis://127.0.0.1:6379\"` or set RATELIMIT_REDIS_URL",
            }),
            DATABASE_BACKEND_NAME => Err(ConfigError::MissingUrl {
                field,
                value: name.to_owned(),
                kind: "database",
                fix: "add `[database] url = \"postgres://..\"` or set RATELIMIT_DATABASE_URL",
            }),
            _ => Err(self.unknown_backend(field, name, allowed)),
        }
    }

    fn unknown_backend(&self, field: String, name: &str, allowed: Members) -> ConfigError {
        ConfigError::UnknownBackend {
            field,
            value: name.to_owned(),
            configured: self
                .backends
                .iter()
                .filter(|backend| allowed == Members::Any || backend.name != MULTI_BACKEND_NAME)
                .map(|backend| backend.name.clone())
                .collect(),
        }
    }
}

/// Which backends a field may name: a failover member must be a store, not `multi` itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Members {
    Any,
    Stores,
}
