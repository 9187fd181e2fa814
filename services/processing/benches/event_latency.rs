//! How long a job's state change takes to reach a client watching its SSE
//! stream through the gateway: the time from the event's row being written
//! (`at`) to its arrival, over every event of 30 jobs on the fal simulator.
//! Target: p99 under 100 ms. `make bench` runs it; `cargo test` makes a
//! smoke run of 3 jobs.

use std::time::Duration;

use atelier_bench::{Mode, Report, Row, ms, percentile};
use atelier_testbed::{Backend, Options, QueueBackend, TestPlatform};
use atelier_testkit::{fixtures, rest};
use reqwest::Client;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const JOBS: usize = 30;
const TARGET: Duration = Duration::from_millis(100);

async fn run(queue: QueueBackend, jobs: usize) -> Vec<Duration> {
    let mut options = Options::new(Backend::Postgres);
    options.queue = queue;
    let platform = TestPlatform::spawn_with(options).await;
    let client = Client::new();
    let base = platform.gateway_url.clone();
    let token = rest::sign_up(&platform, "bench@example.com").await.token;
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
    for _ in 0..jobs {
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = Mode::from_args();
    let jobs = mode.pick(JOBS, 3);
    let mut report = Report::new(
        "event_latency",
        "Live events: job state change to SSE client",
    );
    for (name, queue) in [
        ("in-process bus", QueueBackend::Memory),
        ("redis pub/sub", QueueBackend::Redis),
    ] {
        let mut latencies = run(queue, jobs).await;
        latencies.sort();
        assert!(!latencies.is_empty(), "no live events measured");
        report.row(
            Row::new(format!("p99, {name}, {} events", latencies.len()))
                .ours(ms(percentile(&latencies, 0.99)), "ms")
                .note(format!(
                    "p50 {:.1} ms, max {:.1} ms",
                    ms(percentile(&latencies, 0.5)),
                    ms(latencies[latencies.len() - 1])
                ))
                .at_most(ms(TARGET)),
        );
    }
    report.note(format!(
        "From the event's row being written (`at`) to its arrival at an SSE client of the gateway, \
         over every event of {jobs} jobs on the fal simulator, PostgreSQL."
    ));
    report.finish(mode);
}
