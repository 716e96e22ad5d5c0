//! `RateLimitLayer`: path-prefix rules as tower middleware, for any tower service.
//!
//! ```
//! use ratelimit_axum::RateLimitLayer;
//! let layer = RateLimitLayer::builder()
//!     .default_rate("1000/h")?
//!     .route("/api/auth/", "10/m")?
//!     .route("/api/", "500/h")?
//!     .skip_paths(["/health"])
//!     .build()?;
//! # Ok::<(), ratelimit_axum::LayerError>(())
//! ```
//!
//! The longest matching prefix wins; paths under `skip_paths` (prefix match) and paths no rule
//! matches (when there is no default rate) pass uncounted. Each rule has its own buckets, keyed
//! like `#[rate_limit]` with the group `layer:<prefix>` (`layer%3A/api/:ip:192.0.2.1`: the
//! group's lone `:` is escaped, see [`crate::bucket_key`]). A request that passes both this
//! layer and a `#[rate_limit]` handler is counted once by each, and its response headers show
//! the more restrictive of the two.

use std::sync::Arc;

use http::Method;
use ratelimit_core::{Algorithm, Limit, LimitError, OnError, Rate, RateParseError};
use tower_layer::Layer;

use crate::enforce::LimitView;
use crate::service::RateLimitService;
use crate::settings::Scope;
use crate::spec::{AlgorithmConfig, CostSource, KeySource, LimitSpec, RateSource};

/// Rate limits by path prefix; see the module docs.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    rules: Arc<Rules>,
}

impl RateLimitLayer {
    /// Starts a configuration.
    #[must_use]
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::default()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, Arc::clone(&self.rules))
    }
}

/// Every rule of a layer, shared by all clones of its service.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Longest prefix first.
    routes: Vec<Rule>,
    default: Option<Rule>,
    skip_paths: Vec<String>,
    pub(crate) scope: Option<Scope>,
}

#[derive(Debug)]
pub(crate) struct Rule {
    prefix: String,
    /// `layer:<prefix>`, the rule's bucket group and its name in logs.
    pub(crate) name: String,
    spec: LimitSpec,
    backend: Option<String>,
}

impl LimitView for Rule {
    fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    fn group(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }
}

impl Rules {
    /// The rule for `path`: none under a skip path, else the longest matching prefix, else the
    /// default.
    pub(crate) fn select(&self, path: &str) -> Option<&Rule> {
        if self
            .skip_paths
            .iter()
            .any(|skip| path.starts_with(skip.as_str()))
        {
            return None;
        }
        self.routes
            .iter()
            .find(|rule| path.starts_with(rule.prefix.as_str()))
            .or(self.default.as_ref())
    }
}

/// Configures a [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimitLayerBuilder {
    default_rate: Option<Rate>,
    routes: Vec<(String, Rate)>,
    skip_paths: Vec<String>,
    key: KeySource,
    algorithm: Algorithm,
    backend: Option<String>,
    on_error: Option<OnError>,
    block: bool,
    scope: Option<Scope>,
}

impl Default for RateLimitLayerBuilder {
    fn default() -> Self {
        Self {
            default_rate: None,
            routes: Vec::new(),
            skip_paths: Vec::new(),
            key: KeySource::Ip,
            algorithm: Algorithm::default(),
            backend: None,
            on_error: None,
            block: true,
            scope: None,
        }
    }
}

impl RateLimitLayerBuilder {
    /// The rate of paths that no route matches.
    ///
    /// # Errors
    /// An invalid rate string, naming the problem.
    pub fn default_rate(mut self, rate: &str) -> Result<Self, LayerError> {
        self.default_rate = Some(parse("*", rate)?);
        Ok(self)
    }

    /// The rate of paths starting with `prefix` (the longest matching prefix wins).
    ///
    /// # Errors
    /// An invalid rate string, naming the path and the problem.
    pub fn route(mut self, prefix: impl Into<String>, rate: &str) -> Result<Self, LayerError> {
        let prefix = prefix.into();
        let rate = parse(&prefix, rate)?;
        self.routes.push((prefix, rate));
        Ok(self)
    }

    /// Paths (prefix match) that are never counted, e.g. health probes.
    #[must_use]
    pub fn skip_paths<I>(mut self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.skip_paths.extend(paths.into_iter().map(Into::into));
        self
    }

    /// What identifies a client (default: its IP).
    #[must_use]
    pub fn key(mut self, key: KeySource) -> Self {
        self.key = key;
        self
    }

    /// The algorithm of every rule (default: fixed window).
    #[must_use]
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// A configured backend's name (default: the registry's default backend).
    #[must_use]
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.backend = Some(name.into());
        self
    }

    /// The failure policy (default: the registry's).
    #[must_use]
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = Some(on_error);
        self
    }

    /// `false`: count and flag (`RateLimitStatus`) but let requests through.
    #[must_use]
    pub fn block(mut self, block: bool) -> Self {
        self.block = block;
        self
    }

    /// Uses this registry and settings instead of the global ones (or a `Scope` extension).
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Checks every rule and builds the layer.
    ///
    /// # Errors
    /// No rule at all, or a rate the algorithm cannot enforce.
    pub fn build(self) -> Result<RateLimitLayer, LayerError> {
        if self.default_rate.is_none() && self.routes.is_empty() {
            return Err(LayerError::NoRules);
        }
        let rule = |prefix: String, rate: Rate| -> Result<Rule, LayerError> {
            let limit = Limit::new(rate, self.algorithm);
            limit
                .validate()
                .map_err(|source| LayerError::InvalidLimit {
                    path: prefix.clone(),
                    source,
                })?;
            Ok(Rule {
                name: format!("layer:{prefix}"),
                prefix,
                spec: LimitSpec {
                    key: self.key,
                    rate: RateSource::Fixed(limit),
                    algorithm: self.algorithm,
                    config: AlgorithmConfig::NONE,
                    backend: None,
                    block: self.block,
                    skip_if: None,
                    group: "",
                    cost: CostSource::Fixed(1),
                    methods: &[] as &[Method],
                    on_error: self.on_error,
                    shadow: false,
                },
                backend: self.backend.clone(),
            })
        };
        let mut routes = Vec::with_capacity(self.routes.len());
        for (prefix, rate) in self.routes.clone() {
            routes.push(rule(prefix, rate)?);
        }
        routes.sort_by_key(|rule| std::cmp::Reverse(rule.prefix.len()));
        let default = match self.default_rate.clone() {
            Some(rate) => Some(rule("*".to_owned(), rate)?),
            None => None,
        };
        Ok(RateLimitLayer {
            rules: Arc::new(Rules {
                routes,
                default,
                skip_paths: self.skip_paths,
                scope: self.scope,
            }),
        })
    }
}

fn parse(path: &str, rate: &str) -> Result<Rate, LayerError> {
    Rate::parse(rate).map_err(|source| LayerError::InvalidRate {
        path: path.to_owned(),
        source,
    })
}

/// A layer configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A rule's rate string does not parse.
    #[error("rate limit rule for `{path}`: {source}")]
    InvalidRate {
        path: String,
        #[source]
        source: RateParseError,
    },
    /// A rule's rate cannot be enforced by the chosen algorithm.
    #[error("rate limit rule for `{path}`: {source}")]
    InvalidLimit {
        path: String,
        #[source]
        source: LimitError,
    },
    /// Neither a default rate nor any route.
    #[error("a rate limit layer needs a default_rate or at least one route")]
    NoRules,
}
