//! Result downloads, guarded against server-side request forgery.
//!
//! A result URL comes from fal's answer, so it is treated as hostile: only hosts on
//! the allowlist, only `https` (or `http` where the allowlist says so), only public
//! addresses (unless the entry names an exact port, as the simulator's does), no
//! automatic redirects, a size limit and a deadline. The address checked is the
//! address connected to: each hop's client resolves through a resolver pinned to the
//! vetted addresses, so a second DNS answer (rebinding) cannot change it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream::BoxStream};
use http::{StatusCode, header};
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};

use crate::{
    client::{Failure, FalClient, host_key, read_limited, transport_failure},
    error::{FalError, classify},
    types::Downloaded,
};

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 3;

/// One allowlist entry: `[http://|https://]host[:port][/path-prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AllowEntry {
    /// The entry says `http://`: plain HTTP is allowed too.
    http: bool,
    /// As [`Url::host_str`] spells it (lowercase, IPv6 in brackets).
    host: String,
    /// An explicit port: only that port, and non-public addresses are allowed.
    port: Option<u16>,
    /// Only paths starting with this.
    path_prefix: Option<String>,
}

impl AllowEntry {
    pub(crate) fn parse(raw: &str) -> anyhow::Result<Self> {
        let raw = raw.trim();
        let (http, rest) = if let Some(rest) = strip_prefix_ignore_case(raw, "http://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(raw, "https://") {
            (false, rest)
        } else if raw.contains("://") {
            bail!("result host {raw:?} must be http or https");
        } else {
            (false, raw)
        };
        let url = Url::parse(&format!("https://{rest}"))
            .with_context(|| format!("result host {raw:?} is not valid"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .with_context(|| format!("result host {raw:?} has no host"))?
            .to_owned();
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            bail!("result host {raw:?} must be host[:port][/path]");
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let explicit_port = authority.rsplit_once(':').and_then(|(h, p)| {
            let bracketed_or_plain = !h.contains(':') || h.ends_with(']');
            (bracketed_or_plain && !p.is_empty())
                .then(|| p.parse::<u16>().ok())
                .flatten()
        });
        let path_prefix = (url.path() != "/").then(|| url.path().to_owned());
        Ok(Self {
            http,
            host,
            port: explicit_port,
            path_prefix,
        })
    }

    fn matches(&self, url: &Url) -> bool {
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.http,
            _ => false,
        };
        let port_ok = match self.port {
            Some(port) => url.port_or_known_default() == Some(port),
            None => url.port().is_none(),
        };
        scheme_ok
            && port_ok
            && url.host_str() == Some(self.host.as_str())
            && url.username().is_empty()
            && url.password().is_none()
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| url.path().starts_with(prefix))
    }

    /// Whether the host may resolve to a loopback or private address: only when the
    /// entry names the exact port.
    fn allows_private(&self) -> bool {
        self.port.is_some()
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Whether a result may never be fetched from `ip` (unless the allowlist names that
/// host and port exactly): loopback, private (10/8, 172.16/12, 192.168/16),
/// link-local (169.254/16, fe80::/10), carrier-grade NAT (100.64/10), unique-local
/// (fc00::/7), unspecified, multicast, broadcast, documentation, benchmarking and
/// reserved ranges, and IPv6 forms that embed such an IPv4 address (mapped,
/// compatible, NAT64, 6to4).
pub fn is_forbidden_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96).
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return forbidden_v4(embedded(s[6], s[7]));
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 && forbidden_v4(embedded(s[1], s[2])) {
        return true;
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only
}

/// The addresses a vetted URL may be fetched from.
struct Vetted {
    addrs: Vec<SocketAddr>,
}

/// A resolver that answers every name with the vetted addresses and nothing else.
struct Pinned(Vec<SocketAddr>);

impl Resolve for Pinned {
    fn resolve(&self, _name: Name) -> Resolving {
        let addrs = self.0.clone();
        Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
    }
}

/// What one hop answered.
enum Hop {
    Redirect(Url),
    Body(reqwest::Response),
}

/// The largest piece a result body is handed on in.
pub const RESULT_CHUNK_BYTES: usize = 256 * 1024;

/// A result being downloaded: its declared type and size, and its bytes in
/// chunks of at most [`RESULT_CHUNK_BYTES`].
pub struct ResultBody {
    /// The `Content-Type` the host declared (or the `data:` URI's media type). Not
    /// to be trusted: sniff the bytes.
    pub content_type: Option<String>,
    /// The size the host declared, when it did (already checked against the limit).
    pub size: Option<u64>,
    /// The bytes; a failure mid-way (transient, or [`FalError::TooLarge`]) ends it.
    pub body: BoxStream<'static, Result<Bytes, FalError>>,
}

impl std::fmt::Debug for ResultBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultBody")
            .field("content_type", &self.content_type)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ResultBody {
    /// Reads the whole result into memory: for small results and tests only.
    pub async fn collect(self) -> Result<Downloaded, FalError> {
        let mut bytes = BytesMut::new();
        let mut body = self.body;
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(Downloaded {
            bytes: bytes.freeze(),
            content_type: self.content_type,
        })
    }
}

/// `bytes` as pieces of at most [`RESULT_CHUNK_BYTES`] (without copying).
fn chunked(bytes: Bytes) -> impl Stream<Item = Result<Bytes, FalError>> + Send + 'static {
    let count = bytes.len().div_ceil(RESULT_CHUNK_BYTES);
    futures::stream::iter((0..count).map(move |i| {
        let end = ((i + 1) * RESULT_CHUNK_BYTES).min(bytes.len());
        Ok(bytes.slice(i * RESULT_CHUNK_BYTES..end))
    }))
}

/// A response body as pieces of at most [`RESULT_CHUNK_BYTES`], small network
/// reads gathered, ending in [`FalError::TooLarge`] past `max` bytes and in a
/// transient error when no byte arrives for `idle`.
fn limited(
    response: reqwest::Response,
    max: u64,
    idle: Duration,
) -> BoxStream<'static, Result<Bytes, FalError>> {
    struct State {
        source: BoxStream<'static, reqwest::Result<Bytes>>,
        pending: BytesMut,
        seen: u64,
        /// The source has ended.
        ended: bool,
        /// An error was handed on: the stream is over.
        failed: bool,
    }
    let state = State {
        source: response.bytes_stream().boxed(),
        pending: BytesMut::new(),
        seen: 0,
        ended: false,
        failed: false,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if state.failed {
            return None;
        }
        while !state.ended && state.pending.len() < RESULT_CHUNK_BYTES {
            let error = match tokio::time::timeout(idle, state.source.next()).await {
                Err(_) => FalError::transient("the result download stalled"),
                Ok(Some(Ok(chunk))) => {
                    state.seen += chunk.len() as u64;
                    if state.seen <= max {
                        state.pending.extend_from_slice(&chunk);
                        continue;
                    }
                    FalError::TooLarge
                }
                Ok(Some(Err(err))) => FalError::transient(format!(
                    "reading the result failed: {}",
                    crate::client::error_chain(&err.without_url())
                )),
                Ok(None) => {
                    state.ended = true;
                    continue;
                }
            };
            state.failed = true;
            return Some((Err(error), state));
        }
        if state.pending.is_empty() {
            return None;
        }
        let take = state.pending.len().min(RESULT_CHUNK_BYTES);
        let piece = state.pending.split_to(take).freeze();
        Some((Ok(piece), state))
    })
    .boxed()
}

impl FalClient {
    /// Opens a result for streaming: a `data:` URI is decoded in place; anything
    /// else must be an allowed URL (see [`FalConfig::allowed_result_hosts`])
    /// resolving to an allowed address. At most [`MAX_REDIRECTS`] redirects are
    /// followed, each target checked again. Reaching the body (connection,
    /// redirects, headers) must finish within `result_timeout` and is retried when
    /// it fails transiently; the body then arrives in bounded chunks, each within
    /// `result_timeout` of the last, and ends in [`FalError::TooLarge`] once it
    /// passes `max_result_bytes`. Nothing holds the whole result: a 500 MB
    /// result costs the memory of a chunk.
    ///
    /// No credentials are sent with a download.
    ///
    /// [`FalConfig::allowed_result_hosts`]: crate::FalConfig::allowed_result_hosts
    pub async fn download(&self, url: &str) -> Result<ResultBody, FalError> {
        let max = self.inner.config.max_result_bytes;
        if strip_prefix_ignore_case(url.trim_start(), "data:").is_some() {
            let decoded = decode_data_uri(url.trim_start(), max)?;
            let size = decoded.bytes.len() as u64;
            return Ok(ResultBody {
                content_type: decoded.content_type,
                size: Some(size),
                body: chunked(decoded.bytes).boxed(),
            });
        }
        let start =
            Url::parse(url.trim()).map_err(|_| FalError::ForbiddenUrl("not a url".to_owned()))?;
        let host = host_key(&start);
        let timeout = self.inner.config.result_timeout;
        // Each hop goes through its own host's breaker (see `fetch_hop`); the body is
        // read outside it, so a large result is not taken for a slow call.
        let response = self
            .retrying(&host, "download", true, || async {
                tokio::time::timeout(timeout, self.open(&start))
                    .await
                    .unwrap_or_else(
                        |_| Err(FalError::transient("result download timed out").into()),
                    )
            })
            .await?;
        if response.content_length().is_some_and(|len| len > max) {
            return Err(FalError::TooLarge);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(ResultBody {
            content_type,
            size: response.content_length(),
            body: limited(response, max, timeout),
        })
    }

    /// Follows the redirects of a result URL up to the response carrying its body.
    async fn open(&self, start: &Url) -> Result<reqwest::Response, Failure> {
        let mut url = start.clone();
        for redirects in 0..=MAX_REDIRECTS {
            let vetted = self.vet(&url).await?;
            let client = reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .no_proxy()
                .dns_resolver(Arc::new(Pinned(vetted.addrs)))
                .connect_timeout(self.inner.config.http_timeout)
                .user_agent(concat!("atelier-fal/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|err| FalError::transient(format!("building a download client: {err}")))?;
            match self.fetch_hop(&client, &url).await? {
                Hop::Redirect(next) => {
                    if redirects == MAX_REDIRECTS {
                        break;
                    }
                    tracing::debug!(from = %redact(&url), to = %redact(&next), "following result redirect");
                    url = next;
                }
                Hop::Body(response) => return Ok(response),
            }
        }
        Err(FalError::Protocol(format!("more than {MAX_REDIRECTS} redirects")).into())
    }

    /// Sends one hop's GET through its host's breaker.
    async fn fetch_hop(&self, client: &reqwest::Client, url: &Url) -> Result<Hop, Failure> {
        let host = host_key(url);
        self.guarded(&host, "download", async {
            let response = client
                .get(url.clone())
                .send()
                .await
                .map_err(transport_failure)?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FalError::Protocol("redirect without a location".into()))?;
                let next = url
                    .join(location)
                    .map_err(|_| FalError::ForbiddenUrl("redirect to an invalid url".into()))?;
                return Ok(Hop::Redirect(next));
            }
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
                return Err(classify(status, &headers, &body).into());
            }
            Ok(Hop::Body(response))
        })
        .await
    }

    /// Checks `url` against the allowlist, resolves its host once and checks every
    /// address.
    async fn vet(&self, url: &Url) -> Result<Vetted, FalError> {
        let entry = self
            .inner
            .allow
            .iter()
            .find(|entry| entry.matches(url))
            .ok_or_else(|| FalError::ForbiddenUrl(format!("{} is not allowed", redact(url))))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FalError::ForbiddenUrl("no port".into()))?;
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Domain(domain)) => tokio::net::lookup_host((domain, port))
                .await
                .map_err(|err| FalError::transient(format!("resolving {domain} failed: {err}")))?
                .collect(),
            None => return Err(FalError::ForbiddenUrl("no host".into())),
        };
        if addrs.is_empty() {
            return Err(FalError::transient(format!(
                "{} resolves to no address",
                url.host_str().unwrap_or_default()
            )));
        }
        if !entry.allows_private()
            && let Some(bad) = addrs.iter().find(|addr| is_forbidden_address(addr.ip()))
        {
            tracing::warn!(url = %redact(url), address = %bad.ip(), "refused result url on a non-public address");
            return Err(FalError::ForbiddenUrl(format!(
                "{} resolves to a non-public address",
                redact(url)
            )));
        }
        Ok(Vetted { addrs })
    }
}

/// A URL without its query (results may carry signed tokens there).
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// Decodes a `data:[<media type>][;base64],<data>` URI of at most `max` bytes.
pub(crate) fn decode_data_uri(uri: &str, max: u64) -> Result<Downloaded, FalError> {
    let malformed = || FalError::Protocol("malformed data uri".into());
    let rest = strip_prefix_ignore_case(uri, "data:").ok_or_else(malformed)?;
    let (meta, data) = rest.split_once(',').ok_or_else(malformed)?;
    let (media_type, is_base64) = match meta.rsplit_once(';') {
        Some((media, flag)) if flag.trim().eq_ignore_ascii_case("base64") => (media, true),
        _ => (meta, false),
    };
    // Each 4 base64 characters hold 3 bytes; refuse before decoding anything big.
    let estimate = if is_base64 {
        (data.len() as u64 / 4) * 3
    } else {
        data.len() as u64 / 3
    };
    if estimate > max {
        return Err(FalError::TooLarge);
    }
    let unescaped: Vec<u8> = percent_encoding::percent_decode_str(data).collect();
    let bytes = if is_base64 {
        let cleaned: Vec<u8> = unescaped
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let indifferent =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        GeneralPurpose::new(&alphabet::STANDARD, indifferent)
            .decode(&cleaned)
            .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, indifferent).decode(&cleaned))
            .map_err(|_| malformed())?
    } else {
        unescaped
    };
    if bytes.len() as u64 > max {
        return Err(FalError::TooLarge);
    }
    let media_type = media_type.trim();
    Ok(Downloaded {
        bytes: Bytes::from(bytes),
        content_type: (!media_type.is_empty()).then(|| media_type.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.255",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(is_forbidden_address(ip(s)), "{s} should be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "8.8.8.8",
            "34.120.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!is_forbidden_address(ip(s)), "{s} should be allowed");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn allowlist_entries_match_scheme_host_port_and_path() {
        let cdn = AllowEntry::parse("v3.fal.media").expect("entry");
        assert!(cdn.matches(&url("https://v3.fal.media/files/x.png")));
        assert!(cdn.matches(&url("https://V3.FAL.MEDIA/files/x.png")));
        assert!(!cdn.matches(&url("http://v3.fal.media/files/x.png")));
        assert!(!cdn.matches(&url("https://v3.fal.media:8443/files/x.png")));
        assert!(!cdn.matches(&url("https://evil.v3.fal.media/x")));
        assert!(!cdn.matches(&url("https://v3.fal.media.evil.com/x")));
        assert!(!cdn.matches(&url("https://user:pw@v3.fal.media/x")));
        assert!(!cdn.allows_private());

        let gcs = AllowEntry::parse("storage.googleapis.com/falserverless/").expect("entry");
        assert!(gcs.matches(&url("https://storage.googleapis.com/falserverless/a/b.png")));
        assert!(!gcs.matches(&url("https://storage.googleapis.com/other-bucket/b.png")));
        assert!(!gcs.matches(&url("https://storage.googleapis.com/falserverless/../x")));

        let sim = AllowEntry::parse("http://127.0.0.1:4010").expect("entry");
        assert!(sim.matches(&url("http://127.0.0.1:4010/files/x.png")));
        assert!(!sim.matches(&url("http://127.0.0.1:4011/files/x.png")));
        assert!(!sim.matches(&url("http://127.0.0.1/files/x.png")));
        assert!(sim.allows_private());

        let v6 = AllowEntry::parse("[::1]:8080").expect("entry");
        assert!(v6.matches(&url("https://[::1]:8080/x")));
        assert!(!v6.matches(&url("http://[::1]:8080/x")));
        assert!(v6.allows_private());
        assert!(!AllowEntry::parse("[::1]").expect("entry").allows_private());

        assert!(AllowEntry::parse("ftp://x").is_err());
        assert!(AllowEntry::parse("x?y=1").is_err());
        assert!(AllowEntry::parse("").is_err());
    }

    #[test]
    fn data_uris_decode_within_the_limit() {
        let png = decode_data_uri("data:image/png;base64,iVBORw0KGgo=", 1024).expect("decoded");
        assert_eq!(png.content_type.as_deref(), Some("image/png"));
        assert_eq!(&png.bytes[..], b"\x89PNG\r\n\x1a\n");
        let unpadded = decode_data_uri("data:image/png;base64,iVBORw0KGgo", 1024).expect("decoded");
        assert_eq!(unpadded.bytes, png.bytes);
        let text = decode_data_uri("data:,hello%20world", 1024).expect("decoded");
        assert_eq!(&text.bytes[..], b"hello world");
        assert_eq!(text.content_type, None);

        assert_eq!(
            decode_data_uri("data:image/png;base64,AAAAAAAA", 5).map(|d| d.bytes),
            Err(FalError::TooLarge)
        );
        let huge = format!("data:image/png;base64,{}", "A".repeat(4_000));
        assert_eq!(
            decode_data_uri(&huge, 1_000).map(|d| d.bytes),
            Err(FalError::TooLarge)
        );
        assert!(matches!(
            decode_data_uri("data:image/png;base64", 1024),
            Err(FalError::Protocol(_))
        ));
        assert!(matches!(
            decode_data_uri("data:image/png;base64,@@@", 1024),
            Err(FalError::Protocol(_))
        ));
    }
}
