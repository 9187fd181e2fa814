//! The processing pipeline when things go wrong, against real PostgreSQL, real Redis
//! (a key prefix of each test's own) and the fal simulator:
//! - Redis loses every key of the queue mid-run: the reconciler puts every unfinished
//!   job back, and all of them complete, each submitted to fal once;
//! - fal is down for a while: the circuit breaker opens, jobs wait (none fails), all
//!   complete once fal is back, and the calls that reached fal during the outage stay
//!   within what the breaker lets through;
//! - a fal webhook delivered again (a replay of the very bytes fal signed) changes
//!   nothing: one completion, one result image;
//! - a fal webhook signed for another fal account than the platform's is refused;
//! - with one worker, high-priority jobs started after low ones run first.
//!
//! The crash test (a real process kill) lives in `services/atelier/tests/crash.rs`,
//! where the `atelier` binary is at hand.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use atelier_common::redis::Redis;
use atelier_fal_sim::{Failures, Timing};
use atelier_proto::processing::v1::{
    HandleFalWebhookRequest, WebhookOutcome, processing_service_client::ProcessingServiceClient,
};
use atelier_testbed::{Backend, Options, QueueBackend, ServiceName, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{self, User, sign_up},
};
use fred::{prelude::*, types::CustomCommand};
use reqwest::{Client, StatusCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// Helpers

/// Starts `lineart` (a cheap workflow) on `image`; returns the job id.
async fn start(platform: &TestPlatform, user: &User, image: &str, priority: &str) -> String {
    let response = Client::new()
        .post(format!("{}/api/processing/start", platform.gateway_url))
        .bearer_auth(&user.token)
        .json(&json!({"image_id": image, "workflow_id": "lineart", "priority": priority}))
        .send()
        .await
        .expect("start");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await.expect("json");
    started["job_id"].as_str().expect("job id").to_owned()
}

async fn statuses(platform: &TestPlatform, user: &User, jobs: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (code, status) = rest::status(platform, user, job).await;
        assert_eq!(code, StatusCode::OK, "{status}");
        out.push(status);
    }
    out
}

fn count(statuses: &[Value], wanted: &[&str]) -> usize {
    statuses
        .iter()
        .filter(|s| s["status"].as_str().is_some_and(|s| wanted.contains(&s)))
        .count()
}

/// Waits until every job completed; fails at once if one failed or was cancelled.
async fn all_completed(
    platform: &TestPlatform,
    user: &User,
    jobs: &[String],
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let now = statuses(platform, user, jobs).await;
        assert_eq!(count(&now, &["failed", "cancelled"]), 0, "{now:#?}");
        if count(&now, &["completed"]) == jobs.len() {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "not every job completed: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until jobs sit at fal (`submitted`/`processing`) and their number has not
/// moved for half a second (no submission under way); returns how many.
async fn settled_at_fal(
    platform: &TestPlatform,
    user: &User,
    jobs: &[String],
    least: usize,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stable = (usize::MAX, Instant::now());
    loop {
        let now = statuses(platform, user, jobs).await;
        assert_eq!(count(&now, &["failed", "cancelled"]), 0, "{now:#?}");
        let at_fal = count(&now, &["submitted", "processing"]);
        if at_fal != stable.0 {
            stable = (at_fal, Instant::now());
        } else if at_fal >= least && stable.1.elapsed() > Duration::from_millis(500) {
            return at_fal;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never reached fal: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The user's result images.
async fn result_images(platform: &TestPlatform, user: &User) -> Vec<Value> {
    let images: Value = Client::new()
        .get(format!("{}/api/images?page_size=100", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("images")
        .json()
        .await
        .expect("json");
    images["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|image| image["kind"] == "result")
        .cloned()
        .collect()
}

/// The processing schema of the platform's PostgreSQL database: the truth the tests
/// check against.
async fn processing_db(platform: &TestPlatform) -> DatabaseConnection {
    atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("processing database")
}

/// How many `status_changed` events of `job` say `status` (all of them with `None`).
async fn status_events(db: &DatabaseConnection, job: &str, status: Option<&str>) -> i64 {
    let job = uuid::Uuid::parse_str(job).expect("job id");
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT count(*)::bigint AS n FROM job_events \
             WHERE job_id = $1 AND kind = 'status_changed' \
             AND ($2::text IS NULL OR data->>'status' = $2::text)",
            [job.into(), status.map(str::to_owned).into()],
        ))
        .await
        .expect("count events")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

/// The fal request id stored for `job`, if any.
async fn fal_request_id(db: &DatabaseConnection, job: &str) -> Option<String> {
    let job = uuid::Uuid::parse_str(job).expect("job id");
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT fal_request_id FROM processing_jobs WHERE id = $1",
            [job.into()],
        ))
        .await
        .expect("read the job")
        .expect("the job exists");
    row.try_get::<Option<String>>("", "fal_request_id")
        .expect("fal_request_id")
}

async fn redis(platform: &TestPlatform) -> Redis {
    let url = platform
        .platform
        .redis_url
        .as_ref()
        .expect("the platform runs on Redis");
    Redis::connect(url.expose(), platform.platform.redis_prefix.clone())
        .await
        .expect("redis")
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false)
}

/// The queue's job index (libs/queue/src/redis.rs): job id → where it is.
fn jobs_key(redis: &Redis) -> String {
    redis.key("{queue}:jobs")
}

/// Deletes every key under the test's prefix: this test's `FLUSHALL`. Not `FLUSHALL`
/// itself: the Redis server is shared with every other test running at the same time
/// (each under a prefix of its own), and wiping it would break them. To the platform
/// under test the effect is the same as a Redis that restarted empty: none of its keys
/// (queue lines, consumer groups, the job index, parked and delayed jobs, the running
/// counts, the token bucket) is left.
async fn delete_every_key(redis: &Redis, prefix: &str) -> usize {
    let pattern: String = prefix
        .chars()
        .flat_map(|c| {
            let escape = matches!(c, '*' | '?' | '[' | ']' | '\\');
            escape.then_some('\\').into_iter().chain([c])
        })
        .chain(['*'])
        .collect();
    let mut cursor = "0".to_owned();
    let mut deleted = 0;
    loop {
        let reply: fred::types::Value = redis
            .client
            .custom(
                command("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.clone(),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .expect("SCAN");
        let fred::types::Value::Array(parts) = reply else {
            panic!("SCAN answered {reply:?}");
        };
        cursor = parts[0].as_string().expect("cursor");
        let keys: Vec<String> = match &parts[1] {
            fred::types::Value::Array(keys) => keys.iter().filter_map(|k| k.as_string()).collect(),
            _ => Vec::new(),
        };
        for key in keys {
            let removed: i64 = redis.client.del(key).await.expect("DEL");
            deleted += removed as usize;
        }
        if cursor == "0" {
            return deleted;
        }
    }
}

/// Sums the samples of `metric` in the process's Prometheus registry (the platform runs
/// in this process) whose labels include every one of `labels`.
fn metric_sum(metric: &str, labels: &[(&str, &str)]) -> f64 {
    let rendered = atelier_common::telemetry::metrics().render();
    rendered
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .fold(0.0, |sum, value| sum + value)
}

// ---------------------------------------------------------------------------------------
// Redis emptied mid-run

/// Jobs queued and at fal while fal hangs; every key of the platform's Redis goes; the
/// reconciler (every second) puts each unfinished job back in the queue; fal recovers
/// and every job completes, each submitted once, each with one completion and one
/// result image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_emptied_mid_run_the_reconciler_restores_every_unfinished_job() {
    const JOBS: usize = 6;
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.reconcile_every = Duration::from_secs(1);
    let platform = TestPlatform::spawn_with(options).await;
    let sim = platform.fal_sim();
    // Requests at fal run, but never complete until `hang` is lifted.
    sim.set_failures(Failures {
        hang: true,
        ..Default::default()
    });
    let user = sign_up(&platform, "flushed@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(48, 32)).await;
    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        jobs.push(start(&platform, &user, &image, "normal").await);
    }
    // Some at fal (as many as the user's concurrency cap allows), the rest queued.
    let at_fal = settled_at_fal(&platform, &user, &jobs, 1).await;
    let before = statuses(&platform, &user, &jobs).await;
    let queued = count(&before, &["queued"]);
    assert_eq!(at_fal + queued, JOBS, "{before:#?}");
    assert!(queued > 0, "some jobs still wait in the queue: {before:#?}");

    let redis = redis(&platform).await;
    let index = jobs_key(&redis);
    for job in &jobs {
        let held: bool = redis.client.hexists(&index, job).await.expect("HEXISTS");
        assert!(held, "{job} is in the queue before the loss");
    }
    let deleted = delete_every_key(&redis, &platform.platform.redis_prefix).await;
    let lost_at = Instant::now();
    println!("deleted {deleted} keys: {at_fal} jobs at fal, {queued} queued");
    assert!(deleted >= 3, "the queue's keys were there to delete");

    // The reconciler puts every unfinished job back.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut missing = Vec::new();
        for job in &jobs {
            let held: bool = redis.client.hexists(&index, job).await.expect("HEXISTS");
            if !held {
                missing.push(job.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never restored to the queue: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "every unfinished job back in the queue {:.1} s after the loss",
        lost_at.elapsed().as_secs_f64()
    );
    let meanwhile = statuses(&platform, &user, &jobs).await;
    assert_eq!(count(&meanwhile, &["failed", "cancelled", "completed"]), 0);

    // fal recovers: everything completes.
    sim.set_failures(Failures::default());
    let done = all_completed(&platform, &user, &jobs, Duration::from_secs(45)).await;
    assert_eq!(
        sim.submissions(),
        JOBS as u64,
        "each job submitted once: the jobs at fal were resumed, not submitted again"
    );
    let db = processing_db(&platform).await;
    for job in &jobs {
        assert_eq!(
            status_events(&db, job, Some("completed")).await,
            1,
            "{job} completed once"
        );
    }
    assert!(done.iter().all(|job| job["result_image_id"].is_string()));
    assert_eq!(result_images(&platform, &user).await.len(), JOBS);
    // Nothing stays behind in the queue once the duplicates settle.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 = redis.client.hlen(&index).await.expect("HLEN");
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} jobs left in the queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// fal outage

/// Failures in a row that open the breaker.
const THRESHOLD: u32 = 3;
/// Probes let through at once while half-open (libs/fal's default).
const PROBES: u32 = 2;
/// How long the breaker stays open before probing.
const OPEN_FOR: Duration = Duration::from_secs(1);
/// How long fal is down.
const OUTAGE: Duration = Duration::from_secs(4);
/// Workers of the processing service: at most this many fal calls at once.
const WORKERS: usize = 4;

/// fal answers 503 to everything for a few seconds. Jobs at fal before and jobs
/// started during the outage wait (none is marked failed, none is submitted while
/// fal is down), the breaker opens, and every job completes after fal recovers.
///
/// The bound on the calls that reach fal during the outage: every HTTP attempt
/// (retries included: libs/fal guards each attempt, not each call, so a retry of an
/// open breaker is rejected without a network call) must be admitted by the breaker.
/// - Closed: it opens at the `THRESHOLD`-th failure in a row; calls already admitted
///   by then still reach fal, at most one per other worker: `THRESHOLD + WORKERS − 1`.
/// - Open: nothing reaches fal for `OPEN_FOR`; then half-open admits at most `PROBES`
///   at once, and their failure opens it again. That is at most `PROBES` calls per
///   `OPEN_FOR` of outage: `PROBES × ⌈OUTAGE / OPEN_FOR⌉`.
///
/// With 3 / 4 workers / 2 probes / 1 s / 4 s: at most 3 + 3 + 2 × 4 = 14 calls. Without
/// the breaker the same jobs would keep calling for the whole outage (four workers,
/// each retrying 3 times per call at 0.2, 0.4, 0.8 s, then again on redelivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fal_outage_jobs_wait_the_breaker_opens_and_all_complete() {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.worker_concurrency = WORKERS;
    options.fal_breaker = atelier_fal::BreakerConfig {
        consecutive_failures: THRESHOLD,
        open_duration: OPEN_FOR,
        half_open_max_probes: PROBES,
        ..Default::default()
    };
    options.fal_retry = atelier_fal::RetryConfig {
        base: Duration::from_millis(200),
        ..Default::default()
    };
    let platform = TestPlatform::spawn_with(options).await;
    let sim = platform.fal_sim();
    sim.set_timing(Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::from_millis(3000),
    });
    let host = sim.local_addr().to_string();
    let calls = |outcome: &'static str| {
        metric_sum(
            "atelier_fal_requests_total",
            &[("host", &host), ("outcome", outcome)],
        )
    };
    let user = sign_up(&platform, "patient@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(48, 32)).await;

    // Two jobs at fal when the outage starts.
    let mut jobs = vec![
        start(&platform, &user, &image, "normal").await,
        start(&platform, &user, &image, "normal").await,
    ];
    settled_at_fal(&platform, &user, &jobs, 2).await;
    assert_eq!(calls("transient"), 0.0, "no failure before the outage");
    let submitted_before = sim.submissions();

    let outage_started = Instant::now();
    sim.set_failures(Failures {
        outage_until: Some(Instant::now() + OUTAGE),
        ..Default::default()
    });
    // Three more started while fal is down.
    for _ in 0..3 {
        jobs.push(start(&platform, &user, &image, "normal").await);
    }
    let late = jobs[2..].to_vec();
    let db = processing_db(&platform).await;
    let mut breaker_opened = false;
    while outage_started.elapsed() < OUTAGE {
        let now = statuses(&platform, &user, &jobs).await;
        assert_eq!(
            count(&now, &["failed", "cancelled"]),
            0,
            "nothing fails during an outage: {now:#?}"
        );
        // They wait: none has reached fal (a worker may hold one for a submission
        // attempt that fails, but none gets a fal request).
        for job in &late {
            assert_eq!(
                fal_request_id(&db, job).await,
                None,
                "{job} has no fal request while fal is down"
            );
        }
        breaker_opened |= metric_sum("atelier_fal_breaker_state", &[("host", &host)]) == 2.0;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sim.submissions(),
        submitted_before,
        "nothing submitted while fal was down"
    );
    assert!(breaker_opened, "the circuit breaker opened");

    let done = all_completed(&platform, &user, &jobs, Duration::from_secs(45)).await;
    let recovered_in = outage_started.elapsed().saturating_sub(OUTAGE);
    // Only the outage fails calls, so every transient failure is a call fal received
    // while it was down (one per HTTP attempt; see `atelier_fal_requests_total`).
    let during_outage = calls("transient");
    let rejected = calls("rejected");
    let by_operation: Vec<String> = ["submit", "status", "result", "download"]
        .iter()
        .map(|operation| {
            let n = metric_sum(
                "atelier_fal_requests_total",
                &[
                    ("host", &host),
                    ("operation", operation),
                    ("outcome", "transient"),
                ],
            );
            format!("{operation} {n}")
        })
        .collect();
    let windows = OUTAGE.as_millis().div_ceil(OPEN_FOR.as_millis()) as u32;
    let bound = THRESHOLD + (WORKERS as u32 - 1) + PROBES * windows;
    println!(
        "outage {OUTAGE:?}: {during_outage} calls reached fal (bound {bound}; {}), \
         {rejected} rejected by the open breaker without a call; \
         all {} jobs completed {:.1} s after fal came back",
        by_operation.join(", "),
        jobs.len(),
        recovered_in.as_secs_f64()
    );
    assert!(during_outage >= f64::from(THRESHOLD), "the outage was felt");
    assert!(
        during_outage <= f64::from(bound),
        "{during_outage} calls reached fal during the outage, more than {bound}"
    );
    assert!(rejected > 0.0, "the open breaker turned calls away");
    assert_eq!(
        sim.submissions(),
        jobs.len() as u64,
        "each job submitted once"
    );
    assert!(done.iter().all(|job| job["error"].is_null()), "{done:#?}");
}

// ---------------------------------------------------------------------------------------
// Webhook replay

/// A webhook as fal sent it: the signature headers and the raw body.
#[derive(Clone, Debug)]
struct Captured {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What the gateway answered when it was handed on.
    forwarded: u16,
    /// When it was handed on, and when the gateway answered.
    handed_on: (time::OffsetDateTime, time::OffsetDateTime),
}

/// A stand-in for the platform's public address: takes fal's webhook POSTs, records
/// them byte for byte, and hands each on to `<gateway>/api/fal/webhook` as a load
/// balancer would, answering with the gateway's status.
async fn webhook_relay(gateway: Arc<OnceLock<String>>, seen: Arc<Mutex<Vec<Captured>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let gateway = gateway.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
                let headers: Vec<(String, String)> = head
                    .lines()
                    .skip(1)
                    .filter_map(|line| line.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buffer.len() < head_end + length {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = buffer[head_end..head_end + length].to_vec();
                let headers: Vec<(String, String)> = headers
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("x-fal-webhook-") || k == "content-type")
                    .collect();
                let target = gateway.get().cloned().unwrap_or_default();
                let sent = time::OffsetDateTime::now_utc();
                let forwarded = post_webhook(&target, &headers, body.clone()).await;
                let answered = time::OffsetDateTime::now_utc();
                seen.lock().expect("lock").push(Captured {
                    headers,
                    body,
                    forwarded,
                    handed_on: (sent, answered),
                });
                let reply = format!(
                    "HTTP/1.1 {forwarded} Relayed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

async fn post_webhook(gateway: &str, headers: &[(String, String)], body: Vec<u8>) -> u16 {
    let mut request = Client::new()
        .post(format!("{gateway}/api/fal/webhook"))
        .body(body);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request
        .send()
        .await
        .expect("webhook post")
        .status()
        .as_u16()
}

/// The simulator's own signed webhook reaches the platform (through a relay that keeps
/// a copy); the very same bytes are then POSTed again, twice, to `/api/fal/webhook`:
/// each is accepted (200, so fal would stop redelivering) and none changes anything:
/// the job completed once, has one result image, the same result id, and the
/// processing service calls the replay a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_webhook_is_handled_once() {
    let gateway = Arc::new(OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::<Captured>::new()));
    let relay = webhook_relay(gateway.clone(), seen.clone()).await;
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.processing_public_url = Some(relay);
    let platform = TestPlatform::spawn_with(options).await;
    gateway.set(platform.gateway_url.clone()).expect("set once");
    let sim = platform.fal_sim();
    sim.set_timing(Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::from_millis(1000),
    });
    let user = sign_up(&platform, "hooked@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(48, 32)).await;
    let job = start(&platform, &user, &image, "normal").await;
    let jobs = [job.clone()];
    let done = all_completed(&platform, &user, &jobs, Duration::from_secs(30)).await;
    let result_id = done[0]["result_image_id"]
        .as_str()
        .expect("result")
        .to_owned();

    // fal's delivery, as it came in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        if let Some(first) = seen.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "the simulator sent no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivery.forwarded, 200, "the first delivery was accepted");
    let body: Value = serde_json::from_slice(&delivery.body).expect("json body");
    assert_eq!(body["status"], "OK");
    let request_id = body["request_id"].as_str().expect("request id").to_owned();
    // Who finished the job, the webhook or the worker polling fal, is a race (both
    // are idempotent); said for the record only.
    let completed_at = time::OffsetDateTime::parse(
        done[0]["completed_at"].as_str().expect("completed_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let (sent, answered) = delivery.handed_on;
    println!(
        "the job was completed by {}",
        if (sent..=answered).contains(&completed_at) {
            "the webhook"
        } else {
            "the worker polling fal (the webhook came second)"
        }
    );

    let db = processing_db(&platform).await;
    let changes_before = status_events(&db, &job, None).await;
    assert_eq!(status_events(&db, &job, Some("completed")).await, 1);

    // The replays: the same signed bytes, within the signature's 300 s window.
    for _ in 0..2 {
        assert_eq!(
            post_webhook(
                &platform.gateway_url,
                &delivery.headers,
                delivery.body.clone()
            )
            .await,
            200,
            "a replay is acknowledged, so fal stops redelivering"
        );
    }
    let header = |name: &str| {
        delivery
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // fal's webhook reaches processing through the gateway.
    let mut processing = ProcessingServiceClient::new(
        platform.channel_as(ServiceName::Gateway, &platform.processing_url),
    );
    let outcome = processing
        .handle_fal_webhook(HandleFalWebhookRequest {
            body: delivery.body.clone(),
            webhook_request_id: header("x-fal-webhook-request-id"),
            webhook_user_id: header("x-fal-webhook-user-id"),
            webhook_timestamp: header("x-fal-webhook-timestamp"),
            webhook_signature: header("x-fal-webhook-signature"),
        })
        .await
        .expect("webhook rpc")
        .into_inner()
        .outcome;
    assert_eq!(
        WebhookOutcome::try_from(outcome),
        Ok(WebhookOutcome::Duplicate),
        "the processing service knows it for a replay"
    );
    // A replay with its body altered is not even verified.
    let mut tampered = delivery.body.clone();
    let at = tampered
        .windows(request_id.len())
        .position(|w| w == request_id.as_bytes())
        .expect("request id in the body");
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        post_webhook(&platform.gateway_url, &delivery.headers, tampered).await,
        401
    );

    assert_eq!(
        status_events(&db, &job, None).await,
        changes_before,
        "no state change from a replay"
    );
    assert_eq!(status_events(&db, &job, Some("completed")).await, 1);
    let after = statuses(&platform, &user, &jobs).await;
    assert_eq!(after[0]["status"], "completed");
    assert_eq!(after[0]["result_image_id"], result_id.as_str());
    let results = result_images(&platform, &user).await;
    assert_eq!(results.len(), 1, "one result image: {results:#?}");
    assert_eq!(results[0]["id"], result_id.as_str());
    assert_eq!(sim.submissions(), 1);
    assert_eq!(seen.lock().expect("lock").len(), 1, "fal delivered once");
}

/// The simulator signs its webhooks for the fal account `another-account`, while the
/// platform is pinned to its own (`FAL_USER_ID`): the delivery has a signature fal's
/// keys verify, and is refused all the same (401). The job still completes, by the
/// worker polling fal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_another_fal_account_is_refused() {
    assert_eq!(
        atelier_fal::webhook::SIMULATOR_USER_ID,
        atelier_fal_sim::WEBHOOK_USER_ID,
        "the platform's default pin is the simulator's default account"
    );
    let gateway = Arc::new(OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::<Captured>::new()));
    let relay = webhook_relay(gateway.clone(), seen.clone()).await;
    let mut options = Options::new(Backend::Sqlite);
    options.processing_public_url = Some(relay);
    options.fal_sim_user_id = "another-account".into();
    let platform = TestPlatform::spawn_with(options).await;
    gateway.set(platform.gateway_url.clone()).expect("set once");
    let user = sign_up(&platform, "pinned@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(48, 32)).await;
    let job = start(&platform, &user, &image, "normal").await;
    all_completed(&platform, &user, &[job], Duration::from_secs(30)).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        if let Some(first) = seen.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "the simulator sent no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let user_header = delivery
        .headers
        .iter()
        .find(|(name, _)| name == "x-fal-webhook-user-id")
        .map(|(_, value)| value.as_str());
    assert_eq!(user_header, Some("another-account"));
    assert_eq!(
        delivery.forwarded, 401,
        "another account's webhook is refused"
    );
}

// ---------------------------------------------------------------------------------------
// Priorities

/// One worker, held by a first (normal) job that hangs at fal while three low-priority
/// jobs and then three high-priority ones are started. Once fal lets the first one
/// finish, the worker takes every high job before any low one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_jobs_started_later_run_first() {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.worker_concurrency = 1;
    let platform = TestPlatform::spawn_with(options).await;
    let sim = platform.fal_sim();
    sim.set_timing(Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::from_millis(300),
    });
    let user = sign_up(&platform, "eager@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(48, 32)).await;
    // The only worker is busy with this one until `hang` is lifted.
    sim.set_failures(Failures {
        hang: true,
        ..Default::default()
    });
    let blocker = start(&platform, &user, &image, "normal").await;
    settled_at_fal(&platform, &user, std::slice::from_ref(&blocker), 1).await;
    let mut low = Vec::new();
    for _ in 0..3 {
        low.push(start(&platform, &user, &image, "low").await);
    }
    let mut high = Vec::new();
    for _ in 0..3 {
        high.push(start(&platform, &user, &image, "high").await);
    }
    let waiting: Vec<String> = low.iter().chain(&high).cloned().collect();
    let now = statuses(&platform, &user, &waiting).await;
    assert_eq!(count(&now, &["queued"]), waiting.len(), "{now:#?}");
    sim.set_failures(Failures::default());

    let done = all_completed(&platform, &user, &waiting, Duration::from_secs(45)).await;
    let at = |job: &Value, field: &str| {
        time::OffsetDateTime::parse(
            job[field].as_str().expect("timestamp"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("rfc3339")
    };
    let mut order: Vec<(time::OffsetDateTime, &str)> = done
        .iter()
        .enumerate()
        .map(|(i, job)| {
            (
                at(job, "started_at"),
                if i < low.len() { "low" } else { "high" },
            )
        })
        .collect();
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, p)| p).collect();
    println!("order the worker took them in: {order:?}");
    assert_eq!(order, ["high", "high", "high", "low", "low", "low"]);
    // One worker: each ran after the one before had finished.
    let mut runs: Vec<(time::OffsetDateTime, time::OffsetDateTime)> = done
        .iter()
        .map(|job| (at(job, "started_at"), at(job, "completed_at")))
        .collect();
    runs.sort();
    assert!(
        runs.windows(2).all(|pair| pair[0].1 <= pair[1].0),
        "{runs:?}"
    );
}

// ---------------------------------------------------------------------------------------
// fal's concurrency limit

/// fal refuses submissions with 429 (`concurrent_requests_limit`): the bound on jobs at
/// fal, shared by every worker through Redis, is halved; the refused jobs wait in the
/// queue without spending an attempt; once fal accepts again they all complete, and the
/// accepted submissions raise the bound again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fal_429_halves_the_bound_and_jobs_wait_without_spending_attempts() {
    const MAX: u32 = 8;
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.fal_max_concurrency = Some(MAX);
    // Refusals are the queue's to handle: the breaker stays closed throughout.
    options.fal_breaker = atelier_fal::BreakerConfig {
        consecutive_failures: 10_000,
        min_calls: 10_000,
        ..Default::default()
    };
    let platform = TestPlatform::spawn_with(options).await;
    let sim = platform.fal_sim();
    sim.set_failures(Failures {
        submit_status: Some(429),
        error_type: Some("concurrent_requests_limit".into()),
        ..Default::default()
    });
    let user = sign_up(&platform, "refused@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(48, 32)).await;
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(start(&platform, &user, &image, "normal").await);
    }

    // Another handle on the platform's queue reads the shared bound.
    let queue = atelier_queue::RedisQueue::new(
        redis(&platform).await,
        atelier_queue::QueueConfig {
            max_in_flight: Some(MAX),
            ..Default::default()
        },
        Arc::new(|_| 100),
    )
    .await
    .expect("queue");
    let limit = async || {
        atelier_queue::Queue::concurrency(&queue)
            .await
            .expect("concurrency")
            .limit
            .expect("bounded")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while limit().await >= MAX {
        assert!(Instant::now() < deadline, "the bound was never lowered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A burst of refusals halves it at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lowest = limit().await;
    assert!(lowest <= MAX / 2, "halved at least once: {lowest}");
    let now = statuses(&platform, &user, &jobs).await;
    assert_eq!(count(&now, &["failed", "cancelled"]), 0, "{now:#?}");
    assert_eq!(sim.submissions(), 0, "every submission was refused");
    assert!(metric_sum("atelier_fal_throttled_total", &[]) >= 6.0);

    sim.set_failures(Failures::default());
    all_completed(&platform, &user, &jobs, Duration::from_secs(30)).await;
    assert_eq!(sim.submissions(), 6, "each job submitted once");
    let db = processing_db(&platform).await;
    for job in &jobs {
        let id = uuid::Uuid::parse_str(job).expect("job id");
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT attempts FROM processing_jobs WHERE id = $1",
                [id.into()],
            ))
            .await
            .expect("read the job")
            .expect("the job exists");
        let attempts: i32 = row.try_get("", "attempts").expect("attempts");
        assert_eq!(attempts, 1, "a refusal spends no attempt ({job})");
    }
    // The accepted submissions raised the bound: from 4 or less, six raise it by one
    // at least (one slot per bound's worth of successes).
    let deadline = Instant::now() + Duration::from_secs(10);
    while limit().await <= lowest.min(MAX - 1) {
        assert!(
            Instant::now() < deadline,
            "the bound never rose from {lowest}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
