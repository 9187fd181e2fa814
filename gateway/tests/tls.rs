//! HTTPS at the edge: the gateway serving TLS with a certificate from files (a test
//! CA's), HTTP/2 by ALPN for REST and native gRPC, gRPC-web and WebSockets over
//! it, HSTS, a certificate reloaded without dropping open connections, and no
//! plain HTTP outside loopback unless asked for.

use std::{path::Path, sync::Arc, time::Duration};

use atelier_gateway::{GatewayConfig, tls::EdgeTls};
use atelier_proto::workflow::v1::{self as pb, workflow_service_client::WorkflowServiceClient};
use atelier_testbed::{Backend, TestPlatform};
use atelier_testkit::rest::sign_up;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use reqwest::{StatusCode, header};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::ServerName},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig};

const HSTS: &str = "max-age=63072000; includeSubDomains";

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Atelier test edge CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost and 127.0.0.1: its PEM and its key's.
    fn issue(&self, common_name: &str, serial: u64) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("dns")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("ca der");
        roots.add(der).expect("root");
        roots
    }
}

use tokio_rustls::rustls::pki_types::pem::PemObject as _;

/// Writes a certificate and its key where the gateway reads them, each replaced
/// whole (a rename), as a Secret volume or cert-manager does.
fn install(files: &EdgeTls, (cert, key): &(String, String)) {
    let put = |path: &Path, text: &str| {
        let temporary = path.with_extension("new");
        std::fs::write(&temporary, text).expect("write");
        std::fs::rename(&temporary, path).expect("rename");
    };
    put(&files.key_file, key);
    put(&files.cert_file, cert);
}

/// A gateway serving HTTPS with `certificate` in front of `platform`'s services.
async fn https_gateway(
    platform: &TestPlatform,
    dir: &Path,
    certificate: &(String, String),
) -> (String, EdgeTls) {
    let files = EdgeTls {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
        reload_every: Duration::from_millis(100),
    };
    install(&files, certificate);
    let mut config = platform.gateway_config.clone();
    config.tls = Some(files.clone());
    let url = platform.spawn_gateway(config).await;
    assert!(url.starts_with("https://"), "{url}");
    (url, files)
}

/// A TLS connection to the gateway at `url` offering `alpn`.
async fn connect(ca: &Ca, url: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut config = ClientConfig::builder()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let addr = url.trim_start_matches("https://");
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls handshake")
}

/// The certificate the server presented on `tls`.
fn presented(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificate")[0]
        .to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("der")
        .to_vec()
}

fn https_client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("ca"))
        .build()
        .expect("client")
}

async fn grpc_channel(ca: &Ca, url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_owned())
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.pem))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("grpc over tls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_grpc_grpc_web_and_websockets_work_over_https() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let (url, _) = https_gateway(&platform, dir.path(), &ca.issue("gateway one", 1)).await;

    // REST over HTTPS (HTTP/1.1), with HSTS.
    let client = https_client(&ca);
    let response = client
        .get(format!("{url}/api/workflows"))
        .send()
        .await
        .expect("https rest");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);
    let listed: serde_json::Value = response.json().await.expect("json");
    // The plain gateway on loopback sends none.
    let plain = reqwest::get(format!("{}/healthz", platform.gateway_url))
        .await
        .expect("plain");
    assert!(
        !plain
            .headers()
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
    );

    // ALPN: h2 when offered, HTTP/1.1 otherwise.
    let tls = connect(&ca, &url, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let tls = connect(&ca, &url, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // REST over HTTP/2, HSTS too.
    let tls = connect(&ca, &url, &[b"h2"]).await;
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get(format!("{url}/api/workflows"))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = h2.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);

    // Native gRPC over TLS.
    let mut grpc = WorkflowServiceClient::new(grpc_channel(&ca, &url).await);
    let request = pb::ListWorkflowsRequest {
        page_size: 100,
        ..Default::default()
    };
    let workflows = grpc
        .list_workflows(request.clone())
        .await
        .expect("grpc over tls")
        .into_inner()
        .workflows;
    assert!(!workflows.is_empty(), "the catalogue is seeded");
    assert_eq!(
        listed["workflows"].as_array().map(Vec::len),
        Some(workflows.len()),
        "{listed}"
    );

    // gRPC-web over HTTPS, as a browser sends it: one framed message.
    let response = client
        .post(format!(
            "{url}/atelier.workflow.v1.WorkflowService/ListWorkflows"
        ))
        .header(header::CONTENT_TYPE, "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body({
            let message = request.encode_to_vec();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            framed
        })
        .send()
        .await
        .expect("grpc-web");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);
    let body = response.bytes().await.expect("body");
    let (mut message, mut trailers) = (None, String::new());
    let mut rest = &body[..];
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + length];
        if rest[0] & 0x80 == 0 {
            message = Some(pb::ListWorkflowsResponse::decode(payload).expect("message"));
        } else {
            trailers = String::from_utf8_lossy(payload).into_owned();
        }
        rest = &rest[5 + length..];
    }
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(message.expect("a message").workflows.len(), workflows.len());

    // A WebSocket over HTTPS (HTTP/1.1 upgrade).
    let user = sign_up(&platform, "tls-ws@example.com").await;
    let tls = connect(&ca, &url, &[b"http/1.1"]).await;
    let ws_url = format!(
        "{}/api/ws?access_token={}",
        url.replace("https://", "wss://"),
        user.token
    );
    let (_socket, response) = tokio_tungstenite::client_async(ws_url, tls)
        .await
        .expect("websocket over tls");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    // A WebSocket over HTTP/2 (extended CONNECT, RFC 8441), as a browser opens one
    // on an h2 connection. The server's settings allow it once the connection is up.
    let request = http::Request::get(format!("{url}/healthz"))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    h2.send_request(request).await.expect("h2 request");
    let mut connect = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("{url}/api/ws?access_token={}", user.token))
        .header("sec-websocket-version", "13")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = h2.send_request(connect).await.expect("extended connect");
    assert_eq!(response.status(), StatusCode::OK, "a WebSocket over h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_dropping_connections() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let first = ca.issue("gateway one", 1);
    let (url, files) = https_gateway(&platform, dir.path(), &first).await;

    // An HTTP/2 connection and a gRPC channel opened with the first certificate.
    let tls = connect(&ca, &url, &[b"h2"]).await;
    assert_eq!(presented(&tls), der(&first.0));
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let healthz = || {
        http::Request::get(format!("{url}/healthz"))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let response = h2.send_request(healthz()).await.expect("before");
    assert_eq!(response.status(), StatusCode::OK);
    let mut grpc = WorkflowServiceClient::new(grpc_channel(&ca, &url).await);
    grpc.list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .expect("grpc before");

    // A renewed certificate: new connections get it once the files are read again.
    let second = ca.issue("gateway two", 2);
    install(&files, &second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tls = connect(&ca, &url, &[b"h2"]).await;
        if presented(&tls) == der(&second.0) {
            break;
        }
        assert_eq!(presented(&tls), der(&first.0));
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The connections opened before keep working.
    let response = h2.send_request(healthz()).await.expect("after");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"ok");
    assert!(!connection.is_finished(), "the open connection was kept");
    grpc.list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .expect("grpc after");

    // A broken replacement: the last good certificate stays.
    install(
        &files,
        &(
            "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n".to_owned(),
            second.1.clone(),
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tls = connect(&ca, &url, &[b"h2"]).await;
    assert_eq!(presented(&tls), der(&second.0));
    // A certificate with another key than the one given is no better.
    let third = ca.issue("gateway three", 3);
    install(&files, &(third.0.clone(), first.1.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tls = connect(&ca, &url, &[b"h2"]).await;
    assert_eq!(presented(&tls), der(&second.0));
    let response = https_client(&ca)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_outside_loopback_needs_an_explicit_opt_in() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let mut config: GatewayConfig = platform.gateway_config.clone();
    config.tls = None;
    config.plaintext = false;
    // Listening on every interface; nothing connects to it.
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = atelier_gateway::serve(config.clone(), listener, CancellationToken::new())
        .await
        .expect_err("plain http on every interface is refused");
    let message = format!("{err:#}");
    assert!(message.contains("not a loopback address"), "{message}");
    assert!(message.contains("GATEWAY_PLAINTEXT=true"), "{message}");
    assert!(message.contains("GATEWAY_TLS_CERT_FILE"), "{message}");

    let anywhere = "0.0.0.0:8080".parse().expect("addr");
    let mut opted_in = config.clone();
    opted_in.plaintext = true;
    opted_in.check_listen(anywhere).expect("opted in");
    let mut with_tls = config.clone();
    with_tls.tls = Some(EdgeTls {
        cert_file: "tls.crt".into(),
        key_file: "tls.key".into(),
        reload_every: Duration::from_secs(30),
    });
    with_tls.check_listen(anywhere).expect("https anywhere");
    for loopback in ["127.0.0.1:8080", "[::1]:8080", "[::ffff:127.0.0.1]:8080"] {
        config
            .check_listen(loopback.parse().expect("addr"))
            .expect("loopback");
    }
    for outside in ["[::]:8080", "10.0.0.5:8080"] {
        config
            .check_listen(outside.parse().expect("addr"))
            .expect_err("not loopback");
    }

    // Plain HTTP behind a proxy that terminates TLS: HSTS when the proxy says the
    // client came over https, and only when the proxy is one we trust.
    let mut behind = platform.gateway_config.clone();
    behind.proxies = atelier_testbed::TrustedProxies::hops(1);
    let behind = platform.spawn_gateway(behind).await;
    let hsts = |url: String, proto: &'static str| async move {
        reqwest::Client::new()
            .get(format!("{url}/healthz"))
            .header("x-forwarded-proto", proto)
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .expect("healthz")
            .headers()
            .get(header::STRICT_TRANSPORT_SECURITY)
            .cloned()
    };
    assert_eq!(hsts(behind.clone(), "https").await.expect("hsts"), HSTS);
    assert_eq!(hsts(behind, "http").await, None);
    assert_eq!(hsts(platform.gateway_url.clone(), "https").await, None);

    // A certificate that cannot be read stops the start with the reason.
    let dir = tempfile::tempdir().expect("dir");
    let mut broken = platform.gateway_config.clone();
    broken.tls = Some(EdgeTls {
        cert_file: dir.path().join("missing.crt"),
        key_file: dir.path().join("missing.key"),
        reload_every: Duration::from_secs(30),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = atelier_gateway::serve(broken, listener, CancellationToken::new())
        .await
        .expect_err("no certificate");
    assert!(format!("{err:#}").contains("missing.crt"), "{err:#}");
}
