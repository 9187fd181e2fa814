//! Service identity: every service holds a certificate from the platform's own CA that
//! names it (`spiffe://atelier/<service>` as a URI subject alternative name), serves
//! TLS with it and presents it when it calls another service. Servers verify the
//! caller's certificate against the same CA, so a method can ask which service is
//! calling and refuse every other one (the `internal_callers` of the contract, see
//! `atelier_proto::access`).
//!
//! Certificates come from files, one directory per service (`<dir>/<service>/tls.crt`,
//! `tls.key`, `ca.crt`: the layout of a Kubernetes TLS Secret, e.g. cert-manager's), and
//! are read again when they change, so a renewed certificate is used without a
//! restart. Where no files are given (the embedded default), the platform makes its own
//! CA under `<dir>/ca` and issues each service's certificate at start-up.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsAcceptor, TlsConnector,
    rustls::{
        ClientConfig, RootCertStore, ServerConfig,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier},
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
        server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    },
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::transport::{self, Connection};

/// The trust domain in every service's SPIFFE id.
const TRUST_DOMAIN: &str = "atelier";
/// How long a generated CA and a generated service certificate are valid.
const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;

/// Who may hold a service certificate: the services, the gateway, and operators
/// (administration tools, e.g. changing a user's plan).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Auth,
    Image,
    Processing,
    Workflow,
    User,
    Gateway,
    Operator,
}

impl ServiceName {
    pub const ALL: [ServiceName; 7] = [
        Self::Auth,
        Self::Image,
        Self::Processing,
        Self::Workflow,
        Self::User,
        Self::Gateway,
        Self::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Image => "image",
            Self::Processing => "processing",
            Self::Workflow => "workflow",
            Self::User => "user",
            Self::Gateway => "gateway",
            Self::Operator => "operator",
        }
    }

    /// The URI in this identity's certificate.
    pub fn spiffe_id(self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}", self.as_str())
    }

    fn from_spiffe_id(uri: &str) -> Option<Self> {
        let name = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        name.strip_prefix('/')?.parse().ok()
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|service| service.as_str() == name)
            .with_context(|| format!("no service is called {name:?}"))
    }
}

/// Where the certificates are and what to do when they are missing.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// `SERVICE_TLS_DIR`: one directory per service holding `tls.crt`, `tls.key` and
    /// `ca.crt`.
    pub dir: PathBuf,
    /// `SERVICE_TLS_GENERATE`: make a CA under `<dir>/ca` when there is none, and issue
    /// the certificates of the services in this process at start-up. Off in
    /// production, where a missing certificate is an error.
    pub generate: bool,
    /// `SERVICE_TLS_RELOAD_SECS`: how often the files are checked for a change.
    pub reload_every: Duration,
    /// Host names and addresses a generated certificate is valid for, besides
    /// `localhost`, `127.0.0.1` and `::1`.
    pub hosts: Vec<String>,
}

impl TlsSettings {
    /// Settings for tests and tools: certificates generated under `dir`.
    pub fn generated(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            generate: true,
            reload_every: Duration::from_secs(30),
            hosts: Vec::new(),
        }
    }

    fn files(&self, service: ServiceName) -> Files {
        let dir = self.dir.join(service.as_str());
        Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        }
    }
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn read(&self) -> anyhow::Result<Pem> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(Pem {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            ca: read(&self.ca)?,
        })
    }
}

/// The PEM files of one identity, as read.
#[derive(PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

/// The TLS configurations built from one set of files.
struct Configs {
    pem: Pem,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The certificate chain presented, and the checks a handshake makes of the
    /// other side's chain: for the in-memory pipes of [`crate::transport`], which
    /// make the same checks without the handshake.
    chain: Vec<CertificateDer<'static>>,
    callers: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

impl Configs {
    fn build(pem: Pem) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<Vec<_>, _>>()
            .context("reading the certificate (tls.crt)")?;
        if chain.is_empty() {
            bail!("tls.crt holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(&pem.key).context("reading the key (tls.key)")?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&pem.ca) {
            roots
                .add(ca.context("reading the CA (ca.crt)")?)
                .context("adding the CA (ca.crt)")?;
        }
        if roots.is_empty() {
            bail!("ca.crt holds no certificate");
        }
        let roots = Arc::new(roots);

        // A caller without a certificate may still connect (health checks), but only
        // certificates from our CA are accepted; which methods need which caller is
        // decided per method.
        let callers = WebPkiClientVerifier::builder(roots.clone())
            .allow_unauthenticated()
            .build()
            .context("building the client certificate verifier")?;
        let servers = WebPkiServerVerifier::builder(roots.clone())
            .build()
            .context("building the server certificate verifier")?;
        let mut server = ServerConfig::builder()
            .with_client_cert_verifier(callers.clone())
            .with_single_cert(chain.clone(), key.clone_key())
            .context("the certificate does not match its key")?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let mut client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)
            .context("the certificate does not match its key")?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            pem,
            server: Arc::new(server),
            client: Arc::new(client),
            chain,
            callers,
            servers,
        })
    }
}

/// One service's identity: what it serves TLS with and presents when calling others.
/// Cheap to clone; every clone sees a reloaded certificate.
#[derive(Clone)]
pub struct Identity {
    name: ServiceName,
    configs: Arc<ArcSwap<Configs>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .finish()
    }
}

impl Identity {
    /// Loads `name`'s certificate, issuing it first when `settings` say to generate.
    pub fn load(settings: &TlsSettings, name: ServiceName) -> anyhow::Result<Self> {
        if settings.generate {
            issue(settings, name)?;
        }
        let files = settings.files(name);
        let configs = files
            .read()
            .and_then(Configs::build)
            .with_context(|| format!("the {name} service certificate"))?;
        Ok(Self {
            name,
            configs: Arc::new(ArcSwap::from_pointee(configs)),
        })
    }

    /// Loads `name`'s certificate and keeps it current until `shutdown`.
    pub fn start(
        settings: &TlsSettings,
        name: ServiceName,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let identity = Self::load(settings, name)?;
        identity.watch(settings, shutdown.clone());
        Ok(identity)
    }

    pub fn name(&self) -> ServiceName {
        self.name
    }

    /// Reads the files again every `settings.reload_every` until `shutdown`, and
    /// uses them for new connections when they changed. A broken set of files is
    /// logged and the last good one kept.
    pub fn watch(&self, settings: &TlsSettings, shutdown: CancellationToken) {
        let files = settings.files(self.name);
        let every = settings.reload_every;
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => this.reload(&files),
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }

    fn reload(&self, files: &Files) {
        let pem = match files.read() {
            Ok(pem) if pem == self.configs.load().pem => return,
            Ok(pem) => pem,
            Err(err) => {
                tracing::warn!(service = %self.name, error = format!("{err:#}"), "cannot read the service certificate");
                return;
            }
        };
        match Configs::build(pem) {
            Ok(configs) => {
                self.configs.store(Arc::new(configs));
                tracing::info!(service = %self.name, "service certificate reloaded");
            }
            Err(err) => {
                tracing::warn!(service = %self.name, error = format!("{err:#}"), "keeping the previous service certificate")
            }
        }
    }

    /// Whether this service, serving at `host`, and `caller` would accept each other's
    /// certificates in a handshake now; if so, the service `caller`'s certificate names.
    pub(crate) fn accepts(&self, caller: &Identity, host: &str) -> Option<ServiceName> {
        let (ours, theirs) = (self.configs.load(), caller.configs.load());
        let now = UnixTime::now();
        let (leaf, intermediates) = theirs.chain.split_first()?;
        ours.callers
            .verify_client_cert(leaf, intermediates, now)
            .ok()?;
        let (leaf, intermediates) = ours.chain.split_first()?;
        let name = ServerName::try_from(host.to_owned()).ok()?;
        theirs
            .servers
            .verify_server_cert(leaf, intermediates, &name, &[], now)
            .ok()?;
        identity_of(theirs.chain.first()?)
    }

    /// Accepts TLS connections with the current certificate.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.configs.load().server.clone())
    }

    /// A lazily connecting channel to another service at `url` (`https://`), every
    /// call bounded by `timeout`.
    pub fn channel(&self, url: &str, timeout: Duration) -> anyhow::Result<Channel> {
        Ok(self
            .endpoint(url)?
            .timeout(timeout)
            .connect_with_connector_lazy(self.connector()))
    }

    /// A channel for calls that stream for as long as they take (uploads, downloads,
    /// event streams): no overall deadline, only a connect timeout and keep-alives
    /// that notice a dead peer.
    pub fn streaming_channel(&self, url: &str) -> anyhow::Result<Channel> {
        Ok(self
            .endpoint(url)?
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_with_connector_lazy(self.connector()))
    }

    fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("invalid service url {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("service url {url:?} must be https://: services only speak TLS to each other");
        }
        if uri.host().is_none() {
            bail!("service url {url:?} has no host");
        }
        // The connector speaks TLS itself (with the certificate of the moment), so
        // tonic is given the same address as plain HTTP/2.
        let plain = format!(
            "http://{}",
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        Ok(Endpoint::from_shared(plain)
            .with_context(|| format!("invalid service url {url:?}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true))
    }

    fn connector(&self) -> Connector {
        Connector {
            identity: self.clone(),
        }
    }
}

/// Opens TCP connections and speaks TLS over them with the identity's current
/// certificate, checking the server's certificate for the host it was asked for; or
/// a pipe to a server of this process (see [`crate::transport`]).
#[derive(Clone)]
struct Connector {
    identity: Identity,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Connection>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let identity = self.identity.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("service url without a host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            if let Some(pipe) = transport::connect(&host, port, &identity).await {
                return Ok(TokioIo::new(pipe));
            }
            let client = identity.configs.load().client.clone();
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)?;
            let tls = TlsConnector::from(client).connect(name, tcp).await?;
            Ok(TokioIo::new(Connection::opened(tls)))
        })
    }
}

/// The service identity in a verified peer certificate, if it names one.
pub fn identity_of(certificate: &CertificateDer<'_>) -> Option<ServiceName> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let names = parsed.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => ServiceName::from_spiffe_id(uri),
            _ => None,
        })
}

// --- The embedded default's CA -------------------------------------------------------

/// A generated certificate is issued again when it has less than this left.
const RENEW_BEFORE_DAYS: i64 = 30;

/// Makes the CA under `<dir>/ca` unless it is there, then issues `name`'s certificate
/// unless a current one covers the host names. Processes sharing the directory take
/// turns (a lock file), so they agree on one CA.
fn issue(settings: &TlsSettings, name: ServiceName) -> anyhow::Result<()> {
    let ca_dir = settings.dir.join("ca");
    crate::files::private_dir(&ca_dir)?;
    let lock_path = ca_dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    hosts.extend(settings.hosts.iter().cloned());
    hosts.sort();
    hosts.dedup();
    let files = settings.files(name);
    let (ca_pem, issuer) = certificate_authority(&ca_dir)?;
    if current(&files, &ca_pem, name, &hosts) {
        return Ok(());
    }

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = hosts
        .iter()
        .map(|host| {
            Ok(match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.as_str().try_into()?),
            })
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params
        .subject_alt_names
        .push(SanType::URI(name.spiffe_id().as_str().try_into()?));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("atelier {name}"));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);
    let key = KeyPair::generate().context("making a service key")?;
    let cert = params.signed_by(&key, &issuer)?;

    let dir = files.cert.parent().expect("a service directory");
    crate::files::private_dir(dir)?;
    crate::files::write_private(&files.key, key.serialize_pem().as_bytes())?;
    crate::files::write_replace(&files.cert, cert.pem().as_bytes())?;
    crate::files::write_replace(&files.ca, ca_pem.as_bytes())?;
    Ok(())
}

/// Whether `files` hold a certificate for `name` from the CA `ca_pem`, valid for a
/// while yet and for every one of `hosts`.
fn current(files: &Files, ca_pem: &str, name: ServiceName, hosts: &[String]) -> bool {
    let Ok(pem) = files.read() else {
        return false;
    };
    if pem.ca != ca_pem.as_bytes() {
        return false;
    }
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(&pem.cert).next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let renew_at = time::OffsetDateTime::now_utc() + time::Duration::days(RENEW_BEFORE_DAYS);
    if cert.validity().not_after.to_datetime() < renew_at {
        return false;
    }
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return false;
    };
    use x509_parser::extensions::GeneralName;
    let covered = |host: &String| {
        names.value.general_names.iter().any(|name| match name {
            GeneralName::DNSName(dns) => dns == host,
            GeneralName::IPAddress(bytes) => host.parse::<IpAddr>().is_ok_and(|ip| match ip {
                IpAddr::V4(v4) => *bytes == v4.octets(),
                IpAddr::V6(v6) => *bytes == v6.octets(),
            }),
            _ => false,
        })
    };
    identity_of(&der) == Some(name) && hosts.iter().all(covered)
}

/// The generated CA: its certificate (PEM) and an issuer for service certificates.
fn certificate_authority(dir: &Path) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !key_path.exists() {
        let key = KeyPair::generate().context("making the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "Atelier service CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key).context("signing the CA")?;
        // The key is written last: its presence means the CA is complete.
        crate::files::write_replace(&cert_path, cert.pem().as_bytes())?;
        crate::files::write_private(&key_path, key.serialize_pem().as_bytes())?;
        tracing::info!(dir = %dir.display(), "made a service certificate authority");
    }
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let key = KeyPair::from_pem(&key_pem).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).context("reading the CA")?;
    Ok((cert_pem, issuer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_name_services() {
        for name in ServiceName::ALL {
            assert_eq!(ServiceName::from_spiffe_id(&name.spiffe_id()), Some(name));
        }
        assert_eq!(ServiceName::from_spiffe_id("spiffe://other/auth"), None);
        assert_eq!(ServiceName::from_spiffe_id("spiffe://atelier/root"), None);
        assert_eq!(ServiceName::from_spiffe_id("spiffe://atelierx/auth"), None);
    }

    #[test]
    fn generated_certificates_name_their_service() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = TlsSettings::generated(dir.path());
        let identity = Identity::load(&settings, ServiceName::Processing).expect("identity");
        let chain = CertificateDer::pem_slice_iter(&identity.configs.load().pem.cert)
            .collect::<Result<Vec<_>, _>>()
            .expect("pem");
        assert_eq!(identity_of(&chain[0]), Some(ServiceName::Processing));
        // A second service is issued by the same CA.
        Identity::load(&settings, ServiceName::Image).expect("identity");
        let read = |service: &str, file: &str| {
            std::fs::read(dir.path().join(service).join(file)).expect("file")
        };
        assert_eq!(read("processing", "ca.crt"), read("image", "ca.crt"));
        // A current certificate is kept; a new host name gets a new one.
        let before = read("processing", "tls.crt");
        Identity::load(&settings, ServiceName::Processing).expect("identity");
        assert_eq!(read("processing", "tls.crt"), before);
        let mut moved = settings.clone();
        moved.hosts = vec!["processing.example".to_owned()];
        Identity::load(&moved, ServiceName::Processing).expect("identity");
        assert_ne!(read("processing", "tls.crt"), before);
    }

    #[test]
    fn plain_http_urls_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::load(&TlsSettings::generated(dir.path()), ServiceName::Gateway)
            .expect("identity");
        let err = identity
            .channel("http://127.0.0.1:1", Duration::from_secs(1))
            .expect_err("plain http");
        assert!(err.to_string().contains("must be https://"), "{err}");
    }
}
