//! `ratelimit cleanup`: expired SQL rows deleted in batches (or counted, for a dry run).
//!
//! Only SQL stores keep expired state until someone deletes it. Redis keys carry TTLs and
//! expire on the server; a memory store lives inside one process (a server's sweeps itself,
//! and this command's own is empty), so both report 0 with a note saying why. A failover
//! backend's members are cleaned as the backends they are.

use std::num::NonZeroU64;

use ratelimit_core::config::BackendKind;
use ratelimit_core::{Config, SqlBackend, redact};
use serde::Serialize;

use crate::{Progress, output};

/// What a cleanup did (or would do).
#[derive(Debug, Serialize)]
pub struct CleanupReport {
    /// Nothing was removed; `would_remove` says what would have been.
    pub dry_run: bool,
    /// Rows deleted per statement.
    pub batch_size: u64,
    /// Entries removed, over every backend (0 for a dry run).
    pub removed: u64,
    /// Entries a cleanup would remove now, over every backend (dry run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_remove: Option<u64>,
    /// No backend failed.
    pub ok: bool,
    /// In configuration order.
    pub backends: Vec<BackendCleanup>,
}

/// One backend's part.
#[derive(Debug, Serialize)]
pub struct BackendCleanup {
    /// Its name in the configuration.
    pub name: String,
    /// `memory`, `redis`, `database` or `multi`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Entries removed (not for a dry run, a failure, or a failover backend).
    pub removed: Option<u64>,
    /// Entries a cleanup would remove now (dry run only).
    pub would_remove: Option<u64>,
    /// Why there was nothing to do, when that is the case.
    pub note: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// Cleans (or, with `dry_run`, counts) every configured backend, telling `progress` about each.
pub async fn run(
    config: &Config,
    dry_run: bool,
    batch_size: NonZeroU64,
    progress: &mut dyn FnMut(Progress<'_>),
) -> CleanupReport {
    progress(Progress::Start {
        backends: u64::try_from(config.backends().len()).unwrap_or(u64::MAX),
    });
    let mut backends = Vec::new();
    for backend in config.backends() {
        progress(Progress::Backend {
            name: backend.name(),
        });
        let mut entry = BackendCleanup {
            name: backend.name().to_owned(),
            kind: backend.kind().type_name(),
            removed: None,
            would_remove: None,
            note: None,
            error: None,
        };
        let nothing = |entry: &mut BackendCleanup, why: &str| {
            if dry_run {
                entry.would_remove = Some(0);
            } else {
                entry.removed = Some(0);
            }
            entry.note = Some(why.to_owned());
        };
        match backend.kind() {
            BackendKind::Memory => nothing(
                &mut entry,
                "in-process store: a server's memory backend sweeps itself; this command has none to clean",
            ),
            BackendKind::Redis { .. } => nothing(
                &mut entry,
                "every key has a TTL and expires on the Redis server; nothing to delete",
            ),
            BackendKind::Multi { .. } => {
                entry.note =
                    Some("failover: its members are cleaned as their own backends".to_owned());
            }
            BackendKind::Database { url, table_prefix } => {
                let counted = clean_database(url, table_prefix, dry_run, batch_size).await;
                match counted {
                    Ok(count) if dry_run => entry.would_remove = Some(count),
                    Ok(count) => entry.removed = Some(count),
                    Err(error) => entry.error = Some(error),
                }
            }
            _ => entry.note = Some("unknown backend type; skipped".to_owned()),
        }
        backends.push(entry);
    }
    progress(Progress::Finish);
    let sum = |field: fn(&BackendCleanup) -> Option<u64>| {
        backends
            .iter()
            .filter_map(field)
            .fold(0_u64, u64::saturating_add)
    };
    CleanupReport {
        dry_run,
        batch_size: batch_size.get(),
        removed: sum(|backend| backend.removed),
        would_remove: dry_run.then(|| sum(|backend| backend.would_remove)),
        ok: backends.iter().all(|backend| backend.error.is_none()),
        backends,
    }
}

/// Connects to the database (creating its tables if missing, as every backend does) and
/// deletes, or counts, its expired rows.
async fn clean_database(
    url: &str,
    table_prefix: &str,
    dry_run: bool,
    batch_size: NonZeroU64,
) -> Result<u64, String> {
    let database = SqlBackend::builder(url)
        .table_prefix(table_prefix)
        .build()
        .await
        .map_err(|error| format!("could not connect: {}", redact::text(&error.to_string())))?;
    let counted = if dry_run {
        database.count_expired().await
    } else {
        database.cleanup_in_batches(batch_size).await
    };
    counted.map_err(|error| redact::text(&error.to_string()))
}

impl CleanupReport {
    /// A table, one row per backend, and a total.
    #[must_use]
    pub fn to_text(&self) -> String {
        let count_header = if self.dry_run {
            "WOULD REMOVE"
        } else {
            "REMOVED"
        };
        let rows: Vec<Vec<String>> = self
            .backends
            .iter()
            .map(|backend| {
                let count = if self.dry_run {
                    backend.would_remove
                } else {
                    backend.removed
                };
                vec![
                    backend.name.clone(),
                    backend.kind.to_owned(),
                    count.map_or_else(|| "-".to_owned(), |count| count.to_string()),
                    match (&backend.error, &backend.note) {
                        (Some(error), _) => format!("FAILED: {error}"),
                        (None, Some(note)) => note.clone(),
                        (None, None) => String::new(),
                    },
                ]
            })
            .collect();
        let mut text = output::table(&["BACKEND", "TYPE", count_header, "NOTE"], &rows);
        let failed = self
            .backends
            .iter()
            .filter(|backend| backend.error.is_some())
            .count();
        let summary = match self.would_remove {
            Some(count) => {
                format!("Dry run: {count} expired entries would be removed; nothing was.")
            }
            None => format!(
                "Removed {} expired entries ({} rows per statement).",
                self.removed, self.batch_size
            ),
        };
        text.push('\n');
        text.push_str(&summary);
        if failed > 0 {
            text.push_str(&format!(" {failed} backend(s) failed."));
        }
        text.push('\n');
        text
    }
}
