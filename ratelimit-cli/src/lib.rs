//! The `ratelimit` operator CLI: `health`, `cleanup`, `inspect` and `reset` over the backends
//! of a smart-ratelimit configuration.
//!
//! ```text
//! ratelimit --config ratelimit.toml health --verbose
//! ratelimit --config ratelimit.toml cleanup --dry-run --json
//! ratelimit --config ratelimit.toml inspect 'app::login:ip:192.0.2.7' --rate 5/m
//! ratelimit --config ratelimit.toml reset 'app::login:ip:192.0.2.7'
//! ```
//!
//! The configuration is the one servers load (`ratelimit_core::Config::load`): the file given
//! with `--config`, with `RATELIMIT_*` environment variables over it. With neither, the only
//! backend is a memory store inside this process, which no server shares: every command then
//! works but sees nothing, so it is useful for smoke tests only.
//!
//! | command | does | exits 1 when |
//! | --- | --- | --- |
//! | `health [--verbose] [--json]` | probes every backend (one round trip each) and every failover member | any backend or member is unhealthy |
//! | `cleanup [--dry-run] [--batch-size N] [--json]` | deletes expired SQL rows, `N` per statement (default 1000); Redis keys and memory entries expire by themselves | a backend fails |
//! | `inspect KEY [--rate R] [--algorithm A] [--bucket-size N] [--refill-rate R] [--initial-tokens N] [--capacity N] [--leak-rate R] [--cost N] [--backend B] [--json]` | peeks: the decision a request for `KEY` would get now, counting nothing | the backend fails |
//! | `reset KEY [--backend B] [--json]` | forgets `KEY`'s counts on every backend | a backend fails |
//!
//! `KEY` is the bucket key as the middleware passes it to the backend
//! (`<group>:<key kind>:<value>`, e.g. `app::login:ip:192.0.2.7`, see
//! `ratelimit_axum::bucket_key`); Redis adds the configured `key_prefix` itself. Stores keep one
//! state per key and limit, so `inspect` finds a handler's count only with the handler's own
//! rate, algorithm and bucket settings. Exit code 2 is a usage or configuration error.
//!
//! The library part runs the commands and renders their reports as text or JSON; only the
//! binary prints.

pub mod args;
pub mod cleanup;
mod context;
pub mod health;
pub mod inspect;
mod output;
pub mod reset;

use ratelimit_core::ConfigError;
use ratelimit_core::backend::BackendError;

pub use args::{Cli, Command};
pub use context::ZERO_CONFIG_NOTE;

/// What a command produced.
#[derive(Debug)]
pub struct Outcome {
    /// For standard output: the table, text or JSON.
    pub stdout: String,
    /// `false` when a backend was unhealthy or failed (exit code 1).
    pub success: bool,
    /// For standard error: remarks about how the command ran.
    pub notes: Vec<String>,
}

/// Why a command could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration is invalid or a backend needs a missing feature (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--backend` names a backend that is not configured (exit code 2).
    #[error("backend `{name}` is not configured; configured backends: {}", configured.join(", "))]
    UnknownBackend {
        name: String,
        configured: Vec<String>,
    },
    /// `inspect`'s limit settings do not fit together (exit code 2).
    #[error("invalid limit: {0}")]
    InvalidLimit(#[from] ratelimit_core::LimitError),
    /// The backend failed (exit code 1).
    #[error("backend `{backend}` failed: {source}")]
    Backend {
        backend: String,
        #[source]
        source: BackendError,
    },
    /// A report could not be written as JSON (exit code 1).
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// 2 for usage and configuration errors, 1 for failures of a backend.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::UnknownBackend { .. } | Self::InvalidLimit(_) => 2,
            Self::Backend { .. } | Self::Json(_) => 1,
        }
    }
}

/// Runs `cli`'s command. `progress` is told the name of each backend `cleanup` starts on.
///
/// # Errors
/// An invalid configuration, an unknown `--backend`, or (for `inspect`) a backend failure.
pub async fn run(cli: &Cli, progress: &mut dyn FnMut(Progress<'_>)) -> Result<Outcome, CliError> {
    let context = context::Context::load(cli.config.as_deref())?;
    let mut outcome = match &cli.command {
        Command::Health(args) => {
            let registry = context.registry().await?;
            let report = health::probe(&context.config, &registry).await;
            let stdout = if args.json {
                output::json(&report)?
            } else {
                report.to_text(args.verbose)
            };
            Outcome {
                success: report.healthy,
                stdout,
                notes: Vec::new(),
            }
        }
        Command::Cleanup(args) => {
            let report =
                cleanup::run(&context.config, args.dry_run, args.batch_size, progress).await;
            let stdout = if args.json {
                output::json(&report)?
            } else {
                report.to_text()
            };
            Outcome {
                success: report.ok,
                stdout,
                notes: Vec::new(),
            }
        }
        Command::Inspect(args) => {
            let registry = context.registry().await?;
            let report = inspect::run(&context.config, &registry, args).await?;
            let stdout = if args.json {
                output::json(&report)?
            } else {
                report.to_text()
            };
            Outcome {
                success: true,
                stdout,
                notes: Vec::new(),
            }
        }
        Command::Reset(args) => {
            let registry = context.registry().await?;
            let report = reset::run(&context.config, &registry, args).await?;
            let stdout = if args.json {
                output::json(&report)?
            } else {
                report.to_text()
            };
            Outcome {
                success: report.ok,
                stdout,
                notes: Vec::new(),
            }
        }
    };
    if context.zero_config {
        outcome.notes.push(ZERO_CONFIG_NOTE.to_owned());
    }
    Ok(outcome)
}

/// A step of a long command, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// The command will visit this many backends.
    Start { backends: u64 },
    /// It starts on this backend.
    Backend { name: &'a str },
    /// It is done.
    Finish,
}
