//! A service picks up a renewed certificate from its files without a restart: new
//! connections are served with it as soon as the files change.

use std::time::Duration;

use atelier_common::{
    grpc::{GrpcServer, check_health},
    identity::{Identity, ServiceName, TlsSettings},
};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let (ours, theirs) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut settings = TlsSettings::generated(ours.path());
    settings.reload_every = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let identity = Identity::start(&settings, ServiceName::Workflow, &shutdown).expect("identity");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    tokio::spawn(GrpcServer::new(&identity).serve(listener, shutdown.clone()));

    // A client of another CA does not trust the certificate served now.
    let other_ca = TlsSettings::generated(theirs.path());
    let client = Identity::load(&other_ca, ServiceName::Gateway).expect("client");
    let channel = || {
        client
            .channel(&url, Duration::from_secs(2))
            .expect("channel")
    };
    check_health(channel(), "")
        .await
        .expect_err("a certificate of another CA");

    // The files are replaced by a certificate of that CA (as cert-manager renews a
    // Secret): the server serves it from then on.
    Identity::load(&other_ca, ServiceName::Workflow).expect("renewed");
    for file in ["tls.key", "ca.crt", "tls.crt"] {
        std::fs::copy(
            theirs.path().join("workflow").join(file),
            ours.path().join("workflow").join(file),
        )
        .expect("copy");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check_health(channel(), "").await {
            Ok(()) => break,
            Err(err) if tokio::time::Instant::now() > deadline => {
                panic!("the renewed certificate is not served: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
