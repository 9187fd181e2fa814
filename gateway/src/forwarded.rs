//! The client's address behind proxies, as nginx's `real_ip` finds it.
//!
//! Each proxy appends the address of whoever connected to it to
//! `X-Forwarded-For`, so only entries on the right, written by proxies we run,
//! can be believed; everything left of them is whatever the client sent.
//! - `TRUSTED_PROXY_HOPS=N`: N proxies stand in front of the gateway; the client
//!   is the entry N hops from the right. 0 (the default): the peer address.
//! - `TRUSTED_PROXIES=CIDR,...`: only a peer in these ranges is a proxy; the
//!   walk from the right skips every trusted address and stops at the first
//!   other one. Takes precedence over the hop count.

use std::net::IpAddr;

use anyhow::Context;
use atelier_common::config;
use http::HeaderMap;
use ipnet::IpNet;

/// Which proxies in front of the gateway are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// `TRUSTED_PROXY_HOPS`: how many proxies stand in front of the gateway.
    pub hops: usize,
    /// `TRUSTED_PROXIES`: the address ranges of those proxies.
    pub ranges: Vec<IpNet>,
}

impl TrustedProxies {
    /// No proxy: the peer address is the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// `hops` proxies in front.
    pub fn hops(hops: usize) -> Self {
        Self {
            hops,
            ranges: Vec::new(),
        }
    }

    /// Proxies in `ranges` (`10.0.0.0/8`, or single addresses).
    pub fn ranges<S: AsRef<str>>(ranges: &[S]) -> anyhow::Result<Self> {
        Ok(Self {
            hops: 0,
            ranges: ranges
                .iter()
                .map(|range| parse_range(range.as_ref()))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// `TRUSTED_PROXY_HOPS` and `TRUSTED_PROXIES`; the deprecated
    /// `TRUST_PROXY_HEADERS=true` means one hop when neither is set.
    pub fn from_env() -> anyhow::Result<Self> {
        let Self { ranges, .. } =
            Self::ranges(&config::list("TRUSTED_PROXIES")).context("TRUSTED_PROXIES")?;
        let hops = match config::var_opt::<usize>("TRUSTED_PROXY_HOPS")? {
            Some(hops) => hops,
            None if config::var("TRUST_PROXY_HEADERS", false)? => {
                tracing::warn!(
                    "TRUST_PROXY_HEADERS is deprecated; it now means TRUSTED_PROXY_HOPS=1"
                );
                usize::from(ranges.is_empty())
            }
            None => 0,
        };
        if hops > 0 && !ranges.is_empty() {
            tracing::warn!(
                hops,
                "TRUSTED_PROXIES is set, so TRUSTED_PROXY_HOPS is ignored"
            );
        }
        Ok(Self { hops, ranges })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.ranges.iter().any(|range| range.contains(&ip))
    }

    /// The client's address for a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.ranges.is_empty() && self.hops == 0 {
            return peer;
        }
        // Several X-Forwarded-For fields are one list, in order.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        if self.ranges.is_empty() {
            return self.by_hops(peer, &entries);
        }
        if !self.trusts(peer) {
            return peer;
        }
        // From the right: every trusted address is one of ours; the first other
        // one connected to our outermost proxy. An entry that is no address was
        // not written by a proxy of ours: the last good one stands.
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }

    /// Whether a request from `peer` came to us through a proxy of ours that the
    /// client reached over https: the peer is a trusted proxy (in `TRUSTED_PROXIES`,
    /// or any peer when `TRUSTED_PROXY_HOPS` > 0) and the last `X-Forwarded-Proto`
    /// entry, the one our nearest proxy wrote, is `https`.
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        let trusted = if self.ranges.is_empty() {
            self.hops > 0
        } else {
            self.trusts(peer)
        };
        trusted
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .next_back()
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
    }

    /// The entry `hops` from the right; the peer when the header is shorter than
    /// the proxies in front (it did not come through all of them) or unreadable.
    fn by_hops(&self, peer: IpAddr, entries: &[&str]) -> IpAddr {
        entries
            .len()
            .checked_sub(self.hops)
            .and_then(|at| entries.get(at))
            .and_then(|entry| parse_entry(entry))
            .unwrap_or(peer)
    }
}

/// A range like `10.0.0.0/8`, or one address (`192.0.2.7`, a /32 or /128).
fn parse_range(text: &str) -> anyhow::Result<IpNet> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| anyhow::anyhow!("{text:?} is not an address range like 10.0.0.0/8"))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.7:1234`, `[2001:db8::1]:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(canonical)
}

/// IPv4 addresses seen over IPv6 (`::ffff:192.0.2.7`) as the IPv4 address, so one
/// client has one key whichever way it arrived.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().expect("header"));
        }
        map
    }

    #[test]
    fn without_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::none();
        assert_eq!(
            none.client(ip("10.1.1.1"), &headers(&["203.0.113.9"])),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn hops_count_from_the_right() {
        let spoofed = headers(&["198.51.100.66, 203.0.113.9"]);
        let peer = ip("10.1.1.1");
        assert_eq!(
            TrustedProxies::hops(1).client(peer, &spoofed),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::hops(2).client(peer, &spoofed),
            ip("198.51.100.66")
        );
        // Fewer entries than proxies: not through all of them; the peer.
        assert_eq!(TrustedProxies::hops(3).client(peer, &spoofed), peer);
        assert_eq!(TrustedProxies::hops(1).client(peer, &headers(&[])), peer);
        // Several fields are one list.
        assert_eq!(
            TrustedProxies::hops(1).client(peer, &headers(&["198.51.100.66", "203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::hops(1).client(peer, &headers(&["1.2.3.4, garbage"])),
            peer
        );
    }

    #[test]
    fn ranges_walk_from_the_right_past_trusted_addresses() {
        let proxies = TrustedProxies::ranges(&["10.0.0.0/8", "192.0.2.1"]).expect("ranges");
        let forwarded = headers(&["198.51.100.66, 203.0.113.9, 10.2.3.4, 192.0.2.1"]);
        assert_eq!(
            proxies.client(ip("10.1.1.1"), &forwarded),
            ip("203.0.113.9")
        );
        // A peer that is not a proxy of ours: its header is ignored.
        assert_eq!(
            proxies.client(ip("203.0.113.50"), &forwarded),
            ip("203.0.113.50")
        );
        // Everything trusted: the left-most (it is ours too).
        assert_eq!(
            proxies.client(ip("10.1.1.1"), &headers(&["10.9.9.9"])),
            ip("10.9.9.9")
        );
        // Garbage left of a trusted entry: the last good address.
        assert_eq!(
            proxies.client(ip("10.1.1.1"), &headers(&["nonsense, 10.9.9.9"])),
            ip("10.9.9.9")
        );
        // Ports and IPv4-mapped IPv6 are understood.
        assert_eq!(
            proxies.client(
                ip("::ffff:10.1.1.1"),
                &headers(&["203.0.113.9:5555, [::ffff:10.2.2.2]:80"])
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn only_a_trusted_proxy_says_https() {
        let https = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for value in values {
                map.append("x-forwarded-proto", value.parse().expect("header"));
            }
            map
        };
        let peer = ip("10.1.1.1");
        assert!(!TrustedProxies::none().forwarded_https(peer, &https(&["https"])));
        assert!(TrustedProxies::hops(1).forwarded_https(peer, &https(&["https"])));
        assert!(TrustedProxies::hops(1).forwarded_https(peer, &https(&["HTTPS"])));
        assert!(!TrustedProxies::hops(1).forwarded_https(peer, &https(&["http"])));
        assert!(!TrustedProxies::hops(1).forwarded_https(peer, &https(&[])));
        // The nearest proxy's entry counts, not what the client sent before it.
        assert!(!TrustedProxies::hops(1).forwarded_https(peer, &https(&["https, http"])));
        assert!(TrustedProxies::hops(1).forwarded_https(peer, &https(&["http", "https"])));
        let ranges = TrustedProxies::ranges(&["10.0.0.0/8"]).expect("ranges");
        assert!(ranges.forwarded_https(peer, &https(&["https"])));
        assert!(!ranges.forwarded_https(ip("203.0.113.9"), &https(&["https"])));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(parse_range("10.0.0.0/33").is_err());
        assert!(parse_range("proxy.internal").is_err());
        assert_eq!(
            parse_range("2001:db8::/32").expect("v6").to_string(),
            "2001:db8::/32"
        );
    }
}
