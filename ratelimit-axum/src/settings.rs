//! Request-side settings of the guard, configured once at startup (or per router for tests),
//! and the [`Scope`] that pairs them with a registry.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use ipnet::IpNet;
use ratelimit_core::Registry;
pub use ratelimit_core::client_ip::InvalidNetwork;
use ratelimit_core::client_ip::parse_network;

use crate::probe_cache::ProbeCache;
use crate::rejection::BlockedResponse;
use crate::status::UserId;

static GLOBAL: OnceLock<GuardSettings> = OnceLock::new();

/// How old the health endpoint's cached answer may be before a request probes the backends
/// again, unless [`GuardSettingsBuilder::health_interval`] says otherwise.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// What to do when a `header:` / `query:` / `path:` / custom key has no value in a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// Count the request under the client IP instead (default).
    #[default]
    FallBackToIp,
    /// Answer 400 Bad Request.
    Reject,
}

/// Which rate-limit header fields counted responses carry. `Retry-After` on a 429 is sent
/// whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderFields {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` and the IETF `RateLimit-Policy` and
    /// `RateLimit` (default).
    #[default]
    All,
    /// Only the IETF `RateLimit-Policy` and `RateLimit` fields.
    Ietf,
    /// Only `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    XRateLimit,
}

/// Finds the user of a request for `key = "user"` / `"user_or_ip"`; `None` is anonymous.
pub type UserResolver = fn(&Parts) -> Option<String>;

/// Request-side settings: user resolution, the 429 response, allow/deny lists.
#[derive(Clone, Debug)]
pub struct GuardSettings {
    pub(crate) user_resolver: UserResolver,
    pub(crate) blocked_response: Option<BlockedResponse>,
    pub(crate) missing_key: MissingKey,
    pub(crate) allow: Vec<IpNet>,
    pub(crate) deny: Vec<IpNet>,
    pub(crate) unavailable_retry_after: Duration,
    pub(crate) header_fields: HeaderFields,
    pub(crate) health_interval: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            user_resolver: user_from_extension,
            blocked_response: None,
            missing_key: MissingKey::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            unavailable_retry_after: Duration::from_secs(5),
            header_fields: HeaderFields::All,
            health_interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

/// The default user resolver: the [`UserId`] extension an auth layer inserted.
fn user_from_extension(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<UserId>()
        .map(|UserId(id)| id.clone())
}

impl GuardSettings {
    /// Starts from the defaults.
    #[must_use]
    pub fn builder() -> GuardSettingsBuilder {
        GuardSettingsBuilder::default()
    }

    /// The installed settings, or the defaults.
    pub fn global() -> &'static Self {
        GLOBAL.get_or_init(Self::default)
    }
}

/// Builds [`GuardSettings`].
#[derive(Debug, Default)]
pub struct GuardSettingsBuilder {
    settings: GuardSettings,
}

impl GuardSettingsBuilder {
    /// How `key = "user"` finds the user (default: the [`UserId`] extension).
    #[must_use]
    pub fn user_resolver(mut self, resolver: UserResolver) -> Self {
        self.settings.user_resolver = resolver;
        self
    }

    /// Builds the 429 response instead of the default JSON; the guard still adds the headers.
    #[must_use]
    pub fn blocked_response(mut self, build: BlockedResponse) -> Self {
        self.settings.blocked_response = Some(build);
        self
    }

    /// What a missing `header:` / `query:` / `path:` / custom key value does.
    #[must_use]
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.settings.missing_key = missing_key;
        self
    }

    /// Clients in these networks are never rate limited (the deny list still wins). Entries
    /// are parsed like trusted proxies ([`parse_network`]): an IPv4-mapped entry is the IPv4
    /// network, and clients match in their canonical spelling.
    ///
    /// # Errors
    /// An entry that is not an IP network or address.
    pub fn allow_list<I>(mut self, networks: I) -> Result<Self, InvalidNetwork>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.settings.allow.extend(parse_networks(networks)?);
        Ok(self)
    }

    /// Clients in these networks get 403 Forbidden on every guarded route.
    ///
    /// # Errors
    /// An entry that is not an IP network or address.
    pub fn deny_list<I>(mut self, networks: I) -> Result<Self, InvalidNetwork>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.settings.deny.extend(parse_networks(networks)?);
        Ok(self)
    }

    /// `Retry-After` of the 503 sent when every backend fails under the `deny` policy
    /// (default 5 s).
    #[must_use]
    pub fn unavailable_retry_after(mut self, after: Duration) -> Self {
        self.settings.unavailable_retry_after = after;
        self
    }

    /// Which rate-limit header fields to send (default: all five). Clients that read only one
    /// family get it with less work per response and fewer bytes on the wire.
    #[must_use]
    pub fn header_fields(mut self, fields: HeaderFields) -> Self {
        self.settings.header_fields = fields;
        self
    }

    /// How old the cached answer of [`crate::health_handler`] may be before a request probes
    /// the backends again (default [`DEFAULT_HEALTH_INTERVAL`], 5 s). Requests during a probe
    /// share it whatever this says; `Duration::ZERO` probes for every request that does not
    /// arrive during one.
    #[must_use]
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.settings.health_interval = interval;
        self
    }

    /// The settings as a value, e.g. for a [`Scope`].
    #[must_use]
    pub fn build(self) -> GuardSettings {
        self.settings
    }

    /// Makes these the global settings. Call once, before serving.
    ///
    /// # Errors
    /// When settings were installed before, or the defaults were already used.
    pub fn install(self) -> Result<&'static GuardSettings, AlreadyInstalled> {
        let mut installed = false;
        let global = GLOBAL.get_or_init(|| {
            installed = true;
            self.settings
        });
        installed.then_some(global).ok_or(AlreadyInstalled)
    }
}

/// Settings were installed twice, or after a request already used the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate-limit guard settings are already installed (or a request already used the defaults); install them once, before serving"
)]
pub struct AlreadyInstalled;

fn parse_networks<I>(networks: I) -> Result<Vec<IpNet>, InvalidNetwork>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    networks
        .into_iter()
        .map(|network| parse_network(network.as_ref()))
        .collect()
}

/// A registry and settings for one router, instead of the global ones: add it with
/// `.layer(axum::Extension(Scope::new(registry)))`. Tests use it to run in parallel, each with
/// its own stores.
#[derive(Clone, Debug)]
pub struct Scope {
    pub(crate) registry: Arc<Registry>,
    pub(crate) settings: Arc<GuardSettings>,
    /// The health endpoint's last answer for this registry: status and JSON body.
    pub(crate) health: Arc<ProbeCache<(StatusCode, Bytes)>>,
}

impl Scope {
    /// `registry` with the default settings.
    #[must_use]
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            settings: Arc::new(GuardSettings::default()),
            health: Arc::new(ProbeCache::new()),
        }
    }

    /// Replaces the settings.
    #[must_use]
    pub fn with_settings(mut self, settings: GuardSettings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    /// The registry.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
