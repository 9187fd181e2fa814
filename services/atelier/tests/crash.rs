//! Crash safety with a real process kill: the processing service runs as its own
//! `atelier serve --target processing` process beside one running auth, image, user,
//! workflow and the gateway, both on PostgreSQL and Redis, submitting to the fal
//! simulator running as `atelier fal-sim`. With jobs at fal, the processing process
//! is SIGKILLed (no shutdown hook runs, nothing is settled) and a new one started:
//! every job completes, and the simulator counted exactly one submission per job
//! (the new process resumed the fal requests the dead one had made instead of
//! submitting again).
//!
//! The redelivery of the killed process's unsettled deliveries is the queue's
//! visibility timeout (`XAUTOCLAIM`). The reconciler cannot help here: those jobs are
//! still in the queue (in flight), so it leaves them alone. The timeout is 5 minutes
//! (`QueueConfig::default`) and the processing service reads no environment variable
//! to shorten it (only `QUEUE_MAX_ATTEMPTS`), so the test ages the dead consumer's
//! pending entries by the timeout itself (`XCLAIM ... IDLE <ms> JUSTID`: same owner,
//! same delivery count, only the idle time moved): what Redis would show after five
//! minutes, without waiting them.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use atelier_common::redis::Redis;
use atelier_testkit::free_port;
use fred::{prelude::*, types::CustomCommand};
use reqwest::{Client, StatusCode, multipart};
use serde_json::{Value, json};

/// Jobs started.
const JOBS: usize = 6;
/// How long the simulator takes over each request once it started.
const FAL_PROCESSING_MS: u64 = 3_000;
/// Longer than the queue's default visibility timeout (5 min): an entry idle this long
/// is redelivered by the next `XAUTOCLAIM`.
const AGED_IDLE_MS: u64 = 60 * 60 * 1000;

/// A child process, SIGKILLed when dropped; its log is printed when the test fails.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
        command
            .args(args)
            .current_dir(dir)
            // Only what the test sets: nothing from the caller's environment (a
            // PUBLIC_URL, S3_BUCKET, ...) changes what runs.
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawning {name}: {err}"));
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    /// `kill -9`: the process gets no chance to settle anything.
    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("reaped");
            assert!(!status.success(), "{} was killed: {status}", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("----- last lines of {} -----", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

async fn wait_http_ok(client: &Client, url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} not OK within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn statuses(client: &Client, base: &str, token: &str, jobs: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let response = client
            .get(format!("{base}/api/processing/{job}/status"))
            .bearer_auth(token)
            .send()
            .await
            .expect("status");
        assert_eq!(response.status(), StatusCode::OK);
        out.push(response.json::<Value>().await.expect("json"));
    }
    out
}

fn count(statuses: &[Value], wanted: &[&str]) -> usize {
    statuses
        .iter()
        .filter(|s| s["status"].as_str().is_some_and(|s| wanted.contains(&s)))
        .count()
}

async fn sim_submissions(client: &Client, sim: &str) -> u64 {
    let stats: Value = client
        .get(format!("{sim}/_sim/stats"))
        .send()
        .await
        .expect("sim stats")
        .json()
        .await
        .expect("json");
    stats["submissions"].as_u64().expect("submissions")
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false)
}

/// The queue's lines (see libs/queue/src/redis.rs).
fn lines(prefix: &str) -> Vec<String> {
    ["high", "normal", "low"]
        .iter()
        .map(|p| format!("{prefix}{{queue}}:{p}"))
        .collect()
}

/// Every pending (delivered, unsettled) entry of the queue's consumer group:
/// (line, entry id, consumer).
async fn pending(redis: &Redis, prefix: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for line in lines(prefix) {
        let reply: Value = match redis
            .client
            .custom::<fred::types::Value, _>(
                command("XPENDING"),
                vec![
                    line.clone(),
                    "workers".into(),
                    "-".into(),
                    "+".into(),
                    "1000".into(),
                ],
            )
            .await
        {
            Ok(reply) => reply_json(reply),
            // No such line yet (no job of that priority was ever queued).
            Err(err) if err.details().contains("NOGROUP") => continue,
            Err(err) => panic!("XPENDING {line}: {err}"),
        };
        for entry in reply.as_array().cloned().unwrap_or_default() {
            let id = entry[0].as_str().expect("entry id").to_owned();
            let consumer = entry[1].as_str().expect("consumer").to_owned();
            found.push((line.clone(), id, consumer));
        }
    }
    found
}

/// A Redis reply as JSON, for easy picking apart.
fn reply_json(value: fred::types::Value) -> Value {
    use fred::types::Value as R;
    match value {
        R::Array(items) => Value::Array(items.into_iter().map(reply_json).collect()),
        R::Integer(n) => json!(n),
        R::Null => Value::Null,
        other => other.as_string().map_or(Value::Null, Value::String),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_processing_process_loses_no_job_and_submits_none_twice() {
    let db = atelier_testkit::TestDb::create()
        .await
        .expect("test database");
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("atelier-crash-{}:", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new();

    // The simulator, on its own.
    let sim_port = free_port();
    let sim = format!("http://127.0.0.1:{sim_port}");
    let _sim = Proc::spawn(
        "fal-sim",
        &["fal-sim", "--addr", &format!("127.0.0.1:{sim_port}")],
        &[],
        dir.path(),
    );
    wait_http_ok(&client, &format!("{sim}/healthz"), Duration::from_secs(30)).await;
    let knobs = client
        .put(format!("{sim}/_sim/knobs"))
        .json(&json!({"processing_time_ms": FAL_PROCESSING_MS}))
        .send()
        .await
        .expect("knobs");
    assert_eq!(knobs.status(), StatusCode::OK);

    let gateway_port = free_port();
    let base = format!("http://127.0.0.1:{gateway_port}");
    let shared: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis_url.clone()),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("UPLOAD_TMP_DIR", dir.path().display().to_string()),
        ("GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}")),
        ("FAL_KEY", "test".into()),
        ("FAL_QUEUE_URL", sim.clone()),
        ("FAL_RESULT_HOSTS", sim.clone()),
        (
            "FAL_WEBHOOK_JWKS_URL",
            format!("{sim}/.well-known/jwks.json"),
        ),
        ("RECONCILE_SECS", "1".into()),
        ("RATE_LIMIT_PER_IP", "100000".into()),
        ("RATE_LIMIT_PER_USER", "100000".into()),
    ]
    .into_iter()
    .chain(atelier_testkit::service_addresses())
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let with_admin = |port: u16| {
        let mut env = shared.clone();
        env.push(("ADMIN_ADDR".into(), format!("127.0.0.1:{port}")));
        env
    };

    let front_admin = free_port();
    let _front = Proc::spawn(
        "front",
        &["serve", "--target", "auth,image,workflow,user,gateway"],
        &with_admin(front_admin),
        dir.path(),
    );
    let first_admin = free_port();
    let mut worker = Proc::spawn(
        "processing-1",
        &["serve", "--target", "processing"],
        &with_admin(first_admin),
        dir.path(),
    );
    wait_http_ok(
        &client,
        &format!("http://127.0.0.1:{front_admin}/readyz"),
        Duration::from_secs(60),
    )
    .await;
    wait_http_ok(
        &client,
        &format!("http://127.0.0.1:{first_admin}/readyz"),
        Duration::from_secs(60),
    )
    .await;

    let token = atelier_testkit::rest::sign_up(&base, "crash@example.com")
        .await
        .token;
    let png = atelier_testkit::fixtures::png(48, 32);
    let image: Value = client
        .post(format!("{base}/api/images/upload"))
        .bearer_auth(&token)
        .multipart(
            multipart::Form::new().part("file", multipart::Part::bytes(png).file_name("in.png")),
        )
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("image");
    let image_id = image["id"].as_str().expect("image id").to_owned();

    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        let response = client
            .post(format!("{base}/api/processing/start"))
            .bearer_auth(&token)
            .json(&json!({"image_id": image_id, "workflow_id": "lineart"}))
            .send()
            .await
            .expect("start");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let started: Value = response.json().await.expect("json");
        jobs.push(started["job_id"].as_str().expect("job id").to_owned());
    }

    // Wait until jobs are at fal and no submission is under way (the number of jobs
    // at fal has not moved for a while): the kill then lands while requests run at
    // fal and their ids are stored, never between a submission and its write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stable_since = (usize::MAX, Instant::now());
    let at_fal = loop {
        let now = statuses(&client, &base, &token, &jobs).await;
        let at_fal = count(&now, &["submitted", "processing"]);
        assert_eq!(count(&now, &["failed", "cancelled"]), 0, "{now:?}");
        assert_eq!(
            count(&now, &["completed"]),
            0,
            "fal is slower than this: {now:?}"
        );
        if at_fal != stable_since.0 {
            stable_since = (at_fal, Instant::now());
        } else if at_fal >= 2 && stable_since.1.elapsed() > Duration::from_millis(500) {
            break now;
        }
        assert!(Instant::now() < deadline, "jobs never reached fal: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let in_flight = count(&at_fal, &["submitted", "processing"]);
    let submitted_before = sim_submissions(&client, &sim).await;
    assert_eq!(
        submitted_before, in_flight as u64,
        "one submission per job at fal"
    );

    let killed_at = Instant::now();
    worker.sigkill();
    println!(
        "killed the processing process with {in_flight} of {JOBS} jobs at fal, {} waiting",
        JOBS - in_flight
    );

    // The dead worker's deliveries are still pending in Redis, held by it.
    let redis = Redis::connect(&redis_url, prefix.clone())
        .await
        .expect("redis");
    let stalled = pending(&redis, &prefix).await;
    assert_eq!(
        stalled.len(),
        in_flight,
        "every job at fal is an unsettled delivery: {stalled:?}"
    );
    // Age them past the visibility timeout (see the module documentation).
    for (line, id, consumer) in &stalled {
        let claimed: fred::types::Value = redis
            .client
            .custom(
                command("XCLAIM"),
                vec![
                    line.clone(),
                    "workers".into(),
                    consumer.clone(),
                    "0".into(),
                    id.clone(),
                    "IDLE".into(),
                    AGED_IDLE_MS.to_string(),
                    "JUSTID".into(),
                ],
            )
            .await
            .expect("XCLAIM");
        assert_eq!(reply_json(claimed), json!([id]), "aged {id}");
    }

    let second_admin = free_port();
    let _worker = Proc::spawn(
        "processing-2",
        &["serve", "--target", "processing"],
        &with_admin(second_admin),
        dir.path(),
    );
    wait_http_ok(
        &client,
        &format!("http://127.0.0.1:{second_admin}/readyz"),
        Duration::from_secs(60),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let now = statuses(&client, &base, &token, &jobs).await;
        assert_eq!(count(&now, &["failed", "cancelled"]), 0, "{now:?}");
        if count(&now, &["completed"]) == JOBS {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not every job completed after the restart: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "every job completed {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );

    let submissions = sim_submissions(&client, &sim).await;
    println!("fal submissions: {submissions} for {JOBS} jobs");
    assert_eq!(
        submissions, JOBS as u64,
        "each job submitted to fal exactly once, across the crash"
    );
    for job in &done {
        assert!(job["result_image_id"].is_string(), "{job}");
    }
    let images: Value = client
        .get(format!("{base}/api/images?page_size=100"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("images")
        .json()
        .await
        .expect("json");
    let results = images["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|image| image["kind"] == "result")
        .count();
    assert_eq!(results, JOBS, "one result image per job");
    // And the queue is empty: nothing left pending or marked as queued.
    assert!(pending(&redis, &prefix).await.is_empty());
    let queued: i64 = redis
        .client
        .hlen(format!("{prefix}{{queue}}:jobs"))
        .await
        .expect("HLEN");
    assert_eq!(queued, 0, "no job left in the queue");
}
