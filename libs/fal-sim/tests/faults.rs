//! Faults for chaos tests (`/_sim/faults`): outages answering 503 or refusing
//! connections, latency, a slow factor; and the counters chaos tests read
//! (`/_sim/stats`: repeated inputs, ends, calls during an outage).

mod common;

use std::time::{Duration, Instant};

use atelier_fal_sim::{Faults, Outage, OutageKind, SimConfig};
use common::{Sim, png_data_uri, quick};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ESRGAN: &str = "fal-ai/esrgan";

async fn put_faults(sim: &Sim, faults: &Value) -> reqwest::Response {
    sim.http
        .put(sim.url("_sim/faults"))
        .json(faults)
        .send()
        .await
        .expect("setting faults")
}

async fn stats(sim: &Sim) -> Value {
    let response = sim
        .http
        .get(sim.url("_sim/stats"))
        .send()
        .await
        .expect("reading stats");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

#[tokio::test]
async fn an_unavailable_outage_answers_503_and_counts_each_call_by_kind() {
    let sim = Sim::start(quick()).await;
    let input = json!({ "image_url": png_data_uri(16, 12) });
    let done = sim.run(ESRGAN, &input).await;
    let file_url = done["image"]["url"].as_str().expect("url").to_owned();
    let submitted = sim.submit(ESRGAN, &input).await;
    sim.wait(&submitted).await;

    let set = put_faults(&sim, &json!({"outage": "unavailable", "outage_ms": 60_000})).await;
    assert_eq!(set.status(), StatusCode::OK);
    let shown: Value = set.json().await.expect("json");
    assert_eq!(shown["outage"], "unavailable");
    assert!(shown["outage_ms"].as_u64().expect("ms") > 59_000, "{shown}");

    assert_eq!(
        sim.submit_raw(ESRGAN, &input).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    for url in [
        submitted["status_url"].as_str().expect("url"),
        submitted["status_url"].as_str().expect("url"),
        submitted["response_url"].as_str().expect("url"),
        &file_url,
    ] {
        let response = sim.http.get(url).send().await.expect("calling");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
    }
    let cancel = sim
        .http
        .put(submitted["cancel_url"].as_str().expect("url"))
        .send()
        .await
        .expect("cancelling");
    assert_eq!(cancel.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The simulator's own routes stay up, and the health check too.
    let health = sim
        .http
        .get(sim.url("healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let counted = stats(&sim).await;
    assert_eq!(
        counted["outage_calls"],
        json!({"submit": 1, "status": 2, "result": 1, "cancel": 1, "file": 1}),
        "{counted}"
    );
    assert_eq!(sim.handle.outage_calls(), 6);
    assert_eq!(
        counted["submissions"], 2,
        "nothing was queued during the outage"
    );

    // Lifted: fal answers again, and nothing more is counted.
    assert_eq!(put_faults(&sim, &json!({})).await.status(), StatusCode::OK);
    sim.run(ESRGAN, &input).await;
    assert_eq!(sim.handle.outage_calls(), 6);
}

#[tokio::test]
async fn a_refusing_outage_closes_the_port_and_drops_open_connections_until_it_ends() {
    let sim = Sim::start(SimConfig {
        processing_time: Duration::from_secs(30),
        ..quick()
    })
    .await;
    let input = json!({ "image_url": png_data_uri(16, 12) });
    let submitted = sim.submit(ESRGAN, &input).await;
    // A status stream held open from before the outage.
    let stream_url = format!(
        "{}/stream",
        submitted["status_url"].as_str().expect("a status url")
    );
    let response = sim.http.get(&stream_url).send().await.expect("streaming");
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a first event");
    assert!(first.is_ok());

    sim.handle.set_faults(Faults {
        outage: Some(Outage {
            kind: OutageKind::Refuse,
            until: Instant::now() + Duration::from_millis(800),
        }),
        ..Faults::default()
    });
    // The open connection is dropped: the stream ends with an error.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the open stream was not dropped");
    // New connections are refused, not answered.
    let refused = reqwest::Client::new()
        .get(sim.url("healthz"))
        .send()
        .await
        .expect_err("the port is closed");
    assert!(refused.is_connect(), "{refused:?}");

    // Once it is over, the same address answers again.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let health = reqwest::Client::new()
        .get(sim.url("healthz"))
        .send()
        .await
        .expect("listening again");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(sim.handle.faults().outage_now(), None);
}

#[tokio::test]
async fn latency_delays_every_call_to_fal_and_the_slow_factor_scales_the_timing() {
    let sim = Sim::start(quick()).await;
    let knobs = || async {
        let response = sim
            .http
            .get(sim.url("_sim/knobs"))
            .send()
            .await
            .expect("knobs");
        response.json::<Value>().await.expect("json")
    };
    assert_eq!(knobs().await["processing_time_ms"], 20);
    let set = put_faults(&sim, &json!({"slow_factor": 10, "latency_ms": 300})).await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(knobs().await["processing_time_ms"], 200);

    let input = json!({ "image_url": png_data_uri(16, 12) });
    let started = Instant::now();
    let submitted = sim.submit(ESRGAN, &input).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let status = sim.wait(&submitted).await;
    let inference = status["metrics"]["inference_time"].as_f64().expect("time");
    assert!(inference >= 0.2, "ran 10× the 20 ms: {inference}");
    // The simulator's own routes are not delayed.
    let started = Instant::now();
    stats(&sim).await;
    assert!(started.elapsed() < Duration::from_millis(300));

    // Back to 1: the timing as it was.
    assert_eq!(put_faults(&sim, &json!({})).await.status(), StatusCode::OK);
    assert_eq!(knobs().await["processing_time_ms"], 20);
}

#[tokio::test]
async fn a_resubmitted_input_is_counted_even_when_its_url_was_signed_again() {
    let sim = Sim::start(quick()).await;
    // Nothing listens there: the requests fail, which is counted too.
    let signed = |sig: &str, seed: u64| json!({"image_url": format!("http://127.0.0.1:9/in.png?exp=1&sig={sig}"), "seed": seed});
    for (sig, seed) in [("a", 1), ("b", 2), ("c", 1)] {
        let submitted = sim.submit(ESRGAN, &signed(sig, seed)).await;
        sim.wait(&submitted).await;
    }
    let counted = stats(&sim).await;
    assert_eq!(counted["submissions"], 3);
    assert_eq!(counted["distinct_inputs"], 2);
    assert_eq!(counted["repeated_submissions"], 1);
    assert_eq!(counted["failed"], 3);
    assert_eq!(counted["completed"], 0);
    sim.run(ESRGAN, &json!({ "image_url": png_data_uri(16, 12) }))
        .await;
    assert_eq!(sim.handle.completed(), 1);
    assert_eq!(sim.handle.repeated_submissions(), 1);
}

#[tokio::test]
async fn bad_faults_are_refused_and_change_nothing() {
    let sim = Sim::start(quick()).await;
    for bad in [
        json!({"outage": "unavailable"}),
        json!({"outage": "sideways", "outage_ms": 10}),
        json!({"slow_factor": 0}),
        json!({"latency": 5}),
    ] {
        let response = put_faults(&sim, &bad).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(sim.handle.faults(), Faults::default());
    let shown: Value = sim
        .http
        .get(sim.url("_sim/faults"))
        .send()
        .await
        .expect("faults")
        .json()
        .await
        .expect("json");
    assert_eq!(
        shown,
        json!({"outage": null, "outage_ms": 0, "latency_ms": 0, "slow_factor": 1.0})
    );
}
