//! How fast the history answers: one page of 50 through the gateway (gateway → user
//! service → processing and image services) with 100,000 jobs in the table, on
//! PostgreSQL. Measures the first page, a page deep in the history, a filtered page
//! and a full-text search. Target: p99 ≤ 20 ms for each. `make bench` runs it in
//! full; `cargo test` runs it over 2,000 jobs to check every page kind answers.

use std::time::{Duration, Instant};

use atelier_bench::{Mode, Report, Row, Spread, ms, percentile};
use atelier_testbed::{Backend, TestPlatform, seed};
use atelier_testkit::{fixtures, rest};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const TARGET_MS: f64 = 20.0;
const PAGE: usize = 50;

/// The p99 of `samples` requests for `url` (after a few to warm connections and caches).
async fn p99(client: &Client, url: &str, token: &str, samples: usize) -> Duration {
    let mut times = Vec::with_capacity(samples);
    for round in 0..samples + 10 {
        let started = Instant::now();
        let response = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("history");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let page: Value = response.json().await.expect("page");
        let took = started.elapsed();
        assert_eq!(page["items"].as_array().map(Vec::len), Some(PAGE), "{url}");
        if round >= 10 {
            times.push(took);
        }
    }
    times.sort();
    percentile(&times, 0.99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = Mode::from_args();
    // The smoke run's table is small but deep enough for every page kind: the
    // status filter and the search each match a third of the jobs.
    let jobs: usize = mode.pick(100_000, 2_000);
    let samples = mode.pick(200, 20);
    let runs = mode.pick(3, 1);
    // Page 201 of the full table; the smoke run walks as deep as its table allows.
    let deep_pages = mode.pick(200, 10);

    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let user = rest::sign_up(&platform, "bench@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(32, 32)).await;
    let seeding = Instant::now();
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(90);
    seed::finished_jobs(&platform, &user.id, &image, jobs, start).await;
    println!(
        "history: seeded {jobs} jobs in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let client = Client::new();
    let base = format!(
        "{}/api/users/history?page_size={PAGE}",
        platform.gateway_url
    );
    // A page token deep in the history: walk there once.
    let mut deep = base.clone();
    for _ in 0..deep_pages {
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
    let kinds = [
        ("first page".to_owned(), base.clone()),
        (format!("page {}", deep_pages + 1), deep),
        ("status filter".to_owned(), format!("{base}&status=failed")),
        ("search".to_owned(), format!("{base}&q=harbour")),
    ];
    let mut report = Report::new("history", "History: a page of 50, PostgreSQL");
    for (name, url) in &kinds {
        let mut values = Vec::with_capacity(runs);
        for _ in 0..runs {
            values.push(ms(p99(&client, url, &user.token, samples).await));
        }
        report.row(
            Row::new(format!("{name}, p99"))
                .ours_spread(Spread::of(&values), "ms")
                .at_most(TARGET_MS),
        );
    }
    report.note(format!(
        "{} finished jobs of one user in `processing_jobs`; each run times {samples} \
         sequential requests per page kind through the gateway (gateway → user → processing \
         and image services, mutual TLS), after 10 to warm up. Runs: {runs}; median and \
         spread of their p99. Machine: {}.",
        atelier_bench::number(jobs as f64),
        atelier_bench::machine()
    ));
    report.finish(mode);
}
