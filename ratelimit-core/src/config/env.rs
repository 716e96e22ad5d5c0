//! `RATELIMIT_*` environment variables over a configuration.
//!
//! The process environment is read in one place ([`read_process_env`]); everything else takes
//! `(name, value)` pairs, so tests never touch the process-global environment.

use super::{Config, ConfigError, value};

/// `backend`.
pub const BACKEND: &str = "RATELIMIT_BACKEND";
/// `[redis] url`.
pub const REDIS_URL: &str = "RATELIMIT_REDIS_URL";
/// `[database] url`.
pub const DATABASE_URL: &str = "RATELIMIT_DATABASE_URL";
/// `key_prefix`.
pub const KEY_PREFIX: &str = "RATELIMIT_KEY_PREFIX";
/// `on_backend_error`.
pub const ON_BACKEND_ERROR: &str = "RATELIMIT_ON_BACKEND_ERROR";
/// `trusted_proxies`, comma-separated.
pub const TRUSTED_PROXIES: &str = "RATELIMIT_TRUSTED_PROXIES";
/// `client_ip_header`.
pub const CLIENT_IP_HEADER: &str = "RATELIMIT_CLIENT_IP_HEADER";

/// Every variable that overrides the config file, in the order they are applied.
pub const ENV_VARS: [&str; 7] = [
    BACKEND,
    REDIS_URL,
    DATABASE_URL,
    KEY_PREFIX,
    ON_BACKEND_ERROR,
    TRUSTED_PROXIES,
    CLIENT_IP_HEADER,
];

/// The [`ENV_VARS`] that are set in this process.
pub(crate) fn read_process_env() -> Result<Vec<(&'static str, String)>, ConfigError> {
    let mut vars = Vec::new();
    for var in ENV_VARS {
        match std::env::var(var) {
            Ok(value) => vars.push((var, value)),
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => return Err(ConfigError::NotUnicode { var }),
        }
    }
    Ok(vars)
}

/// Applies one variable; unknown names and empty values change nothing.
pub(crate) fn apply(config: &mut Config, name: &str, text: &str) -> Result<(), ConfigError> {
    if text.trim().is_empty() {
        return Ok(());
    }
    match name {
        BACKEND => {
            config.default_backend = Some(value::backend_name(BACKEND, text.trim())?);
            config.default_backend_field = BACKEND;
        }
        REDIS_URL => config.set_redis_url(value::redis_url(REDIS_URL, text)?, REDIS_URL),
        DATABASE_URL => {
            config.set_database(value::database_url(DATABASE_URL, text)?, None, DATABASE_URL);
        }
        KEY_PREFIX => text.clone_into(&mut config.key_prefix),
        ON_BACKEND_ERROR => {
            config.on_backend_error = value::on_error(ON_BACKEND_ERROR, text.trim())?;
        }
        TRUSTED_PROXIES => {
            config.trusted_proxies = text
                .split(',')
                .filter(|entry| !entry.trim().is_empty())
                .map(|entry| value::network(TRUSTED_PROXIES, entry.trim()))
                .collect::<Result<_, _>>()?;
        }
        CLIENT_IP_HEADER => {
            config.client_ip_header = value::client_ip_header(CLIENT_IP_HEADER, text.trim())?;
        }
        _ => {}
    }
    Ok(())
}
