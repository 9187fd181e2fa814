//! The queue bench: how many no-op jobs the Redis queue adds, delivers and acks per second
//! at a concurrency of 100, against BullMQ measured in the same run on the same Redis (a
//! peer script in `benches/bullmq`, whose dependencies `npm ci` installs there); and how
//! long an idle worker takes to start a job after it is enqueued.
//!
//! Both sides do the same: a producer adds the jobs in chunks of 1,000 (BullMQ `addBulk`,
//! ours `enqueue_many`) while one worker with 100 slots takes them (BullMQ `Worker` with
//! `concurrency: 100`, ours `next_many` for the free slots), runs a no-op handler and acks
//! each (BullMQ in its fetch-next script, ours `complete_many` of the handlers that have
//! finished). The time runs from the first add to the last ack.
//!
//! | variable | default |
//! |---|---|
//! | `BENCH_REDIS_URL`, else `TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//!
//! Full run (`cargo bench --bench queue`): 100,000 jobs, 3 runs each side, 1,000 latency
//! samples. Smoke run (`cargo test --benches`): 2,000 jobs, one run each, 20 samples.
//! Every run uses key prefixes of its own and deletes its keys.

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use atelier_bench::{Mode, Report, Row, Spread, ms, percentile};
use atelier_common::redis::Redis;
use atelier_queue::{Delivery, Enqueue, Priority, Queue, QueueConfig, RedisQueue};
use fred::interfaces::LuaInterface;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

const CONCURRENCY: usize = 100;
/// Users the jobs belong to, in turn (each with a cap no run reaches).
const USERS: usize = 100;

fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL")
        .or_else(|_| std::env::var("TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn connect(prefix: &str) -> Redis {
    let url = redis_url();
    Redis::connect(&url, prefix.to_owned())
        .await
        .unwrap_or_else(|err| panic!("Redis does not answer at {url}: {err:#}"))
}

/// Deletes every key under the client's prefix.
async fn clean(redis: &Redis) {
    let script = "for _, key in ipairs(redis.call('KEYS', ARGV[1])) do \
                  redis.call('DEL', key) end";
    let cleaned: Result<(), _> = redis
        .client
        .eval(
            script,
            Vec::<String>::new(),
            vec![format!("{}*", redis.key(""))],
        )
        .await;
    cleaned.expect("deleting the bench's keys");
}

async fn queue(redis: &Redis) -> Arc<RedisQueue> {
    let queue = RedisQueue::new(
        redis.clone(),
        QueueConfig::default(),
        Arc::new(|_| 1_000_000),
    )
    .await
    .expect("creating the queue");
    Arc::new(queue)
}

/// Adds `jobs` no-op jobs and runs them with `CONCURRENCY` slots; jobs per second.
async fn ours(jobs: usize) -> f64 {
    let redis = connect(&format!("atelier-bench-{}:", Uuid::new_v4().simple())).await;
    let queue = queue(&redis).await;
    let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
    let batch: Vec<Enqueue> = (0..jobs)
        .map(|i| Enqueue {
            job_id: Uuid::new_v4(),
            user_id: users[i % USERS],
            priority: Priority::Normal,
            delay: None,
        })
        .collect();

    let started = Instant::now();
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for chunk in batch.chunks(1000) {
                queue.enqueue_many(chunk).await.expect("enqueue");
            }
        })
    };
    // The acker settles what the handlers finished, as many as are there at once.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Delivery>();
    let acker = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            let mut finished = Vec::new();
            while acked < jobs {
                if done_rx.recv_many(&mut finished, 1000).await == 0 {
                    break;
                }
                queue.complete_many(&finished).await.expect("complete");
                acked += finished.len();
                finished.clear();
            }
            acked
        })
    };
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut taken = 0;
    while taken < jobs {
        let first = slots.clone().acquire_owned().await.expect("a slot");
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let deliveries = queue
            .next_many("bench", permits.len(), Duration::from_secs(5))
            .await
            .expect("next");
        assert!(
            !deliveries.is_empty(),
            "no delivery within 5 s after {taken}"
        );
        taken += deliveries.len();
        for (delivery, permit) in deliveries.into_iter().zip(permits) {
            let done = done_tx.clone();
            tokio::spawn(async move {
                // The no-op job.
                std::hint::black_box(&delivery);
                let _ = done.send(delivery);
                drop(permit);
            });
        }
    }
    drop(done_tx);
    let acked = acker.await.expect("acker");
    let seconds = started.elapsed().as_secs_f64();
    producer.await.expect("producer");
    assert_eq!(acked, jobs, "every job acked");
    let depth = queue.depth().await.expect("depth");
    assert_eq!(depth.waiting() + depth.in_flight, 0, "nothing left behind");
    drop(queue);
    clean(&redis).await;
    jobs as f64 / seconds
}

/// The BullMQ peer on the same Redis: jobs per second and BullMQ's version.
fn bullmq(jobs: usize) -> (f64, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq");
    assert!(
        dir.join("node_modules/bullmq").is_dir(),
        "BullMQ is not installed: run `npm ci` in {} (.ci/deps.sh does)",
        dir.display()
    );
    let prefix = format!("atelier-bench-bullmq-{}", Uuid::new_v4().simple());
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["bench.mjs", &redis_url(), &prefix])
        .arg(jobs.to_string())
        .arg(CONCURRENCY.to_string())
        .output()
        .expect("running node (is Node.js installed?)");
    assert!(
        out.status.success(),
        "the BullMQ peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|err| panic!("the BullMQ peer printed {line:?}: {err}"));
    assert_eq!(json["jobs"].as_u64(), Some(jobs as u64));
    let rate = json["jobs_per_sec"].as_f64().expect("jobs_per_sec");
    let version = json["bullmq"].as_str().unwrap_or("unknown").to_owned();
    (rate, version)
}

/// Enqueue → handler start on an idle queue, `samples` times.
async fn latency(samples: usize) -> Vec<Duration> {
    let redis = connect(&format!("atelier-bench-{}:", Uuid::new_v4().simple())).await;
    let queue = queue(&redis).await;
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<Instant>();
    let worker = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for _ in 0..samples {
                let delivery = queue
                    .next("latency", Duration::from_secs(10))
                    .await
                    .expect("next")
                    .expect("a delivery within 10 s");
                // The handler starts.
                let _ = started_tx.send(Instant::now());
                queue.complete(&delivery).await.expect("complete");
            }
        })
    };
    let user = Uuid::new_v4();
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        // The worker is idle, waiting for a job.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let job = Enqueue {
            job_id: Uuid::new_v4(),
            user_id: user,
            priority: Priority::Normal,
            delay: None,
        };
        let enqueued = Instant::now();
        queue.enqueue(job).await.expect("enqueue");
        let started = started_rx.recv().await.expect("the handler started");
        latencies.push(started - enqueued);
    }
    worker.await.expect("worker");
    drop(queue);
    clean(&redis).await;
    latencies.sort();
    latencies
}

fn main() {
    let mode = Mode::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let jobs = mode.pick(100_000, 2_000);
    let runs = mode.pick(3, 1);
    let samples = mode.pick(1_000, 20);

    let mut our_rates = Vec::new();
    let mut peer_rates = Vec::new();
    let mut version = String::new();
    for run in 1..=runs {
        let rate = runtime.block_on(ours(jobs));
        println!("run {run}: ours {rate:.0} jobs/s");
        our_rates.push(rate);
        let (rate, peer) = bullmq(jobs);
        println!("run {run}: BullMQ {peer} {rate:.0} jobs/s");
        peer_rates.push(rate);
        version = peer;
    }
    let latencies = runtime.block_on(latency(samples));
    let p50 = ms(percentile(&latencies, 0.5));
    let p99 = ms(percentile(&latencies, 0.99));

    let mut report = Report::new("queue", "Job queue on Redis");
    report
        .row(
            Row::new(format!(
                "add + process + ack {jobs} no-op jobs, concurrency {CONCURRENCY}"
            ))
            .ours_spread(Spread::of(&our_rates), "jobs/s")
            .peer_spread(format!("BullMQ {version}"), Spread::of(&peer_rates))
            .at_least_ratio(2.0),
        )
        .row(
            Row::new("dispatch latency, idle queue, enqueue → handler start, p50")
                .ours(p50, "ms")
                .at_most(1.0),
        )
        .row(
            Row::new("dispatch latency, idle queue, enqueue → handler start, p99")
                .ours(p99, "ms")
                .at_most(2.0),
        )
        .note(format!(
            "{}; Redis at {} shared by both sides, one run of each side in turn, {runs} runs; \
             {samples} latency samples. Both add in chunks of 1,000 while one worker with \
             {CONCURRENCY} slots runs a no-op handler and acks; ours spreads the jobs over \
             {USERS} users (per-user caps and fair share are checked on every delivery), \
             BullMQ has no users.",
            atelier_bench::machine(),
            redis_url()
        ));
    report.finish(mode);
}
