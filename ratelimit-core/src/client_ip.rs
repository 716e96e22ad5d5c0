//! Client-IP policy shared by every list and every front end: which forwarding header carries
//! the client address, one spelling per address ([`canonical`]), and the one parser of the
//! CIDR lists (trusted proxies, allow and deny lists).
//!
//! ```
//! use std::net::IpAddr;
//! use ratelimit_core::ClientIpHeader;
//! use ratelimit_core::client_ip::{canonical, parse_network};
//!
//! assert_eq!("cf-connecting-ip".parse(), Ok(ClientIpHeader::CfConnectingIp));
//! let nat64: IpAddr = "64:ff9b::c000:201".parse()?;
//! assert_eq!(canonical(nat64), IpAddr::from([192, 0, 2, 1]));
//! assert_eq!(parse_network("::ffff:203.0.113.0/120")?.to_string(), "203.0.113.0/24");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// The one request header that carries the client address when the peer is a trusted proxy.
/// No other header is ever consulted, so a client cannot pick the one its proxy does not
/// overwrite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For` (default): the right-most hop that is not a trusted proxy, over all its
    /// lines in order (nginx `proxy_add_x_forwarded_for`, AWS ALB, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): the `for=` of the right-most element that is not a trusted
    /// proxy, over all its lines in order.
    Forwarded,
    /// `X-Real-IP`: one address, set by the proxy (nginx `proxy_set_header X-Real-IP`).
    XRealIp,
    /// `CF-Connecting-IP`: one address, set by Cloudflare.
    CfConnectingIp,
    /// `True-Client-IP`: one address, set by Akamai and Cloudflare Enterprise.
    TrueClientIp,
    /// `Fly-Client-IP`: one address, set by the Fly.io proxy.
    FlyClientIp,
}

impl ClientIpHeader {
    /// Every header, the default first.
    pub const ALL: [Self; 6] = [
        Self::XForwardedFor,
        Self::Forwarded,
        Self::XRealIp,
        Self::CfConnectingIp,
        Self::TrueClientIp,
        Self::FlyClientIp,
    ];

    /// The header's name as usually written, e.g. `X-Forwarded-For` (parsing ignores case).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
            Self::XRealIp => "X-Real-IP",
            Self::CfConnectingIp => "CF-Connecting-IP",
            Self::TrueClientIp => "True-Client-IP",
            Self::FlyClientIp => "Fly-Client-IP",
        }
    }

    /// Whether the header is a chain of hops, each proxy appending one (`X-Forwarded-For`,
    /// `Forwarded`), rather than a single address that the last proxy sets.
    #[must_use]
    pub const fn is_chain(self) -> bool {
        matches!(self, Self::XForwardedFor | Self::Forwarded)
    }
}

impl fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A client-IP header name that is none of [`ClientIpHeader::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown client IP header `{0}`; expected one of {CLIENT_IP_HEADER_NAMES}")]
pub struct UnknownClientIpHeader(pub String);

/// The valid [`ClientIpHeader`] names, for messages.
pub const CLIENT_IP_HEADER_NAMES: &str = "\"X-Forwarded-For\", \"Forwarded\", \"X-Real-IP\", \"CF-Connecting-IP\", \"True-Client-IP\" or \"Fly-Client-IP\" (case-insensitive)";

impl FromStr for ClientIpHeader {
    type Err = UnknownClientIpHeader;

    /// A header name in any case, surrounding whitespace ignored.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let trimmed = name.trim();
        Self::ALL
            .into_iter()
            .find(|header| header.name().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| UnknownClientIpHeader(name.to_owned()))
    }
}

/// The one spelling of an address, so one client is one bucket and one list match: IPv6 that
/// embeds an IPv4 address is that IPv4 address. That is IPv4-mapped (`::ffff:192.0.2.1`, what
/// a dual-stack socket reports), IPv4-compatible (`::192.0.2.1`, but not `::` or `::1`), NAT64
/// (`64:ff9b::/96`), 6to4 (`2002::/16`, the IPv4 address in bits 16 to 48, so one 6to4 host is
/// not 65,536 /64 buckets) and Teredo (`2001::/32`, the client's address bit-inverted in the
/// last 32 bits).
#[must_use]
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
    }
}

/// The IPv4 address an IPv6 address stands for, if it stands for one (see [`canonical`]).
#[inline]
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    const MAPPED: u128 = 0xffff;
    const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000;
    const SIX_TO_FOUR: u128 = 0x2002;
    const TEREDO: u128 = 0x2001_0000;
    let bits = v6.to_bits();
    // Truncation is the point: the low 32 bits are the address.
    #[allow(clippy::cast_possible_truncation)]
    let low = bits as u32;
    #[allow(clippy::cast_possible_truncation)]
    let address = match bits >> 32 {
        MAPPED | NAT64 => low,
        0 if low > 1 => low,
        _ if bits >> 112 == SIX_TO_FOUR => (bits >> 80) as u32,
        _ if bits >> 96 == TEREDO => !low,
        _ => return None,
    };
    Some(Ipv4Addr::from(address))
}

/// A list entry (trusted proxy, allow, deny) that is not an IP network or address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP network; write e.g. \"10.0.0.0/8\" or \"192.0.2.1\"")]
pub struct InvalidNetwork(pub String);

/// One entry of a trusted-proxy, allow or deny list: a CIDR network (`10.0.0.0/8`) or a single
/// address (`192.0.2.1`, `2001:db8::1`), surrounding whitespace ignored. An IPv4-mapped entry
/// (`::ffff:203.0.113.0/120`) is the IPv4 network it describes (`203.0.113.0/24`): clients are
/// matched in their [`canonical`] spelling, where those addresses are IPv4. Host bits are kept
/// (`10.1.2.3/8` contains what `10.0.0.0/8` does).
///
/// # Errors
/// [`InvalidNetwork`] with the trimmed text.
pub fn parse_network(text: &str) -> Result<IpNet, InvalidNetwork> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(canonical_network)
        .map_err(|_| InvalidNetwork(text.to_owned()))
}

/// An IPv4-mapped network `::ffff:a.b.c.d/96+n` as the IPv4 network `a.b.c.d/n`; others as
/// they are.
fn canonical_network(network: IpNet) -> IpNet {
    let IpNet::V6(v6) = network else {
        return network;
    };
    let Some(prefix) = v6.prefix_len().checked_sub(96) else {
        return network;
    };
    v6.addr()
        .to_ipv4_mapped()
        .and_then(|v4| Ipv4Net::new(v4, prefix).ok())
        .map_or(network, IpNet::V4)
}

/// The first entry that covers every address of its family (`0.0.0.0/0`, `::/0`): trusting it
/// believes any client's forwarding header, so any client can pick its own bucket.
#[must_use]
pub fn covering_everything(networks: &[IpNet]) -> Option<&IpNet> {
    networks.iter().find(|network| network.prefix_len() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn every_embedding_of_ipv4_is_that_ipv4_address() {
        for spelling in [
            "192.0.2.45",
            "::ffff:192.0.2.45",
            "::192.0.2.45",
            "64:ff9b::192.0.2.45",
            "2002:c000:22d::",
            "2002:c000:22d:ffff:1:2:3:4",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert_eq!(canonical(ip(spelling)), ip("192.0.2.45"), "{spelling}");
        }
    }

    #[test]
    fn other_ipv6_addresses_stay_as_they_are() {
        for spelling in [
            "::",
            "::1",
            "2001:db8::1",
            "2001:1::c000:22d",
            "2003:c000:22d::",
            "64:ff9b:1::c000:22d",
            "::fffe:c000:22d",
            "fe80::1",
        ] {
            assert_eq!(canonical(ip(spelling)), ip(spelling), "{spelling}");
        }
    }

    #[test]
    fn ipv4_mapped_entries_are_ipv4_networks() {
        let parsed = |text| parse_network(text).map(|network| network.to_string());
        assert_eq!(
            parsed("::ffff:203.0.113.0/120"),
            Ok("203.0.113.0/24".into())
        );
        assert_eq!(parsed("::ffff:0:0/96"), Ok("0.0.0.0/0".into()));
        assert_eq!(parsed(" ::ffff:192.0.2.1 "), Ok("192.0.2.1/32".into()));
        assert_eq!(parsed("10.0.0.0/8"), Ok("10.0.0.0/8".into()));
        assert_eq!(parsed("192.0.2.1"), Ok("192.0.2.1/32".into()));
        assert_eq!(parsed("2001:db8::/32"), Ok("2001:db8::/32".into()));
        // Shorter than /96, the entry covers more than the mapped range: left alone.
        assert_eq!(parsed("::ffff:0:0/95"), Ok("::ffff:0.0.0.0/95".into()));
        assert_eq!(parsed("::/0"), Ok("::/0".into()));
        for bad in ["", "10.0.0.0/33", "not-a-network", "::ffff:1.2.3.4/129"] {
            assert_eq!(parse_network(bad), Err(InvalidNetwork(bad.trim().into())));
        }
    }

    #[test]
    fn only_an_entry_covering_everything_is_flagged() {
        let networks = |list: &[&str]| -> Vec<IpNet> {
            list.iter()
                .filter_map(|text| parse_network(text).ok())
                .collect()
        };
        assert_eq!(covering_everything(&networks(&["10.0.0.0/8", "::1"])), None);
        for everything in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "10.1.2.3/0"] {
            let list = networks(&["10.0.0.0/8", everything]);
            assert_eq!(covering_everything(&list), list.get(1), "{everything}");
        }
    }

    #[test]
    fn header_names_parse_in_any_case() {
        for header in ClientIpHeader::ALL {
            assert_eq!(header.name().parse(), Ok(header));
            assert_eq!(header.name().to_lowercase().parse(), Ok(header));
            assert_eq!(header.name().to_uppercase().parse(), Ok(header));
        }
        assert_eq!(" x-real-ip ".parse(), Ok(ClientIpHeader::XRealIp));
        assert_eq!(ClientIpHeader::default(), ClientIpHeader::XForwardedFor);
        let unknown = "X-Client-IP".parse::<ClientIpHeader>();
        assert_eq!(unknown, Err(UnknownClientIpHeader("X-Client-IP".into())));
        let message = unknown
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        for header in ClientIpHeader::ALL {
            assert!(message.contains(header.name()), "{message}");
        }
    }
}
