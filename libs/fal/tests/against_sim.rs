//! The client against the fal simulator (`atelier-fal-sim`): every protocol path on a
//! real fal-compatible server, results downloaded from it, and its signed webhooks
//! verified against its JWKS.

use std::{
    io::Cursor,
    time::{Duration, Instant},
};

use atelier_fal::{
    BreakerConfig, BreakerState, CancelOutcome, EndpointId, FalClient, FalConfig, FalError,
    QueueStatus, RetryConfig, SubmitOptions,
    webhook::{WebhookError, WebhookStatus, WebhookVerifier},
};
use atelier_fal_sim::{Failures, SimConfig, SimHandle};
use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use base64::Engine;
use futures::StreamExt;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A simulator that stops when dropped.
struct Sim {
    handle: SimHandle,
    shutdown: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn sim(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    let handle = atelier_fal_sim::start(config, listener, shutdown.clone())
        .await
        .expect("simulator");
    Sim { handle, shutdown }
}

fn config_for(sim: &Sim) -> FalConfig {
    let mut config = FalConfig::new("sim-id:sim-secret");
    config.queue_url = sim.handle.base_url().to_owned();
    config.api_url = format!("{}/v1", sim.handle.base_url());
    // Local mode: the simulator's own address serves the result files.
    config.allowed_result_hosts = vec![sim.handle.base_url().to_owned()];
    config.http_timeout = Duration::from_secs(5);
    config.retry = RetryConfig {
        max_retries: 3,
        base: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        jitter: 0.25,
    };
    config.breaker = BreakerConfig {
        consecutive_failures: 5,
        open_duration: Duration::from_secs(2),
        ..BreakerConfig::default()
    };
    config.poll_interval = Duration::from_millis(20);
    config.poll_interval_max = Duration::from_millis(100);
    config
}

fn client_for(sim: &Sim) -> FalClient {
    FalClient::new(config_for(sim)).expect("client")
}

/// An 8×8 PNG as a `data:` URI.
fn png_data_uri() -> String {
    let image = image::RgbaImage::from_fn(8, 8, |x, y| {
        if (2..6).contains(&x) && (2..6).contains(&y) {
            image::Rgba([200, 30, 30, 255])
        } else {
            image::Rgba([250, 250, 250, 255])
        }
    });
    let mut png = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(image)
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    )
}

fn esrgan() -> EndpointId {
    EndpointId::parse("fal-ai/esrgan").expect("endpoint")
}

#[tokio::test]
async fn prices_come_from_the_platform_api_for_every_endpoint_asked() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim);
    let endpoints: Vec<EndpointId> = [
        "fal-ai/flux/dev/image-to-image",
        "fal-ai/birefnet",
        "fal-ai/esrgan",
        "fal-ai/no-such-model",
    ]
    .iter()
    .map(|id| EndpointId::parse(id).expect("id"))
    .collect();
    let prices = client.pricing(&endpoints).await.expect("prices");
    let found: Vec<(&str, f64, &str, &str)> = prices
        .iter()
        .map(|price| {
            (
                price.endpoint_id.as_str(),
                price.unit_price,
                price.unit.as_str(),
                price.currency.as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("fal-ai/flux/dev/image-to-image", 0.025, "megapixels", "USD"),
            ("fal-ai/birefnet", 0.002, "image", "USD"),
            ("fal-ai/esrgan", 0.00111, "second", "USD"),
        ],
        "an endpoint without a price is left out"
    );
    // More than fal's 50 ids at once: asked in several calls.
    let many: Vec<EndpointId> = (0..120)
        .map(|_| EndpointId::parse("fal-ai/birefnet").expect("id"))
        .collect();
    assert_eq!(client.pricing(&many).await.expect("prices").len(), 120);
    assert!(
        client
            .pricing(&[])
            .await
            .expect("nothing to ask")
            .is_empty()
    );

    // The simulator answers as fal does: the key is required, 1 to 50 ids.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/models/pricing", sim.handle.base_url());
    let anonymous = http
        .get(&url)
        .query(&[("endpoint_id", "fal-ai/birefnet")])
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    for ids in [String::new(), vec!["fal-ai/birefnet"; 51].join(",")] {
        let refused = http
            .get(&url)
            .header("authorization", "Key test")
            .query(&[("endpoint_id", ids.as_str())])
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status(), 400);
        let body: serde_json::Value = refused.json().await.expect("json");
        assert!(body["detail"].is_string(), "{body}");
    }
    let both_forms = http
        .get(format!(
            "{url}?endpoint_id=fal-ai/birefnet&endpoint_id=fal-ai/imageutils/rembg"
        ))
        .header("authorization", "Key test")
        .send()
        .await
        .expect("send");
    let body: serde_json::Value = both_forms.json().await.expect("json");
    assert_eq!(body["prices"].as_array().expect("prices").len(), 2);
    assert_eq!(body["has_more"], false);

    // fal unreachable: an error, not an empty price list.
    sim.handle.set_failures(Failures {
        outage_until: Some(Instant::now() + Duration::from_secs(60)),
        ..Default::default()
    });
    assert!(client.pricing(&endpoints[..1]).await.is_err());
}

#[tokio::test]
async fn model_schemas_come_from_the_platform_api_through_the_breaker() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim);

    let openapi = client
        .openapi(&esrgan())
        .await
        .expect("models")
        .expect("esrgan's document");
    let reference = openapi
        .pointer("/paths/~1fal-ai~1esrgan/post/requestBody/content/application~1json/schema/$ref")
        .and_then(serde_json::Value::as_str)
        .expect("the input by reference");
    let input = openapi
        .pointer(reference.trim_start_matches('#'))
        .expect("the input schema");
    assert_eq!(input["required"], json!(["image_url"]));
    assert_eq!(input["properties"]["scale"]["maximum"], 8);
    assert_eq!(
        input["properties"]["output_format"]["enum"],
        json!(["png", "jpeg"])
    );
    let unknown = EndpointId::parse("fal-ai/no-such-model").expect("id");
    assert_eq!(client.openapi(&unknown).await, Ok(None));

    // The simulator answers as fal does: the key is required, the documents only when
    // asked for, every model when none is named.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/models", sim.handle.base_url());
    let anonymous = http.get(&url).send().await.expect("send");
    assert_eq!(anonymous.status(), 401);
    let listing: serde_json::Value = http
        .get(&url)
        .header("authorization", "Key test")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let models = listing["models"].as_array().expect("models");
    assert!(models.len() >= 10, "{listing}");
    assert!(models.iter().all(|model| model.get("openapi").is_none()));
    assert_eq!(listing["has_more"], false);

    // fal down: retried, then the breaker opens and calls fail at once without
    // reaching fal, as every other fal call does.
    sim.handle.set_failures(Failures {
        outage_until: Some(Instant::now() + Duration::from_secs(60)),
        ..Default::default()
    });
    let failed = client.openapi(&esrgan()).await.expect_err("fal is down");
    assert!(failed.is_transient(), "{failed:?}");
    assert_eq!(sim.handle.outage_calls(), 4, "one call and three retries");
    let mut calls = 1;
    while !matches!(
        client.openapi(&esrgan()).await,
        Err(FalError::Unavailable { .. })
    ) {
        calls += 1;
        assert!(calls < 5, "the breaker never opened");
    }
    assert_eq!(
        client.breaker_state(&client.queue_host()),
        BreakerState::Open
    );
    let reached = sim.handle.outage_calls();
    assert!(matches!(
        client.openapi(&esrgan()).await,
        Err(FalError::Unavailable { .. })
    ));
    assert_eq!(
        sim.handle.outage_calls(),
        reached,
        "an open breaker calls nobody"
    );
}

#[tokio::test]
async fn submit_wait_result_and_download() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim);
    let submitted = client
        .submit(
            &esrgan(),
            &json!({"image_url": png_data_uri(), "scale": 2}),
            &SubmitOptions::default(),
        )
        .await
        .expect("submitted");
    assert!(!submitted.request_id.is_empty());
    assert!(submitted.status_url.starts_with(sim.handle.base_url()));
    assert!(submitted.status_url.ends_with("/status"));
    assert_eq!(sim.handle.submissions_to("fal-ai/esrgan"), 1);

    let mut seen = Vec::new();
    let done = client
        .wait(&esrgan(), &submitted.request_id, |s| seen.push(s.status))
        .await
        .expect("completed");
    assert!(done.is_completed());
    assert_eq!(seen.last(), Some(&QueueStatus::Completed));

    let with_logs = client
        .status(&esrgan(), &submitted.request_id, true)
        .await
        .expect("status");
    assert!(with_logs.is_completed());
    assert!(with_logs.response_url.is_some());

    let output = client
        .result(&esrgan(), &submitted.request_id)
        .await
        .expect("result");
    assert_eq!(output["image"]["width"], 16);
    let url = output["image"]["url"].as_str().expect("result url");
    let file = client
        .download(url)
        .await
        .expect("opened")
        .collect()
        .await
        .expect("downloaded");
    assert!(file.bytes.starts_with(b"\x89PNG"), "a png");
    assert_eq!(file.content_type.as_deref(), Some("image/png"));
}

#[tokio::test]
async fn status_stream_follows_the_request_to_completion() {
    let sim = sim(SimConfig {
        processing_time: Duration::from_millis(400),
        ..SimConfig::default()
    })
    .await;
    let client = client_for(&sim);
    let submitted = client
        .submit(
            &esrgan(),
            &json!({"image_url": png_data_uri()}),
            &SubmitOptions::default(),
        )
        .await
        .expect("submitted");
    let events: Vec<_> = client
        .status_stream(&esrgan(), &submitted.request_id)
        .collect()
        .await;
    assert!(events.len() >= 2, "{events:?}");
    let statuses: Vec<QueueStatus> = events
        .into_iter()
        .map(|e| e.expect("event").status)
        .collect();
    assert_eq!(statuses.last(), Some(&QueueStatus::Completed));
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s != QueueStatus::Completed)
    );
}

#[tokio::test]
async fn built_urls_reach_subpath_and_workflow_endpoints() {
    let sim = sim(SimConfig::default()).await;
    let submitter = client_for(&sim);
    // A second client has not seen the submit replies: it builds the URLs itself, the
    // way a redelivered job resumes watching a request.
    let watcher = client_for(&sim);
    for (endpoint, input) in [
        (
            "fal-ai/flux/dev/image-to-image",
            json!({"image_url": png_data_uri(), "prompt": "sepia please", "strength": 0.5}),
        ),
        (
            "workflows/atelier/upscale-cutout",
            json!({"image_url": png_data_uri()}),
        ),
    ] {
        let endpoint = EndpointId::parse(endpoint).expect("endpoint");
        let submitted = submitter
            .submit(&endpoint, &input, &SubmitOptions::default())
            .await
            .expect("submitted");
        watcher
            .wait(&endpoint, &submitted.request_id, |_| {})
            .await
            .unwrap_or_else(|err| panic!("{endpoint}: {err}"));
        let output = watcher
            .result(&endpoint, &submitted.request_id)
            .await
            .expect("result");
        assert!(
            output.get("image").is_some() || output.get("images").is_some(),
            "{endpoint}: {output}"
        );
    }
}

#[tokio::test]
async fn a_bad_input_fails_the_request_and_its_result_is_a_validation_error() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim);
    let submitted = client
        .submit(&esrgan(), &json!({"scale": 2}), &SubmitOptions::default())
        .await
        .expect("queued as fal does");
    let err = client
        .wait(&esrgan(), &submitted.request_id, |_| {})
        .await
        .expect_err("failed");
    assert!(matches!(err, FalError::RequestFailed { .. }), "{err:?}");
    let err = client
        .result(&esrgan(), &submitted.request_id)
        .await
        .expect_err("no output");
    let FalError::Validation(issues) = err else {
        panic!("expected a validation error, got {err:?}");
    };
    assert!(issues.iter().any(|i| i.field == "image_url"), "{issues:?}");
}

#[tokio::test]
async fn validation_at_submit_is_not_retried() {
    let sim = sim(SimConfig {
        validate_at_submit: true,
        ..SimConfig::default()
    })
    .await;
    let client = client_for(&sim);
    let err = client
        .submit(&esrgan(), &json!({"scale": 2}), &SubmitOptions::default())
        .await
        .expect_err("invalid");
    assert!(err.is_validation(), "{err:?}");
    assert_eq!(sim.handle.submissions(), 0);
    assert_eq!(
        client.breaker_state(&client.queue_host()),
        BreakerState::Closed
    );
}

#[tokio::test]
async fn cancel_reports_each_outcome() {
    let sim = sim(SimConfig::default()).await;
    sim.handle.set_failures(Failures {
        hang: true,
        ..Failures::default()
    });
    let client = client_for(&sim);
    let submitted = client
        .submit(
            &esrgan(),
            &json!({"image_url": png_data_uri()}),
            &SubmitOptions::default(),
        )
        .await
        .expect("submitted");
    assert_eq!(
        client.cancel(&esrgan(), &submitted.request_id).await,
        Ok(CancelOutcome::Requested)
    );
    let err = client
        .wait(&esrgan(), &submitted.request_id, |_| {})
        .await
        .expect_err("cancelled");
    assert!(
        matches!(&err, FalError::RequestFailed { error_type: Some(t), .. } if t == "client_cancelled"),
        "{err:?}"
    );
    assert_eq!(
        client.cancel(&esrgan(), &submitted.request_id).await,
        Ok(CancelOutcome::AlreadyCompleted)
    );
    assert_eq!(
        client.cancel(&esrgan(), "no-such-request").await,
        Ok(CancelOutcome::NotFound)
    );
    assert_eq!(sim.handle.cancellations(), 1);
}

#[tokio::test]
async fn an_outage_is_retried_through() {
    let sim = sim(SimConfig::default()).await;
    sim.handle.set_failures(Failures {
        outage_until: Some(Instant::now() + Duration::from_millis(150)),
        ..Failures::default()
    });
    let client = client_for(&sim);
    client
        .submit(
            &esrgan(),
            &json!({"image_url": png_data_uri()}),
            &SubmitOptions::default(),
        )
        .await
        .expect("submitted once the outage ended");
    assert_eq!(sim.handle.submissions(), 1);
}

#[tokio::test]
async fn refused_submissions_open_the_breaker() {
    let sim = sim(SimConfig::default()).await;
    sim.handle.set_failures(Failures {
        submit_status: Some(429),
        error_type: Some("concurrent_requests_limit".into()),
        ..Failures::default()
    });
    let mut config = config_for(&sim);
    config.retry.max_retries = 0;
    config.breaker.consecutive_failures = 3;
    let client = FalClient::new(config).expect("client");
    let input = json!({"image_url": png_data_uri()});
    for _ in 0..3 {
        let err = client
            .submit(&esrgan(), &input, &SubmitOptions::default())
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, FalError::Transient { status: Some(429), error_type: Some(t), .. }
                if t == "concurrent_requests_limit"),
            "{err:?}"
        );
    }
    assert_eq!(
        client.breaker_state(&client.queue_host()),
        BreakerState::Open
    );
    sim.handle.set_failures(Failures::default());
    let err = client
        .submit(&esrgan(), &input, &SubmitOptions::default())
        .await
        .expect_err("open");
    assert!(matches!(err, FalError::Unavailable { .. }), "{err:?}");
    assert_eq!(sim.handle.submissions(), 0);
}

#[tokio::test]
async fn a_wrong_key_is_refused_once() {
    let sim = sim(SimConfig {
        key: Some("the-right-key".into()),
        ..SimConfig::default()
    })
    .await;
    let client = client_for(&sim);
    let err = client
        .submit(&esrgan(), &json!({}), &SubmitOptions::default())
        .await
        .expect_err("unauthorized");
    assert!(
        matches!(err, FalError::Permanent { status: 401, .. }),
        "{err:?}"
    );

    let mut config = config_for(&sim);
    config.key = "the-right-key".into();
    let client = FalClient::new(config).expect("client");
    assert!(matches!(
        client.status(&esrgan(), "no-such-request", false).await,
        Err(FalError::Permanent { status: 404, .. })
    ));
}

/// Collects the webhook deliveries the simulator makes.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .route(
            "/hooks/fal",
            post(
                |State(tx): State<mpsc::UnboundedSender<(HeaderMap, Bytes)>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    tx.send((headers, body)).ok();
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks/fal", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    (url, rx)
}

#[tokio::test]
async fn webhooks_verify_against_the_simulator_keys() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim);
    let (hook, mut deliveries) = webhook_receiver().await;
    let options = SubmitOptions {
        webhook_url: Some(hook),
        ..SubmitOptions::default()
    };
    let verifier = WebhookVerifier::new(sim.handle.jwks_url(), reqwest::Client::new());

    let ok = client
        .submit(&esrgan(), &json!({"image_url": png_data_uri()}), &options)
        .await
        .expect("submitted");
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
        .await
        .expect("delivered in time")
        .expect("delivery");
    let event = verifier
        .verify(&headers, &body, OffsetDateTime::now_utc())
        .await
        .expect("verified");
    assert_eq!(event.request_id, ok.request_id);
    assert_eq!(event.status, WebhookStatus::Ok);
    assert!(event.payload["image"]["url"].is_string());

    let mut tampered = body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    assert_eq!(
        verifier
            .verify(&headers, &tampered, OffsetDateTime::now_utc())
            .await,
        Err(WebhookError::BadSignature)
    );
    assert!(matches!(
        verifier
            .verify(
                &headers,
                &body,
                OffsetDateTime::now_utc() + time::Duration::minutes(10)
            )
            .await,
        Err(WebhookError::StaleTimestamp { .. })
    ));

    let failed = client
        .submit(&esrgan(), &json!({"scale": 2}), &options)
        .await
        .expect("submitted");
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
        .await
        .expect("delivered in time")
        .expect("delivery");
    let event = verifier
        .verify(&headers, &body, OffsetDateTime::now_utc())
        .await
        .expect("verified");
    assert_eq!(event.request_id, failed.request_id);
    assert_eq!(event.status, WebhookStatus::Error);
    assert!(event.error.is_some());
}
