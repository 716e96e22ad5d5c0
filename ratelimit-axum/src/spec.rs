//! What one `#[rate_limit]` attribute declares, as static data the macro writes.
//!
//! Everything here is built in `const` context by the macro: rates arrive parsed, so the
//! program never parses or unwraps a literal at run time.

use http::Method;
use http::request::Parts;
use ratelimit_core::{Algorithm, Limit, OnError, Rate};

/// Where a limit's bucket key comes from.
#[derive(Clone, Copy, Debug)]
pub enum KeySource {
    /// The client IP (after trusted proxies; IPv6 grouped by prefix).
    Ip,
    /// The authenticated user; anonymous clients get a per-IP bucket in their own namespace.
    User,
    /// The authenticated user, or for anonymous clients the same bucket as `key = "ip"`.
    UserOrIp,
    /// One bucket for every client.
    Global,
    /// A request header's value (name stored lower-case).
    Header(&'static str),
    /// A query-string parameter.
    Query(&'static str),
    /// A path parameter of the matched route.
    Path(&'static str),
    /// A function of the request; `None` falls back like a missing header. `name` stands for
    /// the function in bucket keys (`#[rate_limit]` writes its path as written, e.g.
    /// `keys::tenant`), so two key functions of one group never share a bucket, and limits
    /// that name one function the same way do.
    Custom {
        name: &'static str,
        key: fn(&Parts) -> Option<String>,
    },
}

/// A limit's rate: a compile-time literal, or chosen per request (tiers).
// A `Limit` is large (it caches its resolved policies), but a `RateSource` lives in a
// `#[rate_limit]` static and is only ever borrowed; boxing would not work in a const.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum RateSource {
    /// A literal, validated and parsed at compile time.
    Fixed(Limit),
    /// A function of the request; the algorithm and its settings come from [`LimitSpec`].
    PerRequest(fn(&Parts) -> Rate),
}

/// A request's cost.
#[derive(Clone, Copy, Debug)]
pub enum CostSource {
    /// The same for every request (at least 1).
    Fixed(u64),
    /// A function of the request; 0 is treated as 1.
    PerRequest(fn(&Parts) -> u32),
}

/// Bucket settings written in `algorithm_config = { .. }`, applied to per-request rates (fixed
/// rates carry them in their [`Limit`] already).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlgorithmConfig {
    pub bucket_size: Option<u64>,
    pub refill_rate: Option<f64>,
    pub initial_tokens: Option<u64>,
    pub capacity: Option<u64>,
    pub leak_rate: Option<f64>,
}

impl AlgorithmConfig {
    /// No settings: the algorithm's defaults.
    pub const NONE: Self = Self {
        bucket_size: None,
        refill_rate: None,
        initial_tokens: None,
        capacity: None,
        leak_rate: None,
    };

    /// `rate` enforced by `algorithm` with these settings.
    #[must_use]
    pub fn limit(&self, rate: Rate, algorithm: Algorithm) -> Limit {
        let mut limit = Limit::new(rate, algorithm);
        if let Some(bucket_size) = self.bucket_size {
            limit = limit.bucket_size(bucket_size);
        }
        if let Some(refill_rate) = self.refill_rate {
            limit = limit.refill_rate(refill_rate);
        }
        if let Some(initial_tokens) = self.initial_tokens {
            limit = limit.initial_tokens(initial_tokens);
        }
        if let Some(capacity) = self.capacity {
            limit = limit.capacity(capacity);
        }
        if let Some(leak_rate) = self.leak_rate {
            limit = limit.leak_rate(leak_rate);
        }
        limit
    }
}

/// One `#[rate_limit(..)]` attribute.
#[derive(Clone, Debug)]
pub struct LimitSpec {
    pub key: KeySource,
    pub rate: RateSource,
    pub algorithm: Algorithm,
    pub config: AlgorithmConfig,
    /// A configured backend's name; `None` for the registry default.
    pub backend: Option<&'static str>,
    pub block: bool,
    pub skip_if: Option<fn(&Parts) -> bool>,
    /// Handlers with the same group share buckets.
    pub group: &'static str,
    pub cost: CostSource,
    /// Methods that are counted; empty for all.
    pub methods: &'static [Method],
    /// Overrides the registry's failure policy.
    pub on_error: Option<OnError>,
    pub shadow: bool,
}

/// Every `#[rate_limit]` of one handler, in attribute order (top first).
#[derive(Debug)]
pub struct HandlerSpec {
    /// Identifies the handler's guard type; see [`handler_id`].
    pub id: u64,
    /// `module::path::handler`.
    pub handler: &'static str,
    pub limits: &'static [LimitSpec],
}

inventory::collect!(HandlerSpec);

/// A stable id for a handler: FNV-1a over its module path, name and the attribute's position,
/// so two handlers of one name in one module (in different `impl` blocks) still differ.
#[must_use]
pub const fn handler_id(module_path: &str, name: &str, line: u32, column: u32) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hash = fnv1a(FNV_OFFSET, module_path.as_bytes());
    hash = fnv1a(hash, b"::");
    hash = fnv1a(hash, name.as_bytes());
    hash = fnv1a(hash, &line.to_le_bytes());
    fnv1a(hash, &column.to_le_bytes())
}

const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        index += 1;
    }
    hash
}
