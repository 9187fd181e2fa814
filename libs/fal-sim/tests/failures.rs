//! Webhooks (delivery, signature, retries) and the failure knobs: injected errors, failing
//! submissions, outages, hangs, slow answers, and the knobs over HTTP.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use atelier_fal_sim::{Failures, WEBHOOK_USER_ID};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::Engine as _;
use common::{Sim, png_data_uri, quick};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ESRGAN: &str = "fal-ai/esrgan";

fn input() -> Value {
    json!({ "image_url": png_data_uri(16, 12) })
}

/// A webhook a receiver got.
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver on a loopback port that refuses the first `refuse` deliveries.
struct Receiver {
    url: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct ReceiverState {
    sender: mpsc::UnboundedSender<Delivery>,
    refuse: Arc<AtomicUsize>,
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _ = state.sender.send(Delivery { headers, body });
    let refused = state
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refused {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Receiver {
    async fn start(refuse: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!(
            "http://{}/hooks/fal",
            listener.local_addr().expect("an address")
        );
        let (sender, deliveries) = mpsc::unbounded_channel();
        let state = ReceiverState {
            sender,
            refuse: Arc::new(AtomicUsize::new(refuse)),
        };
        let app = Router::new()
            .route("/hooks/fal", post(receive))
            .with_state(state);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Self {
            url,
            deliveries,
            shutdown,
        }
    }

    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(15), self.deliveries.recv())
            .await
            .expect("a webhook in time")
            .expect("the receiver is running")
    }
}

/// Checks a delivery's signature against the simulator's JWKS, as a receiver must.
async fn verify(sim: &Sim, delivery: &Delivery) -> Value {
    let header = |name: &str| {
        delivery.headers[name]
            .to_str()
            .expect("an ASCII header")
            .to_owned()
    };
    let request_id = header("x-fal-webhook-request-id");
    let user_id = header("x-fal-webhook-user-id");
    let timestamp = header("x-fal-webhook-timestamp");
    let signature = header("x-fal-webhook-signature");
    assert_eq!(user_id, WEBHOOK_USER_ID);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let sent: u64 = timestamp.parse().expect("unix seconds");
    assert!(now.abs_diff(sent) <= 300, "timestamp {sent} vs now {now}");

    let jwks: Value = reqwest::get(sim.handle.jwks_url())
        .await
        .expect("fetching the JWKS")
        .json()
        .await
        .expect("a JSON JWKS");
    let message = format!(
        "{request_id}\n{user_id}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(&delivery.body))
    );
    let signature: [u8; 64] = hex::decode(signature)
        .expect("a hex signature")
        .try_into()
        .expect("64 bytes");
    let signature = Signature::from_bytes(&signature);
    let verified = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|key| {
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key["x"].as_str()?)
                .ok()?;
            let x: [u8; 32] = x.try_into().ok()?;
            assert_eq!(x, sim.handle.public_key());
            VerifyingKey::from_bytes(&x).ok()
        })
        .any(|key| key.verify(message.as_bytes(), &signature).is_ok());
    assert!(verified, "the signature verifies against a JWKS key");

    let body: Value = serde_json::from_slice(&delivery.body).expect("a JSON body");
    assert_eq!(body["request_id"], request_id);
    body
}

async fn submit_with_webhook(sim: &Sim, url: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = sim
        .http
        .post(sim.url(ESRGAN))
        .query(&[("fal_webhook", url)])
        .json(&input());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("submitting");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a reply")
}

#[tokio::test]
async fn webhooks_are_signed_and_verify_against_the_jwks() {
    let sim = Sim::start(quick()).await;
    let mut receiver = Receiver::start(0).await;
    let submitted = submit_with_webhook(&sim, &receiver.url, &[]).await;
    let delivery = receiver.next().await;
    let body = verify(&sim, &delivery).await;
    assert_eq!(body["request_id"], submitted["request_id"]);
    assert_eq!(body["gateway_request_id"], submitted["gateway_request_id"]);
    assert_eq!(body["status"], "OK");
    let output: Value = sim.result(&submitted).await.json().await.expect("json");
    assert_eq!(body["payload"], output);
    assert_eq!(body["payload"]["image"]["width"], 32);
}

#[tokio::test]
async fn refused_webhooks_are_retried() {
    let sim = Sim::start(quick()).await;
    let mut receiver = Receiver::start(2).await;
    submit_with_webhook(&sim, &receiver.url, &[]).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let delivery = receiver.next().await;
        bodies.push(verify(&sim, &delivery).await);
    }
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "the same body each time"
    );
    let extra = tokio::time::timeout(Duration::from_millis(800), receiver.deliveries.recv()).await;
    assert!(extra.is_err(), "no delivery after one succeeded");
}

#[tokio::test]
async fn failed_requests_complete_with_their_error_type() {
    let sim = Sim::start(quick()).await;
    let mut receiver = Receiver::start(0).await;
    sim.handle.set_failures(Failures {
        error_rate: 1.0,
        error_type: Some("runner_scheduling_failure".to_owned()),
        ..Failures::default()
    });

    // With X-Fal-No-Retry, one attempt.
    let submitted = submit_with_webhook(&sim, &receiver.url, &[("x-fal-no-retry", "1")]).await;
    let status = sim.wait(&submitted).await;
    assert_eq!(
        status["error_type"], "runner_scheduling_failure",
        "{status}"
    );
    assert!(status["error"].as_str().is_some_and(|e| !e.is_empty()));
    let result = sim.result(&submitted).await;
    assert_eq!(result.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        result.headers()["x-fal-error-type"],
        "runner_scheduling_failure"
    );
    let error: Value = result.json().await.expect("json");
    assert_eq!(error["error_type"], "runner_scheduling_failure");
    assert!(error["detail"].is_string());
    let hook = verify(&sim, &receiver.next().await).await;
    assert_eq!(hook["status"], "ERROR");
    assert_eq!(hook["error"], status["error"]);
    assert_eq!(hook["payload"], error);
    assert_eq!(hook["gateway_request_id"], submitted["request_id"]);

    // Without it, fal retries a retryable failure itself, with new gateway request ids.
    let submitted = submit_with_webhook(&sim, &receiver.url, &[]).await;
    let status = sim.wait(&submitted).await;
    let retries = status["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("retrying"))
        })
        .count();
    assert_eq!(
        retries,
        atelier_fal_sim::INTERNAL_RETRIES as usize,
        "{status}"
    );
    let hook = verify(&sim, &receiver.next().await).await;
    assert_ne!(hook["gateway_request_id"], submitted["request_id"]);

    // The default error type is an internal error, not retried.
    sim.handle.set_failures(Failures {
        error_rate: 1.0,
        ..Failures::default()
    });
    let submitted = sim.submit(ESRGAN, &input()).await;
    let status = sim.wait(&submitted).await;
    assert_eq!(status["error_type"], "internal_error");
    assert_eq!(
        sim.result(&submitted).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    sim.handle.set_failures(Failures::default());
    sim.run(ESRGAN, &input()).await;
}

#[tokio::test]
async fn submit_status_fails_submissions_with_fal_headers() {
    let sim = Sim::start(quick()).await;
    for (code, error_type, retry) in [
        (503, "runner_scheduling_failure", true),
        (429, "concurrent_requests_limit", true),
        (400, "bad_request", false),
    ] {
        sim.handle.set_failures(Failures {
            submit_status: Some(code),
            ..Failures::default()
        });
        let response = sim.submit_raw(ESRGAN, &input()).await;
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(response.headers()["x-fal-error-type"], error_type);
        assert_eq!(
            response.headers().get("x-fal-needs-retry").is_some(),
            retry,
            "{code}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error_type"], error_type);
        assert!(body["detail"].is_string());
    }
    sim.handle.set_failures(Failures {
        submit_status: Some(503),
        error_type: Some("runner_connection_refused".to_owned()),
        ..Failures::default()
    });
    let response = sim.submit_raw(ESRGAN, &input()).await;
    assert_eq!(
        response.headers()["x-fal-error-type"],
        "runner_connection_refused"
    );
    assert_eq!(sim.handle.submissions(), 0, "nothing was queued");
}

#[tokio::test]
async fn an_outage_answers_503_until_it_ends() {
    let sim = Sim::start(quick()).await;
    let done = sim.run(ESRGAN, &input()).await;
    let file_url = done["image"]["url"].as_str().expect("url").to_owned();
    let submitted = sim.submit(ESRGAN, &input()).await;
    sim.wait(&submitted).await;

    sim.handle.set_failures(Failures {
        outage_until: Some(Instant::now() + Duration::from_secs(3600)),
        ..Failures::default()
    });
    let submit = sim.submit_raw(ESRGAN, &input()).await;
    assert_eq!(submit.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(submit.headers().get("x-fal-request-id").is_none());
    assert!(submit.text().await.expect("a body").contains("503"));
    for url in [
        submitted["status_url"].as_str().expect("url"),
        submitted["response_url"].as_str().expect("url"),
        &file_url,
    ] {
        let response = sim.http.get(url).send().await.expect("calling");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
    }
    let stats = sim
        .http
        .get(sim.url("_sim/stats"))
        .send()
        .await
        .expect("stats");
    assert_eq!(stats.status(), StatusCode::OK, "the knobs stay reachable");
    assert_eq!(sim.handle.submissions(), 2);
    sim.handle.set_failures(Failures::default());
    sim.run(ESRGAN, &input()).await;

    // An outage ends by itself.
    let until = Instant::now() + Duration::from_millis(300);
    sim.handle.set_failures(Failures {
        outage_until: Some(until),
        ..Failures::default()
    });
    tokio::time::sleep(Duration::from_millis(350)).await;
    sim.run(ESRGAN, &input()).await;
}

#[tokio::test]
async fn hung_requests_stay_in_progress_until_cleared() {
    let sim = Sim::start(quick()).await;
    sim.handle.set_failures(Failures {
        hang: true,
        ..Failures::default()
    });
    let submitted = sim.submit(ESRGAN, &input()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status: Value = sim
        .http
        .get(submitted["status_url"].as_str().expect("url"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "IN_PROGRESS", "{status}");
    sim.handle.set_failures(Failures::default());
    let status = sim.wait(&submitted).await;
    assert!(status.get("error").is_none(), "{status}");
}

#[tokio::test]
async fn a_slow_submission_is_queued_even_when_the_client_gives_up() {
    let sim = Sim::start(quick()).await;
    sim.handle.set_failures(Failures {
        submit_delay: Duration::from_millis(1500),
        ..Failures::default()
    });
    let started = Instant::now();
    sim.submit(ESRGAN, &input()).await;
    assert!(started.elapsed() >= Duration::from_millis(1500));

    let impatient = sim
        .http
        .post(sim.url(ESRGAN))
        .timeout(Duration::from_millis(750))
        .json(&input())
        .send()
        .await;
    assert!(impatient.is_err_and(|e| e.is_timeout()));
    assert_eq!(
        sim.handle.submissions(),
        2,
        "the slow submission still counts"
    );
}

#[tokio::test]
async fn knobs_change_over_http() {
    let sim = Sim::start(quick()).await;
    let knobs = sim
        .set_knobs(&json!({
            "error_rate": 1.0,
            "error_type": "request_timeout",
            "processing_time_ms": 5,
        }))
        .await;
    assert_eq!(knobs["error_rate"], 1.0);
    assert_eq!(knobs["error_type"], "request_timeout");
    assert_eq!(knobs["processing_time_ms"], 5);
    assert_eq!(knobs["queue_delay_ms"], 0);
    let in_force = sim.handle.knobs();
    assert_eq!(
        in_force.failures.error_type.as_deref(),
        Some("request_timeout")
    );
    assert_eq!(in_force.timing.processing_time, Duration::from_millis(5));

    let submitted = sim
        .http
        .post(sim.url(ESRGAN))
        .header("x-fal-no-retry", "1")
        .json(&input())
        .send()
        .await
        .expect("submitting")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(
        sim.result(&submitted).await.status(),
        StatusCode::GATEWAY_TIMEOUT
    );

    for bad in [
        json!({ "error_rate": 2.0 }),
        json!({ "submit_status": 200 }),
        json!({ "nope": 1 }),
    ] {
        let response = sim
            .http
            .put(sim.url("_sim/knobs"))
            .json(&bad)
            .send()
            .await
            .expect("setting knobs");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // Failure fields left out are off again; timing stays.
    let knobs = sim.set_knobs(&json!({ "outage_ms": 60_000 })).await;
    assert_eq!(knobs["error_rate"], 0.0);
    assert!(knobs["outage_ms"].as_u64().is_some_and(|ms| ms > 59_000));
    assert_eq!(knobs["processing_time_ms"], 5);
    let knobs = sim.set_knobs(&json!({})).await;
    assert_eq!(knobs["outage_ms"], 0);
    sim.run(ESRGAN, &input()).await;
}
