//! Pipelines end to end through the gateway's REST API, with the fal simulator,
//! on PostgreSQL + Redis and on SQLite + the in-process queue:
//! - a three-step pipeline (background removal → 2× upscale → edges), saved and
//!   run, completes with each step's input the previous step's result (the sizes
//!   say so), replays its Idempotency-Key, streams its events resumably, and runs
//!   on a batch of images, one run each;
//! - validation names the step and the field, on validate, save and start;
//! - a failing middle step fails the run, keeping the first step; a retry
//!   resumes from the failed step without running the first again;
//! - a cancelled run stops, its job is cancelled at fal, no next step starts;
//! - the processing service restarted mid-run: the run still finishes, no step
//!   started twice;
//! - another user's pipeline and run answer 404 everywhere.

use std::time::{Duration, Instant};

use atelier_testbed::{Backend, Options, QueueBackend, TestPlatform};
use atelier_testkit::{
    backends, fixtures,
    rest::{User, sign_up, upload},
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// PostgreSQL with Redis, or SQLite with the in-process queue.
async fn platform(backend: Backend) -> TestPlatform {
    let mut options = Options::new(backend);
    if backend == Backend::Postgres {
        options.queue = QueueBackend::Redis;
    }
    TestPlatform::spawn_with(options).await
}

/// A call to the gateway as `user`: the status and the JSON body (null when none).
async fn call(
    platform: &TestPlatform,
    user: &User,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Client::new()
        .request(method, format!("{}{path}", platform.gateway_url))
        .bearer_auth(&user.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Starts runs of `body` as `user`; the runs.
async fn start_runs(platform: &TestPlatform, user: &User, body: Value) -> Vec<Value> {
    let (status, started) = call(
        platform,
        user,
        Method::POST,
        "/api/pipeline-runs",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    started["runs"].as_array().expect("runs").clone()
}

async fn run(platform: &TestPlatform, user: &User, id: &str) -> Value {
    let (status, run) = call(
        platform,
        user,
        Method::GET,
        &format!("/api/pipeline-runs/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run
}

/// Waits (at most a minute) until the run satisfies `done`; the run.
async fn wait_for(
    platform: &TestPlatform,
    user: &User,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = run(platform, user, id).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "the run never {what}: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_status(platform: &TestPlatform, user: &User, id: &str, status: &str) -> Value {
    wait_for(platform, user, id, status, |run| run["status"] == status).await
}

/// An image's width and height.
async fn size(platform: &TestPlatform, user: &User, id: &Value) -> (u64, u64) {
    let id = id.as_str().expect("an image id");
    let (status, image) = call(
        platform,
        user,
        Method::GET,
        &format!("/api/images/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{image}");
    (
        image["width"].as_u64().expect("width"),
        image["height"].as_u64().expect("height"),
    )
}

/// A job's status body.
async fn job(platform: &TestPlatform, user: &User, id: &Value) -> Value {
    let id = id.as_str().expect("a job id");
    let (status, job) = call(
        platform,
        user,
        Method::GET,
        &format!("/api/processing/{id}/status"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

fn three_steps() -> Value {
    json!([
        {"workflow_id": "rembg-background-removal"},
        {"workflow_id": "esrgan-upscale", "parameters": {"scale": 2}},
        {"workflow_id": "canny-edges"},
    ])
}

fn fields(problem: &Value, key: &str) -> Vec<String> {
    let mut fields: Vec<String> = problem[key]
        .as_array()
        .expect("violations")
        .iter()
        .map(|violation| violation["field"].as_str().expect("field").to_owned())
        .collect();
    fields.sort();
    fields
}

/// The SSE body of a finished run's events (the stream ends with the run).
async fn events_text(
    platform: &TestPlatform,
    user: &User,
    id: &str,
    last_event_id: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Client::new()
        .get(format!(
            "{}/api/pipeline-runs/{id}/events",
            platform.gateway_url
        ))
        .bearer_auth(&user.token);
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = tokio::time::timeout(Duration::from_secs(30), request.send())
        .await
        .expect("in time")
        .expect("events");
    let status = response.status();
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends with the run")
        .expect("text");
    (status, text)
}

async fn a_saved_pipeline_chains_its_steps(backend: Backend) {
    let platform = platform(backend).await;
    let user = sign_up(&platform, "chainer@example.com").await;
    let image = upload(&platform, &user, fixtures::png(32, 24)).await;

    // Validation names the step and the field, and saves nothing.
    let bad = json!([
        {"workflow_id": "rembg-background-removal"},
        {"workflow_id": "esrgan-upscale", "parameters": {"scale": 99}},
        {"workflow_id": "no-such-workflow"},
    ]);
    let (status, checked) = call(
        &platform,
        &user,
        Method::POST,
        "/api/pipelines/validate",
        Some(json!({"steps": bad})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{checked}");
    assert_eq!(checked["valid"], false);
    assert_eq!(
        fields(&checked, "violations"),
        ["steps[1].parameters.scale", "steps[2].workflow_id"]
    );
    let (status, problem) = call(
        &platform,
        &user,
        Method::POST,
        "/api/pipelines",
        Some(json!({"name": "broken", "steps": bad})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(
        fields(&problem, "errors"),
        ["steps[1].parameters.scale", "steps[2].workflow_id"]
    );
    let (status, problem) = call(
        &platform,
        &user,
        Method::POST,
        "/api/pipeline-runs",
        Some(json!({"steps": bad, "image_ids": [image]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = call(
        &platform,
        &user,
        Method::POST,
        "/api/pipelines",
        Some(json!({"name": "too long", "steps": vec![json!({"workflow_id": "canny-edges"}); 9]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(fields(&problem, "errors"), ["steps"]);
    let (_, listed) = call(&platform, &user, Method::GET, "/api/pipelines", None).await;
    assert_eq!(listed["pipelines"], json!([]), "nothing half-written");
    let (_, checked) = call(
        &platform,
        &user,
        Method::POST,
        "/api/pipelines/validate",
        Some(json!({"steps": three_steps()})),
    )
    .await;
    assert_eq!(checked, json!({"valid": true, "violations": []}));

    // Saved, renamed, listed.
    let (status, saved) = call(
        &platform,
        &user,
        Method::POST,
        "/api/pipelines",
        Some(json!({"name": "cutout", "steps": three_steps()})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{saved}");
    let pipeline = saved["id"].as_str().expect("id").to_owned();
    let (status, renamed) = call(
        &platform,
        &user,
        Method::PATCH,
        &format!("/api/pipelines/{pipeline}"),
        Some(json!({"name": "cutout, upscale, edges"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["steps"], saved["steps"]);
    let (_, listed) = call(&platform, &user, Method::GET, "/api/pipelines", None).await;
    assert_eq!(listed["pipelines"][0]["name"], "cutout, upscale, edges");

    // Run once (idempotently), to completion.
    let start = json!({"pipeline_id": pipeline, "image_ids": [image]});
    let post = |key: &'static str| {
        Client::new()
            .post(format!("{}/api/pipeline-runs", platform.gateway_url))
            .bearer_auth(&user.token)
            .header("idempotency-key", key)
            .json(&start)
            .send()
    };
    let first: Value = post("run-1")
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let again: Value = post("run-1")
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    assert_eq!(again["replayed"], true);
    assert_eq!(first["runs"][0]["id"], again["runs"][0]["id"]);
    let id = first["runs"][0]["id"].as_str().expect("run id").to_owned();
    let done = wait_status(&platform, &user, &id, "completed").await;
    assert_eq!(done["pipeline_name"], "cutout, upscale, edges");
    assert_eq!(done["current_step"], 3);
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["input_image_id"], json!(image));
    for index in 1..3 {
        assert_eq!(
            steps[index]["input_image_id"],
            steps[index - 1]["result_image_id"],
            "step {index} ran on the previous step's result: {done}"
        );
    }
    for step in steps {
        assert_eq!(step["status"], "completed", "{done}");
        assert_eq!(step["attempts"], 1);
        let job = job(&platform, &user, &step["job_id"]).await;
        assert_eq!(job["status"], "completed");
        assert_eq!(job["image_id"], step["input_image_id"], "{job}");
    }
    assert_eq!(
        size(&platform, &user, &steps[0]["result_image_id"]).await,
        (32, 24)
    );
    assert_eq!(
        size(&platform, &user, &steps[1]["result_image_id"]).await,
        (64, 48)
    );
    assert_eq!(
        size(&platform, &user, &steps[2]["result_image_id"]).await,
        (64, 48)
    );
    assert_eq!(done["result_image_id"], steps[2]["result_image_id"]);
    assert_eq!(platform.fal_sim().submissions(), 3, "one job per step");

    // Its events: every stored one with its id, the last one final; resumable.
    let (status, text) = events_text(&platform, &user, &id, None).await;
    assert_eq!(status, StatusCode::OK);
    for kind in [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ] {
        assert!(text.contains(&format!("event: {kind}")), "{kind}: {text}");
    }
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|seq| seq.trim().parse().expect("a seq"))
        .collect();
    let last = *ids.last().expect("ids");
    let (_, rest) = events_text(&platform, &user, &id, Some(&(last - 1).to_string())).await;
    assert_eq!(
        rest.lines().filter(|line| line.starts_with("id: ")).count(),
        1,
        "{rest}"
    );
    assert!(rest.contains("event: run_completed"), "{rest}");

    // A batch: one run per image, sharing a batch id.
    let other = upload(&platform, &user, fixtures::png(20, 10)).await;
    let runs = start_runs(
        &platform,
        &user,
        json!({"steps": [{"workflow_id": "lineart"}, {"workflow_id": "esrgan-upscale", "parameters": {"scale": 2}}], "image_ids": [image, other]}),
    )
    .await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["batch_id"], runs[1]["batch_id"]);
    assert_eq!(runs[1]["image_id"], json!(other));
    let second = runs[1]["id"].as_str().expect("id");
    let done = wait_status(&platform, &user, second, "completed").await;
    assert_eq!(
        size(&platform, &user, &done["result_image_id"]).await,
        (40, 20)
    );
    wait_status(
        &platform,
        &user,
        runs[0]["id"].as_str().expect("id"),
        "completed",
    )
    .await;
    let (_, listed) = call(&platform, &user, Method::GET, "/api/pipeline-runs", None).await;
    assert_eq!(listed["runs"].as_array().expect("runs").len(), 3);
    let (_, of_saved) = call(
        &platform,
        &user,
        Method::GET,
        &format!("/api/pipeline-runs?pipeline_id={pipeline}"),
        None,
    )
    .await;
    assert_eq!(of_saved["runs"].as_array().expect("runs").len(), 1);

    // Someone else sees none of it.
    let stranger = sign_up(&platform, "stranger@example.com").await;
    for (method, path) in [
        (Method::GET, format!("/api/pipelines/{pipeline}")),
        (Method::PATCH, format!("/api/pipelines/{pipeline}")),
        (Method::DELETE, format!("/api/pipelines/{pipeline}")),
        (Method::GET, format!("/api/pipeline-runs/{id}")),
        (Method::POST, format!("/api/pipeline-runs/{id}/cancel")),
        (Method::POST, format!("/api/pipeline-runs/{id}/retry")),
    ] {
        let (status, problem) = call(
            &platform,
            &stranger,
            method.clone(),
            &path,
            Some(json!({"name": "mine"})),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
    }
    let (status, _) = events_text(&platform, &stranger, &id, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = call(
        &platform,
        &stranger,
        Method::POST,
        "/api/pipeline-runs",
        Some(json!({"pipeline_id": pipeline, "image_ids": [image]})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (_, theirs) = call(
        &platform,
        &stranger,
        Method::GET,
        "/api/pipeline-runs",
        None,
    )
    .await;
    assert_eq!(theirs["runs"], json!([]));
    let (_, theirs) = call(&platform, &stranger, Method::GET, "/api/pipelines", None).await;
    assert_eq!(theirs["pipelines"], json!([]));

    let (status, _) = call(
        &platform,
        &user,
        Method::DELETE,
        &format!("/api/pipelines/{pipeline}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    run(&platform, &user, &id).await;
}

async fn a_failed_middle_step_is_retried_from_there(backend: Backend) {
    let platform = platform(backend).await;
    let user = sign_up(&platform, "retrier@example.com").await;
    let image = upload(&platform, &user, fixtures::png(32, 24)).await;
    // The first step's request holds at fal until the failure is set up, so it
    // succeeds and only what starts after it fails.
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        hang: true,
        ..Default::default()
    });
    let runs = start_runs(
        &platform,
        &user,
        json!({"steps": three_steps(), "image_ids": [image]}),
    )
    .await;
    let id = runs[0]["id"].as_str().expect("id").to_owned();
    wait_for(&platform, &user, &id, "ran its first step", |run| {
        run["steps"][0]["job_status"] == "processing"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        error_rate: 1.0,
        error_type: Some("bad_request".into()),
        ..Default::default()
    });
    let failed = wait_status(&platform, &user, &id, "failed").await;
    assert_eq!(failed["current_step"], 1, "{failed}");
    assert_eq!(failed["steps"][0]["status"], "completed");
    assert_eq!(failed["steps"][1]["status"], "failed");
    assert_eq!(failed["steps"][2]["status"], "pending");
    assert!(failed["steps"][2]["job_id"].is_null());
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("step 2")),
        "{failed}"
    );
    assert!(failed["result_image_id"].is_null());
    let failed_job = failed["steps"][1]["job_id"].clone();
    assert_eq!(job(&platform, &user, &failed_job).await["status"], "failed");

    platform
        .fal_sim()
        .set_failures(atelier_fal_sim::Failures::default());
    let (status, retried) = call(
        &platform,
        &user,
        Method::POST,
        &format!("/api/pipeline-runs/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["status"], "running");
    let done = wait_status(&platform, &user, &id, "completed").await;
    assert_eq!(done["steps"][0]["job_id"], failed["steps"][0]["job_id"]);
    assert_eq!(
        done["steps"][0]["result_image_id"],
        failed["steps"][0]["result_image_id"]
    );
    assert_eq!(done["steps"][0]["attempts"], 1);
    assert_eq!(done["steps"][1]["attempts"], 2);
    assert_ne!(
        done["steps"][1]["job_id"], failed_job,
        "a new job for the retry"
    );
    assert_eq!(
        done["steps"][1]["input_image_id"],
        done["steps"][0]["result_image_id"]
    );
    assert_eq!(
        size(&platform, &user, &done["result_image_id"]).await,
        (64, 48)
    );
    let sim = platform.fal_sim();
    assert_eq!(
        sim.submissions_to("fal-ai/imageutils/rembg"),
        1,
        "step 1 ran once"
    );
    assert_eq!(sim.submissions_to("fal-ai/esrgan"), 2);
    assert_eq!(sim.submissions_to("fal-ai/image-preprocessors/canny"), 1);
    let (status, _) = call(
        &platform,
        &user,
        Method::POST,
        &format!("/api/pipeline-runs/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a completed run is not retried"
    );
}

async fn a_cancelled_run_stops_with_its_job(backend: Backend) {
    let platform = platform(backend).await;
    let user = sign_up(&platform, "quitter@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        hang: true,
        ..Default::default()
    });
    let runs = start_runs(
        &platform,
        &user,
        json!({"steps": [{"workflow_id": "lineart"}, {"workflow_id": "canny-edges"}], "image_ids": [image]}),
    )
    .await;
    let id = runs[0]["id"].as_str().expect("id").to_owned();
    let running = wait_for(&platform, &user, &id, "reached fal", |run| {
        run["steps"][0]["job_status"] == "processing"
    })
    .await;
    let (status, cancelled) = call(
        &platform,
        &user,
        Method::POST,
        &format!("/api/pipeline-runs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["steps"][0]["status"], "cancelled");
    let job_id = running["steps"][0]["job_id"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while job(&platform, &user, &job_id).await["status"] != "cancelled" {
        assert!(
            Instant::now() < deadline,
            "the step's job was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while platform.fal_sim().cancellations() < 1 {
        assert!(Instant::now() < deadline, "never cancelled at fal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    platform
        .fal_sim()
        .set_failures(atelier_fal_sim::Failures::default());
    // A reconciliation later, nothing moved on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = run(&platform, &user, &id).await;
    assert_eq!(later["status"], "cancelled");
    assert!(later["steps"][1]["job_id"].is_null(), "{later}");
    assert_eq!(platform.fal_sim().submissions(), 1);
    let (status, _) = call(
        &platform,
        &user,
        Method::POST,
        &format!("/api/pipeline-runs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "already cancelled");
    // A cancelled run can run again from where it stopped.
    let (status, _) = call(
        &platform,
        &user,
        Method::POST,
        &format!("/api/pipeline-runs/{id}/retry"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = wait_status(&platform, &user, &id, "completed").await;
    assert_eq!(done["steps"][0]["attempts"], 2);
}

async fn a_run_survives_a_restart_of_processing(backend: Backend) {
    let platform = platform(backend).await;
    let user = sign_up(&platform, "patient@example.com").await;
    let image = upload(&platform, &user, fixtures::png(24, 16)).await;
    // Slow requests, so the restart comes while a step runs at fal (a stopping
    // worker lets its jobs finish first; a hanging one would never stop).
    platform.fal_sim().set_timing(atelier_fal_sim::Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::from_secs(2),
    });
    let runs = start_runs(
        &platform,
        &user,
        json!({"steps": [
            {"workflow_id": "lineart"},
            {"workflow_id": "esrgan-upscale", "parameters": {"scale": 2}},
            {"workflow_id": "canny-edges"},
        ], "image_ids": [image]}),
    )
    .await;
    let id = runs[0]["id"].as_str().expect("id").to_owned();
    wait_for(&platform, &user, &id, "reached fal", |run| {
        run["steps"][0]["job_status"] == "processing"
    })
    .await;
    platform.restart_processing().await;
    let done = wait_status(&platform, &user, &id, "completed").await;
    for step in done["steps"].as_array().expect("steps") {
        assert_eq!(step["attempts"], 1, "{done}");
    }
    assert_eq!(
        size(&platform, &user, &done["result_image_id"]).await,
        (48, 32)
    );
    assert_eq!(platform.fal_sim().submissions(), 3, "no step started twice");
    // And once more with the restart between steps' outcomes and the next start.
    let runs = start_runs(
        &platform,
        &user,
        json!({"steps": [{"workflow_id": "lineart"}, {"workflow_id": "canny-edges"}], "image_ids": [image]}),
    )
    .await;
    let id = runs[0]["id"].as_str().expect("id").to_owned();
    platform.restart_processing().await;
    let done = wait_status(&platform, &user, &id, "completed").await;
    assert_eq!(done["steps"][1]["attempts"], 1, "{done}");
    assert_eq!(platform.fal_sim().submissions(), 5, "no step started twice");
}

backends!(
    a_saved_pipeline_chains_its_steps,
    a_failed_middle_step_is_retried_from_there,
    a_cancelled_run_stops_with_its_job,
    a_run_survives_a_restart_of_processing,
);
