//! How long a job's state change takes to reach a client watching its SSE
//! stream through the gateway: the time from the event's row being written
//! (`at`) to its arrival, over every event of 30 jobs on the fal simulator.
//! Target: p99 well under 100 ms. Run with `make bench`.

use std::time::{Duration, Instant};

use atelier_testkit::{Backend, Options, QueueBackend, TestPlatform, fixtures};
use reqwest::Client;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const JOBS: usize = 30;
const TARGET: Duration = Duration::from_millis(100);

async fn run(queue: QueueBackend) -> Vec<Duration> {
    let mut options = Options::new(Backend::Postgres);
    options.queue = queue;
    let platform = TestPlatform::spawn_with(options).await;
    let client = Client::new();
    let base = platform.gateway_url.clone();
    let tokens: Value = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": "bench@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("tokens");
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let part = reqwest::multipart::Part::bytes(fixtures::png(32, 32)).file_name("a.png");
    let image: Value = client
        .post(format!("{base}/api/images/upload"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("image");
    let mut latencies = Vec::new();
    for _ in 0..JOBS {
        let job: Value = client
            .post(format!("{base}/api/processing/start"))
            .bearer_auth(&token)
            .json(&json!({"image_id": image["id"], "workflow_id": "lineart"}))
            .send()
            .await
            .expect("start")
            .json()
            .await
            .expect("job");
        let job = job["job_id"].as_str().expect("job id").to_owned();
        let mut response = client
            .get(format!("{base}/api/processing/{job}/events"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("events");
        let mut buffer = String::new();
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            let arrived = OffsetDateTime::now_utc();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let Some(data) = frame.lines().find_map(|line| line.strip_prefix("data:")) else {
                    continue;
                };
                let event: Value = serde_json::from_str(data.trim()).expect("event json");
                // Events replayed from before the stream opened are not live.
                let Some(at) = event["at"]
                    .as_str()
                    .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
                else {
                    continue;
                };
                let seen = arrived - at;
                if event["seq"].as_i64().unwrap_or(0) > 2 && seen.is_positive() {
                    latencies.push(Duration::from_micros(seen.whole_microseconds() as u64));
                }
            }
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs benchmarks too, without `--bench`: only
    // check that this one builds there.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("event latency: run with `make bench`");
        return;
    }
    let started = Instant::now();
    let mut failed = false;
    for (name, queue) in [
        ("in-process bus", QueueBackend::Memory),
        ("redis pub/sub", QueueBackend::Redis),
    ] {
        let mut latencies = run(queue).await;
        latencies.sort();
        assert!(!latencies.is_empty(), "no live events measured");
        let (p50, p99, max) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
        );
        println!(
            "event latency, {name}: {} events, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < {} ms)",
            latencies.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            TARGET.as_millis()
        );
        failed |= p99 >= TARGET;
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    assert!(!failed, "p99 event latency over {} ms", TARGET.as_millis());
}
