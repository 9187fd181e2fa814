//! The account's concurrency limit, modelled as fal has it: only `IN_PROGRESS` requests
//! count, a submission is never refused for it (it waits `IN_QUEUE` with a position and
//! starts when a slot frees), and only `fal_max_queue_length` turns submissions away.

mod common;

use std::time::Duration;

use atelier_fal_sim::SimConfig;
use common::{PATIENCE, Sim, png_data_uri};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ESRGAN: &str = "fal-ai/esrgan";

fn input() -> Value {
    json!({ "image_url": png_data_uri(16, 12) })
}

async fn status(sim: &Sim, submitted: &Value) -> Value {
    sim.http
        .get(submitted["status_url"].as_str().expect("status_url"))
        .send()
        .await
        .expect("reading the status")
        .json()
        .await
        .expect("a JSON status")
}

#[tokio::test]
async fn only_running_requests_count_and_queued_ones_wait_their_turn() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 2,
        processing_time: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let mut submitted = Vec::new();
    for _ in 0..7 {
        // Far past the limit: every submission is accepted.
        submitted.push(sim.submit(ESRGAN, &input()).await);
    }

    // While they run: two in progress at most, the others queued in order.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut saw_full = false;
    loop {
        let mut running = 0;
        let mut positions = Vec::new();
        let mut completed = 0;
        for request in &submitted {
            let body = status(&sim, request).await;
            match body["status"].as_str() {
                Some("IN_PROGRESS") => running += 1,
                Some("IN_QUEUE") => {
                    positions.push(body["queue_position"].as_u64().expect("a position"))
                }
                Some("COMPLETED") => completed += 1,
                other => panic!("unexpected status {other:?}: {body}"),
            }
        }
        // The statuses are read one after another, so a request may finish and the
        // next one start between two reads: the sum is no snapshot. The simulator's own
        // count is one, and its peak is checked at the end.
        assert!(sim.handle.running() <= 2);
        // Never more queued than submitted less the two running.
        assert!(positions.iter().all(|p| *p < 5), "positions {positions:?}");
        saw_full |= running >= 2 && !positions.is_empty();
        if completed == submitted.len() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not done in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_full, "two ran while others waited");
    assert_eq!(
        sim.handle.peak_running(),
        2,
        "the limit was reached, never passed"
    );
    assert_eq!(sim.handle.running(), 0);
    for request in &submitted {
        let done = sim.wait(request).await;
        assert_eq!(done["error"], Value::Null, "{done}");
    }

    let stats: Value = sim
        .http
        .get(sim.url("_sim/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON stats");
    assert_eq!(stats["peak_running"], 2);
    assert_eq!(stats["running"], 0);
    assert_eq!(stats["submissions"], 7);
}

#[tokio::test]
async fn a_full_queue_answers_429_only_past_fal_max_queue_length() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        processing_time: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let running = sim.submit(ESRGAN, &input()).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while status(&sim, &running).await["status"] != "IN_PROGRESS" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let submit_bounded = |max: &'static str| {
        let sim = &sim;
        async move {
            sim.http
                .post(sim.url(ESRGAN))
                .query(&[("fal_max_queue_length", max)])
                .json(&input())
                .send()
                .await
                .expect("submitting")
        }
    };
    // The running request takes no room in the queue.
    let first = submit_bounded("1").await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.expect("a reply");
    assert_eq!(first["queue_position"], 0);
    let refused = submit_bounded("1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.expect("a JSON error");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("fal_max_queue_length")),
        "{body}"
    );
    let roomier = submit_bounded("2").await;
    assert_eq!(roomier.status(), StatusCode::OK);
    assert_eq!(
        sim.handle.submissions(),
        3,
        "the refused one was not queued"
    );
    assert_eq!(sim.handle.peak_running(), 1);
}
