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

/// Parses TOML text; `origin` (the file's path, or `TOML text`) prefixes error messages.
///
/// An error names the line, column and field but never shows the text there: the parser's
/// excerpt of the offending line is dropped, and so is any value its message quotes, since the
/// line may hold a password (a URL with an unbalanced quote, a URL given to the wrong field).
pub(crate) fn parse(text: &str, origin: &str) -> Result<File, ConfigError> {
    let syntax = |field: String, error: &toml::de::Error| {
        let (line, column) = error
            .span()
            .and_then(|span| position(text, span.start))
            .unzip();
        ConfigError::Syntax {
            origin: origin.to_owned(),
            field,
            line,
            column,
            message: without_values(error.message()),
        }
    };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|error| syntax(".".into(), &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        syntax(field, error.inner())
    })
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    Some((line, column))
}

/// A deserializer message without the value it quotes: serde writes
/// `invalid type: string "..", expected ..`, and this keeps `invalid type: string, expected ..`.
/// The parser's own messages (`invalid basic string`, `expected ...`) quote nothing.
fn without_values(message: &str) -> String {
    for lead in ["invalid type:", "invalid value:", "unknown variant"] {
        if let Some(rest) = message.strip_prefix(lead) {
            let rest = rest.trim_start();
            // `string "x"` (quoted as by `{:?}`), `integer `5``: the kind before the quote, and
            // what follows the closing quote; an unclosed quote drops the rest.
            let (kind, expected) = match rest.find(['"', '`']) {
                Some(open) => {
                    let body = &rest[open + 1..];
                    let close = if rest[open..].starts_with('"') {
                        closing_quote(body)
                    } else {
                        body.find('`')
                    };
                    (&rest[..open], close.map_or("", |close| &body[close + 1..]))
                }
                None => rest
                    .find(", expected ")
                    .map_or((rest, ""), |at| rest.split_at(at)),
            };
            let mut shown = lead.to_owned();
            if !kind.trim().is_empty() {
                shown.push(' ');
                shown.push_str(kind.trim());
            }
            shown.push_str(expected);
            return shown;
        }
    }
    message.to_owned()
}

/// The index of the `"` that ends a `{:?}`-quoted string whose opening quote precedes `body`.
fn closing_quote(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (index, c) in body.char_indices() {
        match c {
            '"' if !escaped => return Some(index),
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_kind_and_drop_the_value() {
        assert_eq!(
            without_values("invalid type: string \"hunter2\", expected a whole number, e.g. 5"),
            "invalid type: string, expected a whole number, e.g. 5"
        );
        assert_eq!(
            without_values("invalid value: integer `9`, expected a number"),
            "invalid value: integer, expected a number"
        );
        assert_eq!(
            without_values("unknown variant `s3cr3t`, expected `a`"),
            "unknown variant, expected `a`"
        );
        assert_eq!(
            without_values("invalid type: string \"a, expected b\""),
            "invalid type: string"
        );
        assert_eq!(
            without_values("invalid type: string \"a\\\"b, expected c\", expected d"),
            "invalid type: string, expected d"
        );
        assert_eq!(
            without_values("invalid type: string \"unclosed, expected d"),
            "invalid type: string"
        );
        assert_eq!(
            without_values("invalid type: sequence, expected a string"),
            "invalid type: sequence, expected a string"
        );
        assert_eq!(
            without_values("unknown field `bakend`"),
            "unknown field `bakend`"
        );
    }

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(position("a\nbé = 1", 6), Some((2, 4)));
        assert_eq!(position("x", 0), Some((1, 1)));
        assert_eq!(position("é", 1), None);
        assert_eq!(position("x", 5), None);
    }
}
