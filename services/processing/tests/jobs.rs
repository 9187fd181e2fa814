//! Jobs end to end through the gateway: every catalogue workflow on the fal
//! simulator, cancel, idempotent starts, live events resumed with Last-Event-ID,
//! and isolation between users.

use std::time::{Duration, Instant};

use atelier_testbed::{Backend, Options, QueueBackend, ServiceName, TestPlatform};
use atelier_testkit::{
    backends, fixtures,
    rest::{User, finished, get, post, reached, sign_up, start, start_job, status, upload},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_workflow_runs_end_to_end() {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "runner@example.com").await;
    let image = upload(&platform, &user, fixtures::png(64, 48)).await;
    let workflows: Value = Client::new()
        .get(format!("{}/api/workflows", platform.gateway_url))
        .send()
        .await
        .expect("workflows")
        .json()
        .await
        .expect("json");
    let mut jobs = Vec::new();
    for workflow in workflows["workflows"].as_array().expect("list") {
        let id = workflow["id"].as_str().expect("id");
        let mut parameters = json!({});
        if workflow["parameters_schema"]["required"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            parameters = json!({"prompt": "a watercolour painting"});
        }
        let response = start(
            &platform,
            &user,
            json!({"image_id": image, "workflow_id": id, "parameters": parameters}),
            None,
        )
        .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{id}");
        let started: Value = response.json().await.expect("json");
        jobs.push((
            id.to_owned(),
            started["job_id"].as_str().expect("job").to_owned(),
        ));
    }
    for (workflow, job) in jobs {
        let done = finished(&platform, &user, &job).await;
        assert_eq!(done["status"], "completed", "{workflow}: {done}");
        assert!(done["processing_time_ms"].as_i64().is_some());
        let url = done["result_url"].as_str().expect("result url");
        let result = Client::new().get(url).send().await.expect("result");
        assert_eq!(result.status(), StatusCode::OK, "{workflow}");
        image::load_from_memory(&result.bytes().await.expect("bytes")).expect("a real image");
    }
    assert_eq!(
        platform.fal_sim().submissions(),
        workflows["workflows"].as_array().expect("list").len() as u64,
        "one submission per job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_are_idempotent_and_validated() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "careful@example.com").await;
    let image = upload(&platform, &user, fixtures::png(32, 32)).await;
    let body =
        json!({"image_id": image, "workflow_id": "esrgan-upscale", "parameters": {"scale": 2}});
    let first: Value = start(&platform, &user, body.clone(), Some("key-1"))
        .await
        .json()
        .await
        .expect("json");
    let again = start(&platform, &user, body.clone(), Some("key-1")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["job_id"], again["job_id"], "same key, same job");
    let other = json!({"image_id": image, "workflow_id": "canny-edges", "parameters": {}});
    assert_eq!(
        start(&platform, &user, other, Some("key-1")).await.status(),
        StatusCode::CONFLICT
    );
    finished(&platform, &user, first["job_id"].as_str().expect("job")).await;
    assert_eq!(platform.fal_sim().submissions(), 1);

    let invalid = start(
        &platform,
        &user,
        json!({"image_id": image, "workflow_id": "esrgan-upscale", "parameters": {"scale": 99, "colour": 1}}),
        None,
    )
    .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let invalid: Value = invalid.json().await.expect("problem");
    let mut fields: Vec<_> = invalid["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    fields.sort_by_key(|field| field.to_string());
    assert_eq!(
        fields,
        [json!("parameters.colour"), json!("parameters.scale")]
    );
    let unknown = start(
        &platform,
        &user,
        json!({"image_id": image, "workflow_id": "nope"}),
        None,
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad_priority = start(
        &platform,
        &user,
        json!({"image_id": image, "workflow_id": "lineart", "priority": "urgent"}),
        None,
    )
    .await;
    assert_eq!(bad_priority.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_jobs_and_images_are_not_found() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let alice = sign_up(&platform, "alice@example.com").await;
    let bob = sign_up(&platform, "bob@example.com").await;
    let image = upload(&platform, &alice, fixtures::png(16, 16)).await;
    let body = json!({"image_id": image, "workflow_id": "lineart"});
    assert_eq!(
        start(&platform, &bob, body.clone(), None).await.status(),
        StatusCode::NOT_FOUND,
        "bob cannot use alice's image"
    );
    let job: Value = start(&platform, &alice, body, None)
        .await
        .json()
        .await
        .expect("json");
    let job = job["job_id"].as_str().expect("job").to_owned();
    assert_eq!(status(&platform, &bob, &job).await.0, StatusCode::NOT_FOUND);
    let base = &platform.gateway_url;
    for (method, path) in [
        (
            reqwest::Method::POST,
            format!("{base}/api/processing/{job}/cancel"),
        ),
        (
            reqwest::Method::GET,
            format!("{base}/api/processing/{job}/events"),
        ),
    ] {
        let response = Client::new()
            .request(method, &path)
            .bearer_auth(&bob.token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let listed: Value = Client::new()
        .get(format!("{base}/api/processing/jobs"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(listed["jobs"].as_array().expect("jobs").is_empty());
    let mine: Value = Client::new()
        .get(format!("{base}/api/processing/jobs"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(mine["jobs"][0]["job_id"], job.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_in_the_queue_and_at_fal_and_not_after() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "changed-mind@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    // Requests at fal never finish: the job sits at fal until cancelled.
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        hang: true,
        ..Default::default()
    });
    let job = start_job(&platform, &user, &image, "lineart", json!({})).await;
    reached(&platform, &user, &job, &["submitted", "processing"]).await;
    let cancel = |job: String| {
        Client::new()
            .post(format!(
                "{}/api/processing/{job}/cancel",
                platform.gateway_url
            ))
            .bearer_auth(&user.token)
            .send()
    };
    let cancelled = cancel(job.clone()).await.expect("cancel");
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    assert_eq!(
        finished(&platform, &user, &job).await["status"],
        "cancelled"
    );
    // A cancel that lands while the submission is in flight reaches fal as soon
    // as fal's answer does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while platform.fal_sim().cancellations() < 1 {
        assert!(Instant::now() < deadline, "never cancelled at fal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        platform.fal_sim().cancellations(),
        1,
        "cancelled at fal once"
    );
    assert_eq!(
        cancel(job).await.expect("cancel").status(),
        StatusCode::CONFLICT,
        "already final"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_events_resume_with_last_event_id() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "watcher@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    let job: Value = start(
        &platform,
        &user,
        json!({"image_id": image, "workflow_id": "depth-map"}),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    let job = job["job_id"].as_str().expect("job").to_owned();
    let read = |after: Option<i64>| {
        let mut request = Client::new()
            .get(format!(
                "{}/api/processing/{job}/events",
                platform.gateway_url
            ))
            .bearer_auth(&user.token);
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        async move {
            let response = request.send().await.expect("events");
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .expect("type")
                    .starts_with("text/event-stream")
            );
            let text = tokio::time::timeout(Duration::from_secs(30), response.text())
                .await
                .expect("stream ends")
                .expect("text");
            text.lines()
                .filter_map(|line| line.strip_prefix("id:"))
                .map(|id| id.trim().parse::<i64>().expect("seq"))
                .collect::<Vec<_>>()
        }
    };
    let all = read(None).await;
    assert!(
        all.len() >= 4,
        "created, queued, submitted, ..., completed: {all:?}"
    );
    assert_eq!(
        all,
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "no gaps, in order"
    );
    let resumed = read(Some(2)).await;
    assert_eq!(resumed, all[2..], "resumes right after the last event seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_add_up_and_retry_only_their_failures() {
    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let user = sign_up(&platform, "batcher@example.com").await;
    let mut images = Vec::new();
    for size in [8, 12, 16] {
        images.push(upload(&platform, &user, fixtures::png(size, size)).await);
    }
    // Every request fails at fal first.
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        error_rate: 1.0,
        error_type: Some("bad_request".into()),
        ..Default::default()
    });
    let base = &platform.gateway_url;
    let started = Client::new()
        .post(format!("{base}/api/processing/batch"))
        .bearer_auth(&user.token)
        .json(&json!({"image_ids": images, "workflow_id": "canny-edges"}))
        .send()
        .await
        .expect("batch");
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let started: Value = started.json().await.expect("json");
    let batch = started["batch_id"].as_str().expect("batch").to_owned();
    assert_eq!(started["total"], 3);
    let get = || async {
        Client::new()
            .get(format!("{base}/api/processing/batch/{batch}"))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("get")
            .json::<Value>()
            .await
            .expect("json")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let state = get().await;
        if state["status"] != "running" {
            break state;
        }
        assert!(Instant::now() < deadline, "batch never finished: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["status"], "completed_with_failures", "{failed}");
    assert_eq!(failed["failed"], 3);
    assert_eq!(failed["progress"], 1.0);

    platform
        .fal_sim()
        .set_failures(atelier_fal_sim::Failures::default());
    let retried = Client::new()
        .post(format!("{base}/api/processing/batch/{batch}/retry"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("retry");
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = get().await;
        if state["status"] == "completed" {
            assert_eq!(state["completed"], 3);
            assert_eq!(state["job_ids"].as_array().expect("ids").len(), 3);
            break;
        }
        assert!(Instant::now() < deadline, "retry never finished: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A completed job is not retried.
    let job = started["job_ids"][0].as_str().expect("job");
    let again = Client::new()
        .post(format!("{base}/api/processing/{job}/retry"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("retry");
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_websocket_follows_several_jobs_and_only_yours() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "sockets@example.com").await;
    let other = sign_up(&platform, "other@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    let theirs = upload(&platform, &other, fixtures::png(16, 16)).await;
    let mut jobs = Vec::new();
    for workflow in ["lineart", "depth-map"] {
        let job: Value = start(
            &platform,
            &user,
            json!({"image_id": image, "workflow_id": workflow}),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
        jobs.push(job["job_id"].as_str().expect("job").to_owned());
    }
    let foreign: Value = start(
        &platform,
        &other,
        json!({"image_id": theirs, "workflow_id": "lineart"}),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    let foreign = foreign["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{foreign}"))
        .to_owned();

    let url = format!(
        "{}/api/ws?access_token={}",
        platform.gateway_url.replace("http://", "ws://"),
        user.token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let subscribe = json!({"subscribe": [jobs[0], jobs[1], foreign]});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .expect("send");
    let mut completed = std::collections::HashSet::new();
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed.len() < 2 || !refused {
        let message = tokio::time::timeout_at(deadline.into(), socket.next())
            .await
            .expect("events in time")
            .expect("open")
            .expect("message");
        let Message::Text(text) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(&text).expect("json");
        match event["type"].as_str() {
            Some("event") => {
                assert_ne!(
                    event["job_id"],
                    foreign.as_str(),
                    "never another user's events"
                );
                if event["status"] == "completed" {
                    completed.insert(event["job_id"].as_str().expect("id").to_owned());
                }
            }
            Some("error") => {
                assert_eq!(event["job_id"], foreign.as_str());
                assert_eq!(event["status"], 404);
                refused = true;
            }
            other => panic!("unexpected message {other:?}: {event}"),
        }
    }
    let anonymous = tokio_tungstenite::connect_async(format!(
        "{}/api/ws",
        platform.gateway_url.replace("http://", "ws://")
    ))
    .await;
    assert!(anonymous.is_err(), "no token, no socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unanswered_submission_is_never_sent_twice() {
    let mut options = Options::new(Backend::Sqlite);
    options.fal_http_timeout = Duration::from_millis(500);
    let platform = TestPlatform::spawn_with(options).await;
    // fal accepts the request but answers after the client gave up.
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        submit_delay: Duration::from_secs(2),
        ..Default::default()
    });
    let user = sign_up(&platform, "patient@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    let job: Value = start(
        &platform,
        &user,
        json!({"image_id": image, "workflow_id": "lineart"}),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    let done = finished(&platform, &user, job["job_id"].as_str().expect("job")).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "submission_unknown");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        platform.fal_sim().submissions(),
        1,
        "submitted once, never again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_the_queue_gave_up_on_fails_instead_of_coming_back() {
    use atelier_queue::Queue;

    let mut options = Options::new(Backend::Sqlite);
    options.queue = QueueBackend::Redis;
    let platform = TestPlatform::spawn_with(options).await;
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        hang: true,
        ..Default::default()
    });
    let user = sign_up(&platform, "unlucky@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    let job = start_job(&platform, &user, &image, "lineart", json!({})).await;
    reached(&platform, &user, &job, &["submitted", "processing"]).await;
    // Another worker of the same queue, whose visibility timeout has long passed
    // and which allows a single attempt: as if the job's worker had died on its
    // last attempt, the queue dead-letters it.
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = atelier_common::redis::Redis::connect(&url, platform.platform.redis_prefix.clone())
        .await
        .expect("redis");
    let config = atelier_queue::QueueConfig {
        max_attempts: 1,
        visibility_timeout: Duration::from_millis(1),
        ..Default::default()
    };
    let queue = atelier_queue::RedisQueue::new(redis, config, std::sync::Arc::new(|_| 100))
        .await
        .expect("queue");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        queue
            .next("intruder", Duration::from_millis(300))
            .await
            .expect("next")
            .is_none()
    );
    assert_eq!(queue.dead_letters(10).await.expect("dead letters").len(), 1);

    let done = finished(&platform, &user, &job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "attempts_exhausted");
}

/// Jobs recorded before input file names were kept are given theirs from the
/// image service, and history search finds them by it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn older_jobs_are_backfilled_with_their_input_file_name() {
    use atelier_processing::{peers::GrpcPeers, store::jobs};
    use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let user = sign_up(&platform, "archivist@example.com").await;
    let part = reqwest::multipart::Part::bytes(fixtures::png(16, 16)).file_name("DSC_0815.png");
    let uploaded: Value = Client::new()
        .post(format!("{}/api/images/upload", platform.gateway_url))
        .bearer_auth(&user.token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("image");
    let image = uploaded["id"].as_str().expect("id").to_owned();
    let job = start_job(&platform, &user, &image, "canny-edges", json!({})).await;
    finished(&platform, &user, &job).await;

    // Make the row look as it did before the migration.
    let db = atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("processing db");
    let id: uuid::Uuid = job.parse().expect("job id");
    jobs::Entity::update_many()
        .set(jobs::ActiveModel {
            input_filename: Set(None),
            search_text: Set("Edge map (Canny) canny-edges".to_owned()),
            ..Default::default()
        })
        .filter(jobs::Column::Id.eq(id))
        .exec(&db)
        .await
        .expect("age the row");
    let search = |q: &'static str| {
        let platform = &platform;
        let user = &user;
        async move {
            let (status, reply) = get(platform, user, format!("/api/users/history?q={q}")).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            reply["items"].as_array().expect("items").len()
        }
    };
    assert_eq!(search("DSC_0815").await, 0, "not searchable by name before");

    let limit: atelier_queue::UserLimit = std::sync::Arc::new(|_| 4);
    let peers = GrpcPeers::new(
        platform.channel_as(ServiceName::Processing, &platform.image_url),
        platform.channel_as(ServiceName::Processing, &platform.workflow_url),
        platform.channel_as(ServiceName::Processing, &platform.user_url),
    );
    let backfill = atelier_processing::Jobs::new(
        atelier_processing::store::Store::new(db.clone()),
        std::sync::Arc::new(atelier_queue::MemoryQueue::new(
            atelier_queue::QueueConfig::default(),
            limit,
        )),
        atelier_processing::events::Bus::local(),
        std::sync::Arc::new(atelier_common::SystemClock),
        atelier_processing::domain::Peers {
            images: peers.clone(),
            workflows: peers.clone(),
        },
        atelier_processing::domain::Quotas::new(peers),
        atelier_fal::FalClient::new(atelier_fal::FalConfig::new("unused")).expect("fal client"),
    );
    assert_eq!(backfill.backfill_search().await.expect("backfill"), 1);
    assert_eq!(
        backfill.backfill_search().await.expect("again"),
        0,
        "done once"
    );
    let row = jobs::Entity::find_by_id(id)
        .one(&db)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.input_filename.as_deref(), Some("DSC_0815.png"));
    assert_eq!(search("DSC_0815").await, 1);
    assert_eq!(search("0815").await, 1);
}

/// Starts `count` jobs at once; the ids of those accepted and the limits named by
/// those refused (every refusal must be a quota refusal).
async fn start_many(
    platform: &TestPlatform,
    user: &User,
    image: &str,
    count: usize,
) -> (Vec<String>, Vec<String>) {
    let body = json!({"image_id": image, "workflow_id": "canny-edges"});
    let answers = futures::future::join_all(
        (0..count).map(|_| post(platform, user, "/api/processing/start", body.clone())),
    )
    .await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (status, body) in answers {
        match status {
            StatusCode::ACCEPTED => accepted.push(body["job_id"].as_str().expect("id").to_owned()),
            StatusCode::TOO_MANY_REQUESTS => {
                refused.push(body["limit"].as_str().expect("limit").to_owned());
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    (accepted, refused)
}

/// How many jobs the processing service holds for `user`.
async fn jobs_of(platform: &TestPlatform, user: &User) -> u64 {
    use atelier_processing::store::jobs;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let db = atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("processing db");
    let user_id: uuid::Uuid = user.id.parse().expect("user id");
    jobs::Entity::find()
        .filter(jobs::Column::UserId.eq(user_id))
        .count(&db)
        .await
        .expect("count")
}

/// Quotas are reserved atomically: concurrent starts never pass the limit of
/// unfinished jobs or the daily limit, retries count as runs, and a batch that
/// would cross a limit starts nothing.
async fn quotas_hold_under_concurrency_for_starts_retries_and_batches(backend: Backend) {
    let mut options = Options::new(backend);
    let free = options.tiers.get_mut(atelier_user::Tier::Free);
    free.concurrent_jobs = Some(5);
    free.jobs_per_day = Some(8);
    let platform = TestPlatform::spawn_with(options).await;
    // Jobs stay unfinished until they are cancelled.
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        hang: true,
        ..Default::default()
    });
    let user = sign_up(&platform, "eager@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;

    let (first, refused) = start_many(&platform, &user, &image, 30).await;
    assert_eq!(first.len(), 5, "30 starts at once, 5 may run: {refused:?}");
    assert!(
        refused.iter().all(|limit| limit == "concurrent_jobs"),
        "{refused:?}"
    );
    for job in &first {
        let (status, body) = post(
            &platform,
            &user,
            format!("/api/processing/{job}/cancel"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (second, refused) = start_many(&platform, &user, &image, 30).await;
    assert_eq!(second.len(), 3, "8 a day, 5 used: {refused:?}");
    assert!(
        refused.iter().all(|limit| limit == "jobs_per_day"),
        "{refused:?}"
    );
    assert_eq!(jobs_of(&platform, &user).await, 8);

    // The daily limit is reached: retries are new runs and are refused too.
    let retries = futures::future::join_all(first.iter().chain(&first).chain(&first).map(|job| {
        post(
            &platform,
            &user,
            format!("/api/processing/{job}/retry"),
            json!({}),
        )
    }))
    .await;
    for (status, body) in &retries {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["limit"], "jobs_per_day", "{body}");
    }
    for job in &first {
        let (_, body) = status(&platform, &user, job).await;
        assert_eq!(
            body["status"], "cancelled",
            "a refused retry changes nothing"
        );
    }
    let (_, profile) = get(&platform, &user, "/api/users/profile").await;
    assert_eq!(profile["usage"]["jobs_today"], 8, "{profile}");

    // A new day: retries count against the limit of unfinished jobs like starts
    // (3 hang), all at once and all or none.
    platform
        .user_clock
        .advance(Duration::from_secs(24 * 60 * 60));
    let retries = futures::future::join_all(first.iter().map(|job| {
        post(
            &platform,
            &user,
            format!("/api/processing/{job}/retry"),
            json!({}),
        )
    }))
    .await;
    let accepted = retries
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 2, "5 unfinished at most, 3 hang: {retries:?}");

    // A batch that would cross the limit starts nothing, and says which limit.
    let other = upload(&platform, &user, fixtures::png(12, 12)).await;
    let (status, problem) = post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [image, other], "workflow_id": "canny-edges"}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["limit"], "concurrent_jobs", "{problem}");
    assert_eq!(
        (
            problem["allowed"].as_i64(),
            problem["used"].as_i64(),
            problem["requested"].as_i64()
        ),
        (Some(5), Some(5), Some(2))
    );
    assert_eq!(
        jobs_of(&platform, &user).await,
        8,
        "no job of the batch was recorded"
    );

    // An upgrade applies at once, though the free plan's limits were just seen.
    atelier_proto::user::v1::user_service_client::UserServiceClient::new(
        platform.channel_as(ServiceName::Operator, &platform.user_url),
    )
    .set_subscription_tier(atelier_proto::user::v1::SetSubscriptionTierRequest {
        user_id: user.id.clone(),
        tier: atelier_proto::user::v1::SubscriptionTier::Pro as i32,
    })
    .await
    .expect("upgrade");
    let (upgraded, refused) = start_many(&platform, &user, &image, 1).await;
    assert_eq!(upgraded.len(), 1, "the pro plan admits it: {refused:?}");
}

backends!(quotas_hold_under_concurrency_for_starts_retries_and_batches);

/// `priority: high` is refused, naming the field, for a tier that does not allow
/// it, for single jobs and batches alike; the profile says what the tier allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_is_only_for_the_tiers_that_allow_it() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .tiers
        .get_mut(atelier_user::Tier::Free)
        .high_priority = false;
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "hasty@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;

    let (_, profile) = get(&platform, &user, "/api/users/profile").await;
    assert_eq!(profile["limits"]["high_priority"], false, "{profile}");
    for (path, body) in [
        (
            "/api/processing/start",
            json!({"image_id": image, "workflow_id": "canny-edges", "priority": "high"}),
        ),
        (
            "/api/processing/batch",
            json!({"image_ids": [image], "workflow_id": "canny-edges", "priority": "high"}),
        ),
    ] {
        let (status, problem) = post(&platform, &user, path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "priority", "{problem}");
        assert!(
            problem["errors"][0]["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("free plan")),
            "{problem}"
        );
    }
    assert_eq!(jobs_of(&platform, &user).await, 0);
    let (status, body) = post(
        &platform,
        &user,
        "/api/processing/start",
        json!({"image_id": image, "workflow_id": "canny-edges", "priority": "low"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}
