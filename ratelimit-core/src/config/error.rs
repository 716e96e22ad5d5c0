//! Why a configuration was rejected. Every message names the field (a dotted path such as
//! `circuit_breaker.recovery_timeout`, or the environment variable it came from), shows the
//! value, and says what would be accepted.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::rate::RateParseError;
use crate::registry::RegistryError;

/// A configuration that cannot be loaded or cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, a field is unknown, or a value has the wrong type. The message
    /// names where, never what is written there (the line may hold a password).
    #[error("{}{origin}{}: {message}", in_field(field), at(*line, *column))]
    Syntax {
        /// The file, or `TOML text` for text given in memory.
        origin: String,
        /// The dotted path of the field (`.` for the document itself).
        field: String,
        /// The 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The 1-based column (in characters) on that line.
        column: Option<usize>,
        /// The parser's message, without the value it found (`invalid type: string,
        /// expected a whole number`).
        message: String,
    },
    /// A rate string that does not parse.
    #[error("`{field}`: {source}")]
    InvalidRate {
        field: String,
        #[source]
        source: RateParseError,
    },
    /// A duration string that does not parse.
    #[error(
        "`{field}` = \"{value}\": {problem}; write a whole number and a unit (ms, s, m, h or d), e.g. \"60s\", \"5m\" or \"250ms\""
    )]
    InvalidDuration {
        field: String,
        value: String,
        problem: &'static str,
    },
    /// A value that must be one of a few names.
    #[error("`{field}` = \"{value}\" is not a valid choice; expected {expected}")]
    UnknownChoice {
        field: String,
        value: String,
        expected: &'static str,
    },
    /// A number outside its range.
    #[error("`{field}` = {value} is out of range; expected {expected}")]
    OutOfRange {
        field: String,
        value: String,
        expected: &'static str,
    },
    /// A URL with a scheme the backend does not speak (passwords are masked in `value`).
    #[error("`{field}` = \"{value}\" is not a {kind} URL; expected {expected}")]
    InvalidUrl {
        field: String,
        value: String,
        kind: &'static str,
        expected: &'static str,
    },
    /// A backend that needs a URL has none.
    #[error("`{field}` = \"{value}\" needs a {kind} URL; {fix}")]
    MissingUrl {
        field: String,
        value: String,
        kind: &'static str,
        fix: &'static str,
    },
    /// A URL given to a backend that takes none.
    #[error("`{field}` is set, but a backend of type \"{kind}\" takes no URL; remove it")]
    UnusedUrl { field: String, kind: &'static str },
    /// A trusted proxy that is not an IP network.
    #[error(
        "`{field}` entry \"{value}\" is not an IP network; expected a CIDR such as \"10.0.0.0/8\" or an address such as \"192.0.2.1\""
    )]
    InvalidNetwork { field: String, value: String },
    /// A path prefix that does not start with `/`.
    #[error("`{field}` = \"{value}\" is not a path prefix; it must start with `/`, e.g. \"/api/\"")]
    InvalidPath { field: String, value: String },
    /// A backend name that is empty or holds characters other than letters, digits, `_` and `-`.
    #[error(
        "`{field}` = \"{value}\" is not a backend name; use letters, digits, `_` and `-`, e.g. \"primary_redis\""
    )]
    InvalidName { field: String, value: String },
    /// A `[[backends]]` name that a built-in backend already uses.
    #[error(
        "`{field}` = \"{value}\" is the name of a built-in backend (memory, redis, database, multi); choose another, e.g. \"primary_{value}\""
    )]
    ReservedName { field: String, value: String },
    /// A name used twice.
    #[error("`{field}` = \"{value}\" appears twice; each name may appear once")]
    DuplicateName { field: String, value: String },
    /// A reference to a backend that is not configured.
    #[error(
        "`{field}` = \"{value}\" is not a configured backend; configured backends: {}",
        configured.join(", ")
    )]
    UnknownBackend {
        field: String,
        value: String,
        configured: Vec<String>,
    },
    /// A SQL table prefix that is not a plain identifier.
    #[error(
        "`{field}` = \"{value}\" is not a table prefix; use 1 to 40 lower-case ASCII letters, digits or `_`, starting with a letter or `_`, e.g. \"ratelimit_\""
    )]
    InvalidTablePrefix { field: String, value: String },
    /// A list that must not be empty.
    #[error("`{field}` is empty; {expected}")]
    EmptyList {
        field: String,
        expected: &'static str,
    },
    /// An environment variable whose value is not UTF-8.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode { var: &'static str },
    /// A backend this build of `ratelimit-core` cannot construct.
    #[error(
        "`{field}` configures a {value} backend, which needs ratelimit-core built with the {feature} feature; enable it in Cargo.toml"
    )]
    FeatureDisabled {
        field: String,
        value: &'static str,
        feature: &'static str,
    },
    /// A backend that could not connect at startup (the URL's password is masked).
    #[error("backend `{backend}` at {url} could not connect: {source}")]
    Connect {
        backend: String,
        url: String,
        #[source]
        source: BackendError,
    },
    /// The registry rejected the assembled backends.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// ", line 3, column 7" (nothing when the parser gave no position).
fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(", line {line}, column {column}"),
        (Some(line), None) => format!(", line {line}"),
        _ => String::new(),
    }
}

/// "`circuit_breaker.failure_threshold` in " (nothing for the document itself).
fn in_field(field: &str) -> String {
    if field == "." || field.is_empty() {
        String::new()
    } else {
        format!("`{field}` in ")
    }
}
