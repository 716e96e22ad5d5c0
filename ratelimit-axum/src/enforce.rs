//! Applies a handler's limits to one request: the part shared by the `#[rate_limit]` guard and
//! the middleware layer.
//!
//! It runs synchronously as long as the stores answer without waiting (the memory store
//! always does), so the guard needs no future of its own on that path: on a trivial route the
//! size of the handler's future, and copying it, cost more than the check. A store that must
//! wait (Redis, SQL, failover) hands over to [`Enforcement::run_rest`], which awaits it.
//!
//! The functions a counted request passes through once, here and in `key_source`, `key`,
//! `client_ip`, `headers`, `header_template` and `unix_seconds`, are `#[inline]`: inlined into
//! the guard they save the calls and the copies of their large results and arguments.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use ratelimit_core::log_throttle::{LOG_INTERVAL, LogThrottle};
use ratelimit_core::metrics::{self, Outcome};
use ratelimit_core::{Backend, BackendError, Decision, Limit, OnError};

use crate::client_ip;
use crate::key::log_digest;
use crate::key_source::{ClientIp, key_for};
use crate::rejection::{BackendUnavailable, GuardRejection, RateLimited};
use crate::settings::{GuardSettings, Scope};
use crate::spec::{CostSource, LimitSpec, RateSource};
use crate::status::RateLimitStatus;

/// Shadow hits and store failures come with every request while they last: each logs one line
/// per handler, group (and error kind) every few seconds, with the count of those held back,
/// and names the key by a short digest only (it holds a client's value).
static SHADOW_HIT: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static FAILED_ALLOWING: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static FAILED_DENYING: LogThrottle = LogThrottle::new(LOG_INTERVAL);

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
    let Some(mut run) = Enforcement::start(context, parts)? else {
        return Ok(Admitted::default());
    };
    match run.run_now(context, handler, limits, parts) {
        Progress::Done(result) => result,
        Progress::Waiting(check) => run.run_rest(check, context, handler, limits, parts).await,
    }
}

/// How far one request has got through its limits.
pub(crate) struct Enforcement {
    client: ClientIp,
    admitted: Admitted,
    /// Whether [`RateLimitStatus`] goes into the request extensions (see [`Self::hide_status`]).
    expose_status: bool,
    /// The request's outcome for metrics: the worst of its limits' (see `Outcome`'s order).
    outcome: Option<Outcome>,
    /// The next limit to check.
    next: usize,
}

/// What to do after one limit's decision.
enum Step {
    Next,
    Stop,
}

/// Where `run_now` stopped.
pub(crate) enum Progress<'s, 'c> {
    /// Every limit is decided.
    Done(Result<Admitted, GuardRejection>),
    /// This limit's store must be awaited: continue with `run_rest`.
    Waiting(Check<'s, 'c>),
}

/// One limit, ready for its store.
pub(crate) struct Check<'s, 'c> {
    spec: &'s LimitSpec,
    group: &'s str,
    key: crate::key::Key,
    limit: LimitRef<'s>,
    cost: u64,
    backend_name: Cow<'c, str>,
    backend: Cow<'c, Arc<dyn Backend>>,
}

/// A limit's [`Limit`]: the attribute's own, or one built for this request's rate. Boxed, as a
/// `Limit` is large and a check is moved around by value.
enum LimitRef<'s> {
    Fixed(&'s Limit),
    PerRequest(Box<Limit>),
}

impl std::ops::Deref for LimitRef<'_> {
    type Target = Limit;

    fn deref(&self) -> &Limit {
        match self {
            Self::Fixed(limit) => limit,
            Self::PerRequest(limit) => limit,
        }
    }
}

impl<'s> Check<'s, '_> {
    /// The same check, no longer borrowing the registry (to continue in a future that owns
    /// its scope).
    pub(crate) fn into_owned(self) -> Check<'s, 'static> {
        Check {
            spec: self.spec,
            group: self.group,
            key: self.key,
            limit: self.limit,
            cost: self.cost,
            backend_name: Cow::Owned(self.backend_name.into_owned()),
            backend: Cow::Owned(self.backend.into_owned()),
        }
    }
}

impl Default for Enforcement {
    fn default() -> Self {
        Self {
            client: ClientIp::default(),
            admitted: Admitted::default(),
            expose_status: true,
            outcome: None,
            next: 0,
        }
    }
}

impl Enforcement {
    /// Skips inserting [`RateLimitStatus`]: for a handler whose only argument is the guard, the
    /// request's parts are dropped right after it, so nothing could read the status, and the
    /// insert (a boxed value in a hash map, freed again) would be pure cost.
    pub(crate) fn hide_status(&mut self) {
        self.expose_status = false;
    }

    /// Applies the allow and deny lists: `Err` for a denied client (403), `Ok(None)` for an
    /// allowed one (nothing is counted), otherwise the limits are to be checked.
    #[inline]
    pub(crate) fn start(
        context: &Context<'_>,
        parts: &Parts,
    ) -> Result<Option<Self>, GuardRejection> {
        let mut run = Self::default();
        if !(context.settings.allow.is_empty() && context.settings.deny.is_empty()) {
            let ip = run.client.get(parts, context)?;
            if client_ip::is_trusted(ip, &context.settings.deny) {
                return Err(GuardRejection::Forbidden);
            }
            if client_ip::is_trusted(ip, &context.settings.allow) {
                return Ok(None);
            }
        }
        Ok(Some(run))
    }

    /// Checks the remaining limits while their stores answer without waiting: the result, or
    /// the first limit whose store must be awaited (for `run_rest`).
    pub(crate) fn run_now<'s, 'c>(
        &mut self,
        context: &Context<'c>,
        handler: &str,
        limits: &'s [impl LimitView],
        parts: &mut Parts,
    ) -> Progress<'s, 'c> {
        while let Some(view) = limits.get(self.next) {
            self.next += 1;
            let check = match self.prepare(view, context, parts) {
                Ok(Some(check)) => check,
                Ok(None) => continue,
                Err(rejection) => return Progress::Done(Err(rejection)),
            };
            let timer = metrics::BackendTimer::start();
            let Some(checked) =
                check
                    .backend
                    .check_n_now(check.key.as_str(), &check.limit, check.cost)
            else {
                return Progress::Waiting(check);
            };
            timer.record(&check.backend_name);
            match self.apply(checked, &check, context, handler) {
                Ok(Step::Next) => {}
                Ok(Step::Stop) => break,
                Err(rejection) => return Progress::Done(Err(rejection)),
            }
        }
        Progress::Done(Ok(self.finish(parts)))
    }

    /// Awaits the store of `waiting` (from `run_now`), then checks the remaining limits.
    pub(crate) async fn run_rest(
        mut self,
        waiting: Check<'_, '_>,
        context: &Context<'_>,
        handler: &str,
        limits: &[impl LimitView],
        parts: &mut Parts,
    ) -> Result<Admitted, GuardRejection> {
        let mut check = Some(waiting);
        loop {
            let Some(current) = check.take() else {
                let Some(view) = limits.get(self.next) else {
                    break;
                };
                self.next += 1;
                check = self.prepare(view, context, parts)?;
                continue;
            };
            let key = current.key.as_str();
            let timer = metrics::BackendTimer::start();
            let checked = match current
                .backend
                .check_n_now(key, &current.limit, current.cost)
            {
                Some(checked) => checked,
                None => {
                    current
                        .backend
                        .check_n(key, &current.limit, current.cost)
                        .await
                }
            };
            timer.record(&current.backend_name);
            if let Step::Stop = self.apply(checked, &current, context, handler)? {
                break;
            }
        }
        Ok(self.finish(parts))
    }

    /// The key, limit, cost and store of `view` for this request; `None` when the limit does not
    /// count it (`methods`, `skip_if`).
    #[inline]
    fn prepare<'s, 'c>(
        &mut self,
        view: &'s impl LimitView,
        context: &Context<'c>,
        parts: &mut Parts,
    ) -> Result<Option<Check<'s, 'c>>, GuardRejection> {
        let spec = view.spec();
        if !applies(spec, parts) {
            return Ok(None);
        }
        let key = key_for(spec, view.group(), parts, context, &mut self.client)?;
        let limit = match &spec.rate {
            RateSource::Fixed(limit) => LimitRef::Fixed(limit),
            RateSource::PerRequest(rate) => {
                LimitRef::PerRequest(Box::new(spec.config.limit(rate(parts), spec.algorithm)))
            }
        };
        let (backend_name, backend) = resolve_backend(view.backend(), context)?;
        Ok(Some(Check {
            spec,
            group: view.group(),
            key,
            limit,
            cost: cost(spec, parts),
            backend_name: Cow::Borrowed(backend_name),
            backend: Cow::Borrowed(backend),
        }))
    }

    /// Takes one limit's decision (or store failure) into account.
    #[inline]
    fn apply(
        &mut self,
        checked: Result<Decision, BackendError>,
        check: &Check<'_, '_>,
        context: &Context<'_>,
        handler: &str,
    ) -> Result<Step, GuardRejection> {
        let spec = check.spec;
        let key = check.key.as_str();
        let decision = match checked {
            Ok(decision) => decision,
            Err(BackendError::InvalidLimit(problem)) => {
                return Err(GuardRejection::InvalidLimit {
                    handler: handler.to_owned(),
                    problem,
                });
            }
            Err(error) => {
                apply_failure_policy(&error, check, context, handler)?;
                self.outcome = self.outcome.max(Some(Outcome::ErrorAllowed));
                return Ok(Step::Next);
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
                if let Some(suppressed) = SHADOW_HIT.admit(&(handler, check.group)) {
                    tracing::warn!(
                        handler,
                        group = check.group,
                        key_digest = log_digest(key),
                        limit = %check.limit.rate(),
                        suppressed,
                        "shadow rate limit would block this request"
                    );
                }
                self.outcome = self.outcome.max(Some(Outcome::ShadowLimited));
            }
            return Ok(Step::Next);
        }
        if !decision.allowed {
            self.outcome = Some(Outcome::Limited);
            if spec.block {
                metrics::record_outcome(Outcome::Limited);
                return Err(GuardRejection::RateLimited(RateLimited {
                    decision,
                    handler: handler.to_owned(),
                    rate: check.limit.rate().to_string(),
                }));
            }
            self.admitted.limited = true;
            self.admitted.reported = Some(decision);
            return Ok(Step::Stop);
        }
        self.outcome = self.outcome.max(Some(Outcome::Allowed));
        let more_restrictive = self
            .admitted
            .reported
            .is_none_or(|reported| decision.remaining < reported.remaining);
        if more_restrictive {
            self.admitted.reported = Some(decision);
        }
        Ok(Step::Next)
    }

    /// Records the outcome and makes the status visible to the handler.
    #[inline]
    fn finish(&self, parts: &mut Parts) -> Admitted {
        if let Some(outcome) = self.outcome {
            metrics::record_outcome(outcome);
        }
        if let Some(decision) = self.admitted.reported
            && self.expose_status
        {
            parts.extensions.insert(RateLimitStatus {
                limited: self.admitted.limited,
                decision,
            });
        }
        self.admitted
    }
}

/// The backend a limit names (or the registry default), with its registry name.
#[inline]
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
    check: &Check<'_, '_>,
    context: &Context<'_>,
    handler: &str,
) -> Result<(), GuardRejection> {
    let cause = (handler, check.group, std::mem::discriminant(error));
    let group = check.group;
    let key_digest = || log_digest(check.key.as_str());
    match check
        .spec
        .on_error
        .unwrap_or(context.registry.on_backend_error())
    {
        OnError::Allow => {
            if let Some(suppressed) = FAILED_ALLOWING.admit(&cause) {
                tracing::warn!(%error, handler, group, key_digest = key_digest(), suppressed, "rate-limit backend failed; allowing the request");
            }
            Ok(())
        }
        OnError::Deny => {
            if let Some(suppressed) = FAILED_DENYING.admit(&cause) {
                tracing::warn!(%error, handler, group, key_digest = key_digest(), suppressed, "rate-limit backend failed; denying the request");
            }
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
#[inline]
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
