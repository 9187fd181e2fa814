//! Result downloads: the allowlist, the address checks (SSRF), redirects, limits.
//!
//! Addresses outside loopback (10.x, 169.254.169.254) appear only in URLs that must
//! be refused before any connection is attempted.

use std::time::Duration;

use atelier_fal::{BreakerState, Downloaded, FalClient, FalError, RESULT_CHUNK_BYTES};
use futures::StreamExt;

use crate::fake::{Fake, Reply, config};

/// A whole download, for results small enough to hold.
trait FetchAll {
    async fn fetch(&self, url: &str) -> Result<Downloaded, FalError>;
}

impl FetchAll for FalClient {
    async fn fetch(&self, url: &str) -> Result<Downloaded, FalError> {
        self.download(url).await?.collect().await
    }
}

fn client_allowing(hosts: &[String]) -> FalClient {
    let mut config = config("http://127.0.0.1:9");
    config.allowed_result_hosts = hosts.to_vec();
    config.max_result_bytes = 1024;
    config.result_timeout = Duration::from_secs(2);
    FalClient::new(config).expect("client")
}

fn png() -> Reply {
    Reply::text(200, "\u{89}PNG fake image").header("content-type", "image/png")
}

#[tokio::test]
async fn downloads_from_an_explicitly_allowed_host_and_port() {
    let host = Fake::start(png()).await;
    let client = client_allowing(&[format!("http://{}", host.addr)]);
    let downloaded = client
        .fetch(&format!("{}/files/out.png?token=secret", host.url()))
        .await
        .expect("downloaded");
    assert_eq!(downloaded.content_type.as_deref(), Some("image/png"));
    assert_eq!(&downloaded.bytes[..], "\u{89}PNG fake image".as_bytes());
    let call = &host.calls()[0];
    assert_eq!(call.path, "/files/out.png");
    assert!(
        call.headers.get("authorization").is_none(),
        "the fal key never goes to a result host"
    );
}

#[tokio::test]
async fn loopback_private_and_metadata_addresses_are_refused() {
    // Listed without a port, so they must resolve to public addresses: they don't.
    let client = client_allowing(&[
        "127.0.0.1".into(),
        "[::1]".into(),
        "10.1.2.3".into(),
        "169.254.169.254".into(),
        "192.168.0.10".into(),
        "localhost".into(),
    ]);
    for url in [
        "https://127.0.0.1/x.png",
        "https://[::1]/x.png",
        "https://10.1.2.3/x.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://192.168.0.10/x.png",
        "https://localhost/x.png",
    ] {
        assert!(
            matches!(client.fetch(url).await, Err(FalError::ForbiddenUrl(_))),
            "{url}"
        );
    }
}

#[tokio::test]
async fn hosts_schemes_and_ports_off_the_list_are_refused() {
    let host = Fake::start(png()).await;
    let port = host.addr.port();
    let client = client_allowing(&[
        format!("127.0.0.1:{port}"),
        "v3.fal.media".into(),
        "storage.googleapis.com/falserverless/".into(),
    ]);
    for url in [
        // Plain http to an entry that did not say http://.
        format!("http://127.0.0.1:{port}/x.png"),
        format!("https://127.0.0.1:{}/x.png", port.wrapping_add(1)),
        "https://example.com/x.png".into(),
        "https://v3.fal.media.example.com/x.png".into(),
        "https://v3.fal.media:8443/x.png".into(),
        "http://v3.fal.media/x.png".into(),
        "https://storage.googleapis.com/other-bucket/x.png".into(),
        "ftp://v3.fal.media/x.png".into(),
        "file:///etc/passwd".into(),
        "https://user:pass@v3.fal.media/x.png".into(),
        "not a url".into(),
    ] {
        assert!(
            matches!(client.fetch(&url).await, Err(FalError::ForbiddenUrl(_))),
            "{url}"
        );
    }
    assert_eq!(host.count(), 0);
}

#[tokio::test]
async fn redirects_to_forbidden_targets_are_refused() {
    let other = Fake::start(png()).await;
    let host = Fake::start(png()).await;
    let client = client_allowing(&[format!("http://{}", host.addr)]);
    for target in [
        format!("{}/x.png", other.url()),
        format!("http://localhost:{}/x.png", host.addr.port()),
        "http://169.254.169.254/latest/meta-data/".into(),
        "https://10.0.0.1/x.png".into(),
        "data:image/png;base64,iVBORw0KGgo=".into(),
    ] {
        host.script([Reply::text(302, "").header("location", target.clone())]);
        let err = client
            .fetch(&format!("{}/start.png", host.url()))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, FalError::ForbiddenUrl(_)),
            "{target}: {err:?}"
        );
    }
    assert_eq!(other.count(), 0);
}

#[tokio::test]
async fn allowed_redirects_are_followed_up_to_three() {
    let host = Fake::start(png()).await;
    let client = client_allowing(&[format!("http://{}", host.addr)]);
    host.script([
        Reply::text(301, "").header("location", "/b.png"),
        Reply::text(302, "").header("location", format!("{}/c.png", host.url())),
        Reply::text(307, "").header("location", "d.png"),
    ]);
    let downloaded = client
        .fetch(&format!("{}/a.png", host.url()))
        .await
        .expect("followed");
    assert_eq!(downloaded.content_type.as_deref(), Some("image/png"));
    let paths: Vec<String> = host.calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, ["/a.png", "/b.png", "/c.png", "/d.png"]);

    host.script((0..4).map(|i| Reply::text(302, "").header("location", format!("/r{i}"))));
    let err = client
        .fetch(&format!("{}/a.png", host.url()))
        .await
        .expect_err("too many");
    assert!(matches!(err, FalError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn data_uris_are_decoded_in_place() {
    let client = client_allowing(&[]);
    let downloaded = client
        .fetch("data:image/png;base64,iVBORw0KGgo=")
        .await
        .expect("decoded");
    assert_eq!(&downloaded.bytes[..], b"\x89PNG\r\n\x1a\n");
    assert_eq!(downloaded.content_type.as_deref(), Some("image/png"));

    let big = format!("data:image/png;base64,{}", "A".repeat(4_096));
    assert_eq!(
        client.fetch(&big).await.map(|d| d.bytes),
        Err(FalError::TooLarge)
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let host = Fake::start(Reply::text(200, &"x".repeat(2_000))).await;
    let client = client_allowing(&[format!("http://{}", host.addr)]);
    // Content-Length says so.
    assert_eq!(
        client
            .fetch(&format!("{}/big.png", host.url()))
            .await
            .map(|d| d.bytes),
        Err(FalError::TooLarge)
    );
    // No Content-Length: counted as it streams.
    host.set_default(Reply::sse(vec![
        (Duration::from_millis(1), "x".repeat(600)),
        (Duration::from_millis(1), "x".repeat(600)),
    ]));
    assert_eq!(
        client
            .fetch(&format!("{}/big.png", host.url()))
            .await
            .map(|d| d.bytes),
        Err(FalError::TooLarge)
    );
    assert_eq!(host.count(), 2, "too large is not retried");
}

#[tokio::test]
async fn slow_downloads_time_out_and_are_retried() {
    let host = Fake::start(png().delayed(Duration::from_secs(5))).await;
    let mut config = config("http://127.0.0.1:9");
    config.allowed_result_hosts = vec![format!("http://{}", host.addr)];
    config.result_timeout = Duration::from_millis(200);
    config.retry.max_retries = 1;
    config.breaker.slow_call = Duration::from_secs(10);
    let client = FalClient::new(config).expect("client");
    let err = client
        .fetch(&format!("{}/slow.png", host.url()))
        .await
        .expect_err("too slow");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(host.count(), 2);
}

#[tokio::test]
async fn missing_results_are_permanent_and_server_errors_transient() {
    let host = Fake::start(Reply::text(404, "no such file")).await;
    let client = client_allowing(&[format!("http://{}", host.addr)]);
    assert!(matches!(
        client.fetch(&format!("{}/gone.png", host.url())).await,
        Err(FalError::Permanent { status: 404, .. })
    ));
    host.script([Reply::text(503, "busy")]);
    host.set_default(png());
    client
        .fetch(&format!("{}/x.png", host.url()))
        .await
        .expect("retried");
    assert_eq!(host.count(), 3);
}

#[tokio::test]
async fn result_hosts_have_their_own_breaker_and_recover_through_one_probe() {
    let host = Fake::start(Reply::text(503, "busy")).await;
    let mut config = config("http://127.0.0.1:9");
    config.allowed_result_hosts = vec![format!("http://{}", host.addr)];
    config.retry.max_retries = 0;
    let client = FalClient::new(config).expect("client");
    let url = format!("{}/x.png", host.url());
    for _ in 0..3 {
        assert!(client.fetch(&url).await.expect_err("busy").is_transient());
    }
    assert_eq!(client.breaker_state(&host.host()), BreakerState::Open);
    assert!(matches!(
        client.fetch(&url).await,
        Err(FalError::Unavailable { .. })
    ));
    assert_eq!(host.count(), 3);

    tokio::time::sleep(Duration::from_millis(350)).await;
    host.set_default(png());
    client.fetch(&url).await.expect("the probe downloads");
    assert_eq!(client.breaker_state(&host.host()), BreakerState::Closed);
    assert_eq!(host.count(), 4);
}

#[tokio::test]
async fn large_results_stream_in_bounded_chunks() {
    let body: String = (0..3 * RESULT_CHUNK_BYTES + 1234)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let host = Fake::start(Reply::text(200, &body).header("content-type", "image/png")).await;
    let mut config = config("http://127.0.0.1:9");
    config.allowed_result_hosts = vec![format!("http://{}", host.addr)];
    let client = FalClient::new(config).expect("client");
    let result = client
        .download(&format!("{}/big.png", host.url()))
        .await
        .expect("opened");
    assert_eq!(result.size, Some(body.len() as u64));
    assert_eq!(result.content_type.as_deref(), Some("image/png"));
    let chunks: Vec<_> = result.body.collect().await;
    let mut joined = Vec::new();
    for chunk in chunks {
        let chunk = chunk.expect("chunk");
        assert!(!chunk.is_empty() && chunk.len() <= RESULT_CHUNK_BYTES);
        joined.extend_from_slice(&chunk);
    }
    assert!(joined == body.as_bytes());

    // A data: URI comes in the same bounded pieces.
    let encoded = base64_of(body.as_bytes());
    let result = client
        .download(&format!("data:image/png;base64,{encoded}"))
        .await
        .expect("decoded");
    let sizes: Vec<usize> = result
        .body
        .map(|chunk| chunk.expect("chunk").len())
        .collect()
        .await;
    assert_eq!(sizes.iter().sum::<usize>(), body.len());
    assert!(sizes.iter().all(|&size| size <= RESULT_CHUNK_BYTES));
}

#[tokio::test]
async fn a_result_that_stalls_midway_ends_in_a_transient_error() {
    let host = Fake::start(Reply::sse(vec![
        (Duration::from_millis(1), "x".repeat(100)),
        (Duration::from_secs(5), "x".repeat(100)),
    ]))
    .await;
    let mut config = config("http://127.0.0.1:9");
    config.allowed_result_hosts = vec![format!("http://{}", host.addr)];
    config.result_timeout = Duration::from_millis(300);
    let client = FalClient::new(config).expect("client");
    let err = client
        .fetch(&format!("{}/stalls.png", host.url()))
        .await
        .expect_err("stalled");
    assert!(err.is_transient(), "{err:?}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
