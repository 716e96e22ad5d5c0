//! The command line, as clap parses it.

use std::num::NonZeroU64;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ratelimit_core::backend::sql::DEFAULT_CLEANUP_BATCH;
use ratelimit_core::{Algorithm, Rate};

/// Shown after `--help`.
const AFTER_HELP: &str = "\
Configuration: --config FILE (TOML), with RATELIMIT_BACKEND, RATELIMIT_REDIS_URL,
RATELIMIT_DATABASE_URL, RATELIMIT_KEY_PREFIX, RATELIMIT_ON_BACKEND_ERROR and
RATELIMIT_TRUSTED_PROXIES overriding it. With neither, the only backend is an in-process
memory store that no server shares: useful for smoke tests only.

Exit codes: 0 success; 1 a backend is unhealthy or an operation failed on a backend;
2 invalid usage or configuration.";

/// Operate the rate-limit stores of smart-ratelimit: health, cleanup, inspect, reset.
#[derive(Debug, Parser)]
#[command(name = "ratelimit", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The TOML config file (RATELIMIT_* environment variables override it).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe every configured backend; exit 1 when any backend (or failover member) is unhealthy.
    Health(HealthArgs),
    /// Remove expired state from every backend (expired SQL rows) and report the counts.
    Cleanup(CleanupArgs),
    /// Show the decision a request for KEY would get now, without counting it.
    Inspect(InspectArgs),
    /// Forget every count of KEY, on every backend.
    Reset(ResetArgs),
}

/// `ratelimit health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Also show URLs, failure counts and when open circuits retry.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ratelimit cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Count what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows deleted per SQL statement (at least 1), so a large cleanup never holds locks long.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CLEANUP_BATCH, value_parser = batch_size)]
    pub batch_size: NonZeroU64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ratelimit inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bucket key as the middleware passes it to the backend, e.g. `app::login:ip:192.0.2.7`.
    pub key: String,
    /// The limit to evaluate (default: the config's `[middleware] default_rate`, else 1000/h).
    #[arg(long, short, value_parser = rate)]
    pub rate: Option<Rate>,
    /// The algorithm whose state to read (default: the config's `[middleware] algorithm`, else
    /// fixed_window).
    #[arg(long, short, value_parser = algorithm)]
    pub algorithm: Option<Algorithm>,
    /// The token bucket's size, as the handler sets it (state is kept per limit, settings
    /// included).
    #[arg(long, value_name = "TOKENS")]
    pub bucket_size: Option<u64>,
    /// The token bucket's refill rate in tokens per second, as the handler sets it.
    #[arg(long, value_name = "PER_SECOND")]
    pub refill_rate: Option<f64>,
    /// The token bucket's initial tokens, as the handler sets it.
    #[arg(long, value_name = "TOKENS")]
    pub initial_tokens: Option<u64>,
    /// The leaky bucket's capacity, as the handler sets it.
    #[arg(long, value_name = "LEVEL")]
    pub capacity: Option<u64>,
    /// The leaky bucket's leak rate per second, as the handler sets it.
    #[arg(long, value_name = "PER_SECOND")]
    pub leak_rate: Option<f64>,
    /// The cost of the imagined request.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub cost: u64,
    /// The backend to read (default: the configured default backend).
    #[arg(long, short)]
    pub backend: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `ratelimit reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The bucket key as the middleware passes it to the backend.
    pub key: String,
    /// Reset only on this backend (default: every backend).
    #[arg(long, short)]
    pub backend: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn batch_size(text: &str) -> Result<NonZeroU64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err(
            "the batch size must be at least 1 (rows deleted per statement), e.g. --batch-size 1000"
                .to_owned(),
        ),
        Ok(size) => NonZeroU64::new(size).ok_or_else(|| "must be at least 1".to_owned()),
        Err(_) => Err(format!(
            "`{text}` is not a whole number; write e.g. --batch-size 1000"
        )),
    }
}

fn rate(text: &str) -> Result<Rate, String> {
    Rate::parse(text).map_err(|error| error.to_string())
}

fn algorithm(text: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(text).ok_or_else(|| {
        format!(
            "unknown algorithm `{text}`; expected one of fixed_window, sliding_window, sliding_window_counter, token_bucket, leaky_bucket"
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_zero_batch_size_is_refused_with_the_fix() {
        let message = batch_size("0").err().unwrap_or_default();
        assert!(message.contains("at least 1"), "{message}");
        assert!(batch_size("x").is_err());
        assert_eq!(batch_size("5").ok().map(NonZeroU64::get), Some(5));
    }
}
