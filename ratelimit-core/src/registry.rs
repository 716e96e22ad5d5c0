//! The backends a program uses, configured once at startup.
//!
//! ```
//! use ratelimit_core::{ClientIpHeader, MemoryBackend, OnError, Registry};
//! let registry = Registry::builder()
//!     .backend("memory", MemoryBackend::new())
//!     .on_backend_error(OnError::Deny)
//!     .trusted_proxies(["10.0.0.0/8"])?
//!     .client_ip_header(ClientIpHeader::XForwardedFor)
//!     .build()?;
//! assert_eq!(registry.default_backend_name(), "memory");
//! # Ok::<(), ratelimit_core::RegistryError>(())
//! ```
//!
//! A program installs one registry globally with [`RegistryBuilder::install`]; with none
//! installed, [`Registry::global`] is a single [`MemoryBackend`] named `memory`, so the
//! quickstart needs no configuration. Tests build registries as plain values instead, so they
//! can run in parallel without sharing state.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;

use crate::backend::{Backend, MemoryBackend};
use crate::client_ip::{self, ClientIpHeader};

/// The name of the backend in the zero-configuration registry.
pub const DEFAULT_BACKEND_NAME: &str = "memory";

/// IPv6 clients are grouped by this prefix length unless configured otherwise: one /64 is what
/// a single subscriber usually gets, so per-address limits would be trivial to dodge.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

static GLOBAL: OnceLock<Registry> = OnceLock::new();

/// What to do with a request when no backend can decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Let the request through (and log it): availability over enforcement.
    #[default]
    Allow,
    /// Answer 503 Service Unavailable with `Retry-After` (never a 429: the client did nothing
    /// wrong).
    Deny,
}

impl OnError {
    /// The configuration name, `"allow"` or `"deny"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure policy name that is neither `allow` nor `deny`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend failure policy `{0}`; expected `allow` or `deny`")]
pub struct UnknownOnError(pub String);

impl FromStr for OnError {
    type Err = UnknownOnError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(UnknownOnError(name.to_owned())),
        }
    }
}

/// The configured backends and request policies.
pub struct Registry {
    backends: Vec<(String, Arc<dyn Backend>)>,
    default_index: usize,
    on_error: OnError,
    trusted_proxies: Vec<IpNet>,
    client_ip_header: ClientIpHeader,
    ipv6_prefix: u8,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("backends", &self.backend_names().collect::<Vec<_>>())
            .field("default_backend", &self.default_backend_name())
            .field("on_error", &self.on_error)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("client_ip_header", &self.client_ip_header)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish()
    }
}

impl Registry {
    /// Starts a configuration.
    #[must_use]
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The installed registry, or (if none was installed) the zero-configuration one. After
    /// this is called, [`RegistryBuilder::install`] fails: install before serving.
    pub fn global() -> &'static Self {
        GLOBAL.get_or_init(Self::zero_config)
    }

    /// One [`MemoryBackend`] named `memory`, failures allowed, no trusted proxies.
    #[must_use]
    pub fn zero_config() -> Self {
        Self {
            backends: vec![(
                DEFAULT_BACKEND_NAME.to_owned(),
                Arc::new(MemoryBackend::new()),
            )],
            default_index: 0,
            on_error: OnError::default(),
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::default(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }

    /// The backend configured under `name`.
    #[must_use]
    pub fn backend(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.backends
            .iter()
            .find(|(backend_name, _)| backend_name == name)
            .map(|(_, backend)| backend)
    }

    /// The backend used by limits that name none.
    #[must_use]
    pub fn default_backend(&self) -> &Arc<dyn Backend> {
        &self.backends[self.default_index].1
    }

    /// The name of [`Registry::default_backend`].
    #[must_use]
    pub fn default_backend_name(&self) -> &str {
        &self.backends[self.default_index].0
    }

    /// Every backend with its name, in the order configured.
    pub fn backends(&self) -> impl Iterator<Item = (&str, &Arc<dyn Backend>)> {
        self.backends
            .iter()
            .map(|(name, backend)| (name.as_str(), backend))
    }

    /// Checks that every backend named by a `#[rate_limit]` handler linked into this program
    /// is configured here. [`RegistryBuilder::install`] runs it; tests that build registries as
    /// values may call it themselves.
    ///
    /// # Errors
    /// [`RegistryError::UnknownHandlerBackend`] for the first handler naming a missing backend.
    pub fn validate_handlers(&self) -> Result<(), RegistryError> {
        for limit in crate::handlers::registered_limits() {
            if let Some(backend) = limit.backend
                && self.backend(backend).is_none()
            {
                return Err(RegistryError::UnknownHandlerBackend {
                    handler: limit.handler,
                    backend: backend.to_owned(),
                    configured: self.backend_names().map(str::to_owned).collect(),
                });
            }
        }
        Ok(())
    }

    /// Every backend name, in the order configured.
    pub fn backend_names(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|(name, _)| name.as_str())
    }

    /// The failure policy of limits that set none.
    #[must_use]
    pub fn on_backend_error(&self) -> OnError {
        self.on_error
    }

    /// Networks whose forwarding header is believed.
    #[must_use]
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// The one header that carries the client address when the peer is a trusted proxy.
    #[must_use]
    pub fn client_ip_header(&self) -> ClientIpHeader {
        self.client_ip_header
    }

    /// How many leading bits of an IPv6 address identify one client.
    #[must_use]
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }
}

/// Configures a [`Registry`].
#[derive(Default)]
pub struct RegistryBuilder {
    backends: Vec<(String, Arc<dyn Backend>)>,
    default_backend: Option<String>,
    on_error: OnError,
    trusted_proxies: Vec<IpNet>,
    client_ip_header: ClientIpHeader,
    ipv6_prefix: Option<u8>,
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field(
                "backends",
                &self
                    .backends
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("default_backend", &self.default_backend)
            .finish_non_exhaustive()
    }
}

impl RegistryBuilder {
    /// Adds a backend under `name`. The first one added is the default unless
    /// [`RegistryBuilder::default_backend`] says otherwise.
    #[must_use]
    pub fn backend(self, name: impl Into<String>, backend: impl Backend + 'static) -> Self {
        self.shared_backend(name, Arc::new(backend))
    }

    /// Adds a backend that is also used elsewhere (e.g. inside a failover backend).
    #[must_use]
    pub fn shared_backend(mut self, name: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        self.backends.push((name.into(), backend));
        self
    }

    /// The backend for limits that name none.
    #[must_use]
    pub fn default_backend(mut self, name: impl Into<String>) -> Self {
        self.default_backend = Some(name.into());
        self
    }

    /// The failure policy for limits that set none (default: allow).
    #[must_use]
    pub fn on_backend_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Networks (CIDR, or single addresses) whose [client IP header](Self::client_ip_header)
    /// is believed; IPv4-mapped entries are IPv4 networks (see
    /// [`client_ip::parse_network`]). Default: none. An entry covering every address
    /// (`0.0.0.0/0`, `::/0`) lets any client choose its bucket: `build` warns about it.
    ///
    /// # Errors
    /// An entry that is not an IP network or address.
    pub fn trusted_proxies<I>(mut self, networks: I) -> Result<Self, RegistryError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for network in networks {
            let network = client_ip::parse_network(network.as_ref()).map_err(
                |client_ip::InvalidNetwork(text)| RegistryError::InvalidTrustedProxy(text),
            )?;
            self.trusted_proxies.push(network);
        }
        Ok(self)
    }

    /// The one header that carries the client address when the peer is a trusted proxy
    /// (default `X-Forwarded-For`). No other header is ever read.
    #[must_use]
    pub fn client_ip_header(mut self, header: ClientIpHeader) -> Self {
        self.client_ip_header = header;
        self
    }

    /// How many leading bits of an IPv6 address identify one client (default 64).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = Some(bits);
        self
    }

    /// Checks the configuration and builds the registry as a value.
    ///
    /// # Errors
    /// A duplicate backend name, an unknown default backend or an IPv6 prefix above 128.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX);
        if ipv6_prefix > 128 {
            return Err(RegistryError::InvalidIpv6Prefix(ipv6_prefix));
        }
        let mut backends = self.backends;
        if backends.is_empty() {
            backends.push((
                DEFAULT_BACKEND_NAME.to_owned(),
                Arc::new(MemoryBackend::new()),
            ));
        }
        for (index, (name, _)) in backends.iter().enumerate() {
            if backends[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(RegistryError::DuplicateBackend(name.clone()));
            }
        }
        let default_index = match &self.default_backend {
            None => 0,
            Some(wanted) => backends
                .iter()
                .position(|(name, _)| name == wanted)
                .ok_or_else(|| RegistryError::UnknownDefaultBackend {
                    name: wanted.clone(),
                    configured: backends.iter().map(|(name, _)| name.clone()).collect(),
                })?,
        };
        if let Some(everything) = client_ip::covering_everything(&self.trusted_proxies) {
            tracing::warn!(
                trusted_proxy = %everything,
                header = self.client_ip_header.name(),
                "a trusted proxy entry covers every address: any client can write the client IP \
                 header and choose its own rate-limit bucket; list only your proxies' networks"
            );
        }
        Ok(Registry {
            backends,
            default_index,
            on_error: self.on_error,
            trusted_proxies: self.trusted_proxies,
            client_ip_header: self.client_ip_header,
            ipv6_prefix,
        })
    }

    /// Builds the registry and makes it the global one. Call it once, before serving.
    ///
    /// # Errors
    /// Any [`RegistryBuilder::build`] error, [`RegistryError::UnknownHandlerBackend`] when a
    /// `#[rate_limit(backend = "..")]` handler names a backend that is not configured, or
    /// [`RegistryError::AlreadyInstalled`] when a registry was installed (or the
    /// zero-configuration one was used) before.
    pub fn install(self) -> Result<&'static Registry, RegistryError> {
        let registry = self.build()?;
        registry.validate_handlers()?;
        let mut installed = false;
        let global = GLOBAL.get_or_init(|| {
            installed = true;
            registry
        });
        if installed {
            tracing::info!(
                backends = ?global.backend_names().collect::<Vec<_>>(),
                default = global.default_backend_name(),
                "rate-limit registry installed"
            );
            Ok(global)
        } else {
            Err(RegistryError::AlreadyInstalled)
        }
    }
}

/// A registry configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// `install` ran twice, or after the zero-configuration registry was already in use.
    #[error(
        "a rate-limit registry is already installed (or the zero-configuration one was used by an earlier request); call install() once, before serving"
    )]
    AlreadyInstalled,
    /// Two backends under one name.
    #[error("backend `{0}` is configured twice; give each backend its own name")]
    DuplicateBackend(String),
    /// `default_backend` names a backend that was not added.
    #[error("default backend `{name}` is not configured; configured backends: {configured:?}")]
    UnknownDefaultBackend {
        name: String,
        configured: Vec<String>,
    },
    /// A `#[rate_limit(backend = "..")]` handler names a backend that is not configured.
    #[error(
        "handler `{handler}` uses backend `{backend}`, which is not configured; configured backends: {configured:?} (add it with .backend(\"{backend}\", ..))"
    )]
    UnknownHandlerBackend {
        handler: &'static str,
        backend: String,
        configured: Vec<String>,
    },
    /// A trusted proxy entry that is not a network.
    #[error("trusted proxy `{0}` is not an IP network; write e.g. \"10.0.0.0/8\" or \"192.0.2.1\"")]
    InvalidTrustedProxy(String),
    /// An IPv6 prefix length above 128.
    #[error("ipv6_prefix {0} is above 128; use e.g. 64")]
    InvalidIpv6Prefix(u8),
}
