//! The config file as written: TOML tables with every leaf as plain text or numbers, so
//! `deny_unknown_fields` and type errors come from the parser with the field's path, and
//! every value is then checked (in `config.rs`) with its dotted name.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use super::ConfigError;

/// The whole file; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    pub(crate) backend: Option<String>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) on_backend_error: Option<String>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) client_ip_header: Option<String>,
    pub(crate) ipv6_prefix: Option<WholeNumber>,
    pub(crate) redis: Option<RedisSection>,
    pub(crate) database: Option<DatabaseSection>,
    #[serde(default)]
    pub(crate) backends: Vec<NamedBackend>,
    pub(crate) multi: Option<MultiSection>,
    pub(crate) circuit_breaker: Option<CircuitBreakerSection>,
    pub(crate) middleware: Option<MiddlewareSection>,
}

/// `[redis]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisSection {
    pub(crate) url: String,
}

/// `[database]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseSection {
    pub(crate) url: String,
    pub(crate) table_prefix: Option<String>,
}

/// One `[[backends]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedBackend {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) url: Option<String>,
    pub(crate) table_prefix: Option<String>,
}

/// `[multi]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MultiSection {
    pub(crate) backends: Vec<String>,
}

/// `[circuit_breaker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitBreakerSection {
    pub(crate) failure_threshold: Option<WholeNumber>,
    pub(crate) recovery_timeout: Option<DurationText>,
    pub(crate) reset_timeout: Option<DurationText>,
    pub(crate) half_open_max_calls: Option<WholeNumber>,
    pub(crate) backoff_multiplier: Option<Number>,
    pub(crate) backoff_max: Option<DurationText>,
}

/// `[middleware]` and `[middleware.rate_limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MiddlewareSection {
    pub(crate) default_rate: Option<String>,
    #[serde(default)]
    pub(crate) skip_paths: Vec<String>,
    #[serde(default)]
    pub(crate) rate_limits: BTreeMap<String, String>,
    pub(crate) algorithm: Option<String>,
    pub(crate) backend: Option<String>,
}

/// A TOML integer; a type error says "a whole number" rather than `i64`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WholeNumber(pub(crate) i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Whole;
        impl Visitor<'_> for Whole {
            type Value = WholeNumber;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number, e.g. 5")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<WholeNumber, E> {
                i64::try_from(value)
                    .map(WholeNumber)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
            }
        }
        deserializer.deserialize_i64(Whole)
    }
}

/// A TOML integer or float.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Number(pub(crate) f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyNumber;
        impl Visitor<'_> for AnyNumber {
            type Value = Number;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, e.g. 2.0")
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Number, E> {
                Ok(Number(value))
            }

            #[allow(clippy::cast_precision_loss, reason = "a multiplier, not a count")]
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Number, E> {
                Ok(Number(value as f64))
            }

            #[allow(clippy::cast_precision_loss, reason = "a multiplier, not a count")]
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
        }
        deserializer.deserialize_f64(AnyNumber)
    }
}

/// A duration string (checked later, with the field's name); a type error names the format.
#[derive(Clone, Debug)]
pub(crate) struct DurationText(pub(crate) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = DurationText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"60s\", \"5m\" or \"250ms\"")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<DurationText, E> {
                Ok(DurationText(value.to_owned()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// Parses TOML text; `origin` (the file's path, or `TOML`) prefixes error messages.
pub(crate) fn parse(text: &str, origin: &str) -> Result<File, ConfigError> {
    let syntax = |field: String, error: toml::de::Error| ConfigError::Syntax {
        origin: origin.to_owned(),
        field,
        message: error.to_string().trim_end().to_owned(),
    };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|error| syntax(".".into(), error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        syntax(field, error.into_inner())
    })
}
