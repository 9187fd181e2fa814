//! HTTPS at the edge: the gateway serves TLS itself when given a certificate chain
//! and key (`GATEWAY_TLS_CERT_FILE`, `GATEWAY_TLS_KEY_FILE`, PEM), offering HTTP/2
//! and HTTP/1.1 by ALPN, so REST, SSE, WebSocket, gRPC-web and native gRPC share one
//! port as they do in plain HTTP.
//!
//! The files are read again when they change (a renewed certificate, e.g. from
//! cert-manager): new handshakes get the new certificate, open connections keep
//! their session, and a broken replacement is logged and the last good certificate
//! kept. Each handshake runs on its own task, bounded in time, so a slow client holds
//! up no other.

use std::{
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        crypto::ring::sign::any_supported_type,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    },
    server::TlsStream,
};
use tokio_util::sync::CancellationToken;

use crate::stall::WriteTimeout;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, accepting waits for one to end.
const MAX_HANDSHAKES: usize = 1024;

/// Where the gateway's certificate is (`GATEWAY_TLS_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeTls {
    /// `GATEWAY_TLS_CERT_FILE`: the certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// `GATEWAY_TLS_KEY_FILE`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `GATEWAY_TLS_RELOAD_SECS`: how often the files are checked for a change.
    pub reload_every: Duration,
}

impl EdgeTls {
    /// `GATEWAY_TLS_CERT_FILE` and `GATEWAY_TLS_KEY_FILE`: both or neither.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        use atelier_common::config;
        let cert = config::var_opt::<PathBuf>("GATEWAY_TLS_CERT_FILE")?;
        let key = config::var_opt::<PathBuf>("GATEWAY_TLS_KEY_FILE")?;
        let reload_every = config::seconds("GATEWAY_TLS_RELOAD_SECS", 30)?;
        if reload_every.is_zero() {
            bail!("GATEWAY_TLS_RELOAD_SECS must be at least 1");
        }
        match (cert, key) {
            (Some(cert_file), Some(key_file)) => Ok(Some(Self {
                cert_file,
                key_file,
                reload_every,
            })),
            (None, None) => Ok(None),
            (Some(_), None) => {
                bail!("GATEWAY_TLS_CERT_FILE is set but GATEWAY_TLS_KEY_FILE is not: set both")
            }
            (None, Some(_)) => {
                bail!("GATEWAY_TLS_KEY_FILE is set but GATEWAY_TLS_CERT_FILE is not: set both")
            }
        }
    }

    fn read(&self) -> anyhow::Result<Pem> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(Pem {
            cert: read(&self.cert_file)?,
            key: read(&self.key_file)?,
        })
    }
}

/// The certificate and key files, as read.
#[derive(PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Pem {
    fn certified_key(&self) -> anyhow::Result<CertifiedKey> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .context("reading the certificate chain (GATEWAY_TLS_CERT_FILE)")?;
        if chain.is_empty() {
            bail!("GATEWAY_TLS_CERT_FILE holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .context("reading the private key (GATEWAY_TLS_KEY_FILE)")?;
        let signing =
            any_supported_type(&key).context("the private key's type is not supported")?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            // A key that cannot say its public key is checked by the first handshake.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(err) => {
                Err(anyhow::Error::new(err)
                    .context("the certificate does not match the private key"))
            }
        }
    }
}

/// The certificate handshakes are answered with: the last good one read from the
/// files. Cheap to clone; every clone sees a reload.
#[derive(Clone)]
pub struct Certificate {
    files: EdgeTls,
    current: Arc<ArcSwap<(Pem, Arc<CertifiedKey>)>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.files.cert_file)
            .finish()
    }
}

impl Certificate {
    /// Reads the files; an error names what is wrong with them.
    pub fn load(files: &EdgeTls) -> anyhow::Result<Self> {
        let pem = files.read()?;
        let key = pem.certified_key()?;
        Ok(Self {
            files: files.clone(),
            current: Arc::new(ArcSwap::from_pointee((pem, Arc::new(key)))),
        })
    }

    /// Reads the files again every `reload_every` until `shutdown`.
    pub fn watch(&self, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.files.reload_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => this.reload(),
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }

    /// Uses the files for new handshakes if they changed and are good; otherwise
    /// keeps the certificate in use.
    pub fn reload(&self) {
        let pem = match self.files.read() {
            Ok(pem) if pem == self.current.load().0 => return,
            Ok(pem) => pem,
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "cannot read the gateway certificate, keeping the previous one"
                );
                return;
            }
        };
        match pem.certified_key() {
            Ok(key) => {
                self.current.store(Arc::new((pem, Arc::new(key))));
                tracing::info!(cert_file = %self.files.cert_file.display(), "gateway certificate reloaded");
            }
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "the new gateway certificate is not usable, keeping the previous one"
                );
            }
        }
    }

    /// The server configuration: this certificate, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().1.clone())
    }
}

type Accepted = (TlsStream<WriteTimeout<TcpStream>>, SocketAddr);

/// A TCP listener handing out connections once their TLS handshake is done, with
/// Nagle's algorithm off and writes that make no progress given up (see
/// [`crate::stall`]).
pub struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    send_timeout: Duration,
    handshakes: JoinSet<Option<Accepted>>,
}

impl Listener {
    pub fn new(tcp: TcpListener, certificate: &Certificate, send_timeout: Duration) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(certificate.server_config()),
            send_timeout,
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        let tcp = WriteTimeout::new(tcp, self.send_timeout);
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(err)) => {
                    metrics::counter!("atelier_gateway_tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, error = %err, "tls handshake failed");
                    None
                }
                Err(_) => {
                    metrics::counter!("atelier_gateway_tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, "tls handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<WriteTimeout<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                    Err(err) => {
                        // Out of file descriptors, most likely: let some close.
                        tracing::warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(accepted)) = done {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> EdgeTls {
        EdgeTls {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            reload_every: Duration::from_secs(30),
        }
    }

    fn issue(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn write(files: &EdgeTls, cert: &str, key: &str) {
        std::fs::write(&files.cert_file, cert).expect("cert");
        std::fs::write(&files.key_file, key).expect("key");
    }

    fn served(certificate: &Certificate) -> Vec<u8> {
        certificate.current.load().1.cert[0].to_vec()
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let files = files(dir.path());
        let err = Certificate::load(&files).expect_err("no files");
        assert!(format!("{err:#}").contains("tls.crt"), "{err:#}");
        let (cert, _) = issue("one.example");
        let (_, other_key) = issue("two.example");
        write(&files, &cert, &other_key);
        let err = Certificate::load(&files).expect_err("mismatch");
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
        write(&files, "not a certificate", &other_key);
        let err = Certificate::load(&files).expect_err("garbage");
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
    }

    #[test]
    fn a_reload_takes_good_files_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().expect("dir");
        let files = files(dir.path());
        let (cert, key) = issue("one.example");
        write(&files, &cert, &key);
        let certificate = Certificate::load(&files).expect("load");
        let first = served(&certificate);
        let (cert, key) = issue("two.example");
        write(&files, &cert, &key);
        certificate.reload();
        let second = served(&certificate);
        assert_ne!(first, second);
        write(&files, &cert, "broken key");
        certificate.reload();
        assert_eq!(served(&certificate), second);
    }
}
