//! Outgoing webhooks end to end, against real PostgreSQL, Redis, the fal simulator
//! and a receiver of the test's own, through the gateway's REST API:
//! - a test event and a job's `job.completed` (and a batch's `batch.completed`)
//!   arrive signed as Standard Webhooks sign them: the PyPI package
//!   `standardwebhooks` (an implementation independent of ours) verifies every one,
//!   and both secrets during a rotation;
//! - a failing receiver gets the same message (same `webhook-id`) again with
//!   backoff until it answers 2xx; a manual redelivery sends it once more;
//! - an endpoint that keeps failing is disabled with a reason, receives nothing,
//!   and gets what waited once its owner enables it again;
//! - internal targets are refused at registration unless the operator allows them;
//! - the processing service restarted while a delivery hangs: the new one sends it
//!   (same `webhook-id`), nothing is lost;
//! - another user's endpoint answers 404.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use atelier_processing::domain::outbound::{TargetPolicy, WebhookSettings};
use atelier_testbed::{Backend, Options, QueueBackend, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{self, User, sign_up},
};
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// A receiver that records what it is sent and answers as the test says.

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Never answers (until the sender gives up).
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    /// Answers for the next requests, in order; then `otherwise`.
    script: Vec<Answer>,
    otherwise: Option<Answer>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: String,
) -> AxumStatus {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answer = {
        let mut inbox = inbox.lock().expect("inbox");
        inbox.received.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        });
        if inbox.script.is_empty() {
            inbox.otherwise.unwrap_or(Answer::Status(200))
        } else {
            inbox.script.remove(0)
        }
    };
    match answer {
        Answer::Status(status) => AxumStatus::from_u16(status).expect("a status"),
        Answer::Hang => {
            std::future::pending::<()>().await;
            AxumStatus::OK
        }
    }
}

impl Receiver {
    async fn start() -> Self {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inbox }
    }

    fn answer(&self, script: &[Answer], otherwise: Answer) {
        let mut inbox = self.inbox.lock().expect("inbox");
        inbox.script = script.to_vec();
        inbox.otherwise = Some(otherwise);
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox").received.clone()
    }

    /// Waits until a request matches `wanted`; returns every request so far.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if wanted(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never got {what}: {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_type(&self, event_type: &str) -> Received {
        let received = self
            .wait_for(event_type, |received| {
                received.iter().any(|r| r.json()["type"] == event_type)
            })
            .await;
        received
            .into_iter()
            .find(|r| r.json()["type"] == event_type)
            .expect("found")
    }
}

// ---------------------------------------------------------------------------------------
// The independent check: Python's `standardwebhooks` package.

const VERIFY: &str = r#"
import json, sys
from standardwebhooks import Webhook
cases = json.load(open(sys.argv[1]))
results = []
for case in cases:
    headers = {
        "webhook-id": case["id"],
        "webhook-timestamp": case["timestamp"],
        "webhook-signature": case["signature"],
    }
    try:
        Webhook(case["secret"]).verify(case["body"], headers)
        results.append("ok")
    except Exception as err:
        results.append("refused: %s" % err)
print(json.dumps(results))
"#;

/// What `standardwebhooks` says of each request under each secret: "ok" or why
/// not. Fails (does not skip) without python3 or the package: `.ci/deps.sh`
/// installs it.
fn verify(cases: &[(&Received, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("cases.json");
    let cases: Vec<Value> = cases
        .iter()
        .map(|(received, secret)| {
            json!({
                "id": received.id,
                "timestamp": received.timestamp,
                "signature": received.signature,
                "body": received.body,
                "secret": secret,
            })
        })
        .collect();
    std::fs::write(&input, serde_json::to_vec(&cases).expect("json")).expect("write");
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(VERIFY)
        .arg(&input)
        .output()
        .expect("python3 must be installed (see .ci/deps.sh)");
    assert!(
        output.status.success(),
        "the standardwebhooks check failed (pip install standardwebhooks; see .ci/deps.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("results")
}

// ---------------------------------------------------------------------------------------
// REST helpers.

async fn send(
    platform: &TestPlatform,
    user: &User,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Client::new()
        .request(method, format!("{}{path}", platform.gateway_url))
        .bearer_auth(&user.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_endpoint(platform: &TestPlatform, user: &User, url: &str, events: Value) -> Value {
    let (status, endpoint) = rest::post(
        platform,
        user,
        "/api/webhooks",
        json!({"url": url, "description": "test receiver", "event_types": events}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    assert!(
        endpoint["secret"]
            .as_str()
            .is_some_and(|secret| secret.starts_with("whsec_")),
        "{endpoint}"
    );
    endpoint
}

async fn deliveries(platform: &TestPlatform, user: &User, endpoint: &str) -> Vec<Value> {
    let (status, page) = rest::get(
        platform,
        user,
        format!("/api/webhooks/{endpoint}/deliveries?page_size=100"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["deliveries"].as_array().expect("deliveries").clone()
}

/// Waits until the delivery `id` of `endpoint` has `status`; returns it.
async fn delivery_reached(
    platform: &TestPlatform,
    user: &User,
    endpoint: &str,
    id: &str,
    status: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = deliveries(platform, user, endpoint).await;
        let delivery = all
            .iter()
            .find(|delivery| delivery["id"] == id)
            .expect("the delivery is listed")
            .clone();
        if delivery["status"] == status {
            return delivery;
        }
        assert!(
            Instant::now() < deadline,
            "delivery never {status}: {delivery:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send_test(platform: &TestPlatform, user: &User, endpoint: &str) -> Value {
    let (status, delivery) = rest::post(
        platform,
        user,
        &format!("/api/webhooks/{endpoint}/test"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{delivery}");
    assert_eq!(delivery["event_type"], "webhook.test");
    delivery
}

fn options(webhooks: WebhookSettings) -> Options {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.webhooks = webhooks;
    options
}

fn fast() -> WebhookSettings {
    WebhookSettings {
        schedule: vec![
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_millis(400),
        ],
        timeout: Duration::from_secs(2),
        lease: Duration::from_secs(5),
        poll_every: Duration::from_millis(100),
        targets: TargetPolicy {
            allow_private: true,
            allowed: Vec::new(),
        },
        ..WebhookSettings::default()
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_arrive_signed_retried_and_redelivered() {
    let platform = TestPlatform::spawn_with(options(fast())).await;
    let receiver = Receiver::start().await;
    let user = sign_up(&platform, "hooks@example.com").await;
    let endpoint = create_endpoint(&platform, &user, &receiver.url, json!([])).await;
    let id = endpoint["id"].as_str().expect("id").to_owned();
    let secret = endpoint["secret"].as_str().expect("secret").to_owned();

    // A test event, signed.
    let test = send_test(&platform, &user, &id).await;
    let received = receiver.wait_for_type("webhook.test").await;
    assert_eq!(
        received.id,
        test["message_id"].as_str().expect("message id")
    );
    assert!(received.id.starts_with("msg_"));
    assert_eq!(verify(&[(&received, &secret)]), ["ok"]);
    // Under another secret it does not verify: the check is real.
    let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(verify(&[(&received, wrong)])[0].starts_with("refused"));
    let delivered = delivery_reached(
        &platform,
        &user,
        &id,
        test["id"].as_str().expect("id"),
        "succeeded",
    )
    .await;
    assert_eq!(delivered["attempt_log"][0]["response_status"], 200);

    // A job's completion, then a batch's.
    let image = rest::upload(&platform, &user, fixtures::png(32, 32)).await;
    let job = rest::start_job(&platform, &user, &image, "lineart", json!({})).await;
    let completed = receiver.wait_for_type("job.completed").await;
    let body = completed.json();
    assert_eq!(body["data"]["id"], job.as_str());
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["workflow_id"], "lineart");
    assert_eq!(body["data"]["image_id"], image.as_str());
    assert_eq!(
        body["data"]["result_image_ids"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert!(body["timestamp"].as_str().is_some());
    assert_eq!(verify(&[(&completed, &secret)]), ["ok"]);
    let other = rest::upload(&platform, &user, fixtures::png(24, 24)).await;
    let (status, batch) = rest::post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [image, other], "workflow_id": "lineart"}),
    )
    .await;
    assert!(status.is_success(), "{batch}");
    let batch_done = receiver.wait_for_type("batch.completed").await;
    let body = batch_done.json();
    assert_eq!(body["data"]["id"], batch["batch_id"]);
    assert_eq!(body["data"]["total"], 2);
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(verify(&[(&batch_done, &secret)]), ["ok"]);
    let batch_messages = receiver
        .received()
        .iter()
        .filter(|r| r.json()["type"] == "batch.completed")
        .count();
    assert_eq!(batch_messages, 1);

    // A receiver failing twice gets the same message again until it takes it.
    receiver.answer(
        &[Answer::Status(500), Answer::Status(503)],
        Answer::Status(204),
    );
    let before = receiver.received().len();
    let retried = send_test(&platform, &user, &id).await;
    let message_id = retried["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    let delivered = delivery_reached(
        &platform,
        &user,
        &id,
        retried["id"].as_str().expect("id"),
        "succeeded",
    )
    .await;
    let statuses: Vec<&Value> = delivered["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| &attempt["response_status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(503), &json!(204)],
        "{delivered:#}"
    );
    let tries: Vec<Received> = receiver.received()[before..].to_vec();
    assert_eq!(tries.len(), 3);
    assert!(tries.iter().all(|r| r.id == message_id));
    // Each attempt is signed anew, and each verifies.
    assert_eq!(
        verify(
            &tries
                .iter()
                .map(|r| (r, secret.as_str()))
                .collect::<Vec<_>>()
        ),
        ["ok", "ok", "ok"]
    );

    // A manual redelivery: the same message once more, as a delivery of its own.
    let (status, again) = rest::post(
        &platform,
        &user,
        &format!(
            "/api/webhooks/{id}/deliveries/{}/redeliver",
            retried["id"].as_str().expect("id")
        ),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["message_id"], message_id.as_str());
    delivery_reached(
        &platform,
        &user,
        &id,
        again["id"].as_str().expect("id"),
        "succeeded",
    )
    .await;
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.id == message_id)
            .count(),
        4
    );

    // A rotated secret: both the new and the old one verify for a day.
    let (status, rotated) = rest::post(
        &platform,
        &user,
        &format!("/api/webhooks/{id}/rotate-secret"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_expires_at"].as_str().is_some());
    let during = send_test(&platform, &user, &id).await;
    let received = receiver
        .wait_for("the test after the rotation", |received| {
            received
                .iter()
                .any(|r| r.id == during["message_id"].as_str().unwrap_or("-"))
        })
        .await
        .into_iter()
        .rfind(|r| r.id == during["message_id"].as_str().unwrap_or("-"))
        .expect("received");
    assert_eq!(
        received.signature.split(' ').count(),
        2,
        "{}",
        received.signature
    );
    assert_eq!(
        verify(&[(&received, &new_secret), (&received, &secret)]),
        ["ok", "ok"]
    );

    // The secret shows to its owner on GET, never in the list.
    let (_, got) = rest::get(&platform, &user, format!("/api/webhooks/{id}")).await;
    assert_eq!(got["secret"], new_secret.as_str());
    let (_, list) = rest::get(&platform, &user, "/api/webhooks").await;
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    assert!(list["webhooks"][0]["secret"].is_null());

    // Another user finds none of it.
    let stranger = sign_up(&platform, "stranger@example.com").await;
    let delivery_id = retried["id"].as_str().expect("id");
    for (method, path, body) in [
        (reqwest::Method::GET, format!("/api/webhooks/{id}"), None),
        (
            reqwest::Method::PATCH,
            format!("/api/webhooks/{id}"),
            Some(json!({"enabled": false})),
        ),
        (reqwest::Method::DELETE, format!("/api/webhooks/{id}"), None),
        (
            reqwest::Method::POST,
            format!("/api/webhooks/{id}/rotate-secret"),
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            format!("/api/webhooks/{id}/deliveries"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/api/webhooks/{id}/test"),
            Some(json!({})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
            Some(json!({})),
        ),
    ] {
        let (status, problem) = send(&platform, &stranger, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
    }
    let (_, theirs) = rest::get(&platform, &stranger, "/api/webhooks").await;
    assert_eq!(theirs["webhooks"], json!([]));
    // Still the owner's, unchanged.
    let (status, still) = rest::get(&platform, &user, format!("/api/webhooks/{id}")).await;
    assert_eq!((status, &still["enabled"]), (StatusCode::OK, &json!(true)));

    // Bad input is named.
    let (status, problem) = rest::post(
        &platform,
        &user,
        "/api/webhooks",
        json!({"url": receiver.url, "event_types": ["job.exploded"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, deleted) = send(
        &platform,
        &user,
        reqwest::Method::DELETE,
        &format!("/api/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{deleted}");
    let (status, _) = rest::get(&platform, &user, format!("/api/webhooks/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_endpoints_are_disabled_until_enabled_again() {
    let platform = TestPlatform::spawn_with(options(WebhookSettings {
        schedule: vec![Duration::ZERO, Duration::from_millis(100)],
        disable_after_failed_deliveries: 2,
        ..fast()
    }))
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(&[], Answer::Status(500));
    let user = sign_up(&platform, "failing@example.com").await;
    let endpoint = create_endpoint(&platform, &user, &receiver.url, json!(["webhook.test"])).await;
    let id = endpoint["id"].as_str().expect("id").to_owned();

    for _ in 0..2 {
        let test = send_test(&platform, &user, &id).await;
        let failed = delivery_reached(
            &platform,
            &user,
            &id,
            test["id"].as_str().expect("id"),
            "failed",
        )
        .await;
        assert_eq!(failed["attempts"], 2, "{failed:#}");
        assert_eq!(failed["attempt_log"][1]["response_status"], 500);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let disabled = loop {
        let (_, endpoint) = rest::get(&platform, &user, format!("/api/webhooks/{id}")).await;
        if endpoint["enabled"] == false {
            break endpoint;
        }
        assert!(Instant::now() < deadline, "never disabled: {endpoint:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("failed every attempt")),
        "{disabled:#}"
    );
    assert!(disabled["disabled_at"].as_str().is_some());

    // Disabled: nothing is sent.
    let received = receiver.received().len();
    let waiting = send_test(&platform, &user, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), received);
    let listed = deliveries(&platform, &user, &id).await;
    let pending = listed
        .iter()
        .find(|delivery| delivery["id"] == waiting["id"])
        .expect("listed");
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["attempts"], 0);

    // Enabled again (the receiver works now): what waited is sent.
    receiver.answer(&[], Answer::Status(200));
    let (status, enabled) = send(
        &platform,
        &user,
        reqwest::Method::PATCH,
        &format!("/api/webhooks/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["disabled_reason"].is_null());
    delivery_reached(
        &platform,
        &user,
        &id,
        waiting["id"].as_str().expect("id"),
        "succeeded",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_targets_are_refused() {
    let platform = TestPlatform::spawn_with(options(WebhookSettings {
        targets: TargetPolicy::default(),
        ..fast()
    }))
    .await;
    let user = sign_up(&platform, "ssrf@example.com").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://localhost:8080/hook",
        "http://100.64.0.1/hook",
        "http://[fd00::1]/hook",
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "not a url",
    ] {
        let (status, problem) =
            rest::post(&platform, &user, "/api/webhooks", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|field| field["field"].as_str())
            .collect();
        assert_eq!(fields, ["url"], "{url}: {problem}");
    }
    let (_, list) = rest::get(&platform, &user, "/api/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_mid_delivery_loses_nothing() {
    // The hanging request outlasts the restart: the stopping service abandons it.
    let platform = TestPlatform::spawn_with(options(WebhookSettings {
        timeout: Duration::from_secs(30),
        lease: Duration::from_secs(60),
        ..fast()
    }))
    .await;
    let receiver = Receiver::start().await;
    // The first request hangs (the sender times out, then the service stops);
    // every later one is taken.
    receiver.answer(&[Answer::Hang], Answer::Status(200));
    let user = sign_up(&platform, "restart@example.com").await;
    let endpoint = create_endpoint(&platform, &user, &receiver.url, json!(["job.completed"])).await;
    let id = endpoint["id"].as_str().expect("id").to_owned();
    let secret = endpoint["secret"].as_str().expect("secret").to_owned();
    let image = rest::upload(&platform, &user, fixtures::png(32, 32)).await;
    let job = rest::start_job(&platform, &user, &image, "lineart", json!({})).await;
    let hanging = receiver.wait_for_type("job.completed").await;

    // Stopped while its request hangs, and started again on the same database.
    platform.restart_processing().await;
    let all = receiver
        .wait_for("the job's message again", |received| {
            received.iter().filter(|r| r.id == hanging.id).count() >= 2
        })
        .await;
    let again = all
        .iter()
        .filter(|r| r.id == hanging.id)
        .nth(1)
        .expect("sent again");
    assert_eq!(again.json()["data"]["id"], job.as_str());
    assert_eq!(verify(&[(again, &secret)]), ["ok"]);
    let listed = deliveries(&platform, &user, &id).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let delivered = delivery_reached(
        &platform,
        &user,
        &id,
        listed[0]["id"].as_str().expect("id"),
        "succeeded",
    )
    .await;
    // The abandoned request was never an attempt: the new service's one is the first.
    assert_eq!(delivered["attempts"], 1, "{delivered:#}");
    assert_eq!(delivered["attempt_log"][0]["response_status"], 200);
}
