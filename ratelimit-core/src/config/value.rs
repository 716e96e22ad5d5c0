//! Parsers for single configuration values, shared by the file and the environment, so a value
//! is checked the same way wherever it comes from. Each takes the field's name for its error.

use std::time::Duration;

use ipnet::IpNet;

use super::ConfigError;
use crate::algorithm::Algorithm;
use crate::client_ip::{self, CLIENT_IP_HEADER_NAMES, ClientIpHeader};
use crate::rate::Rate;
use crate::redact;
use crate::registry::OnError;

/// URL schemes the Redis backend connects to.
const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];

/// URL schemes the SQL backend connects to (the scheme picks the engine).
const DATABASE_SCHEMES: &[&str] = &[
    "postgres://",
    "postgresql://",
    "mysql://",
    "mariadb://",
    "sqlite:",
];

/// The longest SQL table prefix: `<prefix>state_v2_cleanup_at` must stay within PostgreSQL's
/// 63-byte identifiers.
const MAX_TABLE_PREFIX_LEN: usize = 40;

/// `"60s"`, `"5m"`, `"250ms"`: a whole number and one of `ms s m h d`, above zero.
pub(crate) fn duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    let invalid = |problem| ConfigError::InvalidDuration {
        field: field.to_owned(),
        value: shown(text),
        problem,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid("the duration is empty"));
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid("the duration does not start with a whole number"));
    }
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(invalid("the unit is missing")),
        _ if unit.starts_with('.') => return Err(invalid("the number is not whole")),
        _ => return Err(invalid("the unit is unknown")),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| invalid("the number is too large"))?;
    let millis = count
        .checked_mul(millis_per_unit)
        .ok_or_else(|| invalid("the duration is too long"))?;
    if millis == 0 {
        return Err(invalid("the duration is zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// `"allow"` or `"deny"`.
pub(crate) fn on_error(field: &str, text: &str) -> Result<OnError, ConfigError> {
    text.parse().map_err(|_| ConfigError::UnknownChoice {
        field: field.to_owned(),
        value: shown(text),
        expected: "\"allow\" or \"deny\"",
    })
}

/// A CIDR network or a single address ([`client_ip::parse_network`]).
pub(crate) fn network(field: &str, text: &str) -> Result<IpNet, ConfigError> {
    client_ip::parse_network(text).map_err(|_| ConfigError::InvalidNetwork {
        field: field.to_owned(),
        value: shown(text),
    })
}

/// One of the [`ClientIpHeader`] names, in any case.
pub(crate) fn client_ip_header(field: &str, text: &str) -> Result<ClientIpHeader, ConfigError> {
    text.parse().map_err(|_| ConfigError::UnknownChoice {
        field: field.to_owned(),
        value: shown(text),
        expected: CLIENT_IP_HEADER_NAMES,
    })
}

/// A Redis URL (`redis://`, `rediss://`, `redis+unix://`, `unix://`).
pub(crate) fn redis_url(field: &str, text: &str) -> Result<String, ConfigError> {
    url(text, REDIS_SCHEMES).map_err(|value| ConfigError::InvalidUrl {
        field: field.to_owned(),
        value,
        kind: "Redis",
        expected: "redis://, rediss://, redis+unix:// or unix://, e.g. \"redis://127.0.0.1:6379\"",
    })
}

/// A database URL whose scheme picks the engine.
pub(crate) fn database_url(field: &str, text: &str) -> Result<String, ConfigError> {
    url(text, DATABASE_SCHEMES).map_err(|value| ConfigError::InvalidUrl {
        field: field.to_owned(),
        value,
        kind: "database",
        expected: "postgres://, postgresql://, mysql://, mariadb:// or sqlite:, e.g. \"postgres://postgres@127.0.0.1:5432/app\"",
    })
}

/// The trimmed URL when its scheme is one of `schemes` and something follows it; otherwise the
/// URL with its password masked, for the error message.
fn url(text: &str, schemes: &[&str]) -> Result<String, String> {
    let trimmed = text.trim();
    let fits = schemes.iter().any(|scheme| {
        trimmed
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    });
    if fits {
        Ok(trimmed.to_owned())
    } else {
        Err(redact::url(trimmed))
    }
}

/// A value as an error shows it: any URL or `password=..` in it masked, so a secret pasted
/// into the wrong field still never reaches a message.
pub(crate) fn shown(text: &str) -> String {
    redact::text(text)
}

/// A backend name: letters, digits, `_` and `-`.
pub(crate) fn backend_name(field: &str, text: &str) -> Result<String, ConfigError> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::InvalidName {
            field: field.to_owned(),
            value: shown(text),
        })
    }
}

/// A SQL table prefix, by the rule `SqlBackendBuilder::table_prefix` enforces.
pub(crate) fn table_prefix(field: &str, text: &str) -> Result<String, ConfigError> {
    let mut chars = text.chars();
    let valid = text.len() <= MAX_TABLE_PREFIX_LEN
        && chars
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::InvalidTablePrefix {
            field: field.to_owned(),
            value: shown(text),
        })
    }
}

/// A request path prefix such as `/api/`.
pub(crate) fn path_prefix(field: &str, text: &str) -> Result<String, ConfigError> {
    if text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::InvalidPath {
            field: field.to_owned(),
            value: shown(text),
        })
    }
}

/// A rate string (section 3 of the grammar), parsed now so a bad one fails at startup.
pub(crate) fn rate(field: &str, text: &str) -> Result<Rate, ConfigError> {
    Rate::parse(text).map_err(|source| ConfigError::InvalidRate {
        field: field.to_owned(),
        source,
    })
}

/// One of the five algorithm names.
pub(crate) fn algorithm(field: &str, text: &str) -> Result<Algorithm, ConfigError> {
    Algorithm::from_name(text).ok_or_else(|| ConfigError::UnknownChoice {
        field: field.to_owned(),
        value: shown(text),
        expected: "one of fixed_window, sliding_window, sliding_window_counter, token_bucket, leaky_bucket",
    })
}

/// A whole number in `min..=max`.
pub(crate) fn bounded<T: TryFrom<i64>>(
    field: &str,
    value: i64,
    min: i64,
    max: i64,
    expected: &'static str,
) -> Result<T, ConfigError> {
    (min..=max)
        .contains(&value)
        .then(|| T::try_from(value).ok())
        .flatten()
        .ok_or_else(|| ConfigError::OutOfRange {
            field: field.to_owned(),
            value: value.to_string(),
            expected,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let parse = |text| duration("d", text);
        assert!(matches!(parse("60s"), Ok(d) if d == Duration::from_secs(60)));
        assert!(matches!(parse(" 5m "), Ok(d) if d == Duration::from_secs(300)));
        assert!(matches!(parse("250ms"), Ok(d) if d == Duration::from_millis(250)));
        assert!(matches!(parse("2h"), Ok(d) if d == Duration::from_secs(7_200)));
        assert!(matches!(parse("1d"), Ok(d) if d == Duration::from_secs(86_400)));
        for bad in [
            "",
            "60",
            "s",
            "1.5s",
            "-1s",
            "5M",
            "5 minutes",
            "0s",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
