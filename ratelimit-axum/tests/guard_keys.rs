//! Bucket keys through real axum routing: different inputs never share a bucket, what the
//! store sees of a key, and a limit checked by hand on the guard's key. Every test has its
//! own registry (a `Scope`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::get;
use http::request::Parts;
use ratelimit_axum::core::{
    Backend, BackendError, Decision, HealthStatus, Limit, MemoryBackend, Registry,
};
use ratelimit_axum::{Scope, UserId, rate_limit};

mod support;

use support::{from_peer, registry, scoped, send};

/// A GET of `uri` from `peer`, with `headers` (raw bytes) and an optional user.
async fn status_of(
    app: &Router,
    uri: &str,
    peer: &str,
    headers: &[(&str, &[u8])],
    user: Option<&str>,
) -> StatusCode {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(value).unwrap_or_else(|error| panic!("{error}"));
        request = request.header(*name, value);
    }
    let request = request
        .body(Body::empty())
        .unwrap_or_else(|error| panic!("{error}"));
    let mut request = from_peer(request, peer);
    if let Some(user) = user {
        request.extensions_mut().insert(UserId(user.to_owned()));
    }
    send(app, request).await.status()
}

async fn get_from(app: &Router, uri: &str, peer: &str) -> StatusCode {
    status_of(app, uri, peer, &[], None).await
}

const OK: StatusCode = StatusCode::OK;
const LIMITED: StatusCode = StatusCode::TOO_MANY_REQUESTS;

#[rate_limit(rate = "1/m", key = "header:X-Token")]
async fn per_token_header() -> &'static str {
    "ok"
}

#[tokio::test]
async fn header_values_that_are_not_utf8_are_told_apart_by_their_bytes() {
    let app = scoped(Router::new().route("/", get(per_token_header)), registry());
    let peer = "192.0.2.1:1";
    let token = |value: &'static [u8]| [("x-token", value)];
    assert_eq!(status_of(&app, "/", peer, &token(b"\xff"), None).await, OK);
    assert_eq!(status_of(&app, "/", peer, &token(b"\xfe"), None).await, OK);
    assert_eq!(
        status_of(&app, "/", peer, &token(b"\xff"), None).await,
        LIMITED
    );
    // U+FFFD, what a lossy conversion makes of both.
    assert_eq!(
        status_of(&app, "/", peer, &token("\u{fffd}".as_bytes()), None).await,
        OK
    );
}

#[rate_limit(rate = "1/m", key = "query:k")]
async fn per_query() -> &'static str {
    "ok"
}

#[tokio::test]
async fn query_values_are_told_apart_by_their_decoded_bytes() {
    let app = scoped(Router::new().route("/", get(per_query)), registry());
    let peer = "192.0.2.2:1";
    assert_eq!(get_from(&app, "/?k=%FF", peer).await, OK);
    assert_eq!(get_from(&app, "/?k=%FE", peer).await, OK);
    assert_eq!(get_from(&app, "/?k=%EF%BF%BD", peer).await, OK);
    assert_eq!(get_from(&app, "/?x=1&k=%ff", peer).await, LIMITED);
    // `+` is a space and the first `k` counts, as in `application/x-www-form-urlencoded`.
    assert_eq!(get_from(&app, "/?k=a+b", peer).await, OK);
    assert_eq!(get_from(&app, "/?k=a%20b&k=c", peer).await, LIMITED);
    // A `%` that starts no escape is itself.
    assert_eq!(get_from(&app, "/?k=%zz", peer).await, OK);
    assert_eq!(get_from(&app, "/?k=%25zz", peer).await, LIMITED);
}

#[rate_limit(rate = "1/m", key = "query:a:b", group = "colons")]
async fn query_name_with_colon() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = "query:a", group = "colons")]
async fn query_value_with_colon() -> &'static str {
    "ok"
}

#[tokio::test]
async fn a_query_name_holding_a_colon_is_not_confused_with_a_value() {
    let app = scoped(
        Router::new()
            .route("/name", get(query_name_with_colon))
            .route("/value", get(query_value_with_colon)),
        registry(),
    );
    let peer = "192.0.2.3:1";
    // `colons:query:a:b:c` for both, before keys were made unambiguous.
    assert_eq!(get_from(&app, "/name?a:b=c", peer).await, OK);
    assert_eq!(get_from(&app, "/value?a=b:c", peer).await, OK);
    assert_eq!(get_from(&app, "/value?a=b:c", peer).await, LIMITED);
}

#[allow(clippy::unnecessary_wraps)]
fn tenant(_parts: &Parts) -> Option<String> {
    Some("same".to_owned())
}

#[allow(clippy::unnecessary_wraps)]
fn region(_parts: &Parts) -> Option<String> {
    Some("same".to_owned())
}

#[rate_limit(rate = "1/m", key = tenant, group = "custom")]
async fn per_tenant() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = region, group = "custom")]
async fn per_region() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = tenant, group = "custom")]
async fn also_per_tenant() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = |_parts: &Parts| Some("same".to_owned()), group = "custom")]
async fn per_closure() -> &'static str {
    "ok"
}

#[tokio::test]
async fn custom_key_functions_of_one_group_count_apart_and_one_function_is_shared() {
    let app = scoped(
        Router::new()
            .route("/tenant", get(per_tenant))
            .route("/region", get(per_region))
            .route("/tenant-too", get(also_per_tenant))
            .route("/closure", get(per_closure)),
        registry(),
    );
    let peer = "192.0.2.4:1";
    assert_eq!(get_from(&app, "/tenant", peer).await, OK);
    assert_eq!(get_from(&app, "/region", peer).await, OK);
    assert_eq!(get_from(&app, "/closure", peer).await, OK);
    // The same function in the same group: one bucket, as the group asks.
    assert_eq!(get_from(&app, "/tenant-too", peer).await, LIMITED);
}

#[rate_limit(rate = "1/m", key = "user", group = "g:user")]
async fn group_with_colon() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = "user", group = "g")]
async fn plain_group() -> &'static str {
    "ok"
}

#[tokio::test]
async fn a_group_holding_a_colon_is_not_confused_with_a_value() {
    let app = scoped(
        Router::new()
            .route("/colon", get(group_with_colon))
            .route("/plain", get(plain_group)),
        registry(),
    );
    let peer = "192.0.2.5:1";
    // `g:user:user:u` for both, before keys were made unambiguous.
    assert_eq!(status_of(&app, "/colon", peer, &[], Some("u")).await, OK);
    assert_eq!(
        status_of(&app, "/plain", peer, &[], Some("user:u")).await,
        OK
    );
    assert_eq!(
        status_of(&app, "/plain", peer, &[], Some("user:u")).await,
        LIMITED
    );
}

#[rate_limit(rate = "1/m", key = "user", group = "user-or-ip")]
async fn by_user() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = "ip", group = "user-or-ip")]
async fn by_ip() -> &'static str {
    "ok"
}

#[tokio::test]
async fn a_user_id_that_looks_like_an_ip_is_not_that_ips_bucket() {
    let app = scoped(
        Router::new()
            .route("/user", get(by_user))
            .route("/ip", get(by_ip)),
        registry(),
    );
    let peer = "192.0.2.6:1";
    assert_eq!(
        status_of(&app, "/user", peer, &[], Some("192.0.2.6")).await,
        OK
    );
    assert_eq!(get_from(&app, "/ip", peer).await, OK);
    assert_eq!(get_from(&app, "/ip", peer).await, LIMITED);
}

/// A memory store that remembers every key it was asked about.
#[derive(Debug)]
struct Recording {
    keys: Arc<Mutex<Vec<String>>>,
    store: MemoryBackend,
}

#[ratelimit_axum::core::async_trait]
impl Backend for Recording {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        if let Ok(mut keys) = self.keys.lock() {
            keys.push(key.to_owned());
        }
        self.store.check_n(key, limit, cost).await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.store.peek_n(key, limit, cost).await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        self.store.reset(key).await
    }

    async fn health(&self) -> HealthStatus {
        self.store.health().await
    }

    fn health_status(&self) -> HealthStatus {
        self.store.health_status()
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        self.store.cleanup().await
    }
}

#[rate_limit(rate = "10/m", key = "header:Authorization", backend = "recording")]
async fn per_authorization() -> &'static str {
    "ok"
}

#[rate_limit(rate = "10/m", key = "query:name", backend = "recording")]
async fn per_name() -> &'static str {
    "ok"
}

#[tokio::test]
async fn header_values_reach_the_store_only_as_digests_and_so_do_invisible_characters() {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        keys: Arc::clone(&keys),
        store: MemoryBackend::new(),
    };
    let registry = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .backend("recording", recording)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(
        Router::new()
            .route("/auth", get(per_authorization))
            .route("/name", get(per_name)),
        registry,
    );
    let peer = "192.0.2.7:1";
    let secret: &[u8] = b"tok3n";
    assert_eq!(
        status_of(&app, "/auth", peer, &[("authorization", secret)], None).await,
        OK
    );
    // U+202E (right-to-left override), U+200B (zero width space), U+2028 (line separator),
    // U+0085 (next line), U+FEFF (zero width no-break space).
    for name in [
        "%E2%80%AEevil",
        "a%E2%80%8Bb",
        "a%E2%80%A8b",
        "a%C2%85b",
        "%EF%BB%BFa",
    ] {
        assert_eq!(
            get_from(&app, &format!("/name?name={name}"), peer).await,
            OK
        );
    }
    assert_eq!(get_from(&app, "/name?name=ann", peer).await, OK);
    let keys = keys.lock().map(|keys| keys.clone()).unwrap_or_default();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert!(!keys[0].contains("tok3n"), "{}", keys[0]);
    assert!(keys[0].contains(":sha256:"), "{}", keys[0]);
    for key in &keys[1..6] {
        assert!(key.ends_with(|c: char| c.is_ascii_hexdigit()), "{key:?}");
        assert!(key.contains(":sha256:"), "{key:?}");
        assert!(key.is_ascii(), "{key:?}");
    }
    assert!(keys[6].ends_with(":query:name:ann"), "{}", keys[6]);
}

#[rate_limit(rate = "2/m", key = "user", group = "by-hand")]
async fn guarded_by_user() -> &'static str {
    "ok"
}

/// A limit checked in the handler, on the same bucket as `guarded_by_user`.
#[rate_limit(rate = "100/m", key = "ip")]
async fn checked_by_hand(
    Extension(scope): Extension<Scope>,
    Extension(UserId(user)): Extension<UserId>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = Limit::fixed_window(ratelimit_axum::core::Rate::from_quota(
        ratelimit_axum::core::Quota::new(2, std::num::NonZeroU64::MIN.saturating_add(59_999)),
    ));
    let key = ratelimit_axum::bucket_key("by-hand", ratelimit_axum::KeyKind::User, &user);
    match scope.registry().default_backend().check(&key, &limit).await {
        Ok(decision) if decision.allowed => "ok".into_response(),
        Ok(decision) => ratelimit_axum::RateLimited {
            decision,
            handler: "checked_by_hand".to_owned(),
            rate: limit.rate().to_string(),
        }
        .to_response(&ratelimit_axum::GuardSettings::default()),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn a_limit_checked_by_hand_shares_the_guards_bucket_and_keeps_its_429() {
    let app = scoped(
        Router::new()
            .route("/guarded", get(guarded_by_user))
            .route("/by-hand", get(checked_by_hand)),
        registry(),
    );
    let peer = "192.0.2.8:1";
    assert_eq!(
        status_of(&app, "/guarded", peer, &[], Some("ann")).await,
        OK
    );
    assert_eq!(
        status_of(&app, "/by-hand", peer, &[], Some("ann")).await,
        OK
    );
    assert_eq!(
        status_of(&app, "/guarded", peer, &[], Some("ann")).await,
        LIMITED
    );

    let mut request = support::get_request("/by-hand", peer);
    request.extensions_mut().insert(UserId("ann".to_owned()));
    let response = send(&app, request).await;
    assert_eq!(response.status(), LIMITED);
    // The rejecting limit's fields, not those of the guard's admitted `100/m`.
    let field = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    assert_eq!(field("x-ratelimit-limit"), Some("2"));
    assert_eq!(field("x-ratelimit-remaining"), Some("0"));
    assert!(field("retry-after").is_some());
}
