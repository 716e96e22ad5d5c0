//! `ratelimit inspect KEY`: a `peek`, the decision a request would get now, counting nothing.

use std::num::NonZeroU64;

use ratelimit_core::{Algorithm, Config, Limit, Quota, Rate, Registry};
use serde::Serialize;

use crate::args::InspectArgs;
use crate::{CliError, context};

/// The rate `inspect` evaluates when neither `--rate` nor `[middleware] default_rate` gives
/// one: 1000/h, the middleware's usual default.
pub const FALLBACK_RATE: Quota = Quota::new(
    1_000,
    match NonZeroU64::new(3_600_000) {
        Some(hour) => hour,
        None => NonZeroU64::MIN,
    },
);

/// The decision for one key.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// The key as given.
    pub key: String,
    /// The backend that answered.
    pub backend: String,
    /// The limit evaluated, canonical form.
    pub rate: String,
    /// Its algorithm.
    pub algorithm: &'static str,
    /// The cost of the imagined request.
    pub cost: u64,
    /// Whether that request would be admitted now.
    pub allowed: bool,
    /// The most restrictive quota's limit.
    pub limit: u64,
    /// What it would have left after the request (or has left, when rejected).
    pub remaining: u64,
    /// When that quota resets.
    pub reset_after_ms: u64,
    /// When rejected: how long until the request would pass (`null`: never, the cost is above
    /// the limit or the rate is 0).
    pub retry_after_ms: Option<u64>,
}

/// Peeks `args.key` on the chosen backend.
///
/// # Errors
/// An unknown `--backend`, or the backend failing.
pub async fn run(
    config: &Config,
    registry: &Registry,
    args: &InspectArgs,
) -> Result<InspectReport, CliError> {
    let middleware = config.middleware();
    let rate = match (&args.rate, middleware.and_then(|m| m.default_rate.as_ref())) {
        (Some(rate), _) | (None, Some(rate)) => rate.clone(),
        (None, None) => Rate::from_quota(FALLBACK_RATE),
    };
    let algorithm = args
        .algorithm
        .or(middleware.map(|m| m.algorithm))
        .unwrap_or(Algorithm::FixedWindow);
    let name = args
        .backend
        .clone()
        .unwrap_or_else(|| registry.default_backend_name().to_owned());
    let backend = context::require_backend(registry, &name)?;
    let limit = limit_of(rate.clone(), algorithm, args)?;
    let decision = backend
        .peek_n(&args.key, &limit, args.cost)
        .await
        .map_err(|source| CliError::Backend {
            backend: name.clone(),
            source,
        })?;
    Ok(InspectReport {
        key: args.key.clone(),
        backend: name,
        rate: rate.to_string(),
        algorithm: algorithm.name(),
        cost: args.cost,
        allowed: decision.allowed,
        limit: decision.limit,
        remaining: decision.remaining,
        reset_after_ms: millis(decision.reset_after),
        retry_after_ms: decision.retry_after.map(millis),
    })
}

/// The limit to peek with: each store keeps one state per limit, its algorithm settings
/// included, so `inspect` finds a handler's count only with the handler's own settings.
fn limit_of(rate: Rate, algorithm: Algorithm, args: &InspectArgs) -> Result<Limit, CliError> {
    let mut limit = Limit::new(rate, algorithm);
    if let Some(tokens) = args.bucket_size {
        limit = limit.bucket_size(tokens);
    }
    if let Some(per_second) = args.refill_rate {
        limit = limit.refill_rate(per_second);
    }
    if let Some(tokens) = args.initial_tokens {
        limit = limit.initial_tokens(tokens);
    }
    if let Some(level) = args.capacity {
        limit = limit.capacity(level);
    }
    if let Some(per_second) = args.leak_rate {
        limit = limit.leak_rate(per_second);
    }
    limit.validate()?;
    Ok(limit)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl InspectReport {
    /// One line per fact.
    #[must_use]
    pub fn to_text(&self) -> String {
        let verdict = if self.allowed {
            "would be allowed".to_owned()
        } else {
            match self.retry_after_ms {
                Some(wait) => format!(
                    "would be REJECTED (allowed again in {})",
                    crate::output::duration(std::time::Duration::from_millis(wait))
                ),
                None => "would be REJECTED (never allowed: the cost is above the limit)".to_owned(),
            }
        };
        format!(
            "key:        {}\nbackend:    {}\nlimit:      {} ({}), cost {}\ndecision:   {verdict}\nremaining:  {} of {}\nresets in:  {}\n",
            self.key,
            self.backend,
            self.rate,
            self.algorithm,
            self.cost,
            self.remaining,
            self.limit,
            crate::output::duration(std::time::Duration::from_millis(self.reset_after_ms)),
        )
    }
}
