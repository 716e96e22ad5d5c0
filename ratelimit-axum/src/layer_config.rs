//! `RateLimitLayer` from the `[middleware]` section of a [`Config`] (feature `config`).
//!
//! ```
//! use ratelimit_axum::RateLimitLayer;
//! use ratelimit_axum::core::Config;
//! let config = Config::from_toml_str(
//!     r#"
//!     [middleware]
//!     default_rate = "1000/h"
//!     skip_paths = ["/health"]
//!     [middleware.rate_limits]
//!     "/api/auth/" = "10/m"
//!     "#,
//! )?;
//! let layer = RateLimitLayer::from_config(&config)?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ratelimit_core::Config;

use crate::layer::{LayerError, RateLimitLayer, RateLimitLayerBuilder};

impl RateLimitLayer {
    /// A layer with the rules of `config`'s `[middleware]` section: `default_rate`,
    /// `rate_limits`, `skip_paths`, `algorithm` and `backend`.
    ///
    /// # Errors
    /// [`LayerError::NoRules`] when the section is missing or has neither a default rate nor a
    /// rule, or a rate the configured algorithm cannot enforce.
    pub fn from_config(config: &Config) -> Result<Self, LayerError> {
        Self::builder_from_config(config)?.build()
    }

    /// The builder of [`RateLimitLayer::from_config`], to add what the file does not say (the
    /// key, a scope, `block(false)`) before building.
    ///
    /// # Errors
    /// [`LayerError::NoRules`] when the config has no `[middleware]` section.
    pub fn builder_from_config(config: &Config) -> Result<RateLimitLayerBuilder, LayerError> {
        let middleware = config.middleware().ok_or(LayerError::NoRules)?;
        // The rates were parsed when the config loaded; their canonical form parses again.
        let mut builder = Self::builder()
            .algorithm(middleware.algorithm)
            .skip_paths(middleware.skip_paths.iter().cloned());
        if let Some(rate) = &middleware.default_rate {
            builder = builder.default_rate(&rate.to_string())?;
        }
        for (prefix, rate) in &middleware.rate_limits {
            builder = builder.route(prefix.clone(), &rate.to_string())?;
        }
        if let Some(backend) = &middleware.backend {
            builder = builder.backend(backend.clone());
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn the_spec_middleware_section_builds_a_layer() {
        let config = config(
            r#"
            [middleware]
            default_rate = "1000/h"
            skip_paths = ["/health"]
            algorithm = "sliding_window"
            [middleware.rate_limits]
            "/api/auth/" = "10/m"
            "/api/" = "500/h"
            "#,
        );
        assert!(RateLimitLayer::from_config(&config).is_ok());
    }

    #[test]
    fn no_middleware_section_is_no_rules() {
        assert!(matches!(
            RateLimitLayer::from_config(&Config::default()),
            Err(LayerError::NoRules)
        ));
        assert!(matches!(
            RateLimitLayer::from_config(&config("[middleware]\nskip_paths = [\"/x\"]")),
            Err(LayerError::NoRules)
        ));
    }

    #[test]
    fn compound_rates_survive_the_round_trip() {
        let config = config("[middleware]\ndefault_rate = \"10/s;1000/h\"");
        assert!(RateLimitLayer::from_config(&config).is_ok());
    }
}
