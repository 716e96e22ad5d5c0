//! Applies a handler's limits to one request: the part shared by the `#[rate_limit]` guard and
//! the middleware layer.

use std::net::IpAddr;

use http::request::Parts;
use std::sync::Arc;

use ratelimit_core::metrics::{self, Outcome};
use ratelimit_core::{Backend, BackendError, Decision, OnError};

use crate::client_ip::{self, MissingPeerAddress};
use crate::key::bucket_key;
use crate::rejection::{BackendUnavailable, GuardRejection, RateLimited};
use crate::settings::{GuardSettings, MissingKey, Scope};
use crate::spec::{CostSource, KeySource, LimitSpec, RateSource};
use crate::status::RateLimitStatus;

/// What the limits decided for a request that may proceed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Admitted {
    /// The decision for the response headers; `None` when nothing was counted visibly.
    pub(crate) reported: Option<Decision>,
    /// A limit with `block = false` rejected the request.
    pub(crate) limited: bool,
}

/// The registry and settings of a request: its router's [`Scope`], or the global ones.
pub(crate) struct Context<'a> {
    registry: &'a ratelimit_core::Registry,
    pub(crate) settings: &'a GuardSettings,
}

impl<'a> Context<'a> {
    pub(crate) fn registry(&self) -> &'a ratelimit_core::Registry {
        self.registry
    }

    pub(crate) fn of(scope: Option<&'a Scope>) -> Self {
        match scope {
            Some(scope) => Self {
                registry: &scope.registry,
                settings: &scope.settings,
            },
            None => Self {
                registry: ratelimit_core::Registry::global(),
                settings: GuardSettings::global(),
            },
        }
    }
}

/// One limit as `enforce` sees it: a [`LimitSpec`] plus the names that a `#[rate_limit]`
/// attribute writes as `'static` literals but a middleware rule builds at startup.
pub(crate) trait LimitView {
    fn spec(&self) -> &LimitSpec;
    fn group(&self) -> &str;
    fn backend(&self) -> Option<&str>;
}

impl LimitView for LimitSpec {
    fn spec(&self) -> &LimitSpec {
        self
    }

    fn group(&self) -> &str {
        self.group
    }

    fn backend(&self) -> Option<&str> {
        self.backend
    }
}

/// Checks `limits` in order (top first). The first that rejects decides and the later ones are
/// not charged; on success the most restrictive decision is reported. Inserts
/// [`RateLimitStatus`] into the extensions when anything was counted.
pub(crate) async fn enforce(
    context: &Context<'_>,
    handler: &str,
    limits: &[impl LimitView],
    parts: &mut Parts,
) -> Result<Admitted, GuardRejection> {
    let mut client = ClientIp::default();
    if !(context.settings.allow.is_empty() && context.settings.deny.is_empty()) {
        let ip = client.get(parts, context)?;
        if client_ip::is_trusted(ip, &context.settings.deny) {
            return Err(GuardRejection::Forbidden);
        }
        if client_ip::is_trusted(ip, &context.settings.allow) {
            return Ok(Admitted::default());
        }
    }
    let mut admitted = Admitted::default();
    // The request's outcome for metrics: the worst of its limits' (see `Outcome`'s order).
    let mut outcome: Option<Outcome> = None;
    for view in limits {
        let spec = view.spec();
        if !applies(spec, parts) {
            continue;
        }
        let key = key_for(spec, view.group(), parts, context, &mut client).await?;
        let limit = match &spec.rate {
            RateSource::Fixed(limit) => std::borrow::Cow::Borrowed(limit),
            RateSource::PerRequest(rate) => {
                std::borrow::Cow::Owned(spec.config.limit(rate(parts), spec.algorithm))
            }
        };
        let (backend_name, backend) = resolve_backend(view.backend(), context)?;
        let timer = metrics::BackendTimer::start();
        let checked = backend.check_n(&key, &limit, cost(spec, parts)).await;
        timer.record(backend_name);
        let decision = match checked {
            Ok(decision) => decision,
            Err(error) => {
                apply_failure_policy(&error, spec, context, handler, &key)?;
                outcome = outcome.max(Some(Outcome::ErrorAllowed));
                continue;
            }
        };
        tracing::debug!(
            handler,
            key,
            allowed = decision.allowed,
            remaining = decision.remaining,
            "rate-limit decision"
        );
        if spec.shadow {
            if !decision.allowed {
                tracing::warn!(handler, key, limit = %limit.rate(), "shadow rate limit would block this request");
                outcome = outcome.max(Some(Outcome::ShadowLimited));
            }
            continue;
        }
        if !decision.allowed {
            outcome = Some(Outcome::Limited);
            if spec.block {
                metrics::record_outcome(Outcome::Limited);
                return Err(GuardRejection::RateLimited(RateLimited {
                    decision,
                    handler: handler.to_owned(),
                    rate: limit.rate().to_string(),
                }));
            }
            admitted.limited = true;
            admitted.reported = Some(decision);
            break;
        }
        outcome = outcome.max(Some(Outcome::Allowed));
        let more_restrictive = admitted
            .reported
            .is_none_or(|reported| decision.remaining < reported.remaining);
        if more_restrictive {
            admitted.reported = Some(decision);
        }
    }
    if let Some(outcome) = outcome {
        metrics::record_outcome(outcome);
    }
    if let Some(decision) = admitted.reported {
        parts.extensions.insert(RateLimitStatus {
            limited: admitted.limited,
            decision,
        });
    }
    Ok(admitted)
}

/// The backend a limit names (or the registry default), with its registry name.
fn resolve_backend<'c>(
    name: Option<&str>,
    context: &Context<'c>,
) -> Result<(&'c str, &'c Arc<dyn Backend>), GuardRejection> {
    match name {
        Some(name) => context
            .registry
            .backends()
            .find(|(candidate, _)| *candidate == name)
            .ok_or_else(|| GuardRejection::UnknownBackend(name.to_owned())),
        None => Ok((
            context.registry.default_backend_name(),
            context.registry.default_backend(),
        )),
    }
}

/// A backend failed: `Ok` lets the request through uncounted (`allow`), `Err` is the 503 of
/// `deny`.
fn apply_failure_policy(
    error: &BackendError,
    spec: &LimitSpec,
    context: &Context<'_>,
    handler: &str,
    key: &str,
) -> Result<(), GuardRejection> {
    match spec.on_error.unwrap_or(context.registry.on_backend_error()) {
        OnError::Allow => {
            tracing::warn!(%error, handler, key, "rate-limit backend failed; allowing the request");
            Ok(())
        }
        OnError::Deny => {
            tracing::warn!(%error, handler, key, "rate-limit backend failed; denying the request");
            metrics::record_outcome(Outcome::ErrorDenied);
            // An open circuit knows when it will try again; otherwise the setting.
            let retry_after_secs = match error {
                BackendError::AllBackendsFailed {
                    retry_after: Some(after),
                    ..
                } => u64::try_from(after.as_millis().div_ceil(1_000)).unwrap_or(u64::MAX),
                _ => context.settings.unavailable_retry_after.as_secs(),
            }
            .max(1);
            Err(GuardRejection::BackendUnavailable(BackendUnavailable {
                retry_after_secs,
            }))
        }
    }
}

/// Whether the limit counts this request at all (`methods`, `skip_if`).
fn applies(spec: &LimitSpec, parts: &Parts) -> bool {
    (spec.methods.is_empty() || spec.methods.contains(&parts.method))
        && !spec.skip_if.is_some_and(|skip| skip(parts))
}

fn cost(spec: &LimitSpec, parts: &Parts) -> u64 {
    match spec.cost {
        CostSource::Fixed(cost) => cost.max(1),
        CostSource::PerRequest(cost) => u64::from(cost(parts).max(1)),
    }
}

/// The client IP, computed at most once per request.
#[derive(Default)]
struct ClientIp(Option<IpAddr>);

impl ClientIp {
    fn get(&mut self, parts: &Parts, context: &Context<'_>) -> Result<IpAddr, GuardRejection> {
        if let Some(ip) = self.0 {
            return Ok(ip);
        }
        let ip = client_ip::client_ip(parts, context.registry.trusted_proxies())
            .map_err(|MissingPeerAddress| GuardRejection::MissingPeerAddress)?;
        self.0 = Some(ip);
        Ok(ip)
    }

    fn bucket_value(
        &mut self,
        parts: &Parts,
        context: &Context<'_>,
    ) -> Result<String, GuardRejection> {
        let ip = self.get(parts, context)?;
        Ok(client_ip::grouped(ip, context.registry.ipv6_prefix()))
    }
}

async fn key_for(
    spec: &LimitSpec,
    group: &str,
    parts: &mut Parts,
    context: &Context<'_>,
    client: &mut ClientIp,
) -> Result<String, GuardRejection> {
    let (kind, value): (std::borrow::Cow<'static, str>, Option<String>) = match spec.key {
        KeySource::Ip => ("ip".into(), None),
        KeySource::Global => ("global".into(), Some(String::new())),
        KeySource::User | KeySource::UserOrIp => match (context.settings.user_resolver)(parts) {
            Some(user) => ("user".into(), Some(user)),
            // Anonymous clients are counted per IP: under `user`, in a namespace of their own so
            // they never share a bucket with a user; under `user_or_ip`, as plain IPs.
            None if matches!(spec.key, KeySource::User) => ("anon".into(), None),
            None => ("ip".into(), None),
        },
        KeySource::Header(name) => (
            format!("header:{name}").into(),
            required(header_value(parts, name), "header", name, context)?,
        ),
        KeySource::Query(name) => (
            format!("query:{name}").into(),
            required(query_value(parts, name), "query parameter", name, context)?,
        ),
        KeySource::Path(name) => (
            format!("path:{name}").into(),
            required(
                path_value(parts, name).await,
                "path parameter",
                name,
                context,
            )?,
        ),
        KeySource::Custom(key) => (
            "custom".into(),
            required(key(parts), "custom key", "", context)?,
        ),
    };
    let (kind, value) = match value {
        Some(value) => (kind, value),
        // `anon` keeps its namespace; a missing value falls back to the plain IP bucket.
        None if kind == "anon" => (kind, client.bucket_value(parts, context)?),
        None => ("ip".into(), client.bucket_value(parts, context)?),
    };
    Ok(bucket_key(group, &kind, &value))
}

/// `Some(value)`, or `None` to fall back to the IP, or the 400 rejection the settings ask for.
fn required(
    value: Option<String>,
    what: &'static str,
    name: &str,
    context: &Context<'_>,
) -> Result<Option<String>, GuardRejection> {
    match (value, context.settings.missing_key) {
        (Some(value), _) => Ok(Some(value)),
        (None, MissingKey::FallBackToIp) => Ok(None),
        (None, MissingKey::Reject) => {
            tracing::debug!(what, name, "rate-limit key value missing; rejecting");
            Err(GuardRejection::MissingKeyValue(what))
        }
    }
}

/// A header's value; non-UTF-8 bytes are kept (lossily) rather than dropped, so they still
/// identify the client.
fn header_value(parts: &Parts, name: &str) -> Option<String> {
    let value = parts.headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn query_value(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

async fn path_value(parts: &mut Parts, name: &str) -> Option<String> {
    use axum::extract::{FromRequestParts, RawPathParams};
    let params = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}
