//! `ratelimit health`: one probe per backend, failover members listed under their failover.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratelimit_core::config::BackendKind;
use ratelimit_core::redact;
use ratelimit_core::{CircuitState, Config, HealthStatus, Registry};
use serde::Serialize;

use crate::output;

/// Every backend's health.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// Every backend and every failover member is healthy.
    pub healthy: bool,
    /// The backend of limits that name none.
    pub default_backend: String,
    /// In registry order.
    pub backends: Vec<BackendHealth>,
}

/// One backend's probe.
#[derive(Debug, Serialize)]
pub struct BackendHealth {
    /// Its name in the configuration.
    pub name: String,
    /// `memory`, `redis`, `database` or `multi`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where it connects (password masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What the probe found (for `multi`, with each member's circuit).
    #[serde(flatten)]
    pub status: HealthStatus,
}

impl BackendHealth {
    /// Healthy, and so is every failover member.
    #[must_use]
    pub fn fully_healthy(&self) -> bool {
        self.status.healthy && self.status.members.iter().all(|m| m.status.healthy)
    }
}

/// Probes every backend of `registry`, in order.
pub async fn probe(config: &Config, registry: &Registry) -> HealthReport {
    let mut backends = Vec::new();
    for (name, backend) in registry.backends() {
        let configured = config.backend(name).map(|backend| backend.kind());
        backends.push(BackendHealth {
            name: name.to_owned(),
            kind: configured.map_or("custom", BackendKind::type_name),
            url: configured.and_then(url),
            status: redacted(backend.health().await),
        });
    }
    HealthReport {
        healthy: backends.iter().all(BackendHealth::fully_healthy),
        default_backend: registry.default_backend_name().to_owned(),
        backends,
    }
}

fn url(kind: &BackendKind) -> Option<String> {
    match kind {
        BackendKind::Redis { url } | BackendKind::Database { url, .. } => Some(redact::url(url)),
        _ => None,
    }
}

/// `status` with any URL or credential in its (and its members') error text masked: the
/// CLI shows the raw error, but never a secret a driver may have put in it.
fn redacted(mut status: HealthStatus) -> HealthStatus {
    mask_details(&mut status);
    status
}

fn mask_details(status: &mut HealthStatus) {
    status.detail = status.detail.as_deref().map(redact::text);
    for member in &mut status.members {
        mask_details(&mut member.status);
    }
}

impl HealthReport {
    /// A table, one row per backend and per failover member, and a summary line.
    #[must_use]
    pub fn to_text(&self, verbose: bool) -> String {
        let mut header = vec!["BACKEND", "TYPE", "STATUS", "LATENCY", "CIRCUIT"];
        if verbose {
            header.extend(["FAILURES", "NEXT ATTEMPT", "URL"]);
        }
        header.push("DETAIL");
        let mut rows = Vec::new();
        for backend in &self.backends {
            let name = if backend.name == self.default_backend {
                format!("{} *", backend.name)
            } else {
                backend.name.clone()
            };
            rows.push(row(
                &name,
                backend.kind,
                backend.url.as_deref(),
                &backend.status,
                verbose,
            ));
            for member in &backend.status.members {
                let name = format!("  - {}", member.name);
                let named = self.backends.iter().find(|other| other.name == member.name);
                let kind = named.map_or(member.status.backend, |other| other.kind);
                let url = named.and_then(|other| other.url.as_deref());
                rows.push(row(&name, kind, url, &member.status, verbose));
            }
        }
        let mut text = output::table(&header, &rows);
        let unhealthy = self
            .backends
            .iter()
            .filter(|backend| !backend.fully_healthy())
            .count();
        let total = self.backends.len();
        let summary = match (unhealthy, total) {
            (0, 1) => "The backend is healthy.".to_owned(),
            (0, _) => format!("All {total} backends are healthy."),
            _ => format!(
                "{unhealthy} of {total} backends unhealthy (or with an unhealthy failover member)."
            ),
        };
        text.push_str(&format!("\n* default backend. {summary}\n"));
        text
    }
}

fn row(
    name: &str,
    kind: &str,
    url: Option<&str>,
    status: &HealthStatus,
    verbose: bool,
) -> Vec<String> {
    let mut cells = vec![
        name.to_owned(),
        kind.to_owned(),
        if status.healthy {
            "healthy"
        } else {
            "UNHEALTHY"
        }
        .to_owned(),
        status
            .latency
            .map_or_else(|| "-".to_owned(), output::duration),
        match status.circuit {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
        .to_owned(),
    ];
    if verbose {
        cells.push(status.failure_count.to_string());
        cells.push(
            status
                .next_attempt_unix_ms
                .map_or_else(|| "-".to_owned(), next_attempt),
        );
        cells.push(url.unwrap_or("-").to_owned());
    }
    let detail = status.detail.clone().unwrap_or_default();
    cells.push(if verbose {
        detail
    } else {
        shorten(&detail, 80)
    });
    cells
}

/// "in 12.0 s" from a unix-millisecond instant.
fn next_attempt(at_unix_ms: u64) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    match at_unix_ms.checked_sub(now_ms) {
        Some(wait) if wait > 0 => format!("in {}", output::duration(Duration::from_millis(wait))),
        _ => "now".to_owned(),
    }
}

/// The first line of `text`, at most `max` characters (the full text is in `--verbose`).
fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && line.len() == text.len() {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}
