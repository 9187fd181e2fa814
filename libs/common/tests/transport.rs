//! Services of one process call each other through in-memory pipes, with the same
//! checks of who is calling as over TLS: the caller is named by its certificate, a
//! certificate the server would refuse in a handshake gets no pipe (and is refused
//! over the network), and callers from outside the process still speak TLS.

use std::{net::SocketAddr, time::Duration};

use atelier_common::{
    grpc::{Channel, GrpcServer},
    identity::{Identity, ServiceName, TlsSettings},
};
use atelier_proto::access::Method;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

/// Lists the server's services over `channel`.
async fn list(channel: Channel) -> Result<(), tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    replies.message().await?.expect("a reply");
    Ok(())
}

/// Established TCP connections to or from `port` (IPv4 or IPv6), from the kernel's
/// tables.
fn tcp_connections(port: u16) -> usize {
    let port = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state (01: established)
            fields.len() > 3
                && fields[3] == "01"
                && (format!("{} ", fields[1]).contains(&port)
                    || format!("{} ", fields[2]).contains(&port))
        })
        .count()
}

/// A TLS channel with `service`'s certificate files, opened by tonic itself, as a
/// caller in another process does.
fn over_tls(settings: &TlsSettings, service: Option<ServiceName>, addr: SocketAddr) -> Channel {
    let read = |path: std::path::PathBuf| std::fs::read(path).expect("certificate file");
    let ca = read(settings.dir.join("ca/ca.crt"));
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(service) = service {
        let dir = settings.dir.join(service.as_str());
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read(dir.join("tls.crt")),
            read(dir.join("tls.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

#[tokio::test]
async fn services_of_one_process_call_through_pipes_with_the_same_checks() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = TlsSettings::generated(dir.path());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = Identity::load(&settings, ServiceName::Workflow).expect("server identity");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        GrpcServer::new(&server)
            // The reflection service every server runs, made internal to the gateway
            // here, so that a call says which service the server saw.
            .contract(&[Method {
                path: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                public: false,
                internal_callers: &["gateway"],
                user_token: false,
                scope: "",
            }])
            .serve(listener, shutdown.clone()),
    );
    let channel_as = |service: ServiceName, url: &str| {
        Identity::load(&settings, service)
            .expect("identity")
            .channel(url, Duration::from_secs(5))
            .expect("channel")
    };

    // The gateway, by address and by name: served through a pipe, no TCP connection.
    for url in [
        format!("https://{addr}"),
        format!("https://localhost:{}", addr.port()),
    ] {
        list(channel_as(ServiceName::Gateway, &url))
            .await
            .unwrap_or_else(|status| panic!("the gateway at {url}: {status:?}"));
    }
    assert_eq!(
        tcp_connections(addr.port()),
        0,
        "no TCP connection was made"
    );

    // Another service through a pipe is named as itself, and refused.
    let status = list(channel_as(
        ServiceName::Processing,
        &format!("https://{addr}"),
    ))
    .await
    .expect_err("processing may not call it");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("processing"), "{status:?}");

    // A certificate from another CA gets no pipe, and fails the handshake.
    let elsewhere = tempfile::tempdir().expect("dir");
    let forged = Identity::load(
        &TlsSettings::generated(elsewhere.path()),
        ServiceName::Gateway,
    )
    .expect("a foreign identity")
    .channel(&format!("https://{addr}"), Duration::from_secs(5))
    .expect("channel");
    let status = list(forged).await.expect_err("a foreign CA is not trusted");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // From outside the process it is TLS, with the same checks.
    let gateway = over_tls(&settings, Some(ServiceName::Gateway), addr);
    list(gateway.clone()).await.expect("the gateway over TLS");
    assert!(tcp_connections(addr.port()) > 0, "the call went over TCP");
    let status = list(over_tls(&settings, Some(ServiceName::Processing), addr))
        .await
        .expect_err("processing may not call it");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = list(over_tls(&settings, None, addr))
        .await
        .expect_err("no certificate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}
