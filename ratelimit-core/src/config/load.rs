//! The config file, checked field by field into a [`Config`]: each value through the parsers
//! of `value.rs` with its dotted name, then the references between backends.

use std::collections::BTreeSet;

use super::{
    BackendConfig, BackendKind, Config, ConfigError, DATABASE_BACKEND_NAME, DEFAULT_TABLE_PREFIX,
    MULTI_BACKEND_NAME, MiddlewareConfig, REDIS_BACKEND_NAME, file, value,
};
use crate::circuit::CircuitBreakerConfig;
use crate::registry::DEFAULT_BACKEND_NAME;

impl Config {
    pub(super) fn from_file(file: file::File) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(name) = file.backend {
            config.default_backend = Some(value::backend_name("backend", &name)?);
        }
        if let Some(prefix) = file.key_prefix {
            config.key_prefix = prefix;
        }
        if let Some(policy) = file.on_backend_error {
            config.on_backend_error = value::on_error("on_backend_error", &policy)?;
        }
        if let Some(networks) = file.trusted_proxies {
            config.trusted_proxies = networks
                .iter()
                .enumerate()
                .map(|(index, text)| value::network(&format!("trusted_proxies[{index}]"), text))
                .collect::<Result<_, _>>()?;
        }
        if let Some(header) = file.client_ip_header {
            config.client_ip_header = value::client_ip_header("client_ip_header", &header)?;
        }
        if let Some(bits) = file.ipv6_prefix {
            config.ipv6_prefix =
                value::bounded("ipv6_prefix", bits.0, 0, 128, "0 to 128, e.g. 64")?;
        }
        if let Some(redis) = file.redis {
            config.set_redis_url(value::redis_url("redis.url", &redis.url)?, "redis.url");
        }
        if let Some(database) = file.database {
            let url = value::database_url("database.url", &database.url)?;
            let table_prefix = match database.table_prefix {
                Some(prefix) => value::table_prefix("database.table_prefix", &prefix)?,
                None => DEFAULT_TABLE_PREFIX.to_owned(),
            };
            config.set_database(url, Some(table_prefix), "database.url");
        }
        for (index, entry) in file.backends.into_iter().enumerate() {
            let named = named_backend(index, entry)?;
            let field = format!("backends[{index}].name");
            if config.backend(&named.name).is_some() {
                return Err(ConfigError::DuplicateName {
                    field,
                    value: named.name,
                });
            }
            config.backends.push(named);
        }
        if let Some(multi) = file.multi {
            let members = multi_members(multi.backends)?;
            config.backends.push(BackendConfig {
                name: MULTI_BACKEND_NAME.to_owned(),
                kind: BackendKind::Multi { members },
                source: "multi".to_owned(),
            });
        }
        if let Some(section) = file.circuit_breaker {
            config.circuit_breaker = circuit_breaker(section)?;
        }
        if let Some(section) = file.middleware {
            config.middleware = Some(middleware(section)?);
        }
        config.check_references()?;
        Ok(config)
    }
}

/// One `[[backends]]` entry, checked.
fn named_backend(index: usize, entry: file::NamedBackend) -> Result<BackendConfig, ConfigError> {
    let field = |leaf: &str| format!("backends[{index}].{leaf}");
    let name = value::backend_name(&field("name"), &entry.name)?;
    if [
        DEFAULT_BACKEND_NAME,
        REDIS_BACKEND_NAME,
        DATABASE_BACKEND_NAME,
        MULTI_BACKEND_NAME,
    ]
    .contains(&name.as_str())
    {
        return Err(ConfigError::ReservedName {
            field: field("name"),
            value: name,
        });
    }
    let require_url = |kind: &'static str, example: &'static str| {
        entry.url.as_deref().ok_or(ConfigError::MissingUrl {
            field: field("type"),
            value: value::shown(&entry.kind),
            kind,
            fix: example,
        })
    };
    let kind = match entry.kind.as_str() {
        "memory" => {
            if entry.url.is_some() {
                return Err(ConfigError::UnusedUrl {
                    field: field("url"),
                    kind: "memory",
                });
            }
            BackendKind::Memory
        }
        "redis" => BackendKind::Redis {
            url: value::redis_url(
                &field("url"),
                require_url(
                    "Redis",
                    "add `url = \"redis://127.0.0.1:6379\"` to the entry",
                )?,
            )?,
        },
        "database" => BackendKind::Database {
            url: value::database_url(
                &field("url"),
                require_url("database", "add `url = \"postgres://..\"` to the entry")?,
            )?,
            table_prefix: match &entry.table_prefix {
                Some(prefix) => value::table_prefix(&field("table_prefix"), prefix)?,
                None => DEFAULT_TABLE_PREFIX.to_owned(),
            },
        },
        other => {
            return Err(ConfigError::UnknownChoice {
                field: field("type"),
                value: value::shown(other),
                expected: "\"memory\", \"redis\" or \"database\" (failover is the [multi] section)",
            });
        }
    };
    if entry.table_prefix.is_some() && !matches!(kind, BackendKind::Database { .. }) {
        return Err(ConfigError::UnknownChoice {
            field: field("type"),
            value: value::shown(&entry.kind),
            expected: "\"database\" when `table_prefix` is set (remove `table_prefix` otherwise)",
        });
    }
    Ok(BackendConfig {
        name,
        kind,
        source: format!("backends[{index}]"),
    })
}

/// `[multi] backends`: names, at least one, each once (checked against the backends later).
fn multi_members(names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::EmptyList {
            field: "multi.backends".to_owned(),
            expected: "list the failover order, e.g. backends = [\"redis\", \"memory\"]",
        });
    }
    let mut seen = BTreeSet::new();
    for (index, name) in names.iter().enumerate() {
        let field = format!("multi.backends[{index}]");
        value::backend_name(&field, name)?;
        if !seen.insert(name.as_str()) {
            return Err(ConfigError::DuplicateName {
                field,
                value: name.clone(),
            });
        }
    }
    Ok(names)
}

fn circuit_breaker(
    section: file::CircuitBreakerSection,
) -> Result<CircuitBreakerConfig, ConfigError> {
    let mut config = CircuitBreakerConfig::default();
    if let Some(count) = section.failure_threshold {
        config.failure_threshold = value::bounded(
            "circuit_breaker.failure_threshold",
            count.0,
            1,
            i64::from(u32::MAX),
            "a whole number >= 1, e.g. 5",
        )?;
    }
    if let Some(file::DurationText(text)) = &section.recovery_timeout {
        config.recovery_timeout = value::duration("circuit_breaker.recovery_timeout", text)?;
    }
    if let Some(file::DurationText(text)) = section.reset_timeout {
        config.reset_timeout = value::duration("circuit_breaker.reset_timeout", &text)?;
    }
    if let Some(count) = section.half_open_max_calls {
        config.half_open_max_calls = value::bounded(
            "circuit_breaker.half_open_max_calls",
            count.0,
            1,
            i64::from(u32::MAX),
            "a whole number >= 1, e.g. 1",
        )?;
    }
    if let Some(file::Number(multiplier)) = section.backoff_multiplier {
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(ConfigError::OutOfRange {
                field: "circuit_breaker.backoff_multiplier".to_owned(),
                value: multiplier.to_string(),
                expected: "a finite number >= 1.0, e.g. 2.0",
            });
        }
        config.backoff_multiplier = multiplier;
    }
    if let Some(file::DurationText(text)) = &section.backoff_max {
        config.backoff_max = value::duration("circuit_breaker.backoff_max", text)?;
    }
    if config.backoff_max < config.recovery_timeout {
        // Name the field the file set; with neither set the defaults (60s, 300s) fit.
        let (field, text) = match (&section.backoff_max, &section.recovery_timeout) {
            (Some(max), _) => ("circuit_breaker.backoff_max", max.0.as_str()),
            (None, Some(recovery)) => ("circuit_breaker.recovery_timeout", recovery.0.as_str()),
            (None, None) => ("circuit_breaker.backoff_max", "300s"),
        };
        return Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value: format!("\"{text}\""),
            expected: "backoff_max at least as long as recovery_timeout (defaults: 60s and 300s); the longest opening cannot be shorter than the first",
        });
    }
    Ok(config)
}

fn middleware(section: file::MiddlewareSection) -> Result<MiddlewareConfig, ConfigError> {
    let default_rate = section
        .default_rate
        .map(|text| value::rate("middleware.default_rate", &text))
        .transpose()?;
    let skip_paths = section
        .skip_paths
        .iter()
        .enumerate()
        .map(|(index, path)| value::path_prefix(&format!("middleware.skip_paths[{index}]"), path))
        .collect::<Result<_, _>>()?;
    let mut rate_limits = Vec::with_capacity(section.rate_limits.len());
    for (prefix, rate) in &section.rate_limits {
        let field = format!("middleware.rate_limits.{prefix:?}");
        let prefix = value::path_prefix(&field, prefix)?;
        rate_limits.push((prefix, value::rate(&field, rate)?));
    }
    rate_limits.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    let algorithm = section
        .algorithm
        .map(|name| value::algorithm("middleware.algorithm", &name))
        .transpose()?
        .unwrap_or_default();
    let backend = section
        .backend
        .map(|name| value::backend_name("middleware.backend", &name))
        .transpose()?;
    Ok(MiddlewareConfig {
        default_rate,
        skip_paths,
        rate_limits,
        algorithm,
        backend,
    })
}
