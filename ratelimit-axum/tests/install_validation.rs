//! `install()` refuses a registry that lacks a backend some `#[rate_limit]` handler names, and
//! says which handler. Its own test binary: it installs the global registry.

use ratelimit_axum::core::{MemoryBackend, Registry, RegistryError};
use ratelimit_axum::rate_limit;

#[rate_limit(rate = "5/m", backend = "sessions")]
async fn needs_sessions() -> &'static str {
    "ok"
}

#[test]
fn install_names_the_handler_whose_backend_is_missing() {
    let _ = needs_sessions;
    let registered: Vec<_> = ratelimit_axum::core::registered_limits()
        .filter(|limit| limit.handler.ends_with("::needs_sessions"))
        .collect();
    assert_eq!(
        registered.len(),
        1,
        "the handler registered its limit at link time"
    );
    assert_eq!(registered[0].rate, "5/m");
    assert_eq!(registered[0].backend, Some("sessions"));

    let error = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .install()
        .err();
    match &error {
        Some(RegistryError::UnknownHandlerBackend {
            handler,
            backend,
            configured,
        }) => {
            assert!(
                handler.ends_with("install_validation::needs_sessions"),
                "{handler}"
            );
            assert_eq!(backend, "sessions");
            assert_eq!(configured, &["memory".to_owned()]);
        }
        other => panic!("expected the missing backend to be reported, got {other:?}"),
    }
    assert!(error.is_some_and(|e| e.to_string().contains(".backend(\"sessions\", ..)")));

    // With the backend configured, the same program installs.
    let installed = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .backend("sessions", MemoryBackend::new())
        .install();
    assert!(installed.is_ok(), "{installed:?}");
}
