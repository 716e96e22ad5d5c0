//! The four routes both HTTP benches measure (`http_overhead` over loopback, `guard_inprocess`
//! through `Router::call`), in one router, so both measure the same handlers and limits.

use std::error::Error;

use axum::Router;
use axum::routing::get;
use ratelimit_axum::rate_limit;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

/// Every route's response body.
pub(crate) const BODY: &str = "ok";

pub(crate) const PLAIN: &str = "/plain";
pub(crate) const GUARDED: &str = "/guarded";
pub(crate) const GOVERNOR: &str = "/governor";
pub(crate) const GOVERNOR_HEADERS: &str = "/governor-headers";

async fn plain() -> &'static str {
    BODY
}

/// A billion per second: far more than loopback can carry, so every request is counted and
/// none is rejected (a 429 would be cheaper than a 200 and flatter the guard).
#[rate_limit(key = "ip", rate = "1000000000/s")]
async fn guarded() -> &'static str {
    BODY
}

/// Unguarded, `#[rate_limit]` on the memory backend, and tower_governor without and with its
/// own headers, all with the same handler body.
pub(crate) fn app() -> Result<Router, Box<dyn Error>> {
    // One token every nanosecond and the largest burst: tower_governor never rejects either.
    let governor = GovernorConfigBuilder::default()
        .key_extractor(PeerIpKeyExtractor)
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .finish()
        .ok_or("tower_governor refused the quota")?;
    // The same quota with tower_governor's own `x-ratelimit-limit` / `-remaining` headers.
    let governor_headers = GovernorConfigBuilder::default()
        .key_extractor(PeerIpKeyExtractor)
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .use_headers()
        .finish()
        .ok_or("tower_governor refused the quota")?;
    Ok(Router::new()
        .route(PLAIN, get(plain))
        .route(GUARDED, get(guarded))
        .route(GOVERNOR, get(plain).layer(GovernorLayer::new(governor)))
        .route(
            GOVERNOR_HEADERS,
            get(plain).layer(GovernorLayer::new(governor_headers)),
        ))
}
