//! `ratelimit reset KEY`: forget a key's counts on every backend (or one).

use ratelimit_core::config::BackendKind;
use ratelimit_core::{Config, Registry, redact};
use serde::Serialize;

use crate::args::ResetArgs;
use crate::{CliError, context, output};

/// What a reset did.
#[derive(Debug, Serialize)]
pub struct ResetReport {
    /// The key as given.
    pub key: String,
    /// Every backend that was asked succeeded.
    pub ok: bool,
    /// In configuration order.
    pub backends: Vec<BackendReset>,
}

/// One backend's part.
#[derive(Debug, Serialize)]
pub struct BackendReset {
    /// Its name in the configuration.
    pub name: String,
    /// `memory`, `redis`, `database` or `multi`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The key's state is gone from this backend.
    pub reset: bool,
    /// Why the backend was not asked, when it was not.
    pub note: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// Resets `args.key` on `args.backend`, or on every backend. A failover backend is skipped
/// when resetting everywhere: its members are reset as the backends they are.
///
/// # Errors
/// An unknown `--backend`.
pub async fn run(
    config: &Config,
    registry: &Registry,
    args: &ResetArgs,
) -> Result<ResetReport, CliError> {
    let targets: Vec<&str> = match &args.backend {
        Some(name) => {
            context::require_backend(registry, name)?;
            vec![name.as_str()]
        }
        None => registry.backend_names().collect(),
    };
    let mut backends = Vec::new();
    for name in targets {
        let kind = config
            .backend(name)
            .map_or("custom", |backend| backend.kind().type_name());
        let mut entry = BackendReset {
            name: name.to_owned(),
            kind,
            reset: false,
            note: None,
            error: None,
        };
        let is_failover = matches!(
            config.backend(name).map(|backend| backend.kind()),
            Some(BackendKind::Multi { .. })
        );
        if is_failover && args.backend.is_none() {
            entry.note = Some("failover: its members are reset as their own backends".to_owned());
        } else if let Some(backend) = registry.backend(name) {
            match backend.reset(&args.key).await {
                Ok(()) => entry.reset = true,
                Err(error) => entry.error = Some(redact::text(&error.to_string())),
            }
        }
        backends.push(entry);
    }
    Ok(ResetReport {
        key: args.key.clone(),
        ok: backends.iter().all(|backend| backend.error.is_none()),
        backends,
    })
}

impl ResetReport {
    /// A table, one row per backend.
    #[must_use]
    pub fn to_text(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .backends
            .iter()
            .map(|backend| {
                let (result, detail) = match (&backend.error, &backend.note) {
                    (Some(error), _) => ("FAILED", error.clone()),
                    (None, Some(note)) => ("skipped", note.clone()),
                    (None, None) => ("reset", String::new()),
                };
                vec![
                    backend.name.clone(),
                    backend.kind.to_owned(),
                    result.to_owned(),
                    detail,
                ]
            })
            .collect();
        let mut text = format!("key: {}\n\n", self.key);
        text.push_str(&output::table(
            &["BACKEND", "TYPE", "RESULT", "DETAIL"],
            &rows,
        ));
        text
    }
}
