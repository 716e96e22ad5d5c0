//! `Registry::from_config`: the configured backends, connected, in a [`Registry`].

use std::sync::Arc;

use super::{BackendConfig, BackendKind, Config, ConfigError};
use crate::backend::{Backend, MemoryBackend, MultiBackend};
use crate::registry::{Registry, RegistryBuilder};

/// When network backends (Redis, SQL) connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectPolicy {
    /// While building: a backend whose server does not answer fails the build, so a server
    /// stops at startup rather than serving with a broken store. Members of `[multi]` are the
    /// exception: one that cannot connect is logged and keeps trying on later calls (its
    /// circuit breaker skips it meanwhile), so a failover setup starts with its primary down.
    /// Such a member costs a call at most the backend's timeout (Redis 500 ms, SQL 2 s):
    /// concurrent calls share one connection attempt rather than queueing for one each.
    #[default]
    AtStartup,
    /// On first use: building never fails on a server, and a Redis or SQL backend retries the
    /// connection on later calls until it succeeds (one attempt at a time, shared by the calls
    /// that wait on it, each for at most the backend's timeout); until then each call fails with
    /// the reason.
    /// Health reports a backend that cannot connect as unhealthy, with the reason (what the
    /// CLI's `health` wants).
    OnFirstUse,
}

impl Registry {
    /// Builds the configured backends ([`ConnectPolicy::AtStartup`]) into a registry value
    /// (tests, the CLI); a server installs it globally with [`Registry::builder_from_config`].
    ///
    /// Backends are registered in [`Config::backends`] order, and the members of `[multi]` are
    /// shared with it: `reset` or `cleanup` through either reaches the same store.
    ///
    /// # Errors
    /// A backend that cannot connect, or that needs a feature this build lacks (e.g. `redis`).
    pub async fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::from_config_with(config, ConnectPolicy::AtStartup).await
    }

    /// [`Registry::from_config`] with the connection policy chosen.
    ///
    /// # Errors
    /// As [`Registry::from_config`]; with [`ConnectPolicy::OnFirstUse`], only a missing feature.
    pub async fn from_config_with(
        config: &Config,
        policy: ConnectPolicy,
    ) -> Result<Self, ConfigError> {
        Ok(Self::builder_from_config_with(config, policy)
            .await?
            .build()?)
    }

    /// The configured backends, connected, in a builder: add backends of your own, then
    /// [`RegistryBuilder::install`] it as the global registry.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use ratelimit_core::{Config, Registry};
    /// let config = Config::load(Some("ratelimit.toml".as_ref()))?;
    /// Registry::builder_from_config(&config).await?.install()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Registry::from_config`].
    pub async fn builder_from_config(config: &Config) -> Result<RegistryBuilder, ConfigError> {
        Self::builder_from_config_with(config, ConnectPolicy::AtStartup).await
    }

    /// [`Registry::builder_from_config`] with the connection policy chosen.
    ///
    /// # Errors
    /// As [`Registry::from_config_with`].
    pub async fn builder_from_config_with(
        config: &Config,
        policy: ConnectPolicy,
    ) -> Result<RegistryBuilder, ConfigError> {
        let failover_members: Vec<&str> = config
            .backends()
            .iter()
            .filter_map(|backend| match backend.kind() {
                BackendKind::Multi { members } => Some(members.iter().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut built: Vec<(String, Arc<dyn Backend>)> = Vec::new();
        for backend in config.backends() {
            let instance: Arc<dyn Backend> = match backend.kind() {
                BackendKind::Memory => Arc::new(MemoryBackend::new()),
                BackendKind::Multi { members } => {
                    let mut failover =
                        MultiBackend::builder().circuit_breaker(config.circuit_breaker().clone());
                    for member in members {
                        let Some((_, shared)) = built.iter().find(|(name, _)| name == member)
                        else {
                            return Err(config.unknown_backend(
                                "multi.backends".to_owned(),
                                member,
                                super::Members::Stores,
                            ));
                        };
                        failover = failover.shared_backend(member.clone(), Arc::clone(shared));
                    }
                    Arc::new(failover.build())
                }
                BackendKind::Redis { .. } | BackendKind::Database { .. } => {
                    let connect = match policy {
                        ConnectPolicy::OnFirstUse => Connect::Later,
                        ConnectPolicy::AtStartup if failover_members.contains(&backend.name()) => {
                            Connect::NowOrLater
                        }
                        ConnectPolicy::AtStartup => Connect::Now,
                    };
                    network::backend(config, backend, connect).await?
                }
            };
            built.push((backend.name().to_owned(), instance));
        }
        let mut registry = Registry::builder()
            .default_backend(config.default_backend())
            .on_backend_error(config.on_backend_error())
            .ipv6_prefix(config.ipv6_prefix())
            .client_ip_header(config.client_ip_header())
            .trusted_proxies(config.trusted_proxies().iter().map(ToString::to_string))?;
        for (name, backend) in built {
            registry = registry.shared_backend(name, backend);
        }
        Ok(registry)
    }
}

/// How one network backend connects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Connect {
    /// Now; a failure fails the build.
    Now,
    /// Now; a failure is logged, and the backend keeps trying (Redis) or reports it (SQL).
    NowOrLater,
    /// On first use (Redis); SQL connects now and reports a failure from its calls.
    Later,
}

#[cfg(not(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
)))]
mod network {
    use std::sync::Arc;

    use super::super::{BackendConfig, Config, ConfigError};
    use crate::backend::Backend;

    pub(super) async fn backend(
        _config: &Config,
        backend: &BackendConfig,
        _connect: super::Connect,
    ) -> Result<Arc<dyn Backend>, ConfigError> {
        Err(super::feature_disabled(backend))
    }
}

#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
mod network {
    use std::sync::Arc;

    use super::super::lazy::{Connector, LazyBackend};
    use super::super::{BackendConfig, BackendKind, Config, ConfigError};
    use super::Connect;
    use crate::backend::{Backend, BackendError};

    /// Connects `backend` as `connect` says; a backend that is not connected is still
    /// registered and reports the failure from its calls and its health.
    pub(super) async fn backend(
        config: &Config,
        backend: &BackendConfig,
        connect: Connect,
    ) -> Result<Arc<dyn Backend>, ConfigError> {
        match backend.kind() {
            #[cfg(feature = "redis")]
            BackendKind::Redis { url } => redis(config.key_prefix(), backend, url, connect).await,
            #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
            BackendKind::Database { url, table_prefix } => {
                database(backend, url, table_prefix, connect).await
            }
            _ => {
                let _ = (config, connect);
                Err(super::feature_disabled(backend))
            }
        }
    }

    /// Redis, connected now or later (see [`connect_or_later`]).
    #[cfg(feature = "redis")]
    async fn redis(
        key_prefix: &str,
        backend: &BackendConfig,
        url: &str,
        connect: Connect,
    ) -> Result<Arc<dyn Backend>, ConfigError> {
        use crate::backend::RedisBackend;

        let url = url.to_owned();
        let key_prefix = key_prefix.to_owned();
        let connector: Connector = Box::new(move || {
            let builder = RedisBackend::builder(&url).key_prefix(key_prefix.clone());
            Box::pin(async move {
                let redis = builder.build().await?;
                Ok(Arc::new(redis) as Arc<dyn Backend>)
            })
        });
        let timeout = crate::backend::redis::DEFAULT_TIMEOUT;
        connect_or_later(backend, "redis", timeout, connector, connect).await
    }

    /// A SQL database, connected now or later (see [`connect_or_later`]).
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    async fn database(
        backend: &BackendConfig,
        url: &str,
        table_prefix: &str,
        connect: Connect,
    ) -> Result<Arc<dyn Backend>, ConfigError> {
        use crate::backend::SqlBackend;

        let kind = engine_name(url);
        let url = url.to_owned();
        let table_prefix = table_prefix.to_owned();
        let connector: Connector = Box::new(move || {
            let builder = SqlBackend::builder(&url).table_prefix(table_prefix.clone());
            Box::pin(async move {
                let sql = builder.build().await?;
                Ok(Arc::new(sql) as Arc<dyn Backend>)
            })
        });
        let timeout = crate::backend::sql::DEFAULT_TIMEOUT;
        connect_or_later(backend, kind, timeout, connector, connect).await
    }

    /// Connects now when it must; otherwise through a [`LazyBackend`], which keeps trying on
    /// later calls until it has connected, so a server that comes up later is used from then on
    /// (a failover member, or a CLI probe, does not need its server up when the registry is
    /// built). Concurrent calls share one connection attempt, and none waits longer than
    /// `timeout` (the backend's own) for it.
    async fn connect_or_later(
        backend: &BackendConfig,
        kind: &'static str,
        timeout: std::time::Duration,
        connector: Connector,
        connect: Connect,
    ) -> Result<Arc<dyn Backend>, ConfigError> {
        if connect == Connect::Now {
            return connector()
                .await
                .map_err(|source| connect_error(backend, source));
        }
        let lazy = LazyBackend::new(kind, timeout, connector);
        if connect == Connect::NowOrLater
            && let Err(error) = lazy.get().await
        {
            warn_unreachable(backend, &error);
        }
        Ok(Arc::new(lazy))
    }

    /// The URL a network backend connects to, for messages (password masked).
    fn display_url(backend: &BackendConfig) -> String {
        match backend.kind() {
            BackendKind::Redis { url } | BackendKind::Database { url, .. } => {
                crate::redact::url(url)
            }
            BackendKind::Memory | BackendKind::Multi { .. } => String::new(),
        }
    }

    fn connect_error(backend: &BackendConfig, source: BackendError) -> ConfigError {
        ConfigError::Connect {
            backend: backend.name().to_owned(),
            url: display_url(backend),
            source,
        }
    }

    fn warn_unreachable(backend: &BackendConfig, error: &BackendError) {
        tracing::warn!(
            backend = backend.name(),
            url = display_url(backend),
            error = crate::redact::text(&error.to_string()),
            "backend could not connect"
        );
    }

    /// The engine a database URL names, as the SQL backend's health reports it.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
    fn engine_name(url: &str) -> &'static str {
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            "mysql"
        } else if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        }
    }
}

fn feature_disabled(backend: &BackendConfig) -> ConfigError {
    let (value, feature) = match backend.kind() {
        BackendKind::Redis { .. } => ("redis", "redis"),
        _ => ("database", "postgres, sqlite or mysql"),
    };
    ConfigError::FeatureDisabled {
        field: backend.source().to_owned(),
        value,
        feature,
    }
}
