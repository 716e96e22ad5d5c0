//! The `#[rate_limit]` guard through real axum routing (`tower::ServiceExt::oneshot`). Every
//! test has its own registry (a `Scope`), so tests run in parallel without sharing counts.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Json, Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use http::request::Parts;
use http_body_util::BodyExt;
use ratelimit_axum::core::{ClientIpHeader, MemoryBackend, MultiBackend, Registry};
use ratelimit_axum::{GuardSettings, HeaderFields, RateLimitStatus, Scope, UserId, rate_limit};
use tower::ServiceExt;

mod support;

use support::{from_peer, registry, scoped};

struct Call<'a> {
    method: &'a str,
    uri: &'a str,
    peer: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

fn get_from<'a>(uri: &'a str, peer: &'a str) -> Call<'a> {
    Call {
        method: "GET",
        uri,
        peer,
        headers: Vec::new(),
        body: "",
    }
}

async fn send(app: &Router, call: Call<'_>) -> Response {
    let mut request = Request::builder().method(call.method).uri(call.uri);
    for (name, value) in &call.headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Body::from(call.body.to_owned()))
        .unwrap_or_else(|error| panic!("{error}"));
    support::send(app, from_peer(request, call.peer)).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn body(response: Response) -> axum::body::Bytes {
    response
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default()
}

async fn json(response: Response) -> serde_json::Value {
    serde_json::from_slice(&body(response).await).unwrap_or(serde_json::Value::Null)
}

#[rate_limit(rate = "5/m")]
async fn five_per_minute() -> &'static str {
    "ok"
}

#[tokio::test]
async fn five_per_minute_counts_down_then_answers_429_with_retry_after() {
    let app = scoped(Router::new().route("/", get(five_per_minute)), registry());
    for expected_remaining in ["4", "3", "2", "1", "0"] {
        let response = send(&app, get_from("/", "192.0.2.1:1000")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(header(headers, "x-ratelimit-limit"), Some("5"));
        assert_eq!(
            header(headers, "x-ratelimit-remaining"),
            Some(expected_remaining)
        );
        assert!(
            header(headers, "x-ratelimit-reset").is_some_and(|reset| reset.parse::<u64>().is_ok())
        );
        assert_eq!(
            header(headers, "ratelimit-policy"),
            Some("\"default\";q=5;w=60")
        );
        assert!(header(headers, "ratelimit").is_some_and(|value| {
            value.starts_with(&format!("\"default\";r={expected_remaining};t="))
        }));
        assert_eq!(header(headers, "retry-after"), None);
    }
    let response = send(&app, get_from("/", "192.0.2.1:1000")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(response.headers(), "retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(response.headers(), "x-ratelimit-remaining"),
        Some("0")
    );
    let body = json(response).await;
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], retry_after);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("5/m"))
    );
}

#[tokio::test]
async fn header_fields_can_be_narrowed_to_one_family() {
    for (fields, x_ratelimit, ietf) in [
        (HeaderFields::All, true, true),
        (HeaderFields::Ietf, false, true),
        (HeaderFields::XRateLimit, true, false),
    ] {
        let settings = GuardSettings::builder().header_fields(fields).build();
        let app = Router::new()
            .route("/", get(five_per_minute))
            .layer(Extension(Scope::new(registry()).with_settings(settings)));
        for _ in 0..5 {
            let response = send(&app, get_from("/", "192.0.2.1:1000")).await;
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers();
            assert_eq!(header(headers, "x-ratelimit-limit").is_some(), x_ratelimit);
            assert_eq!(
                header(headers, "x-ratelimit-remaining").is_some(),
                x_ratelimit
            );
            assert_eq!(header(headers, "x-ratelimit-reset").is_some(), x_ratelimit);
            assert_eq!(header(headers, "ratelimit-policy").is_some(), ietf);
            assert_eq!(header(headers, "ratelimit").is_some(), ietf);
        }
        let response = send(&app, get_from("/", "192.0.2.1:1000")).await;
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{fields:?}"
        );
        assert!(
            header(response.headers(), "retry-after").is_some(),
            "{fields:?}"
        );
        assert_eq!(
            header(response.headers(), "ratelimit").is_some_and(|value| value.contains(";r=0;")),
            ietf
        );
    }
}

#[tokio::test]
async fn each_ip_has_its_own_bucket() {
    let app = scoped(Router::new().route("/", get(five_per_minute)), registry());
    for _ in 0..5 {
        assert_eq!(
            send(&app, get_from("/", "192.0.2.1:1")).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&app, get_from("/", "192.0.2.1:2")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.2:1")).await.status(),
        StatusCode::OK
    );
}

#[rate_limit(rate = "1/m")]
async fn first_handler() -> &'static str {
    "first"
}

#[rate_limit(rate = "1/m")]
async fn second_handler() -> &'static str {
    "second"
}

#[rate_limit(rate = "1/m", group = "shared")]
async fn shared_a() -> &'static str {
    "a"
}

#[rate_limit(rate = "1/m", group = "shared")]
async fn shared_b() -> &'static str {
    "b"
}

#[tokio::test]
async fn handlers_have_separate_buckets_unless_they_share_a_group() {
    let app = scoped(
        Router::new()
            .route("/first", get(first_handler))
            .route("/second", get(second_handler))
            .route("/shared-a", get(shared_a))
            .route("/shared-b", get(shared_b)),
        registry(),
    );
    let peer = "198.51.100.1:1";
    assert_eq!(
        send(&app, get_from("/first", peer)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/second", peer)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/first", peer)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&app, get_from("/shared-a", peer)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/shared-b", peer)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[rate_limit(rate = "2/m", block = false)]
async fn flagging(Extension(status): Extension<RateLimitStatus>) -> String {
    format!("limited={}", status.limited)
}

#[tokio::test]
async fn block_false_runs_the_handler_and_flags_it() {
    let app = scoped(Router::new().route("/", get(flagging)), registry());
    let mut bodies = Vec::new();
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let response = send(&app, get_from("/", "192.0.2.7:1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), "retry-after"), None);
        remaining.push(header(response.headers(), "x-ratelimit-remaining").map(str::to_owned));
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bodies.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    assert_eq!(
        bodies,
        [
            "limited=false",
            "limited=false",
            "limited=true",
            "limited=true"
        ]
    );
    let remaining: Vec<_> = remaining.into_iter().flatten().collect();
    assert_eq!(remaining, ["1", "0", "0", "0"]);
}

fn is_staff(parts: &Parts) -> bool {
    parts.headers.get("x-staff").is_some()
}

#[rate_limit(rate = "1/m", skip_if = is_staff)]
async fn staff_skips() -> &'static str {
    "ok"
}

#[tokio::test]
async fn skip_if_neither_counts_nor_adds_headers() {
    let app = scoped(Router::new().route("/", get(staff_skips)), registry());
    for _ in 0..3 {
        let mut call = get_from("/", "192.0.2.8:1");
        call.headers.push(("x-staff", "1"));
        let response = send(&app, call).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), "x-ratelimit-limit"), None);
    }
    assert_eq!(
        send(&app, get_from("/", "192.0.2.8:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.8:1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[derive(serde::Deserialize)]
struct Login {
    #[allow(dead_code)]
    user: String,
}

#[rate_limit(rate = "1/m")]
async fn login(Json(_login): Json<Login>) -> &'static str {
    "welcome"
}

#[tokio::test]
async fn a_blocked_request_is_rejected_before_its_body_is_parsed() {
    let app = scoped(Router::new().route("/login", post(login)), registry());
    let call = |body| Call {
        method: "POST",
        uri: "/login",
        peer: "192.0.2.9:1",
        headers: vec![("content-type", "application/json")],
        body,
    };
    assert_eq!(
        send(&app, call("{\"user\":\"a\"}")).await.status(),
        StatusCode::OK
    );
    // Invalid JSON: the guard runs first, so the client sees 429, not 400/422.
    assert_eq!(
        send(&app, call("{not json")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_ignored_without_trusted_proxies() {
    let app = scoped(Router::new().route("/", get(first_handler)), registry());
    for spoofed in ["1.1.1.1", "2.2.2.2"] {
        let mut call = get_from("/", "203.0.113.5:1");
        call.headers.push(("x-forwarded-for", spoofed));
        call.headers.push(("x-real-ip", spoofed));
        let status = send(&app, call).await.status();
        let expected = if spoofed == "1.1.1.1" {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(
            status, expected,
            "a new X-Forwarded-For must not buy a new bucket"
        );
    }
}

#[tokio::test]
async fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
    let registry = Registry::builder()
        .trusted_proxies(["10.0.0.0/8"])
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(Router::new().route("/", get(first_handler)), registry);
    let via_proxy = |chain| {
        let mut call = get_from("/", "10.0.0.1:1");
        call.headers.push(("x-forwarded-for", chain));
        call
    };
    assert_eq!(
        send(&app, via_proxy("9.9.9.9, 198.51.100.20, 10.0.0.2"))
            .await
            .status(),
        StatusCode::OK
    );
    // The client may forge anything left of its own address; the bucket is still 198.51.100.20.
    assert_eq!(
        send(&app, via_proxy("8.8.8.8, 198.51.100.20, 10.0.0.3"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&app, via_proxy("198.51.100.21")).await.status(),
        StatusCode::OK
    );
}

/// Behind a trusted proxy that appends `X-Forwarded-For`, whatever else the client sends is its
/// own writing: only the configured header (by default `X-Forwarded-For`) is read.
#[tokio::test]
async fn forged_forwarded_headers_behind_an_xff_proxy_share_one_bucket() {
    let registry = Registry::builder()
        .trusted_proxies(["10.0.0.0/8"])
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(Router::new().route("/", get(first_handler)), registry);
    let forging = |forged| {
        let mut call = get_from("/", "10.0.0.1:1");
        call.headers.push(("forwarded", forged));
        call.headers.push(("x-forwarded-for", "198.51.100.30"));
        call
    };
    assert_eq!(
        send(&app, forging("for=6.6.6.6")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, forging("for=7.7.7.7")).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a new Forwarded header must not buy a new bucket"
    );
}

/// With another header configured, `X-Forwarded-For` is the client's writing like any other.
#[tokio::test]
async fn the_configured_header_is_the_only_one_read() {
    let registry = Registry::builder()
        .trusted_proxies(["173.245.48.0/20"])
        .map(|builder| builder.client_ip_header(ClientIpHeader::CfConnectingIp))
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(Router::new().route("/", get(first_handler)), registry);
    for (forged, expected) in [
        ("6.6.6.6", StatusCode::OK),
        ("7.7.7.7", StatusCode::TOO_MANY_REQUESTS),
    ] {
        let mut call = get_from("/", "173.245.48.1:1");
        call.headers.push(("x-forwarded-for", forged));
        call.headers.push(("cf-connecting-ip", "198.51.100.32"));
        assert_eq!(send(&app, call).await.status(), expected, "{forged}");
    }
}

/// A byte above 0x7f in the client's part of `X-Forwarded-For` must not drop the proxy's own
/// hop (and with it the whole line), nor hand the choice to the client's `X-Real-IP`.
#[tokio::test]
async fn a_non_ascii_byte_in_the_client_part_keeps_the_proxy_appended_hop() {
    let registry = Registry::builder()
        .trusted_proxies(["10.0.0.0/8"])
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(Router::new().route("/", get(first_handler)), registry);
    for forged in ["6.6.6.6", "7.7.7.7"] {
        let mut request = Request::builder().uri("/").header("x-real-ip", forged);
        let line = http::HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.31")
            .unwrap_or_else(|error| panic!("{error}"));
        request = request.header("x-forwarded-for", line);
        let mut request = request
            .body(Body::empty())
            .unwrap_or_else(|error| panic!("{error}"));
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 1))));
        let status = app
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {})
            .status();
        let expected = if forged == "6.6.6.6" {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(
            status, expected,
            "X-Real-IP {forged} must not pick the bucket"
        );
    }
}

/// NAT64, 6to4 and Teredo spellings of one IPv4 client are that client: one bucket.
#[tokio::test]
async fn embedded_ipv4_spellings_share_the_ipv4_bucket() {
    let app = scoped(Router::new().route("/", get(first_handler)), registry());
    assert_eq!(
        send(&app, get_from("/", "192.0.2.45:1")).await.status(),
        StatusCode::OK
    );
    for spelling in [
        "[64:ff9b::c000:22d]:1",
        "[::c000:22d]:1",
        "[2002:c000:22d:1::5]:1",
        // Teredo: the client's address bit-inverted in the last 32 bits.
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:1",
    ] {
        assert_eq!(
            send(&app, get_from("/", spelling)).await.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{spelling} is 192.0.2.45"
        );
    }
}

#[tokio::test]
async fn ipv6_clients_are_grouped_by_their_64() {
    let app = scoped(Router::new().route("/", get(first_handler)), registry());
    assert_eq!(
        send(&app, get_from("/", "[2001:db8:1:2::1]:1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "[2001:db8:1:2:ffff::9]:1"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&app, get_from("/", "[2001:db8:1:3::1]:1"))
            .await
            .status(),
        StatusCode::OK
    );
    // IPv4-mapped IPv6 is the IPv4 client.
    assert_eq!(
        send(&app, get_from("/", "192.0.2.44:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "[::ffff:192.0.2.44]:1"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[rate_limit(rate = "3/m")]
#[rate_limit(rate = "1/s", key = "global")]
async fn stacked() -> &'static str {
    "ok"
}

#[tokio::test]
async fn stacked_limits_are_independent_and_the_first_rejection_decides() {
    let app = scoped(Router::new().route("/", get(stacked)), registry());
    let first = send(&app, get_from("/", "192.0.2.50:1")).await;
    assert_eq!(first.status(), StatusCode::OK);
    // Most restrictive: the global 1/s has 0 left.
    assert_eq!(header(first.headers(), "x-ratelimit-limit"), Some("1"));
    assert_eq!(header(first.headers(), "x-ratelimit-remaining"), Some("0"));
    // Another client: per-IP 3/m allows, global 1/s rejects and reports itself.
    let second = send(&app, get_from("/", "192.0.2.51:1")).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(second.headers(), "x-ratelimit-limit"), Some("1"));
}

fn cost_of(parts: &Parts) -> u32 {
    parts
        .headers
        .get("x-cost")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(1)
}

#[rate_limit(rate = "10/m", cost = 4)]
async fn expensive() -> &'static str {
    "ok"
}

#[rate_limit(rate = "10/m", cost = cost_of)]
async fn priced() -> &'static str {
    "ok"
}

#[tokio::test]
async fn cost_is_charged_as_a_literal_or_per_request() {
    let app = scoped(
        Router::new()
            .route("/expensive", get(expensive))
            .route("/priced", get(priced)),
        registry(),
    );
    let peer = "192.0.2.60:1";
    let remaining = |response: &Response| {
        header(response.headers(), "x-ratelimit-remaining").map(str::to_owned)
    };
    assert_eq!(
        remaining(&send(&app, get_from("/expensive", peer)).await).as_deref(),
        Some("6")
    );
    assert_eq!(
        remaining(&send(&app, get_from("/expensive", peer)).await).as_deref(),
        Some("2")
    );
    assert_eq!(
        send(&app, get_from("/expensive", peer)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let mut call = get_from("/priced", peer);
    call.headers.push(("x-cost", "7"));
    assert_eq!(remaining(&send(&app, call).await).as_deref(), Some("3"));
}

#[rate_limit(rate = "1/m", shadow = true)]
async fn shadowed() -> &'static str {
    "ok"
}

#[tokio::test]
async fn shadow_mode_counts_but_never_blocks_nor_shows_headers() {
    let app = scoped(Router::new().route("/", get(shadowed)), registry());
    for _ in 0..3 {
        let response = send(&app, get_from("/", "192.0.2.70:1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), "x-ratelimit-limit"), None);
    }
}

#[rate_limit(rate = "1/m", methods = ["POST"])]
async fn post_only() -> &'static str {
    "ok"
}

#[tokio::test]
async fn only_listed_methods_are_counted() {
    let app = scoped(
        Router::new().route("/", get(post_only).post(post_only)),
        registry(),
    );
    let call = |method| Call {
        method,
        uri: "/",
        peer: "192.0.2.80:1",
        headers: Vec::new(),
        body: "",
    };
    for _ in 0..3 {
        let response = send(&app, call("GET")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), "x-ratelimit-limit"), None);
    }
    assert_eq!(send(&app, call("POST")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, call("POST")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[rate_limit(rate = "1/m", key = "user")]
async fn per_user() -> &'static str {
    "ok"
}

#[tokio::test]
async fn users_have_their_own_buckets_and_anonymous_clients_count_per_ip() {
    let app = Router::new()
        .route("/", get(per_user))
        .layer(axum::middleware::from_fn(
            |mut request: Request<Body>, next: axum::middleware::Next| async move {
                if let Some(user) = request
                    .headers()
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                {
                    request.extensions_mut().insert(UserId(user));
                }
                next.run(request).await
            },
        ));
    let app = scoped(app, registry());
    let as_user = |user| {
        let mut call = get_from("/", "192.0.2.90:1");
        call.headers.push(("x-user", user));
        call
    };
    assert_eq!(send(&app, as_user("alice")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, as_user("alice")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, as_user("bob")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, get_from("/", "192.0.2.90:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.90:1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.91:1")).await.status(),
        StatusCode::OK
    );
}

#[rate_limit(rate = "1/m", key = "header:X-Api-Key")]
async fn per_api_key() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = "path:id")]
async fn per_item(Path(_id): Path<String>) -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", key = "query:token")]
async fn per_token() -> &'static str {
    "ok"
}

#[tokio::test]
async fn header_path_and_query_keys_with_ip_fallback() {
    let app = scoped(
        Router::new()
            .route("/key", get(per_api_key))
            .route("/items/{id}", get(per_item))
            .route("/token", get(per_token)),
        registry(),
    );
    let with_key = |key| {
        let mut call = get_from("/key", "192.0.2.100:1");
        call.headers.push(("x-api-key", key));
        call
    };
    assert_eq!(send(&app, with_key("k1")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, with_key("k1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, with_key("k2")).await.status(), StatusCode::OK);
    let huge = "ü".repeat(10_000);
    assert_eq!(send(&app, with_key(&huge)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, with_key(&huge)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // No header: the IP's bucket, which is still fresh.
    assert_eq!(
        send(&app, get_from("/key", "192.0.2.100:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/key", "192.0.2.100:1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    assert_eq!(
        send(&app, get_from("/items/1", "192.0.2.101:1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/items/1", "192.0.2.102:1"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&app, get_from("/items/2", "192.0.2.101:1"))
            .await
            .status(),
        StatusCode::OK
    );

    assert_eq!(
        send(&app, get_from("/token?token=a%20b", "192.0.2.103:1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/token?x=1&token=a+b", "192.0.2.104:1"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_missing_key_can_be_rejected_with_400() {
    let settings = GuardSettings::builder()
        .missing_key(ratelimit_axum::MissingKey::Reject)
        .build();
    let app = Router::new()
        .route("/key", get(per_api_key))
        .layer(Extension(Scope::new(registry()).with_settings(settings)));
    assert_eq!(
        send(&app, get_from("/key", "192.0.2.110:1")).await.status(),
        StatusCode::BAD_REQUEST
    );
}

/// A list entry written as IPv4-mapped IPv6 describes IPv4 clients, whatever their spelling.
#[tokio::test]
async fn ipv4_mapped_list_entries_match_ipv4_clients() {
    let settings = GuardSettings::builder()
        .deny_list(["::ffff:203.0.113.0/120"])
        .unwrap_or_else(|error| panic!("{error}"))
        .build();
    let registry = Registry::builder()
        .trusted_proxies(["::ffff:10.0.0.0/104"])
        .and_then(|builder| builder.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let app = Router::new()
        .route("/", get(first_handler))
        .layer(Extension(Scope::new(registry).with_settings(settings)));
    for peer in ["203.0.113.9:1", "[64:ff9b::cb00:7109]:1"] {
        assert_eq!(
            send(&app, get_from("/", peer)).await.status(),
            StatusCode::FORBIDDEN,
            "{peer}"
        );
    }
    let mut via_proxy = get_from("/", "10.0.0.1:1");
    via_proxy.headers.push(("x-forwarded-for", "203.0.113.10"));
    assert_eq!(send(&app, via_proxy).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn deny_list_wins_over_allow_list_and_allow_list_skips_limits() {
    let settings = GuardSettings::builder()
        .allow_list(["192.0.2.0/24"])
        .and_then(|builder| builder.deny_list(["192.0.2.66", "2001:db8::/32"]))
        .unwrap_or_else(|error| panic!("{error}"))
        .build();
    let app = Router::new()
        .route("/", get(first_handler))
        .layer(Extension(Scope::new(registry()).with_settings(settings)));
    for _ in 0..3 {
        assert_eq!(
            send(&app, get_from("/", "192.0.2.5:1")).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&app, get_from("/", "192.0.2.66:1")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, get_from("/", "[::ffff:192.0.2.66]:1"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, get_from("/", "[2001:db8::5]:1")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, get_from("/", "198.51.100.5:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "198.51.100.5:1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn no_peer_address_is_a_500_that_says_how_to_serve() {
    let app = scoped(Router::new().route("/", get(first_handler)), registry());
    let request = Request::builder()
        .uri("/")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let response = app
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json(response).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("into_make_service_with_connect_info"))
    );
}

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

#[rate_limit(rate = "2/m", key = "global")]
async fn with_state(State(state): State<AppState>) -> Result<String, StatusCode> {
    Ok(state.greeting.to_owned())
}

#[tokio::test]
async fn handlers_with_state_and_result_returns_work() {
    let app = scoped(
        Router::new()
            .route("/", get(with_state))
            .with_state(AppState { greeting: "hi" }),
        registry(),
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.120:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.121:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_from("/", "192.0.2.122:1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A custom backend that always fails, to exercise the failure policy.
#[derive(Debug)]
struct FailingBackend;

#[ratelimit_axum::core::async_trait]
impl ratelimit_axum::core::Backend for FailingBackend {
    async fn check_n(
        &self,
        _key: &str,
        _limit: &ratelimit_axum::core::Limit,
        _cost: u64,
    ) -> Result<ratelimit_axum::core::Decision, ratelimit_axum::core::BackendError> {
        Err(ratelimit_axum::core::BackendError::Custom(
            "store offline".into(),
        ))
    }

    async fn peek_n(
        &self,
        key: &str,
        limit: &ratelimit_axum::core::Limit,
        cost: u64,
    ) -> Result<ratelimit_axum::core::Decision, ratelimit_axum::core::BackendError> {
        self.check_n(key, limit, cost).await
    }

    async fn reset(&self, _key: &str) -> Result<(), ratelimit_axum::core::BackendError> {
        Ok(())
    }

    async fn health(&self) -> ratelimit_axum::core::HealthStatus {
        self.health_status()
    }

    fn health_status(&self) -> ratelimit_axum::core::HealthStatus {
        let mut status = ratelimit_axum::core::HealthStatus::healthy("failing", None);
        status.healthy = false;
        status
    }

    async fn cleanup(&self) -> Result<u64, ratelimit_axum::core::BackendError> {
        Ok(0)
    }
}

#[rate_limit(rate = "1/m", backend = "flaky")]
async fn fail_open() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/m", backend = "flaky", on_error = "deny")]
async fn fail_closed() -> &'static str {
    "ok"
}

#[tokio::test]
async fn backend_failures_follow_the_failure_policy_and_deny_is_503_not_429() {
    let registry = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .backend("flaky", FailingBackend)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(
        Router::new()
            .route("/open", get(fail_open))
            .route("/closed", get(fail_closed)),
        registry,
    );
    for _ in 0..3 {
        let response = send(&app, get_from("/open", "192.0.2.130:1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), "x-ratelimit-limit"), None);
    }
    let response = send(&app, get_from("/closed", "192.0.2.130:1")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(response.headers(), "retry-after"), Some("5"));
}

fn teapot(limited: &ratelimit_axum::RateLimited) -> Response {
    use axum::response::IntoResponse;
    (
        StatusCode::IM_A_TEAPOT,
        format!("slow down, {}", limited.rate),
    )
        .into_response()
}

#[tokio::test]
async fn the_blocked_response_can_be_replaced_and_keeps_the_headers() {
    let settings = GuardSettings::builder().blocked_response(teapot).build();
    let app = Router::new()
        .route("/", get(first_handler))
        .layer(Extension(Scope::new(registry()).with_settings(settings)));
    assert_eq!(
        send(&app, get_from("/", "192.0.2.140:1")).await.status(),
        StatusCode::OK
    );
    let response = send(&app, get_from("/", "192.0.2.140:1")).await;
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert!(header(response.headers(), "retry-after").is_some());
    assert_eq!(header(response.headers(), "x-ratelimit-limit"), Some("1"));
}

#[rate_limit(rate = "2/m", backend = "awaited")]
async fn awaited_only_guard() -> &'static str {
    "ok"
}

#[rate_limit(rate = "2/m", backend = "awaited", block = false)]
async fn awaited_with_status(Extension(status): Extension<RateLimitStatus>) -> String {
    format!("limited={}", status.limited)
}

#[tokio::test]
async fn a_store_that_must_be_awaited_counts_for_every_handler_shape() {
    let registry = Registry::builder()
        .backend("memory", MemoryBackend::new())
        // A failover backend answers only through `check_n`, like a network store: the guard
        // must await it.
        .backend(
            "awaited",
            MultiBackend::builder()
                .backend("memory", MemoryBackend::new())
                .build(),
        )
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = scoped(
        Router::new()
            .route("/only-guard", get(awaited_only_guard))
            .route("/with-status", get(awaited_with_status)),
        registry,
    );
    // The guard as the only argument takes the whole request and keeps its parts while waiting.
    for expected_remaining in ["1", "0"] {
        let response = send(&app, get_from("/only-guard", "192.0.2.150:1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(response.headers(), "x-ratelimit-remaining"),
            Some(expected_remaining)
        );
    }
    let response = send(&app, get_from("/only-guard", "192.0.2.150:1")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // With another argument after it, the status reaches the handler.
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let response = send(&app, get_from("/with-status", "192.0.2.151:1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(String::from_utf8_lossy(&body(response).await).into_owned());
    }
    assert_eq!(bodies, ["limited=false", "limited=false", "limited=true"]);
}
