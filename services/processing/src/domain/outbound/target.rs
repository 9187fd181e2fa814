//! Where webhooks may go: an http(s) URL whose host resolves only to public
//! addresses, unless the operator allows private targets or some networks. The
//! address checked is the address connected to (the caller pins it), so a name
//! that resolves differently the second time reaches nothing internal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use reqwest::Url;

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Which addresses webhooks may be sent to.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS`: any address, internal ones too.
    pub allow_private: bool,
    /// `WEBHOOK_ALLOWED_CIDRS`: networks allowed even though internal.
    pub allowed: Vec<IpNet>,
}

/// Why a URL is not a webhook target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be an absolute http or https URL")]
    NotHttp,
    #[error("must have a host")]
    NoHost,
    #[error("must not carry a user name or password")]
    Credentials,
    #[error("must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("the host does not resolve: {0}")]
    Unresolvable(String),
    #[error("resolves to {0}, an internal address webhooks may not be sent to")]
    Internal(IpAddr),
}

/// `raw` as an endpoint URL, checked for its form only (see [`TargetPolicy::resolve`]).
pub fn parse(raw: &str) -> Result<Url, TargetError> {
    if raw.len() > MAX_URL_LEN {
        return Err(TargetError::TooLong);
    }
    let url = Url::parse(raw.trim()).map_err(|_| TargetError::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::NotHttp);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    Ok(url)
}

impl TargetPolicy {
    /// Whether webhooks may be sent to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || self.allowed.iter().any(|net| net.contains(&ip)) || !is_internal(ip)
    }

    /// The address to connect to for `url`: every address its host resolves to
    /// must be allowed (one internal address refuses the URL), and the first is
    /// the one to use.
    pub async fn resolve(&self, url: &Url) -> Result<SocketAddr, TargetError> {
        let port = url.port_or_known_default().ok_or(TargetError::NotHttp)?;
        let host = url.host_str().ok_or(TargetError::NoHost)?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|err| TargetError::Unresolvable(err.to_string()))?
                .collect(),
        };
        if let Some(refused) = addrs.iter().find(|addr| !self.allows(addr.ip())) {
            return Err(TargetError::Internal(refused.ip()));
        }
        addrs
            .first()
            .copied()
            .ok_or_else(|| TargetError::Unresolvable("no address".into()))
    }
}

/// Loopback, private, link-local (cloud metadata included), shared (CGNAT),
/// unique-local, multicast, unspecified, broadcast, documentation, benchmarking and
/// reserved addresses, and IPv6 forms that carry an IPv4 address (mapped,
/// compatible, NAT64, 6to4) judged by that address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_internal_v4(ip),
        IpAddr::V6(ip) => is_internal_v6(ip),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from(((high as u32) << 16) | low as u32);
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96).
    if segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified()
        || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        return is_internal_v4(embedded(segments[6], segments[7]));
    }
    // 6to4 (2002::/16) carries the IPv4 address in its next 32 bits.
    if segments[0] == 0x2002 {
        return is_internal_v4(embedded(segments[1], segments[2]));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link local
        || (segments[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(ip: &str) -> bool {
        is_internal(ip.parse().expect("an address"))
    }

    #[test]
    fn internal_addresses_are_told_from_public_ones() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(internal(ip), "{ip} is internal");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!internal(ip), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_for_their_form() {
        assert!(parse("https://example.com/hook").is_ok());
        assert_eq!(parse("ftp://example.com"), Err(TargetError::NotHttp));
        assert_eq!(parse("not a url"), Err(TargetError::NotHttp));
        assert_eq!(
            parse("https://user:pw@example.com"),
            Err(TargetError::Credentials)
        );
        assert_eq!(
            parse(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))),
            Err(TargetError::TooLong)
        );
    }

    #[tokio::test]
    async fn internal_targets_are_refused_unless_allowed() {
        let strict = TargetPolicy::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://localhost/",
        ] {
            let url = parse(url).expect("a url");
            assert!(
                matches!(strict.resolve(&url).await, Err(TargetError::Internal(_))),
                "{url} refused"
            );
        }
        let loopback = TargetPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.0/8".parse().expect("a network")],
        };
        let url = parse("http://127.0.0.1:8080/").expect("a url");
        assert_eq!(
            loopback.resolve(&url).await,
            Ok("127.0.0.1:8080".parse().expect("an address"))
        );
        let open = TargetPolicy {
            allow_private: true,
            allowed: Vec::new(),
        };
        assert!(
            open.resolve(&parse("http://10.0.0.1/").expect("a url"))
                .await
                .is_ok()
        );
    }
}
