//! Where a limit's bucket key comes from in a request: the client IP, the user, a header, a
//! query or path parameter, or a custom function.

use std::future::Future as _;
use std::net::IpAddr;
use std::task::Poll;

use http::request::Parts;

use crate::client_ip::{self, MissingPeerAddress};
use crate::enforce::Context;
use crate::key::{Key, bucket_key, ip_bucket_key};
use crate::rejection::GuardRejection;
use crate::settings::MissingKey;
use crate::spec::{KeySource, LimitSpec};

/// The client IP, computed at most once per request.
#[derive(Default)]
pub(crate) struct ClientIp(Option<IpAddr>);

impl ClientIp {
    #[inline]
    pub(crate) fn get(
        &mut self,
        parts: &Parts,
        context: &Context<'_>,
    ) -> Result<IpAddr, GuardRejection> {
        if let Some(ip) = self.0 {
            return Ok(ip);
        }
        let registry = context.registry();
        let ip = client_ip::client_ip(
            parts,
            registry.trusted_proxies(),
            registry.client_ip_header(),
        )
        .map_err(|MissingPeerAddress| GuardRejection::MissingPeerAddress)?;
        self.0 = Some(ip);
        Ok(ip)
    }

    /// The bucket key of `group` and `kind` for this client's (grouped) IP.
    #[inline]
    fn bucket_key(
        &mut self,
        group: &str,
        kind: &str,
        parts: &Parts,
        context: &Context<'_>,
    ) -> Result<Key, GuardRejection> {
        let ip = self.get(parts, context)?;
        Ok(ip_bucket_key(
            group,
            kind,
            ip,
            context.registry().ipv6_prefix(),
        ))
    }
}

/// The bucket key of one limit for this request. Synchronous (a path parameter is read without
/// waiting), so the guard decides without a future for stores that never wait.
#[inline]
pub(crate) fn key_for(
    spec: &LimitSpec,
    group: &str,
    parts: &mut Parts,
    context: &Context<'_>,
    client: &mut ClientIp,
) -> Result<Key, GuardRejection> {
    let (kind, value): (std::borrow::Cow<'static, str>, Option<String>) = match spec.key {
        KeySource::Ip => ("ip".into(), None),
        KeySource::Global => ("global".into(), Some(String::new())),
        KeySource::User | KeySource::UserOrIp => match (context.settings.user_resolver)(parts) {
            Some(user) => ("user".into(), Some(user)),
            // Anonymous clients are counted per IP: under `user`, in a namespace of their own so
            // they never share a bucket with a user; under `user_or_ip`, as plain IPs.
            None if matches!(spec.key, KeySource::User) => ("anon".into(), None),
            None => ("ip".into(), None),
        },
        KeySource::Header(name) => (
            format!("header:{name}").into(),
            required(header_value(parts, name), "header", name, context)?,
        ),
        KeySource::Query(name) => (
            format!("query:{name}").into(),
            required(query_value(parts, name), "query parameter", name, context)?,
        ),
        KeySource::Path(name) => (
            format!("path:{name}").into(),
            required(path_value(parts, name), "path parameter", name, context)?,
        ),
        KeySource::Custom(key) => (
            "custom".into(),
            required(key(parts), "custom key", "", context)?,
        ),
    };
    match value {
        Some(value) => Ok(Key::from(bucket_key(group, &kind, &value))),
        // `anon` keeps its namespace; a missing value falls back to the plain IP bucket.
        None if kind == "anon" => client.bucket_key(group, &kind, parts, context),
        None => client.bucket_key(group, "ip", parts, context),
    }
}

/// `Some(value)`, or `None` to fall back to the IP, or the 400 rejection the settings ask for.
fn required(
    value: Option<String>,
    what: &'static str,
    name: &str,
    context: &Context<'_>,
) -> Result<Option<String>, GuardRejection> {
    match (value, context.settings.missing_key) {
        (Some(value), _) => Ok(Some(value)),
        (None, MissingKey::FallBackToIp) => Ok(None),
        (None, MissingKey::Reject) => {
            tracing::debug!(what, name, "rate-limit key value missing; rejecting");
            Err(GuardRejection::MissingKeyValue(what))
        }
    }
}

/// A header's value; non-UTF-8 bytes are kept (lossily) rather than dropped, so they still
/// identify the client.
fn header_value(parts: &Parts, name: &str) -> Option<String> {
    let value = parts.headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn query_value(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A path parameter of the matched route. axum's extractor is an `async fn` that never waits,
/// so one poll answers it.
fn path_value(parts: &mut Parts, name: &str) -> Option<String> {
    use axum::extract::{FromRequestParts, RawPathParams};
    let extraction = std::pin::pin!(RawPathParams::from_request_parts(parts, &()));
    let mut waker_context = std::task::Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Ok(params)) = extraction.poll(&mut waker_context) else {
        return None;
    };
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}
