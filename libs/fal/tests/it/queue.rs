//! The queue API calls: what goes on the wire, how answers are read, what is retried.

use std::time::Duration;

use atelier_fal::{
    CancelOutcome, EndpointId, FalError, FieldIssue, Priority, QueueStatus, SubmitOptions,
};
use futures::StreamExt;
use serde_json::json;

use crate::fake::{Fake, Reply, client, config, status_body};

fn flux() -> EndpointId {
    EndpointId::parse("fal-ai/flux/dev/image-to-image").expect("endpoint")
}

fn submit_reply(fake: &Fake) -> Reply {
    let base = fake.url();
    Reply::json(
        200,
        json!({
            "request_id": "req-1",
            "gateway_request_id": "gw-1",
            "status": "IN_QUEUE",
            "response_url": format!("{base}/fal-ai/flux/requests/req-1"),
            "status_url": format!("{base}/fal-ai/flux/requests/req-1/status"),
            "cancel_url": format!("{base}/fal-ai/flux/requests/req-1/cancel"),
            "queue_position": 4,
        }),
    )
}

#[tokio::test]
async fn submit_sends_what_fal_expects() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.set_default(submit_reply(&fake));
    let mut config = config(&fake.url());
    config.request_timeout = Some(Duration::from_secs(30));
    let client = client(config);
    let input = json!({"image_url": "https://example.com/a.png", "prompt": "a cat"});
    let options = SubmitOptions {
        webhook_url: Some("https://atelier.example.com/hooks/fal?job=1".into()),
        priority: Some(Priority::Low),
        no_retry: true,
    };

    let submitted = client
        .submit(&flux(), &input, &options)
        .await
        .expect("submitted");

    assert_eq!(submitted.request_id, "req-1");
    assert_eq!(submitted.queue_position, Some(4));
    assert_eq!(submitted.gateway_request_id.as_deref(), Some("gw-1"));
    assert_eq!(
        submitted.status_url,
        format!("{}/fal-ai/flux/requests/req-1/status", fake.url())
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/fal-ai/flux/dev/image-to-image");
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(call.query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        query,
        vec![(
            "fal_webhook".to_owned(),
            "https://atelier.example.com/hooks/fal?job=1".to_owned()
        )]
    );
    let header = |name: &str| {
        call.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("Key test-id:test-secret")
    );
    assert_eq!(header("accept").as_deref(), Some("application/json"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-fal-request-timeout").as_deref(), Some("30"));
    assert_eq!(header("x-fal-queue-priority").as_deref(), Some("low"));
    assert_eq!(header("x-fal-no-retry").as_deref(), Some("1"));
    let sent: serde_json::Value = serde_json::from_slice(&call.body).expect("json body");
    assert_eq!(sent, input);
}

#[tokio::test]
async fn submit_leaves_optional_headers_out() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.set_default(submit_reply(&fake));
    let client = client(config(&fake.url()));
    client
        .submit(&flux(), &json!({}), &SubmitOptions::default())
        .await
        .expect("submitted");
    let call = &fake.calls()[0];
    assert_eq!(call.query, None);
    for name in [
        "x-fal-request-timeout",
        "x-fal-queue-priority",
        "x-fal-no-retry",
    ] {
        assert!(call.headers.get(name).is_none(), "{name}");
    }
}

#[tokio::test]
async fn later_calls_use_the_urls_the_submit_reply_gave() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    let base = fake.url();
    fake.script([
        Reply::json(
            200,
            json!({
                "request_id": "req-9",
                "response_url": format!("{base}/custom/req-9/out"),
                "status_url": format!("{base}/custom/req-9/state"),
                "cancel_url": format!("{base}/custom/req-9/stop"),
            }),
        ),
        Reply::json(202, status_body("IN_PROGRESS", None)),
        Reply::json(200, json!({"ok": true})),
        Reply::json(202, json!({"status": "CANCELLATION_REQUESTED"})),
    ]);
    let client = client(config(&base));
    client
        .submit(&flux(), &json!({}), &SubmitOptions::default())
        .await
        .expect("submitted");
    client.status(&flux(), "req-9", true).await.expect("status");
    client.result(&flux(), "req-9").await.expect("result");
    client.cancel(&flux(), "req-9").await.expect("cancel");
    let paths: Vec<String> = fake.calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/fal-ai/flux/dev/image-to-image",
            "/custom/req-9/state",
            "/custom/req-9/out",
            "/custom/req-9/stop"
        ]
    );
    assert_eq!(fake.calls()[1].query.as_deref(), Some("logs=1"));
    assert_eq!(fake.calls()[3].method, "PUT");
}

#[tokio::test]
async fn urls_on_another_origin_are_ignored_so_the_key_stays_home() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([
        Reply::json(
            200,
            json!({
                "request_id": "req-2",
                "response_url": "https://evil.example/requests/req-2",
                "status_url": "https://evil.example/requests/req-2/status",
                "cancel_url": "https://evil.example/requests/req-2/cancel",
            }),
        ),
        Reply::json(202, status_body("IN_QUEUE", Some(0))),
    ]);
    let client = client(config(&fake.url()));
    let submitted = client
        .submit(&flux(), &json!({}), &SubmitOptions::default())
        .await
        .expect("submitted");
    assert_eq!(
        submitted.status_url,
        format!("{}/fal-ai/flux/requests/req-2/status", fake.url())
    );
    client
        .status(&flux(), "req-2", false)
        .await
        .expect("status");
    assert_eq!(fake.calls()[1].path, "/fal-ai/flux/requests/req-2/status");
    assert_eq!(fake.calls()[1].query.as_deref(), Some("logs=0"));
}

#[tokio::test]
async fn built_urls_drop_the_subpath_and_keep_namespaces() {
    let fake = Fake::start(Reply::json(202, status_body("IN_QUEUE", Some(1)))).await;
    let client = client(config(&fake.url()));
    for (endpoint, path) in [
        ("fal-ai/flux/dev", "/fal-ai/flux/requests/r1/status"),
        (
            "workflows/me/pipeline",
            "/workflows/me/pipeline/requests/r1/status",
        ),
        ("comfy/me/graph/extra", "/comfy/me/graph/requests/r1/status"),
    ] {
        let endpoint = EndpointId::parse(endpoint).expect("endpoint");
        client.status(&endpoint, "r1", false).await.expect("status");
        assert_eq!(
            fake.calls().last().map(|c| c.path.clone()).as_deref(),
            Some(path)
        );
    }
    assert!(matches!(
        client.status(&flux(), "..", false).await,
        Err(FalError::InvalidRequestId(_))
    ));
}

#[tokio::test]
async fn submit_reply_without_request_id_is_a_protocol_error() {
    let fake = Fake::start(Reply::json(200, json!({"status": "IN_QUEUE"}))).await;
    let client = client(config(&fake.url()));
    assert!(matches!(
        client
            .submit(&flux(), &json!({}), &SubmitOptions::default())
            .await,
        Err(FalError::Protocol(_))
    ));
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let fake = Fake::start(Reply::json(200, status_body("COMPLETED", None))).await;
    fake.script([
        Reply::text(503, "busy").header("x-fal-error-type", "runner_scheduling_failure"),
        Reply::text(503, "busy"),
    ]);
    let client = client(config(&fake.url()));
    let status = client
        .status(&flux(), "req-1", false)
        .await
        .expect("status after retries");
    assert_eq!(status.status, QueueStatus::Completed);
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn every_transient_kind_is_retried() {
    for reply in [
        Reply::text(429, "slow down"),
        Reply::text(502, "bad gateway"),
        Reply::text(504, "timeout"),
        Reply::text(408, "timeout"),
        Reply::text(500, "oops").header("x-fal-retryable", "true"),
        Reply::text(400, "oops").header("x-fal-needs-retry", "1"),
    ] {
        let fake = Fake::start(Reply::json(202, status_body("IN_QUEUE", Some(2)))).await;
        fake.script([reply.clone()]);
        let client = client(config(&fake.url()));
        client
            .status(&flux(), "req-1", false)
            .await
            .unwrap_or_else(|err| panic!("{} not retried: {err}", reply.status));
        assert_eq!(fake.count(), 2, "{}", reply.status);
    }
}

#[tokio::test]
async fn retries_give_up_after_max_retries() {
    let fake = Fake::start(Reply::text(503, "down")).await;
    let mut config = config(&fake.url());
    config.breaker.consecutive_failures = 100;
    let client = client(config);
    let err = client
        .status(&flux(), "req-1", false)
        .await
        .expect_err("still down");
    assert!(matches!(
        err,
        FalError::Transient {
            status: Some(503),
            ..
        }
    ));
    assert!(err.is_transient());
    assert_eq!(fake.count(), 4, "one attempt and three retries");
}

#[tokio::test]
async fn validation_errors_are_not_retried() {
    let fake = Fake::start(Reply::json(
        422,
        json!({"detail": [
            {"loc": ["body", "image_url"], "msg": "field required", "type": "missing"},
            {"loc": ["body", "strength"], "msg": "must be <= 1", "type": "less_than_equal", "ctx": {"le": 1}}
        ]}),
    ))
    .await;
    let client = client(config(&fake.url()));
    let err = client
        .submit(&flux(), &json!({"strength": 3}), &SubmitOptions::default())
        .await
        .expect_err("invalid");
    assert_eq!(fake.count(), 1);
    assert!(err.is_validation() && !err.is_transient());
    assert_eq!(
        err,
        FalError::Validation(vec![
            FieldIssue {
                field: "image_url".into(),
                message: "field required".into(),
                kind: "missing".into()
            },
            FieldIssue {
                field: "strength".into(),
                message: "must be <= 1".into(),
                kind: "less_than_equal".into()
            },
        ])
    );
}

#[tokio::test]
async fn permanent_errors_and_refused_hints_are_not_retried() {
    for reply in [
        Reply::text(400, "bad"),
        Reply::text(401, "who are you"),
        Reply::text(403, "no"),
        Reply::text(404, "gone"),
        Reply::text(500, "oops"),
        Reply::text(503, "no point").header("x-fal-retryable", "false"),
        Reply::text(504, "too late").header("x-fal-request-timeout-type", "user"),
    ] {
        let fake = Fake::start(reply.clone()).await;
        let client = client(config(&fake.url()));
        let err = client
            .status(&flux(), "req-1", false)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, FalError::Permanent { status, .. } if status == reply.status),
            "{}: {err:?}",
            reply.status
        );
        assert_eq!(fake.count(), 1, "{}", reply.status);
    }
}

#[tokio::test]
async fn a_submission_that_timed_out_is_not_sent_again() {
    let fake = Fake::start(
        Reply::json(200, json!({"request_id": "late"})).delayed(Duration::from_millis(600)),
    )
    .await;
    let mut config = config(&fake.url());
    config.http_timeout = Duration::from_millis(200);
    config.breaker.consecutive_failures = 100;
    let client = client(config);
    let err = client
        .submit(&flux(), &json!({}), &SubmitOptions::default())
        .await
        .expect_err("timed out");
    assert!(matches!(err, FalError::MaybeSent { .. }), "{err:?}");
    assert!(
        !err.is_transient(),
        "the caller must not submit again either"
    );
    assert_eq!(
        fake.count(),
        1,
        "fal may have queued it: no second submission"
    );

    // A status call that times out is safe to repeat.
    let err = client
        .status(&flux(), "req-1", false)
        .await
        .expect_err("timed out");
    assert!(err.is_transient());
    assert_eq!(fake.count(), 1 + 4);
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let mut config = config(&url);
    config.breaker.consecutive_failures = 100;
    let client = client(config);
    let err = client
        .submit(&flux(), &json!({}), &SubmitOptions::default())
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, FalError::Transient { status: None, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn status_reads_every_state_and_refuses_unknown_values() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([
        Reply::json(202, status_body("IN_QUEUE", Some(3))),
        Reply::json(
            202,
            json!({"status": "IN_PROGRESS", "request_id": "req-1", "response_url": "u",
                   "logs": [{"message": "step 1", "level": "INFO", "source": "USER", "timestamp": "2025-01-01T00:00:00Z"}]}),
        ),
        Reply::json(
            200,
            json!({"status": "COMPLETED", "request_id": "req-1", "response_url": "u", "logs": [],
                   "metrics": {"inference_time": 2.5}}),
        ),
        Reply::json(200, json!({"status": "FAILED"})),
        Reply::json(201, status_body("IN_QUEUE", Some(1))),
    ]);
    let client = client(config(&fake.url()));
    let queued = client.status(&flux(), "req-1", true).await.expect("queued");
    assert_eq!(
        (queued.status, queued.queue_position),
        (QueueStatus::InQueue, Some(3))
    );
    let running = client
        .status(&flux(), "req-1", true)
        .await
        .expect("running");
    assert_eq!(running.status, QueueStatus::InProgress);
    assert_eq!(running.logs[0].message, "step 1");
    let done = client.status(&flux(), "req-1", true).await.expect("done");
    assert!(done.is_completed());
    assert_eq!(done.inference_time, Some(2.5));
    assert!(matches!(
        client.status(&flux(), "req-1", true).await,
        Err(FalError::Protocol(_))
    ));
    assert!(matches!(
        client.status(&flux(), "req-1", true).await,
        Err(FalError::Permanent { status: 201, .. })
    ));
}

#[tokio::test]
async fn wait_polls_until_completed() {
    let fake = Fake::start(Reply::json(200, status_body("COMPLETED", None))).await;
    fake.script([
        Reply::json(202, status_body("IN_QUEUE", Some(2))),
        Reply::json(202, status_body("IN_QUEUE", Some(2))),
        Reply::json(202, status_body("IN_QUEUE", Some(1))),
        Reply::json(202, status_body("IN_PROGRESS", None)),
    ]);
    let client = client(config(&fake.url()));
    let mut seen = Vec::new();
    let done = client
        .wait(&flux(), "req-1", |s| {
            seen.push((s.status, s.queue_position))
        })
        .await
        .expect("completed");
    assert!(done.is_completed());
    assert_eq!(
        seen,
        [
            (QueueStatus::InQueue, Some(2)),
            (QueueStatus::InQueue, Some(2)),
            (QueueStatus::InQueue, Some(1)),
            (QueueStatus::InProgress, None),
            (QueueStatus::Completed, None),
        ]
    );
    assert_eq!(fake.count(), 5);
}

#[tokio::test]
async fn wait_reports_a_failed_request() {
    let fake = Fake::start(Reply::json(
        200,
        json!({"status": "COMPLETED", "request_id": "req-1", "response_url": "u", "logs": null,
               "error": "CUDA out of memory", "error_type": "runner_server_error"}),
    ))
    .await;
    let client = client(config(&fake.url()));
    let err = client
        .wait(&flux(), "req-1", |_| {})
        .await
        .expect_err("failed");
    assert_eq!(
        err,
        FalError::RequestFailed {
            error: "CUDA out of memory".into(),
            error_type: Some("runner_server_error".into())
        }
    );
}

#[tokio::test]
async fn result_reads_output_or_says_not_ready() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([
        Reply::json(400, json!({"detail": "Request is still in progress"})),
        Reply::json(202, status_body("IN_PROGRESS", None)),
        Reply::json(
            200,
            json!({"image": {"url": "https://v3.fal.media/files/x.png"}}),
        ),
    ]);
    let client = client(config(&fake.url()));
    assert_eq!(
        client.result(&flux(), "req-1").await,
        Err(FalError::NotReady)
    );
    assert_eq!(
        client.result(&flux(), "req-1").await,
        Err(FalError::NotReady)
    );
    let output = client.result(&flux(), "req-1").await.expect("output");
    assert_eq!(output["image"]["url"], "https://v3.fal.media/files/x.png");
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.method == "GET" && c.path == "/fal-ai/flux/requests/req-1")
    );
}

#[tokio::test]
async fn result_falls_back_to_the_response_path() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([
        Reply::text(404, "not here"),
        Reply::json(200, json!({"images": []})),
    ]);
    let client = client(config(&fake.url()));
    let output = client.result(&flux(), "req-1").await.expect("output");
    assert_eq!(output, json!({"images": []}));
    let paths: Vec<String> = fake.calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/fal-ai/flux/requests/req-1",
            "/fal-ai/flux/requests/req-1/response"
        ]
    );
}

#[tokio::test]
async fn result_of_a_request_failed_on_its_input_is_a_validation_error() {
    let fake = Fake::start(Reply::json(
        422,
        json!({"detail": [{"loc": ["body", "image_url"], "msg": "could not download", "type": "file_download_error"}]}),
    ))
    .await;
    let client = client(config(&fake.url()));
    let err = client.result(&flux(), "req-1").await.expect_err("failed");
    assert!(err.is_validation());
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn cancel_reports_each_outcome() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([
        Reply::json(202, json!({"status": "CANCELLATION_REQUESTED"})),
        Reply::json(400, json!({"status": "ALREADY_COMPLETED"})),
        Reply::json(404, json!({"status": "NOT_FOUND"})),
        Reply::json(400, json!({"detail": "bad"})),
    ]);
    let client = client(config(&fake.url()));
    assert_eq!(
        client.cancel(&flux(), "req-1").await,
        Ok(CancelOutcome::Requested)
    );
    assert_eq!(
        client.cancel(&flux(), "req-1").await,
        Ok(CancelOutcome::AlreadyCompleted)
    );
    assert_eq!(
        client.cancel(&flux(), "req-1").await,
        Ok(CancelOutcome::NotFound)
    );
    assert!(matches!(
        client.cancel(&flux(), "req-1").await,
        Err(FalError::Permanent { status: 400, .. })
    ));
    let call = &fake.calls()[0];
    assert_eq!(call.method, "PUT");
    assert_eq!(call.path, "/fal-ai/flux/requests/req-1/cancel");
    assert!(call.body.is_empty());
}

fn event(status: &str, logs: serde_json::Value) -> String {
    let body = json!({"status": status, "request_id": "req-1", "response_url": "u", "logs": logs});
    format!("data: {body}\n\n")
}

#[tokio::test]
async fn status_stream_yields_each_event_until_completed() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    let ms = Duration::from_millis;
    fake.script([Reply::sse(vec![
        (ms(0), event("IN_QUEUE", json!(null))),
        (ms(50), ": keep-alive\n\n".into()),
        (ms(50), event("IN_PROGRESS", json!([{"message": "a"}]))),
        (
            ms(10),
            event("IN_PROGRESS", json!([{"message": "b"}]))[..20].to_owned(),
        ),
        (
            ms(10),
            event("IN_PROGRESS", json!([{"message": "b"}]))[20..].to_owned(),
        ),
        (ms(10), event("COMPLETED", json!([]))),
        (ms(10), event("IN_QUEUE", json!(null))),
    ])]);
    let client = client(config(&fake.url()));
    let items: Vec<_> = client.status_stream(&flux(), "req-1").collect().await;
    let statuses: Vec<(QueueStatus, Vec<String>)> = items
        .into_iter()
        .map(|item| {
            let status = item.expect("event");
            (
                status.status,
                status.logs.into_iter().map(|l| l.message).collect(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (QueueStatus::InQueue, vec![]),
            (QueueStatus::InProgress, vec!["a".to_owned()]),
            (QueueStatus::InProgress, vec!["b".to_owned()]),
            (QueueStatus::Completed, vec![]),
        ]
    );
    let call = &fake.calls()[0];
    assert_eq!(call.path, "/fal-ai/flux/requests/req-1/status/stream");
    assert_eq!(call.query.as_deref(), Some("logs=1"));
    assert_eq!(
        call.headers.get("accept").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
}

#[tokio::test]
async fn keep_alive_comments_keep_the_stream_open() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    let ms = Duration::from_millis;
    // Gaps of 200 ms against a 600 ms idle limit: 800 ms in all, never silent.
    fake.script([Reply::sse(vec![
        (ms(0), event("IN_QUEUE", json!(null))),
        (ms(200), ": ping\n\n".into()),
        (ms(200), ": ping\n\n".into()),
        (ms(200), ": ping\n\n".into()),
        (ms(200), event("COMPLETED", json!([]))),
    ])]);
    let mut config = config(&fake.url());
    config.stream_idle_timeout = Duration::from_millis(600);
    let client = client(config);
    let items: Vec<_> = client.status_stream(&flux(), "req-1").collect().await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_silent_status_stream_is_given_up() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([Reply::sse(vec![
        (Duration::ZERO, event("IN_QUEUE", json!(null))),
        (Duration::from_secs(5), event("COMPLETED", json!([]))),
    ])]);
    let client = client(config(&fake.url()));
    let started = std::time::Instant::now();
    let items: Vec<_> = client.status_stream(&flux(), "req-1").collect().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(
        matches!(&items[1], Err(err) if err.is_transient()),
        "{:?}",
        items[1]
    );
}

#[tokio::test]
async fn a_status_stream_that_ends_early_or_is_refused_is_an_error() {
    let fake = Fake::start(Reply::text(500, "unused")).await;
    fake.script([
        Reply::sse(vec![(Duration::ZERO, event("IN_PROGRESS", json!([])))]),
        Reply::text(404, "no such request"),
        Reply::sse(vec![(
            Duration::ZERO,
            "data: {\"status\":\"WEIRD\"}\n\n".into(),
        )]),
    ]);
    let client = client(config(&fake.url()));
    let items: Vec<_> = client.status_stream(&flux(), "req-1").collect().await;
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[1], Err(FalError::Transient { .. })));

    let items: Vec<_> = client.status_stream(&flux(), "req-1").collect().await;
    assert!(matches!(
        items[..],
        [Err(FalError::Permanent { status: 404, .. })]
    ));

    let items: Vec<_> = client.status_stream(&flux(), "req-1").collect().await;
    assert!(matches!(items[..], [Err(FalError::Protocol(_))]));
}
