//! Registries as values: defaults, validation of every builder input.

use ratelimit_core::{MemoryBackend, OnError, Registry, RegistryError};

#[test]
fn an_empty_builder_is_the_zero_config_registry() {
    let registry = Registry::builder()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(registry.backend_names().collect::<Vec<_>>(), ["memory"]);
    assert_eq!(registry.default_backend_name(), "memory");
    assert_eq!(registry.on_backend_error(), OnError::Allow);
    assert!(registry.trusted_proxies().is_empty());
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
fn failure_policy_names_parse() {
    assert_eq!("allow".parse::<OnError>().ok(), Some(OnError::Allow));
    assert_eq!("deny".parse::<OnError>().ok(), Some(OnError::Deny));
    assert!(
        "Deny"
            .parse::<OnError>()
            .is_err_and(|e| e.to_string().contains("`allow` or `deny`"))
    );
}
