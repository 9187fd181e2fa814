//! Webhook verification against a JWKS served by a real HTTP server.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use atelier_fal::webhook::{
    REQUEST_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, USER_ID_HEADER, WebhookError,
    WebhookStatus, WebhookVerifier,
};
use axum::{Json, Router, extract::State, http::HeaderMap, routing::get};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

#[derive(Clone, Default)]
struct Jwks {
    keys: Arc<Mutex<Vec<serde_json::Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Jwks {
    fn serve_keys(&self, keys: &[&SigningKey]) {
        *self.keys.lock().expect("keys") = keys.iter().map(|k| jwk(k)).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn jwk(key: &SigningKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key.verifying_key().as_bytes()),
    })
}

async fn jwks(State(jwks): State<Jwks>) -> Json<serde_json::Value> {
    jwks.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = jwks.keys.lock().expect("keys").clone();
    // An RSA key fal might also publish is skipped.
    let mut all = vec![serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})];
    all.extend(keys);
    Json(serde_json::json!({ "keys": all }))
}

async fn start_jwks(keys: &[&SigningKey]) -> (Jwks, String) {
    let state = Jwks::default();
    state.serve_keys(keys);
    let router = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    (state, url)
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

const BODY: &[u8] = br#"{"request_id":"req-1","gateway_request_id":"gw-1","status":"OK","payload":{"image":{"url":"https://v3.fal.media/files/x.png"}}}"#;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).expect("time")
}

/// The headers fal would send for `body`, signed by `key` at `at`.
fn signed(key: &SigningKey, body: &[u8], at: OffsetDateTime) -> HeaderMap {
    signed_for("user-7", key, body, at)
}

/// The headers fal would send for `body` about a request of the fal user `user`.
fn signed_for(user: &str, key: &SigningKey, body: &[u8], at: OffsetDateTime) -> HeaderMap {
    let timestamp = at.unix_timestamp().to_string();
    let message = format!(
        "req-1\n{user}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let signature = key.sign(message.as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID_HEADER, "req-1".parse().expect("header"));
    headers.insert(USER_ID_HEADER, user.parse().expect("header"));
    headers.insert(TIMESTAMP_HEADER, timestamp.parse().expect("header"));
    headers.insert(
        SIGNATURE_HEADER,
        hex::encode(signature.to_bytes()).parse().expect("header"),
    );
    headers
}

fn verifier(url: String) -> WebhookVerifier {
    WebhookVerifier::new(url, reqwest::Client::new())
}

#[tokio::test]
async fn a_valid_delivery_verifies_and_parses() {
    let fal = key(1);
    let (jwks, url) = start_jwks(&[&key(9), &fal]).await;
    let verifier = verifier(url);
    let event = verifier
        .verify(&signed(&fal, BODY, now()), BODY, now())
        .await
        .expect("valid");
    assert_eq!(event.request_id, "req-1");
    assert_eq!(event.gateway_request_id.as_deref(), Some("gw-1"));
    assert_eq!(event.status, WebhookStatus::Ok);
    assert_eq!(
        event.payload["image"]["url"],
        "https://v3.fal.media/files/x.png"
    );
    assert_eq!(event.error, None);

    // Cached: a second delivery fetches nothing.
    verifier
        .verify(&signed(&fal, BODY, now()), BODY, now())
        .await
        .expect("valid");
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let fal = key(1);
    let (_, url) = start_jwks(&[&fal]).await;
    let verifier = verifier(url);
    let headers = signed(&fal, BODY, now());
    let tampered = String::from_utf8_lossy(BODY).replace("x.png", "y.png");
    assert_eq!(
        verifier.verify(&headers, tampered.as_bytes(), now()).await,
        Err(WebhookError::BadSignature)
    );

    let mut forged = headers.clone();
    forged.insert(REQUEST_ID_HEADER, "req-2".parse().expect("header"));
    assert_eq!(
        verifier.verify(&forged, BODY, now()).await,
        Err(WebhookError::BadSignature)
    );

    let mut garbled = headers;
    garbled.insert(SIGNATURE_HEADER, "zz".parse().expect("header"));
    assert_eq!(
        verifier.verify(&garbled, BODY, now()).await,
        Err(WebhookError::BadSignature)
    );
}

#[tokio::test]
async fn stale_timestamps_are_refused() {
    let fal = key(1);
    let (_, url) = start_jwks(&[&fal]).await;
    let verifier = verifier(url);
    let secs = time::Duration::seconds;
    for (signed_at, ok) in [
        (now() - secs(301), false),
        (now() + secs(301), false),
        (now() - secs(299), true),
        (now() + secs(299), true),
    ] {
        let result = verifier
            .verify(&signed(&fal, BODY, signed_at), BODY, now())
            .await;
        if ok {
            assert!(result.is_ok(), "{signed_at}: {result:?}");
        } else {
            assert!(
                matches!(result, Err(WebhookError::StaleTimestamp { .. })),
                "{signed_at}: {result:?}"
            );
        }
    }
    let mut headers = signed(&fal, BODY, now());
    headers.insert(TIMESTAMP_HEADER, "yesterday".parse().expect("header"));
    assert!(matches!(
        verifier.verify(&headers, BODY, now()).await,
        Err(WebhookError::Malformed(_))
    ));
}

#[tokio::test]
async fn an_unknown_key_is_refused_and_refetches_at_most_once_a_minute() {
    let (jwks, url) = start_jwks(&[&key(1)]).await;
    let verifier = verifier(url);
    let stranger = key(2);
    assert_eq!(
        verifier
            .verify(&signed(&stranger, BODY, now()), BODY, now())
            .await,
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        jwks.fetches(),
        1,
        "keys fetched just now are not fetched again"
    );

    let later = now() + time::Duration::seconds(30);
    assert_eq!(
        verifier
            .verify(&signed(&stranger, BODY, later), BODY, later)
            .await,
        Err(WebhookError::BadSignature)
    );
    assert_eq!(jwks.fetches(), 1, "no refetch within a minute");

    let much_later = now() + time::Duration::seconds(61);
    verifier
        .verify(&signed(&stranger, BODY, much_later), BODY, much_later)
        .await
        .expect_err("still unknown");
    assert_eq!(jwks.fetches(), 2, "a minute on, one refetch");
    verifier
        .verify(&signed(&stranger, BODY, much_later), BODY, much_later)
        .await
        .expect_err("still unknown");
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up() {
    let old = key(1);
    let new = key(3);
    let (jwks, url) = start_jwks(&[&old]).await;
    let verifier = verifier(url);
    verifier
        .verify(&signed(&old, BODY, now()), BODY, now())
        .await
        .expect("old key");
    jwks.serve_keys(&[&new]);
    let later = now() + time::Duration::minutes(5);
    verifier
        .verify(&signed(&new, BODY, later), BODY, later)
        .await
        .expect("new key after a refetch");
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn keys_are_fetched_again_after_the_ttl() {
    let fal = key(1);
    let (jwks, url) = start_jwks(&[&fal]).await;
    let verifier = verifier(url).with_ttl(Duration::from_secs(3600));
    verifier
        .verify(&signed(&fal, BODY, now()), BODY, now())
        .await
        .expect("valid");
    let later = now() + time::Duration::minutes(59);
    verifier
        .verify(&signed(&fal, BODY, later), BODY, later)
        .await
        .expect("valid");
    assert_eq!(jwks.fetches(), 1);
    let after_ttl = now() + time::Duration::minutes(61);
    verifier
        .verify(&signed(&fal, BODY, after_ttl), BODY, after_ttl)
        .await
        .expect("valid");
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn missing_headers_are_named() {
    let fal = key(1);
    let (jwks, url) = start_jwks(&[&fal]).await;
    let verifier = verifier(url);
    for name in [
        REQUEST_ID_HEADER,
        USER_ID_HEADER,
        TIMESTAMP_HEADER,
        SIGNATURE_HEADER,
    ] {
        let mut headers = signed(&fal, BODY, now());
        headers.remove(name);
        assert_eq!(
            verifier.verify(&headers, BODY, now()).await,
            Err(WebhookError::MissingHeader(name))
        );
    }
    assert_eq!(jwks.fetches(), 0, "refused before any key is needed");
}

#[tokio::test]
async fn an_empty_key_set_or_no_key_server_is_reported() {
    let fal = key(1);
    let (_, url) = start_jwks(&[]).await;
    assert_eq!(
        verifier(url)
            .verify(&signed(&fal, BODY, now()), BODY, now())
            .await,
        Err(WebhookError::UnknownKey)
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let gone = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    drop(listener);
    assert!(matches!(
        verifier(gone)
            .verify(&signed(&fal, BODY, now()), BODY, now())
            .await,
        Err(WebhookError::KeysUnavailable(_))
    ));
}

#[tokio::test]
async fn an_error_delivery_parses() {
    let fal = key(1);
    let (_, url) = start_jwks(&[&fal]).await;
    let body = br#"{"request_id":"req-1","status":"ERROR","payload":{"detail":[{"loc":["body","image_url"],"msg":"bad"}]},"error":"Invalid status code: 422"}"#;
    let event = verifier(url)
        .verify(&signed(&fal, body, now()), body, now())
        .await
        .expect("valid");
    assert_eq!(event.status, WebhookStatus::Error);
    assert_eq!(event.error.as_deref(), Some("Invalid status code: 422"));
}

#[tokio::test]
async fn pinned_to_our_account_a_delivery_for_another_account_is_refused() {
    let fal = key(1);
    let (_, url) = start_jwks(&[&fal]).await;
    let pinned = verifier(url.clone()).with_user_id(Some("user-7".into()));
    pinned
        .verify(&signed(&fal, BODY, now()), BODY, now())
        .await
        .expect("our own account's delivery");

    // Genuinely signed by fal, but about another fal account's request.
    let foreign = signed_for("user-8", &fal, BODY, now());
    assert_eq!(
        pinned.verify(&foreign, BODY, now()).await,
        Err(WebhookError::ForeignAccount)
    );
    // Claiming our id over a signature made for the other account does not verify.
    let mut relabelled = foreign.clone();
    relabelled.insert(USER_ID_HEADER, "user-7".parse().expect("header"));
    assert_eq!(
        pinned.verify(&relabelled, BODY, now()).await,
        Err(WebhookError::BadSignature)
    );
    // Not pinned, any account's delivery passes.
    verifier(url)
        .verify(&foreign, BODY, now())
        .await
        .expect("unpinned");
}
