//! The client's IP address: the peer, or — behind trusted proxies only — the right-most hop of
//! the forwarding headers that is not itself a trusted proxy.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::HeaderMap;
use http::request::Parts;
use ipnet::IpNet;

/// No `ConnectInfo<SocketAddr>` on the request: the app was not served with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingPeerAddress;

/// The client address of a request.
///
/// # Errors
/// [`MissingPeerAddress`] when the server does not provide the peer address.
#[inline]
pub fn client_ip(parts: &Parts, trusted_proxies: &[IpNet]) -> Result<IpAddr, MissingPeerAddress> {
    let ConnectInfo(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .ok_or(MissingPeerAddress)?;
    let peer = canonical(peer.ip());
    if !is_trusted(peer, trusted_proxies) {
        return Ok(peer);
    }
    let hops = forwarded_hops(&parts.headers);
    // Walk from the nearest hop outwards; the first address not run by a trusted proxy is the
    // client. Anything left of it was written by the client and proves nothing.
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(hop) = hop else { break };
        client = *hop;
        if !is_trusted(client, trusted_proxies) {
            break;
        }
    }
    Ok(client)
}

/// The same client, whatever the notation: IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is IPv4.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whether `ip` is inside any of `networks` (IPv4-mapped addresses match IPv4 entries).
#[must_use]
pub fn is_trusted(ip: IpAddr, networks: &[IpNet]) -> bool {
    let ip = canonical(ip);
    networks.iter().any(|network| network.contains(&ip))
}

/// The forwarding chain, client side first. `None` marks a hop that does not parse, where the
/// walk must stop (a proxy we trust would not write garbage; the client could).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<_> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(forwarded_for)
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    let x_forwarded_for: Vec<_> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(parse_hop)
        .collect();
    if !x_forwarded_for.is_empty() {
        return x_forwarded_for;
    }
    headers
        .get("x-real-ip")
        .and_then(|value| value.to_str().ok())
        .map(|value| vec![parse_hop(value)])
        .unwrap_or_default()
}

/// The `for=` of one `Forwarded` element (RFC 7239), if it has one.
fn forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(value))
    })
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    let bracketed = text.strip_prefix('[')?.split(']').next()?;
    bracketed.parse::<IpAddr>().ok().map(canonical)
}

/// The bucket value for a client address: IPv4 as is, IPv6 as its network of `ipv6_prefix`
/// bits (one subscriber usually owns a whole /64).
#[must_use]
pub fn grouped(ip: IpAddr, ipv6_prefix: u8) -> String {
    let mut value = String::with_capacity(MAX_GROUPED_LEN);
    write_grouped(&mut value, ip, ipv6_prefix);
    value
}

/// The longest [`grouped`] value: a full IPv6 address and `/128`.
pub(crate) const MAX_GROUPED_LEN: usize = 39 + 4;

/// Appends [`grouped`] to `out`, so a bucket key is built in one buffer. IPv4, the common case
/// on every request, is written from a table of the 256 octets' text: `Display`, or formatting
/// each octet, costs several times more.
pub(crate) fn write_grouped(out: &mut impl Write, ip: IpAddr, ipv6_prefix: u8) {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [first, second, third, fourth] =
                v4.octets().map(|octet| OCTETS[usize::from(octet)]);
            let _ = out.write_str(first);
            for octet in [second, third, fourth] {
                let _ = out.write_char('.');
                let _ = out.write_str(octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = match ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128)) {
                Ok(network) => write!(out, "{}", network.trunc()),
                Err(_) => write!(out, "{v6}"),
            };
        }
    }
}

/// `"0"` to `"255"`, built at compile time.
static OCTETS: [&str; 256] = octets();

const fn octets() -> [&'static str; 256] {
    /// Every octet's digits, three bytes each, of which the first `width(octet)` are its text.
    static DIGITS: [[u8; 3]; 256] = {
        let mut digits = [[0; 3]; 256];
        let mut octet = 0;
        while octet < 256 {
            // Each digit is below 10: the casts cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            let (hundreds, tens, ones) = (
                b'0' + (octet / 100) as u8,
                b'0' + (octet / 10 % 10) as u8,
                b'0' + (octet % 10) as u8,
            );
            digits[octet] = match octet {
                0..10 => [ones, 0, 0],
                10..100 => [tens, ones, 0],
                _ => [hundreds, tens, ones],
            };
            octet += 1;
        }
        digits
    };
    let mut table = [""; 256];
    let mut octet = 0;
    while octet < 256 {
        let width = match octet {
            0..10 => 1,
            10..100 => 2,
            _ => 3,
        };
        let (text, _) = DIGITS[octet].as_slice().split_at(width);
        table[octet] = match std::str::from_utf8(text) {
            Ok(text) => text,
            Err(_) => panic!("digits are ASCII"),
        };
        octet += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap_or_default().into_parts();
        if let Ok(peer) = peer.parse::<SocketAddr>() {
            parts.extensions.insert(ConnectInfo(peer));
        }
        parts
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|net| net.parse().ok()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarding_headers_are_ignored_from_untrusted_peers() {
        let request = parts("203.0.113.9:5000", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(&request, &[]), Ok(ip("203.0.113.9")));
        assert_eq!(
            client_ip(&request, &nets(&["10.0.0.0/8"])),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let request = parts(
            "10.0.0.1:80",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")],
        );
        assert_eq!(client_ip(&request, &trusted), Ok(ip("198.51.100.7")));
        let all_trusted = parts("10.0.0.1:80", &[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(client_ip(&all_trusted, &trusted), Ok(ip("10.0.0.3")));
    }

    #[test]
    fn forwarded_and_x_real_ip_are_understood() {
        let trusted = nets(&["10.0.0.0/8"]);
        let forwarded = parts(
            "10.0.0.1:80",
            &[(
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
            )],
        );
        assert_eq!(client_ip(&forwarded, &trusted), Ok(ip("2001:db8:cafe::17")));
        let real_ip = parts("10.0.0.1:80", &[("x-real-ip", "192.0.2.61")]);
        assert_eq!(client_ip(&real_ip, &trusted), Ok(ip("192.0.2.61")));
    }

    #[test]
    fn garbage_hops_stop_the_walk_at_the_last_good_one() {
        let trusted = nets(&["10.0.0.0/8"]);
        let request = parts(
            "10.0.0.1:80",
            &[("x-forwarded-for", "1.1.1.1, not-an-ip, 10.0.0.5")],
        );
        assert_eq!(client_ip(&request, &trusted), Ok(ip("10.0.0.5")));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4_and_ipv6_is_grouped() {
        let request = parts("[::ffff:192.0.2.1]:80", &[]);
        assert_eq!(
            client_ip(&request, &nets(&["192.0.2.0/24"])),
            Ok(ip("192.0.2.1"))
        );
        assert_eq!(grouped(ip("2001:db8:1:2:3:4:5:6"), 64), "2001:db8:1:2::/64");
        assert_eq!(
            grouped(ip("2001:db8:1:2:3:4:5:6"), 128),
            "2001:db8:1:2:3:4:5:6/128"
        );
        assert_eq!(grouped(ip("::ffff:198.51.100.1"), 64), "198.51.100.1");
        for v4 in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "192.0.2.7"] {
            assert_eq!(grouped(ip(v4), 64), v4);
        }
    }

    #[test]
    fn every_ipv4_octet_is_written_as_display_writes_it() {
        for octet in 0..=255_u8 {
            let ip = IpAddr::from([octet, 255 - octet, octet / 3, 7]);
            assert_eq!(grouped(ip, 64), ip.to_string());
        }
    }

    #[test]
    fn a_missing_peer_is_reported() {
        assert_eq!(client_ip(&parts("", &[]), &[]), Err(MissingPeerAddress));
    }
}
