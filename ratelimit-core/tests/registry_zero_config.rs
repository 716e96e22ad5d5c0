//! With nothing installed, the global registry is one memory backend named `memory`; using it
//! makes a later install an error (the program served requests with other settings).

use ratelimit_core::{Limit, Rate, Registry, RegistryError};

#[tokio::test]
async fn the_zero_config_registry_serves_and_then_blocks_install() {
    let registry = Registry::global();
    assert_eq!(registry.default_backend_name(), "memory");
    let limit = Limit::fixed_window(Rate::parse("1/m").unwrap_or_else(|error| panic!("{error}")));
    let backend = registry.default_backend();
    assert!(
        backend
            .check("zero-config", &limit)
            .await
            .is_ok_and(|d| d.allowed)
    );
    assert!(
        backend
            .check("zero-config", &limit)
            .await
            .is_ok_and(|d| !d.allowed)
    );
    assert_eq!(
        Registry::builder().install().err(),
        Some(RegistryError::AlreadyInstalled)
    );
}
