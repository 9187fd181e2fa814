//! End to end: jobs started over REST through the gateway, run at the fal simulator
//! (0 ms queue and processing time) and completed with their results stored, on
//! PostgreSQL and Redis. 20 users, each with one small image, start 10,000 jobs from 64
//! connections; the clock runs from the first start to the last job finished. Target:
//! at least 300 jobs/s sustained, no job failed. `make bench` runs it; `cargo test` makes
//! a smoke run of 40 jobs. `THROUGHPUT_JOBS` and `THROUGHPUT_RUNS` change the run's size.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use atelier_bench::{Mode, Report, Row, Spread};
use atelier_testbed::{Backend, Options, QueueBackend, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{self, User},
};
use futures::{StreamExt, stream};
use reqwest::{Client, StatusCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

const USERS: usize = 20;
const CONNECTIONS: usize = 64;
const TARGET_JOBS_PER_SEC: f64 = 300.0;
const FAL_CONCURRENCY: usize = 100;

struct Run {
    jobs_per_sec: f64,
    start_p99_ms: f64,
    failed: u64,
    /// The run's files, deleted once every run is over: on a filesystem that scans
    /// recently deleted inodes when it creates one (ext4 without a journal, as here),
    /// one run's clean-up would slow the next run's every file.
    files: Arc<tempfile::TempDir>,
}

async fn finished(db: &DatabaseConnection) -> (u64, u64) {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) FILTER (WHERE status = 'completed') AS done, \
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS failed \
             FROM processing_jobs",
        ))
        .await
        .expect("count jobs")
        .expect("a row");
    let done: i64 = row.try_get("", "done").expect("done");
    let failed: i64 = row.try_get("", "failed").expect("failed");
    (done as u64, failed as u64)
}

/// Jobs completed in each second from the first start: where the run was slow.
async fn per_second(db: &DatabaseConnection) -> Vec<i64> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT floor(extract(epoch FROM completed_at - (SELECT min(created_at) FROM processing_jobs)))::bigint AS second, \
                    count(*) AS jobs \
             FROM processing_jobs WHERE completed_at IS NOT NULL GROUP BY 1 ORDER BY 1",
        ))
        .await
        .expect("completions by second");
    let mut counts = Vec::new();
    for row in rows {
        let second: i64 = row.try_get("", "second").expect("second");
        let jobs: i64 = row.try_get("", "jobs").expect("jobs");
        counts.resize((second as usize + 1).max(counts.len()), 0);
        counts[second as usize] = jobs;
    }
    counts
}

/// Where a job's time went, medians over the run: waiting in the queue (created →
/// claimed), claimed → submitted to fal, submitted → fal's first answer seen (its
/// first log lines or `processing`, whichever came first; a job fal finishes at once
/// may never show `processing`), and from there to completed with the result fetched,
/// downloaded and stored.
async fn phases(db: &DatabaseConnection) -> String {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "WITH at AS ( \
               SELECT j.created_at, j.started_at, j.completed_at, \
                 (SELECT min(e.at) FROM job_events e WHERE e.job_id = j.id \
                    AND e.data->>'status' = 'submitted') AS submitted, \
                 (SELECT min(e.at) FROM job_events e WHERE e.job_id = j.id \
                    AND (e.kind = 'log' OR e.data->>'status' IN ('processing', 'completed'))) AS answered \
               FROM processing_jobs j WHERE j.completed_at IS NOT NULL) \
             SELECT \
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))::float8 AS waiting, \
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM submitted - started_at))::float8 AS submitting, \
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM answered - submitted))::float8 AS at_fal, \
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - answered))::float8 AS storing \
             FROM at",
        ))
        .await
        .expect("phases")
        .expect("a row");
    let get = |name: &str| {
        row.try_get::<Option<f64>>("", name)
            .ok()
            .flatten()
            .unwrap_or(f64::NAN)
    };
    format!(
        "waiting {:.3}, submitting {:.3}, at fal {:.3}, storing {:.3}",
        get("waiting"),
        get("submitting"),
        get("at_fal"),
        get("storing")
    )
}

async fn run(jobs: usize) -> Run {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    let mut tiers = atelier_testbed::unlimited_tiers();
    for tier in atelier_user::Tier::ALL {
        tiers.get_mut(tier).parallel_jobs = Some(16);
    }
    options.tiers = tiers;
    // Every start comes from this one address, faster than a person could: the gateway's
    // per-address and per-user limits (requests per minute) sit above the run's load.
    options.limits.per_ip = u32::MAX;
    options.limits.per_user = u32::MAX;
    // A fal account allowed to run this many requests at once, and the platform's bound
    // and workers set to match (FAL_SIM_MAX_CONCURRENCY, FAL_MAX_CONCURRENCY,
    // WORKER_CONCURRENCY).
    options.fal_sim_max_concurrency = FAL_CONCURRENCY;
    options.fal_max_concurrency = Some(FAL_CONCURRENCY as u32);
    options.worker_concurrency = FAL_CONCURRENCY;
    let platform = TestPlatform::spawn_with(options).await;
    platform.fal_sim().set_timing(atelier_fal_sim::Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::ZERO,
    });
    let db = atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("connect to the processing schema");

    let mut users: Vec<(User, String)> = Vec::new();
    for i in 0..USERS {
        let user = rest::sign_up(&platform, &format!("load{i}@example.com")).await;
        let image = rest::upload(&platform, &user, fixtures::png(32, 32)).await;
        users.push((user, image));
    }
    let client = Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let start_url = format!("{}/api/processing/start", platform.gateway_url);
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let starts: Vec<Duration> = stream::iter(0..jobs)
        .map(|i| {
            let (user, image) = &users[i % USERS];
            let request = client
                .post(&start_url)
                .bearer_auth(&user.token)
                .json(&json!({"image_id": image, "workflow_id": "lineart", "parameters": {}}));
            let refused = refused.clone();
            async move {
                let sent = Instant::now();
                let response = request.send().await.expect("start");
                if response.status() != StatusCode::ACCEPTED {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    eprintln!("start refused: {body}");
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                sent.elapsed()
            }
        })
        .buffer_unordered(CONNECTIONS)
        .collect()
        .await;
    let all_started = started.elapsed();
    let refused = refused.load(Ordering::Relaxed);
    assert_eq!(refused, 0, "{refused} starts refused");
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(jobs as u64 * 20);
    let (done, failed) = loop {
        let (done, failed) = finished(&db).await;
        if done + failed >= jobs as u64 {
            break (done, failed);
        }
        assert!(
            Instant::now() < deadline,
            "{done} completed, {failed} failed of {jobs} after {:.0} s",
            started.elapsed().as_secs_f64()
        );
        // Counting scans the table: often enough for a fine clock, rarely enough
        // not to load the database being measured.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    println!("completed per second: {:?}", per_second(&db).await);
    println!("median seconds per phase: {}", phases(&db).await);
    let mut starts = starts;
    starts.sort();
    println!(
        "{jobs} jobs: started in {:.1} s, finished in {:.1} s ({done} completed, {failed} failed)",
        all_started.as_secs_f64(),
        took.as_secs_f64()
    );
    Run {
        jobs_per_sec: jobs as f64 / took.as_secs_f64(),
        start_p99_ms: atelier_bench::ms(atelier_bench::percentile(&starts, 0.99)),
        failed,
        files: platform.hold_data_dir(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = Mode::from_args();
    let (jobs, runs) = mode.pick((10_000, 3), (40, 1));
    // THROUGHPUT_JOBS and THROUGHPUT_RUNS shorten a run while looking for where the
    // time goes; the report says how many jobs it ran.
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map(|value| {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: not a number"))
            })
            .unwrap_or(default)
    };
    let (jobs, runs) = (
        setting("THROUGHPUT_JOBS", jobs),
        setting("THROUGHPUT_RUNS", runs),
    );
    let mut rates = Vec::new();
    let mut start_p99 = Vec::new();
    let mut failed = 0;
    let mut files = Vec::new();
    for _ in 0..runs {
        let run = run(jobs).await;
        rates.push(run.jobs_per_sec);
        start_p99.push(run.start_p99_ms);
        failed += run.failed;
        files.push(run.files);
    }
    drop(files);
    let mut report = Report::new("throughput", "End to end: jobs started → completed");
    report.row(
        Row::new(format!(
            "{jobs} jobs, simulator at 0 ms, PostgreSQL + Redis"
        ))
        .ours_spread(Spread::of(&rates), "jobs/s")
        .note(format!(
            "start request p99 {:.1} ms",
            Spread::of(&start_p99).median
        ))
        .at_least(TARGET_JOBS_PER_SEC),
    );
    report.row(
        Row::new("jobs failed")
            .ours(failed as f64, "jobs")
            .at_most(0.0),
    );
    report.note(format!(
        "{USERS} users with one 32×32 PNG each start the `lineart` workflow over REST from \
         {CONNECTIONS} connections, with fal's account limit, the platform's bound on jobs at fal \
         and its workers at {FAL_CONCURRENCY}; the clock runs from the first start until the last job \
         is completed with its result stored (local object storage), counted in the processing \
         schema. One process runs every service, as `make run` does. Each run's files are \
         deleted after the last run: on this machine's filesystem (ext4 without a journal) a \
         file created just after thousands were deleted costs a scan of them."
    ));
    report.finish(mode);
}
