//! fal's queue protocol, path by path, over real HTTP: submit, status, the status stream,
//! result, cancel, validation errors, URL shapes, auth and the submission counts.

mod common;

use std::time::Duration;

use atelier_fal_sim::{Failures, SimConfig};
use common::{PATIENCE, Sim, png_data_uri, quick};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ESRGAN: &str = "fal-ai/esrgan";

fn esrgan_input() -> Value {
    json!({ "image_url": png_data_uri(16, 12) })
}

async fn status_of(sim: &Sim, submitted: &Value, logs: &str) -> (StatusCode, Value) {
    let response = sim
        .http
        .get(submitted["status_url"].as_str().expect("status_url"))
        .query(&[("logs", logs)])
        .send()
        .await
        .expect("reading the status");
    let code = response.status();
    (code, response.json().await.expect("a JSON status"))
}

/// Polls until the request shows `status`.
async fn until_status(sim: &Sim, submitted: &Value, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = status_of(sim, submitted, "1").await;
        if body["status"] == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn submit_answers_with_the_urls_and_a_queue_position() {
    let sim = Sim::start(quick()).await;
    let reply = sim.submit(ESRGAN, &esrgan_input()).await;
    let id = reply["request_id"].as_str().expect("a request_id");
    assert!(!id.is_empty());
    assert_eq!(reply["gateway_request_id"], id);
    assert_eq!(reply["status"], "IN_QUEUE");
    assert_eq!(reply["queue_position"], 0);
    let base = format!("{}/fal-ai/esrgan/requests/{id}", sim.handle.base_url());
    assert_eq!(reply["response_url"], base);
    assert_eq!(reply["status_url"], format!("{base}/status"));
    assert_eq!(reply["cancel_url"], format!("{base}/cancel"));

    // URLs follow the Host the request came in on...
    let reply: Value = sim
        .http
        .post(sim.url(ESRGAN))
        .header("host", "sim.example:8085")
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting")
        .json()
        .await
        .expect("a reply");
    let url = reply["status_url"].as_str().expect("status_url");
    assert!(
        url.starts_with("http://sim.example:8085/fal-ai/esrgan/requests/"),
        "{url}"
    );

    // ...or the configured public base URL.
    let sim = Sim::start(SimConfig {
        public_base_url: Some("https://fal.internal/".to_owned()),
        ..quick()
    })
    .await;
    let reply = sim.submit(ESRGAN, &esrgan_input()).await;
    let url = reply["response_url"].as_str().expect("response_url");
    assert!(
        url.starts_with("https://fal.internal/fal-ai/esrgan/requests/"),
        "{url}"
    );
}

#[tokio::test]
async fn status_is_202_until_completed_then_200_with_logs_and_metrics() {
    let sim = Sim::start(SimConfig {
        queue_delay: Duration::from_secs(1),
        processing_time: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await;
    let submitted = sim.submit(ESRGAN, &esrgan_input()).await;
    let id = submitted["request_id"].as_str().expect("request_id");

    let (code, queued) = status_of(&sim, &submitted, "0").await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(queued["status"], "IN_QUEUE");
    assert_eq!(queued["request_id"], id);
    assert_eq!(queued["queue_position"], 0);
    assert_eq!(queued["response_url"], submitted["response_url"]);
    assert!(queued.as_object().expect("an object").contains_key("logs"));
    assert_eq!(queued["logs"], Value::Null, "no logs unless asked");
    let (_, queued) = status_of(&sim, &submitted, "true").await;
    assert!(
        queued["logs"].is_array(),
        "logs=true as Python sends it: {queued}"
    );

    let running = until_status(&sim, &submitted, "IN_PROGRESS").await;
    assert!(running["logs"].is_array());
    assert!(running.get("queue_position").is_none(), "{running}");
    let (code, _) = status_of(&sim, &submitted, "1").await;
    assert_eq!(code, StatusCode::ACCEPTED);

    let done = sim.wait(&submitted).await;
    assert_eq!(done["request_id"], id);
    assert!(
        done["metrics"]["inference_time"]
            .as_f64()
            .expect("inference_time")
            > 0.0
    );
    assert!(done.get("error").is_none(), "{done}");
    let logs = done["logs"].as_array().expect("logs");
    assert!(logs.len() >= 3, "{logs:?}");
    for log in logs {
        assert_eq!(log["source"], "USER");
        assert!(log["message"].is_string() && log["level"].is_string());
        assert!(log["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    }
    let (code, done) = status_of(&sim, &submitted, "false").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(done["logs"], Value::Null);
}

#[tokio::test]
async fn queue_positions_follow_priority() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        ..quick()
    })
    .await;
    sim.handle.set_failures(Failures {
        hang: true,
        ..Failures::default()
    });
    let first = sim.submit(ESRGAN, &esrgan_input()).await;
    until_status(&sim, &first, "IN_PROGRESS").await;

    let submit = |priority: &'static str| {
        let sim = &sim;
        async move {
            let response = sim
                .http
                .post(sim.url(ESRGAN))
                .header("x-fal-queue-priority", priority)
                .json(&esrgan_input())
                .send()
                .await
                .expect("submitting");
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.expect("a reply")
        }
    };
    let normal = submit("normal").await;
    let low = submit("low").await;
    let later_normal = submit("normal").await;
    assert_eq!(normal["queue_position"], 0);
    assert_eq!(low["queue_position"], 1);
    assert_eq!(later_normal["queue_position"], 1, "normal goes before low");
    let (_, status) = status_of(&sim, &low, "0").await;
    assert_eq!(status["queue_position"], 2);

    let bad = sim
        .http
        .post(sim.url(ESRGAN))
        .header("x-fal-queue-priority", "urgent")
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers()["x-fal-error-type"], "bad_request");

    sim.handle.set_failures(Failures::default());
    for submitted in [&first, &normal, &later_normal, &low] {
        sim.wait(submitted).await;
    }
}

#[tokio::test]
async fn the_status_stream_sends_each_change_and_closes_after_completed() {
    let sim = Sim::start(SimConfig {
        queue_delay: Duration::from_millis(500),
        processing_time: Duration::from_millis(400),
        heartbeat: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let submitted = sim.submit(ESRGAN, &esrgan_input()).await;
    let url = format!(
        "{}/stream",
        submitted["status_url"].as_str().expect("status_url")
    );
    let response = sim
        .http
        .get(url)
        .query(&[("logs", "1")])
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("opening the stream");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let mut body = String::new();
    let mut chunks = response.bytes_stream();
    let read_all = async {
        while let Some(chunk) = chunks.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the stream closes by itself");

    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("a JSON event"))
        .collect();
    let comments = body.lines().filter(|l| l.starts_with(':')).count();
    assert!(comments >= 1, "heartbeat comments: {body}");
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"IN_QUEUE"), "{statuses:?}");
    assert!(statuses.contains(&"IN_PROGRESS"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"COMPLETED"), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "COMPLETED").count(), 1);

    // Logs are incremental: each line comes once, and all of them come.
    let streamed: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["logs"].as_array().into_iter().flatten())
        .collect();
    let all = sim.wait(&submitted).await;
    let all: Vec<&Value> = all["logs"].as_array().expect("logs").iter().collect();
    assert_eq!(streamed, all);
}

#[tokio::test]
async fn results_are_served_on_both_urls_with_the_request_id() {
    let sim = Sim::start(SimConfig {
        processing_time: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let submitted = sim.submit(ESRGAN, &esrgan_input()).await;
    let id = submitted["request_id"].as_str().expect("request_id");
    let response_url = submitted["response_url"].as_str().expect("response_url");

    let early = sim.http.get(response_url).send().await.expect("reading");
    assert_eq!(early.status(), StatusCode::BAD_REQUEST);
    let early: Value = early.json().await.expect("json");
    assert_eq!(early, json!({ "detail": "Request is still in progress" }));

    sim.wait(&submitted).await;
    let mut outputs = Vec::new();
    for url in [response_url.to_owned(), format!("{response_url}/response")] {
        let response = sim.http.get(&url).send().await.expect("reading");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        assert_eq!(response.headers()["x-fal-request-id"], id);
        outputs.push(response.json::<Value>().await.expect("json"));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0]["image"]["width"], 32);

    let unknown = sim
        .http
        .get(sim.url("fal-ai/esrgan/requests/no-such-request"))
        .send()
        .await
        .expect("reading");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_in_queue_running_completed_and_unknown() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        ..quick()
    })
    .await;
    let cancel = |submitted: &Value| {
        let url = submitted["cancel_url"]
            .as_str()
            .expect("cancel_url")
            .to_owned();
        let http = sim.http.clone();
        async move {
            let response = http.put(url).send().await.expect("cancelling");
            let code = response.status();
            (code, response.json::<Value>().await.expect("json"))
        }
    };
    let accepted = (
        StatusCode::ACCEPTED,
        json!({ "status": "CANCELLATION_REQUESTED" }),
    );

    sim.handle.set_failures(Failures {
        hang: true,
        ..Failures::default()
    });
    let running = sim.submit(ESRGAN, &esrgan_input()).await;
    until_status(&sim, &running, "IN_PROGRESS").await;
    let queued = sim.submit(ESRGAN, &esrgan_input()).await;

    // Queued: dropped at once.
    assert_eq!(cancel(&queued).await, accepted);
    let status = sim.wait(&queued).await;
    assert_eq!(status["error_type"], "client_cancelled", "{status}");
    let result = sim
        .http
        .get(queued["response_url"].as_str().expect("url"))
        .send()
        .await
        .expect("reading");
    assert_eq!(result.status().as_u16(), 499);
    assert_eq!(result.headers()["x-fal-error-type"], "client_cancelled");

    // Running (and hanging): signalled, and it ends as cancelled.
    assert_eq!(cancel(&running).await, accepted);
    let status = sim.wait(&running).await;
    assert_eq!(status["error_type"], "client_cancelled", "{status}");

    // Completed.
    assert_eq!(
        cancel(&running).await,
        (
            StatusCode::BAD_REQUEST,
            json!({ "status": "ALREADY_COMPLETED" })
        )
    );
    // Unknown, and known under another app.
    let not_found = (StatusCode::NOT_FOUND, json!({ "status": "NOT_FOUND" }));
    let unknown = json!({ "cancel_url": sim.url("fal-ai/esrgan/requests/nope/cancel") });
    assert_eq!(cancel(&unknown).await, not_found);
    let elsewhere = json!({
        "cancel_url": sim.url(&format!(
            "fal-ai/aura-sr/requests/{}/cancel",
            running["request_id"].as_str().expect("id")
        ))
    });
    assert_eq!(cancel(&elsewhere).await, not_found);

    assert_eq!(sim.handle.cancellations(), 2);
    sim.handle.set_failures(Failures::default());
}

#[tokio::test]
async fn bad_input_fails_the_request_with_fal_validation_details() {
    let sim = Sim::start(quick()).await;

    // Like fal: queued, then the request fails and its result carries the details.
    let submitted = sim.submit(ESRGAN, &json!({})).await;
    let status = sim.wait(&submitted).await;
    assert_eq!(status["error"], "Invalid status code: 422", "{status}");
    let result = sim.result(&submitted).await;
    assert_eq!(result.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = result.json().await.expect("json");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "image_url"]));
    assert_eq!(body["detail"][0]["type"], "missing");
    assert_eq!(body["detail"][0]["msg"], "Field required");

    let submitted = sim
        .submit(
            ESRGAN,
            &json!({ "image_url": 5, "scale": 100, "output_format": "bmp", "face": "yes" }),
        )
        .await;
    let body: Value = sim.result(&submitted).await.json().await.expect("json");
    let detail = body["detail"].as_array().expect("a detail list");
    let summary: Vec<(Value, Value)> = detail
        .iter()
        .map(|d| (d["loc"][1].clone(), d["type"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("image_url"), json!("string_type")),
            (json!("scale"), json!("less_than_equal")),
            (json!("face"), json!("bool_type")),
            (json!("output_format"), json!("literal_error")),
        ]
    );
    assert_eq!(detail[1]["ctx"], json!({ "le": 8 }));
    assert_eq!(detail[3]["msg"], "Input should be 'png' or 'jpeg'");

    let submitted = sim
        .submit(
            "fal-ai/flux/dev/image-to-image",
            &json!({ "image_url": png_data_uri(8, 8), "strength": 0 }),
        )
        .await;
    let body: Value = sim.result(&submitted).await.json().await.expect("json");
    let locs: Vec<&Value> = body["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|d| &d["loc"])
        .collect();
    assert_eq!(
        locs,
        [&json!(["body", "prompt"]), &json!(["body", "strength"])]
    );

    // An image that cannot be fetched or decoded is the model's error too.
    let submitted = sim
        .submit(
            ESRGAN,
            &json!({ "image_url": "data:image/png;base64,aGVsbG8=" }),
        )
        .await;
    let body: Value = sim.result(&submitted).await.json().await.expect("json");
    assert_eq!(body["detail"][0]["type"], "image_load_error");
    let submitted = sim
        .submit(
            ESRGAN,
            &json!({ "image_url": sim.url("files/missing.png") }),
        )
        .await;
    let body: Value = sim.result(&submitted).await.json().await.expect("json");
    assert_eq!(body["detail"][0]["type"], "file_download_error");

    // A body that is not JSON never makes it to the queue.
    let before = sim.handle.submissions();
    let response = sim
        .http
        .post(sim.url(ESRGAN))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("submitting");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["detail"][0]["type"], "json_invalid");
    assert_eq!(sim.handle.submissions(), before);
}

#[tokio::test]
async fn validate_at_submit_refuses_bad_input_at_once() {
    let sim = Sim::start(SimConfig {
        validate_at_submit: true,
        ..quick()
    })
    .await;
    let response = sim.submit_raw(ESRGAN, &json!({ "scale": 0 })).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    let types: Vec<&Value> = body["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|d| &d["type"])
        .collect();
    assert_eq!(types, [&json!("missing"), &json!("greater_than_equal")]);
    assert_eq!(sim.handle.submissions(), 0);
    sim.run(ESRGAN, &esrgan_input()).await;
}

#[tokio::test]
async fn subpaths_and_namespaces_drop_from_request_urls() {
    let sim = Sim::start(quick()).await;
    let input = json!({ "image_url": png_data_uri(16, 16), "prompt": "a warm sunset" });
    let submitted = sim.submit("fal-ai/flux/dev/image-to-image", &input).await;
    let id = submitted["request_id"].as_str().expect("id");
    assert_eq!(
        submitted["status_url"],
        format!("{}/fal-ai/flux/requests/{id}/status", sim.handle.base_url())
    );
    sim.wait(&submitted).await;
    // The URL with the subpath is not a request URL.
    let with_subpath = sim
        .http
        .get(sim.url(&format!(
            "fal-ai/flux/dev/image-to-image/requests/{id}/status"
        )))
        .send()
        .await
        .expect("reading");
    assert_eq!(with_subpath.status(), StatusCode::NOT_FOUND);

    let submitted = sim
        .submit(
            "workflows/atelier/upscale-cutout",
            &json!({ "image_url": png_data_uri(16, 16) }),
        )
        .await;
    let id = submitted["request_id"].as_str().expect("id");
    assert_eq!(
        submitted["response_url"],
        format!(
            "{}/workflows/atelier/upscale-cutout/requests/{id}",
            sim.handle.base_url()
        )
    );
    let output = sim
        .result(&submitted)
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(output["image"]["width"], 32);
    // Another app does not know the request.
    let elsewhere = sim
        .http
        .get(sim.url(&format!("workflows/atelier/other/requests/{id}/status")))
        .send()
        .await
        .expect("reading");
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_key_is_required_and_the_configured_one_must_match() {
    let sim = Sim::start(quick()).await;
    let anonymous = reqwest::Client::new();
    for auth in [None, Some("Bearer test"), Some("Key "), Some("test")] {
        let mut request = anonymous.post(sim.url(ESRGAN)).json(&esrgan_input());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("submitting");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = response.json().await.expect("json");
        assert!(body["detail"].is_string());
    }
    let submitted = sim.submit(ESRGAN, &esrgan_input()).await;
    let status = anonymous
        .get(submitted["status_url"].as_str().expect("url"))
        .send()
        .await
        .expect("reading");
    assert_eq!(status.status(), StatusCode::UNAUTHORIZED);

    let sim = Sim::start(SimConfig {
        key: Some("id:secret".to_owned()),
        ..quick()
    })
    .await;
    assert_eq!(
        sim.submit_raw(ESRGAN, &esrgan_input()).await.status(),
        StatusCode::UNAUTHORIZED,
        "a key other than the configured one"
    );
    let response = anonymous
        .post(sim.url(ESRGAN))
        .header("authorization", "Key id:secret")
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_endpoints_are_not_found() {
    let sim = Sim::start(quick()).await;
    for endpoint in [
        "fal-ai/no-such-model",
        "fal-ai/esrgan/extra",
        "comfy/me/flow",
    ] {
        let response = sim.submit_raw(endpoint, &esrgan_input()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{endpoint}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body,
            json!({ "detail": format!("Application '{endpoint}' not found") })
        );
    }
    assert_eq!(sim.handle.submissions(), 0);
}

#[tokio::test]
async fn submissions_are_counted_per_endpoint() {
    let sim = Sim::start(quick()).await;
    sim.submit(ESRGAN, &esrgan_input()).await;
    sim.submit(ESRGAN, &esrgan_input()).await;
    let canny = "fal-ai/image-preprocessors/canny";
    sim.submit(canny, &esrgan_input()).await;
    // Refused submissions do not count.
    sim.submit_raw("fal-ai/nope", &json!({})).await;
    reqwest::Client::new()
        .post(sim.url(ESRGAN))
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting");

    assert_eq!(sim.handle.submissions(), 3);
    assert_eq!(sim.handle.submissions_to(ESRGAN), 2);
    assert_eq!(sim.handle.submissions_to(canny), 1);
    assert_eq!(sim.handle.submissions_to("fal-ai/aura-sr"), 0);
    let stats: Value = sim
        .http
        .get(sim.url("_sim/stats"))
        .send()
        .await
        .expect("reading stats")
        .json()
        .await
        .expect("json");
    // Running now and at most so far: the three accepted ones start at once.
    let mut stats = stats;
    let mut take = |field: &str| {
        stats
            .as_object_mut()
            .and_then(|stats| stats.remove(field))
            .and_then(|value| value.as_u64())
            .unwrap_or_else(|| panic!("no {field}"))
    };
    let (running, peak) = (take("running"), take("peak_running"));
    assert!(
        running <= peak && (1..=3).contains(&peak),
        "{running} {peak}"
    );
    assert_eq!(
        stats,
        json!({
            "submissions": 3,
            "by_endpoint": { ESRGAN: 2, canny: 1 },
            "cancellations": 0,
            // The same input went to esrgan twice; to canny it is another pair.
            "distinct_inputs": 2,
            "repeated_submissions": 1,
            "completed": 0,
            "failed": 0,
            "outage_calls": {},
        })
    );
}

#[tokio::test]
async fn a_request_timeout_expires_requests_that_wait_too_long() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        ..quick()
    })
    .await;
    sim.handle.set_failures(Failures {
        hang: true,
        ..Failures::default()
    });
    let blocker = sim.submit(ESRGAN, &esrgan_input()).await;
    until_status(&sim, &blocker, "IN_PROGRESS").await;
    let response = sim
        .http
        .post(sim.url(ESRGAN))
        .header("x-fal-request-timeout", "0.3")
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting");
    let waiting: Value = response.json().await.expect("json");
    let status = sim.wait(&waiting).await;
    assert_eq!(status["error_type"], "request_timeout", "{status}");
    let result = sim
        .http
        .get(waiting["response_url"].as_str().expect("url"))
        .send()
        .await
        .expect("reading");
    assert_eq!(result.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(result.headers()["x-fal-request-timeout-type"], "user");
    assert_eq!(result.headers()["x-fal-error-type"], "request_timeout");

    let bad = sim
        .http
        .post(sim.url(ESRGAN))
        .header("x-fal-request-timeout", "soon")
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers()["x-fal-error-type"], "bad_request");

    // fal_max_queue_length counts the app's queued requests.
    let queued = sim.submit(ESRGAN, &esrgan_input()).await;
    let full = sim
        .http
        .post(sim.url(ESRGAN))
        .query(&[("fal_max_queue_length", "1")])
        .json(&esrgan_input())
        .send()
        .await
        .expect("submitting");
    assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
    sim.handle.set_failures(Failures::default());
    sim.wait(&queued).await;
}

#[tokio::test]
async fn health_jwks_and_missing_files() {
    let sim = Sim::start(quick()).await;
    let health = reqwest::get(sim.url("healthz")).await.expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let jwks: Value = reqwest::get(sim.handle.jwks_url())
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let missing = reqwest::get(sim.url("files/nothing-here.png"))
        .await
        .expect("files");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
