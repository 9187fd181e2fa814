//! How fast the history answers: one page of 50 through the gateway (gateway → user
//! service → processing and image services) with 100,000 jobs in the table, on
//! PostgreSQL. Measures the first page, a page deep in the history, a filtered page
//! and a full-text search. Target: p99 under 20 ms for each. Run with `make bench`.

use std::time::{Duration, Instant};

use atelier_testkit::{Backend, TestPlatform, fixtures, rest, seed};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const JOBS: usize = 100_000;
const SAMPLES: usize = 200;
const TARGET: Duration = Duration::from_millis(20);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(client: &Client, url: &str, token: &str) -> Vec<Duration> {
    let mut times = Vec::with_capacity(SAMPLES);
    for round in 0..SAMPLES + 10 {
        let started = Instant::now();
        let response = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("history");
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.expect("page");
        let took = started.elapsed();
        assert_eq!(page["items"].as_array().map(Vec::len), Some(50), "{url}");
        // The first rounds warm connections and caches.
        if round >= 10 {
            times.push(took);
        }
    }
    times.sort();
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs benchmarks too, without `--bench`: only
    // check that this one builds there.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("history: run with `make bench`");
        return;
    }
    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let user = rest::sign_up(&platform, "bench@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(32, 32)).await;
    let seeding = Instant::now();
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(90);
    seed::finished_jobs(&platform, &user.id, &image, JOBS, start).await;
    println!(
        "history: seeded {JOBS} jobs in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let client = Client::new();
    let base = format!("{}/api/users/history?page_size=50", platform.gateway_url);
    // A page token deep in the history: walk there once.
    let mut deep = base.clone();
    for _ in 0..200 {
        let page: Value = client
            .get(&deep)
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        let token = page["next_page_token"]
            .as_str()
            .expect("more pages")
            .to_owned();
        deep = format!("{base}&page_token={token}");
    }
    let mut failed = false;
    for (name, url) in [
        ("first page", base.clone()),
        ("page 201", deep),
        ("status filter", format!("{base}&status=failed")),
        ("search", format!("{base}&q=harbour")),
    ] {
        let times = measure(&client, &url, &user.token).await;
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        println!(
            "history, {name}: {SAMPLES} requests, p50 {:.1} ms, p99 {:.1} ms (target p99 < {} ms)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            TARGET.as_millis()
        );
        failed |= p99 >= TARGET;
    }
    assert!(
        !failed,
        "a history page took over {} ms",
        TARGET.as_millis()
    );
}
