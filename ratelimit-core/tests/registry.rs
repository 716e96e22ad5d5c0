//! Registries as values: defaults, validation of every builder input.

use std::sync::{Arc, Mutex};

use ratelimit_core::{ClientIpHeader, MemoryBackend, OnError, Registry, RegistryError};

#[test]
fn an_empty_builder_is_the_zero_config_registry() {
    let registry = Registry::builder()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(registry.backend_names().collect::<Vec<_>>(), ["memory"]);
    assert_eq!(registry.default_backend_name(), "memory");
    assert_eq!(registry.on_backend_error(), OnError::Allow);
    assert!(registry.trusted_proxies().is_empty());
    assert_eq!(registry.client_ip_header(), ClientIpHeader::XForwardedFor);
    assert_eq!(registry.ipv6_prefix(), 64);
}

#[test]
fn the_first_backend_is_the_default_unless_named() {
    let registry = Registry::builder()
        .backend("a", MemoryBackend::new())
        .backend("b", MemoryBackend::new())
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(registry.default_backend_name(), "a");
    let registry = Registry::builder()
        .backend("a", MemoryBackend::new())
        .backend("b", MemoryBackend::new())
        .default_backend("b")
        .on_backend_error(OnError::Deny)
        .ipv6_prefix(48)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(registry.default_backend_name(), "b");
    assert!(registry.backend("a").is_some() && registry.backend("c").is_none());
    assert_eq!(registry.on_backend_error(), OnError::Deny);
    assert_eq!(registry.ipv6_prefix(), 48);
    assert_eq!(registry.default_backend().health_status().backend, "memory");
}

#[test]
fn bad_configuration_is_an_error_naming_the_fix() {
    let unknown = Registry::builder()
        .backend("redis", MemoryBackend::new())
        .default_backend("db")
        .build();
    assert!(
        matches!(&unknown, Err(RegistryError::UnknownDefaultBackend { name, .. }) if name == "db")
    );
    assert!(
        unknown
            .err()
            .is_some_and(|e| e.to_string().contains("[\"redis\"]"))
    );

    let duplicate = Registry::builder()
        .backend("m", MemoryBackend::new())
        .backend("m", MemoryBackend::new())
        .build();
    assert_eq!(
        duplicate.err(),
        Some(RegistryError::DuplicateBackend("m".into()))
    );

    let proxy = Registry::builder().trusted_proxies(["10.0.0.0/8", "not-a-network"]);
    assert_eq!(
        proxy.err(),
        Some(RegistryError::InvalidTrustedProxy("not-a-network".into()))
    );

    let prefix = Registry::builder().ipv6_prefix(129).build();
    assert_eq!(prefix.err(), Some(RegistryError::InvalidIpv6Prefix(129)));
}

#[test]
fn trusted_proxies_take_networks_and_single_addresses() {
    let registry = Registry::builder()
        .trusted_proxies(["10.0.0.0/8", " 192.0.2.1 ", "2001:db8::/32", "::1"])
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let printed: Vec<String> = registry
        .trusted_proxies()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        printed,
        ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"]
    );
}

#[test]
fn ipv4_mapped_trusted_proxies_are_ipv4_networks() {
    let registry = Registry::builder()
        .trusted_proxies(["::ffff:10.0.0.0/104", "::ffff:192.0.2.1"])
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let printed: Vec<String> = registry
        .trusted_proxies()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(printed, ["10.0.0.0/8", "192.0.2.1/32"]);
}

#[test]
fn the_client_ip_header_is_one_configured_header() {
    for header in ClientIpHeader::ALL {
        let registry = Registry::builder()
            .client_ip_header(header)
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(registry.client_ip_header(), header);
    }
}

/// The warnings a registry build logs.
fn warnings_of_build(proxies: &[&str]) -> Vec<String> {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let subscriber = WarningCapture(Arc::clone(&warnings));
    tracing::subscriber::with_default(subscriber, || {
        Registry::builder()
            .trusted_proxies(proxies)
            .and_then(|builder| builder.build())
            .unwrap_or_else(|error| panic!("{error}"));
    });
    warnings.lock().map(|list| list.clone()).unwrap_or_default()
}

#[test]
fn trusting_every_address_is_warned_about_at_build() {
    assert_eq!(
        warnings_of_build(&["10.0.0.0/8", "2001:db8::/32"]),
        Vec::<String>::new()
    );
    for everything in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"] {
        let warnings = warnings_of_build(&["10.0.0.0/8", everything]);
        assert_eq!(warnings.len(), 1, "{everything}: {warnings:?}");
        assert!(
            warnings[0].contains("covers every address"),
            "{everything}: {warnings:?}"
        );
    }
}

/// Records the message and fields of every `warn!` event.
struct WarningCapture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for WarningCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut text = String::new();
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                text.push_str(&format!("{}={value:?} ", field.name()));
            },
        );
        if let Ok(mut warnings) = self.0.lock() {
            warnings.push(text);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn failure_policy_names_parse() {
    assert_eq!("allow".parse::<OnError>().ok(), Some(OnError::Allow));
    assert_eq!("deny".parse::<OnError>().ok(), Some(OnError::Deny));
    assert!(
        "Deny"
            .parse::<OnError>()
            .is_err_and(|e| e.to_string().contains("`allow` or `deny`"))
    );
}
