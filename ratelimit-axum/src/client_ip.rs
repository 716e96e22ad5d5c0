//! The client's IP address: the peer, or — behind trusted proxies only — what the one
//! configured header says ([`ClientIpHeader`]). No other header is ever read, so a client
//! cannot add one its proxy does not overwrite and be believed.
//!
//! Headers are read as raw bytes, line by line from the last, and a chain from its right end,
//! parsing only the hops walked: a long or malformed client part costs nothing beyond the hop
//! where the walk stops, and never hides the hops the proxies appended to its right.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use axum::extract::ConnectInfo;
use http::header::HeaderName;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use ratelimit_core::ClientIpHeader;
pub use ratelimit_core::client_ip::canonical;

/// No `ConnectInfo<SocketAddr>` on the request: the app was not served with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingPeerAddress;

static FORWARDED: HeaderName = http::header::FORWARDED;
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");
static TRUE_CLIENT_IP: HeaderName = HeaderName::from_static("true-client-ip");
static FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");

/// The client address of a request: the peer's, unless the peer is in `trusted_proxies`; then
/// what `header` says. For a chain (`X-Forwarded-For`, `Forwarded`), the right-most hop over
/// all its lines that is not itself a trusted proxy; a hop that is not an address stops the
/// walk at the last good hop to its right. For a single-value header, its last line. All in
/// their [`canonical`] spelling.
///
/// # Errors
/// [`MissingPeerAddress`] when the server does not provide the peer address.
#[inline]
pub fn client_ip(
    parts: &Parts,
    trusted_proxies: &[IpNet],
    header: ClientIpHeader,
) -> Result<IpAddr, MissingPeerAddress> {
    let ConnectInfo(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .ok_or(MissingPeerAddress)?;
    let peer = canonical(peer.ip());
    if !is_trusted(peer, trusted_proxies) {
        return Ok(peer);
    }
    Ok(forwarded_client(&parts.headers, header, trusted_proxies).unwrap_or(peer))
}

/// The client according to `header`, or `None` when it names no valid one.
fn forwarded_client(
    headers: &HeaderMap,
    header: ClientIpHeader,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let hop = match header {
        ClientIpHeader::Forwarded => forwarded_for,
        _ => parse_hop,
    };
    let mut lines = headers
        .get_all(header_name(header))
        .iter()
        .rev()
        .map(HeaderValue::as_bytes);
    if !header.is_chain() {
        // The proxy sets the value; more than one line means someone added one, and the
        // proxy's is the last.
        return lines.next().and_then(hop);
    }
    // Walk from the nearest hop outwards; the first address not run by a trusted proxy is the
    // client. Anything left of it was written by the client and proves nothing; a hop that is
    // not an address (garbage, `unknown`, an obfuscated `_name`) ends what can be believed.
    let mut client = None;
    for element in lines.flat_map(|line| line.rsplit(|&byte| byte == b',')) {
        let Some(ip) = hop(element) else { break };
        client = Some(ip);
        if !is_trusted(ip, trusted_proxies) {
            break;
        }
    }
    client
}

fn header_name(header: ClientIpHeader) -> &'static HeaderName {
    match header {
        ClientIpHeader::XForwardedFor => &X_FORWARDED_FOR,
        ClientIpHeader::Forwarded => &FORWARDED,
        ClientIpHeader::XRealIp => &X_REAL_IP,
        ClientIpHeader::CfConnectingIp => &CF_CONNECTING_IP,
        ClientIpHeader::TrueClientIp => &TRUE_CLIENT_IP,
        ClientIpHeader::FlyClientIp => &FLY_CLIENT_IP,
    }
}

/// Whether `ip` is inside any of `networks` (in its [`canonical`] spelling, so every IPv6
/// spelling of an IPv4 address matches IPv4 entries).
#[must_use]
#[inline]
pub fn is_trusted(ip: IpAddr, networks: &[IpNet]) -> bool {
    let ip = canonical(ip);
    networks.iter().any(|network| network.contains(&ip))
}

/// The `for=` address of one `Forwarded` element (RFC 7239); `None` when it has none, or one
/// that is not an address (`unknown`, `_hidden`).
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    element.split(|&byte| byte == b';').find_map(|pair| {
        let equals = pair.iter().position(|&byte| byte == b'=')?;
        let (name, value) = (&pair[..equals], &pair[equals + 1..]);
        name.trim_ascii()
            .eq_ignore_ascii_case(b"for")
            .then(|| parse_hop(value))
    })?
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, each optionally quoted (as `Forwarded` writes them); `None` for
/// anything else, non-ASCII bytes included.
fn parse_hop(text: &[u8]) -> Option<IpAddr> {
    let text = text.trim_ascii();
    let text = text
        .strip_prefix(b"\"")
        .and_then(|quoted| quoted.strip_suffix(b"\""))
        .unwrap_or(text);
    // Only ASCII spells an address; checking first makes the `str` view free.
    if !text.is_ascii() {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    let ip = if let Some(bracketed) = text.strip_prefix('[') {
        let (address, port) = bracketed.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(address.parse().ok()?)
    } else {
        text.parse::<IpAddr>()
            .or_else(|_| {
                text.parse::<SocketAddrV4>()
                    .map(|socket| IpAddr::V4(*socket.ip()))
            })
            .ok()?
    };
    Some(canonical(ip))
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
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

    use ClientIpHeader::{
        CfConnectingIp, FlyClientIp, Forwarded, TrueClientIp, XForwardedFor, XRealIp,
    };

    fn parts(peer: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut request = http::Request::builder();
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                request = request.header(*name, value);
            }
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

    /// The client of a request from the trusted proxy `10.0.0.1` (`10.0.0.0/8` trusted).
    fn via_proxy(header: ClientIpHeader, headers: &[(&str, &[u8])]) -> IpAddr {
        client_ip(
            &parts("10.0.0.1:80", headers),
            &nets(&["10.0.0.0/8"]),
            header,
        )
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarding_headers_are_ignored_from_untrusted_peers() {
        let request = parts(
            "203.0.113.9:5000",
            &[
                ("x-forwarded-for", b"1.2.3.4"),
                ("forwarded", b"for=1.2.3.4"),
                ("x-real-ip", b"1.2.3.4"),
                ("cf-connecting-ip", b"1.2.3.4"),
            ],
        );
        for header in ClientIpHeader::ALL {
            assert_eq!(client_ip(&request, &[], header), Ok(ip("203.0.113.9")));
            assert_eq!(
                client_ip(&request, &nets(&["10.0.0.0/8"]), header),
                Ok(ip("203.0.113.9"))
            );
        }
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let chain: &[u8] = b"6.6.6.6, 198.51.100.7, 10.0.0.2";
        assert_eq!(
            via_proxy(XForwardedFor, &[("x-forwarded-for", chain)]),
            ip("198.51.100.7")
        );
        // Every hop a trusted proxy: the farthest one is the client.
        assert_eq!(
            via_proxy(XForwardedFor, &[("x-forwarded-for", b"10.0.0.3, 10.0.0.2")]),
            ip("10.0.0.3")
        );
        // No header: the peer.
        assert_eq!(via_proxy(XForwardedFor, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn every_x_forwarded_for_line_is_walked_from_the_last() {
        let lines: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"6.6.6.6, 198.51.100.8"),
            ("x-forwarded-for", b"10.0.0.4"),
            ("x-forwarded-for", b"10.0.0.3, 10.0.0.2"),
        ];
        assert_eq!(via_proxy(XForwardedFor, lines), ip("198.51.100.8"));
    }

    /// Issue 13: a client behind an `X-Forwarded-For` proxy sends `Forwarded: for=6.6.6.6`.
    #[test]
    fn forwarded_from_a_client_behind_an_xff_proxy_is_ignored_under_the_default() {
        let headers: &[(&str, &[u8])] = &[
            ("forwarded", b"for=6.6.6.6"),
            ("x-forwarded-for", b"198.51.100.9"),
            ("x-real-ip", b"7.7.7.7"),
        ];
        assert_eq!(via_proxy(XForwardedFor, headers), ip("198.51.100.9"));
        // Nor is any other header a fallback when the configured one is missing.
        let headers: &[(&str, &[u8])] = &[("forwarded", b"for=6.6.6.6"), ("x-real-ip", b"7.7.7.7")];
        assert_eq!(via_proxy(XForwardedFor, headers), ip("10.0.0.1"));
        assert_eq!(via_proxy(CfConnectingIp, headers), ip("10.0.0.1"));
    }

    /// Issue 13: a byte >= 0x80 in the client's part must not drop the proxy-appended hop.
    #[test]
    fn a_non_utf8_byte_in_the_client_part_keeps_the_proxy_appended_hop() {
        let headers: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"\xff\xfe6.6.6.6, 198.51.100.10"),
            ("x-real-ip", b"7.7.7.7"),
        ];
        assert_eq!(via_proxy(XForwardedFor, headers), ip("198.51.100.10"));
        let headers: &[(&str, &[u8])] = &[("x-forwarded-for", b"1.1.1.1, 6.6.6.\xe9, 10.0.0.5")];
        assert_eq!(via_proxy(XForwardedFor, headers), ip("10.0.0.5"));
        let headers: &[(&str, &[u8])] = &[(
            "forwarded",
            b"for=\"\xc3\xa9\", for=198.51.100.11;proto=https",
        )];
        assert_eq!(via_proxy(Forwarded, headers), ip("198.51.100.11"));
    }

    /// Issue 13: garbage, `unknown` and obfuscated `_hidden` hops stop the walk at the last
    /// valid hop to their right.
    #[test]
    fn invalid_hops_stop_the_walk_at_the_last_valid_one() {
        for garbage in [
            "not-an-ip",
            "unknown",
            "_hidden",
            "",
            "1.2.3",
            "[::1",
            "1.2.3.4:99999",
        ] {
            let chain = format!("1.1.1.1, {garbage}, 10.0.0.5");
            let headers: &[(&str, &[u8])] = &[("x-forwarded-for", chain.as_bytes())];
            assert_eq!(via_proxy(XForwardedFor, headers), ip("10.0.0.5"), "{chain}");
            let forwarded = format!("for=1.1.1.1, for={garbage}, for=10.0.0.5");
            let headers: &[(&str, &[u8])] = &[("forwarded", forwarded.as_bytes())];
            assert_eq!(via_proxy(Forwarded, headers), ip("10.0.0.5"), "{forwarded}");
        }
        // The proxy's own hop invalid: nothing to believe, the peer is the client.
        let headers: &[(&str, &[u8])] = &[("forwarded", b"for=1.1.1.1, for=unknown")];
        assert_eq!(via_proxy(Forwarded, headers), ip("10.0.0.1"));
        // An element without `for=` is not a hop either.
        let headers: &[(&str, &[u8])] = &[("forwarded", b"for=1.1.1.1, proto=https;by=10.0.0.1")];
        assert_eq!(via_proxy(Forwarded, headers), ip("10.0.0.1"));
    }

    #[test]
    fn hops_may_carry_ports_brackets_and_quotes() {
        for (hop, expected) in [
            ("192.0.2.1", "192.0.2.1"),
            (" 192.0.2.1:4711 ", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("::ffff:198.51.100.12", "198.51.100.12"),
            ("64:ff9b::c633:640c", "198.51.100.12"),
        ] {
            assert_eq!(parse_hop(hop.as_bytes()), Some(ip(expected)), "{hop}");
        }
        for bad in [
            "[2001:db8::1]:x",
            "[2001:db8::1]x",
            "[192.0.2.1]",
            "fe80::1%eth0",
            "\"192.0.2.1",
        ] {
            assert_eq!(parse_hop(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn forwarded_reads_for_over_all_its_lines() {
        let headers: &[(&str, &[u8])] = &[
            ("forwarded", b"for=6.6.6.6"),
            (
                "forwarded",
                b"for=192.0.2.60;proto=http, For=\"[2001:db8:cafe::17]:4711\";by=10.0.0.9",
            ),
            ("forwarded", b"for=10.0.0.7;proto=https"),
        ];
        assert_eq!(via_proxy(Forwarded, headers), ip("2001:db8:cafe::17"));
        // Under `Forwarded`, X-Forwarded-For is the client's writing.
        let headers: &[(&str, &[u8])] = &[
            ("forwarded", b"for=198.51.100.13"),
            ("x-forwarded-for", b"6.6.6.6"),
        ];
        assert_eq!(via_proxy(Forwarded, headers), ip("198.51.100.13"));
    }

    /// Issue 13: several `X-Real-IP` lines (the client added one): the last counts.
    #[test]
    fn a_single_value_header_counts_its_last_line() {
        for (header, name) in [
            (XRealIp, "x-real-ip"),
            (CfConnectingIp, "cf-connecting-ip"),
            (TrueClientIp, "true-client-ip"),
            (FlyClientIp, "fly-client-ip"),
        ] {
            let headers: &[(&str, &[u8])] = &[
                (name, b"6.6.6.6"),
                (name, b"198.51.100.14"),
                ("x-forwarded-for", b"7.7.7.7"),
            ];
            assert_eq!(via_proxy(header, headers), ip("198.51.100.14"), "{name}");
            let garbage: &[(&str, &[u8])] = &[(name, b"6.6.6.6"), (name, b"unknown")];
            assert_eq!(via_proxy(header, garbage), ip("10.0.0.1"), "{name}");
            assert_eq!(
                via_proxy(header, &[(name, b"2001:db8::2")]),
                ip("2001:db8::2")
            );
        }
    }

    /// An over-long header costs the hops walked: only the right end is parsed.
    #[test]
    fn a_64_kib_chain_gives_the_right_client() {
        let mut chain = "6.6.6.6, ".repeat(64 * 1024 / 9);
        chain.push_str("198.51.100.15, 10.0.0.2");
        assert!(chain.len() >= 64 * 1024);
        let headers: &[(&str, &[u8])] = &[("x-forwarded-for", chain.as_bytes())];
        assert_eq!(via_proxy(XForwardedFor, headers), ip("198.51.100.15"));
        let mut forwarded = "for=6.6.6.6, ".repeat(64 * 1024 / 13);
        forwarded.push_str("for=198.51.100.15");
        let headers: &[(&str, &[u8])] = &[("forwarded", forwarded.as_bytes())];
        assert_eq!(via_proxy(Forwarded, headers), ip("198.51.100.15"));
    }

    #[test]
    fn embedded_ipv4_peers_and_hops_are_ipv4() {
        for peer in [
            "[::ffff:192.0.2.1]:80",
            "[64:ff9b::c000:201]:80",
            "[2002:c000:201:7::1]:80",
            "[2001:0:4136:e378:8000:63bf:3fff:fdfe]:80",
            "[::192.0.2.1]:80",
        ] {
            let request = parts(peer, &[]);
            assert_eq!(
                client_ip(&request, &[], XForwardedFor),
                Ok(ip("192.0.2.1")),
                "{peer}"
            );
            // And they are matched as IPv4 against the trusted proxies.
            let request = parts(peer, &[("x-forwarded-for", b"198.51.100.16")]);
            assert_eq!(
                client_ip(&request, &nets(&["192.0.2.0/24"]), XForwardedFor),
                Ok(ip("198.51.100.16")),
                "{peer}"
            );
        }
        for peer in ["[::1]:80", "[::]:80"] {
            let expected = peer.parse::<SocketAddr>().map(|socket| socket.ip());
            assert_eq!(
                client_ip(&parts(peer, &[]), &[], XForwardedFor).ok(),
                expected.ok()
            );
        }
        let headers: &[(&str, &[u8])] = &[("x-forwarded-for", b"2002:c633:6411::1, 10.0.0.2")];
        assert_eq!(via_proxy(XForwardedFor, headers), ip("198.51.100.17"));
    }

    #[test]
    fn ipv4_mapped_entries_match_ipv4_clients() {
        let trusted: Vec<IpNet> = ["::ffff:10.0.0.0/104"]
            .into_iter()
            .filter_map(|text| ratelimit_core::client_ip::parse_network(text).ok())
            .collect();
        assert!(is_trusted(ip("10.1.2.3"), &trusted));
        assert!(is_trusted(ip("::ffff:10.1.2.3"), &trusted));
        assert!(is_trusted(ip("64:ff9b::a01:203"), &trusted));
        assert!(!is_trusted(ip("11.1.2.3"), &trusted));
    }

    #[test]
    fn ipv6_is_grouped_and_embedded_ipv4_is_one_bucket() {
        assert_eq!(grouped(ip("2001:db8:1:2:3:4:5:6"), 64), "2001:db8:1:2::/64");
        assert_eq!(
            grouped(ip("2001:db8:1:2:3:4:5:6"), 128),
            "2001:db8:1:2:3:4:5:6/128"
        );
        assert_eq!(grouped(ip("::ffff:198.51.100.1"), 64), "198.51.100.1");
        // Before, every NAT64 client shared 64:ff9b::/64, and one 6to4 host was 65,536 /64s.
        assert_eq!(grouped(ip("64:ff9b::c633:6401"), 64), "198.51.100.1");
        assert_eq!(grouped(ip("64:ff9b::c633:6402"), 64), "198.51.100.2");
        assert_eq!(grouped(ip("2002:c633:6401:1::1"), 64), "198.51.100.1");
        assert_eq!(grouped(ip("2002:c633:6401:ffff::1"), 64), "198.51.100.1");
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
        assert_eq!(
            client_ip(&parts("", &[]), &[], XForwardedFor),
            Err(MissingPeerAddress)
        );
    }
}
