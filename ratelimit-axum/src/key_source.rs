//! Where a limit's bucket key comes from in a request: the client IP, the user, a header, a
//! query or path parameter, or a custom function.

use std::borrow::Cow;
use std::future::Future as _;
use std::net::IpAddr;
use std::task::Poll;

use http::request::Parts;

use crate::client_ip::{self, MissingPeerAddress};
use crate::enforce::Context;
use crate::key::{IpKind, Key, KeyKind, ip_bucket_key, key};
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
        kind: IpKind,
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
    // The value's raw bytes: a header borrowed as it came, the others decoded or computed.
    let (kind, value): (KeyKind<'_>, Option<Cow<'_, [u8]>>) = match spec.key {
        KeySource::Ip => return client.bucket_key(group, IpKind::Ip, parts, context),
        KeySource::Global => return Ok(key(group, KeyKind::Global, b"")),
        KeySource::User | KeySource::UserOrIp => {
            return match (context.settings.user_resolver)(parts) {
                Some(user) => Ok(key(group, KeyKind::User, user.as_bytes())),
                // Anonymous clients are counted per IP: under `user`, in a namespace of their
                // own so they never share a bucket with a user; under `user_or_ip`, as plain
                // IPs.
                None if matches!(spec.key, KeySource::User) => {
                    client.bucket_key(group, IpKind::Anon, parts, context)
                }
                None => client.bucket_key(group, IpKind::Ip, parts, context),
            };
        }
        KeySource::Header(name) => (
            KeyKind::Header(name),
            parts
                .headers
                .get(name)
                .map(|value| Cow::Borrowed(value.as_bytes())),
        ),
        KeySource::Query(name) => (KeyKind::Query(name), query_value(parts, name)),
        KeySource::Path(name) => (
            KeyKind::Path(name),
            path_value(parts, name).map(|value| Cow::Owned(value.into_bytes())),
        ),
        KeySource::Custom { name, key: custom } => (
            KeyKind::Custom(name),
            custom(parts).map(|value| Cow::Owned(value.into_bytes())),
        ),
    };
    match value {
        Some(value) => Ok(key(group, kind, &value)),
        None => {
            missing(kind, context)?;
            client.bucket_key(group, IpKind::Ip, parts, context)
        }
    }
}

/// A key's value is missing: `Ok` to fall back to the IP, or the 400 rejection the settings
/// ask for.
fn missing(kind: KeyKind<'_>, context: &Context<'_>) -> Result<(), GuardRejection> {
    match context.settings.missing_key {
        MissingKey::FallBackToIp => Ok(()),
        MissingKey::Reject => {
            let (what, name) = match kind {
                KeyKind::Header(name) => ("header", name),
                KeyKind::Query(name) => ("query parameter", name),
                KeyKind::Path(name) => ("path parameter", name),
                KeyKind::Custom(name) => ("custom key", name),
                KeyKind::Ip | KeyKind::Anon | KeyKind::User | KeyKind::Global => ("key", ""),
            };
            tracing::debug!(what, name, "rate-limit key value missing; rejecting");
            Err(GuardRejection::MissingKeyValue(what))
        }
    }
}

/// The first value of query parameter `name`, decoded to bytes as
/// `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte) but never lossily: two
/// different values stay two different byte strings, whether they are UTF-8 or not.
fn query_value<'a>(parts: &'a Parts, name: &str) -> Option<Cow<'a, [u8]>> {
    let query = parts.uri.query()?;
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(key.as_bytes()).as_ref() == name.as_bytes())
                .then(|| form_decode(value.as_bytes()))
        })
}

/// Decodes one `application/x-www-form-urlencoded` name or value; a `%` that starts no escape
/// is kept as it is.
fn form_decode(text: &[u8]) -> Cow<'_, [u8]> {
    if !text.iter().any(|&byte| byte == b'%' || byte == b'+') {
        return Cow::Borrowed(text);
    }
    let mut decoded = Vec::with_capacity(text.len());
    let mut index = 0;
    while let Some(&byte) = text.get(index) {
        let escaped = match (byte, text.get(index + 1..index + 3)) {
            (b'%', Some(&[high, low])) => hex_value(high).zip(hex_value(low)),
            _ => None,
        };
        match (byte, escaped) {
            (_, Some((high, low))) => {
                decoded.push(high << 4 | low);
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (_, None) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    Cow::Owned(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(uri: &str, name: &str) -> Option<Vec<u8>> {
        let (parts, ()) = http::Request::builder()
            .uri(uri)
            .body(())
            .unwrap_or_default()
            .into_parts();
        query_value(&parts, name).map(Cow::into_owned)
    }

    #[test]
    fn query_values_decode_to_their_exact_bytes() {
        assert_eq!(query("/?k=%FF", "k"), Some(vec![0xff]));
        assert_eq!(query("/?k=%fe", "k"), Some(vec![0xfe]));
        assert_eq!(query("/?k=a+b%20c", "k"), Some(b"a b c".to_vec()));
        assert_eq!(query("/?k=%zz%4", "k"), Some(b"%zz%4".to_vec()));
        assert_eq!(query("/?k=%E2%80%AE", "k"), Some("\u{202e}".into()));
        assert_eq!(query("/?k", "k"), Some(Vec::new()));
        assert_eq!(query("/?a=1&&k=2&k=3", "k"), Some(b"2".to_vec()));
        assert_eq!(query("/?a%3Ab=c", "a:b"), Some(b"c".to_vec()));
        assert_eq!(query("/?a:b=c", "a:b"), Some(b"c".to_vec()));
        assert_eq!(query("/?k%FF=1", "k\u{fffd}"), None);
        assert_eq!(query("/?x=1", "k"), None);
        assert_eq!(query("/", "k"), None);
    }
}
