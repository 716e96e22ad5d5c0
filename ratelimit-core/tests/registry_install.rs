//! The global registry, in its own test binary (process) so no other test shares it.

use ratelimit_core::{MemoryBackend, Registry, RegistryError};

#[test]
fn install_once_then_every_later_install_fails() {
    let installed = Registry::builder()
        .backend("primary", MemoryBackend::new())
        .install()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(installed.default_backend_name(), "primary");
    assert_eq!(Registry::global().default_backend_name(), "primary");
    let again = Registry::builder().install();
    assert_eq!(again.err(), Some(RegistryError::AlreadyInstalled));
    assert!(
        RegistryError::AlreadyInstalled
            .to_string()
            .contains("before serving")
    );
}
