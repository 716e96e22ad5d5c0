//! The configuration a command runs with, and its registry.

use std::path::Path;

use ratelimit_core::config::ConnectPolicy;
use ratelimit_core::{Config, Registry};

use crate::CliError;

/// Said (on standard error) when there is no configuration at all.
pub const ZERO_CONFIG_NOTE: &str = "note: no --config file and no RATELIMIT_* variable: the only backend is a memory store inside this command, which no server shares (useful for smoke tests only)";

/// The loaded configuration.
pub(crate) struct Context {
    pub(crate) config: Config,
    /// Neither a file nor a variable configured anything.
    pub(crate) zero_config: bool,
}

impl Context {
    /// `--config` (if given) with the process environment over it.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, CliError> {
        let config = Config::load(path)?;
        let zero_config = path.is_none() && config == Config::default();
        Ok(Self {
            config,
            zero_config,
        })
    }

    /// The backends, connected on first use: a server that is down makes its backend report
    /// unhealthy (or fail its command) instead of stopping the CLI before it can say so.
    pub(crate) async fn registry(&self) -> Result<Registry, CliError> {
        Ok(Registry::from_config_with(&self.config, ConnectPolicy::OnFirstUse).await?)
    }
}

/// The backend named by `--backend`, or an error listing the configured ones.
pub(crate) fn require_backend<'a>(
    registry: &'a Registry,
    name: &str,
) -> Result<&'a std::sync::Arc<dyn ratelimit_core::Backend>, CliError> {
    registry
        .backend(name)
        .ok_or_else(|| CliError::UnknownBackend {
            name: name.to_owned(),
            configured: registry.backend_names().map(str::to_owned).collect(),
        })
}
