//! `GET /api/processing/:id/status` made cheap to poll: the plain view reads only the
//! job's row and is kept in the gateway's memory until the job changes; log lines and
//! the live queue position come when asked for; another user's job stays not-found.

use std::time::Duration;

use atelier_testbed::{Backend, Options, QueueBackend, TestPlatform};
use atelier_testkit::{
    backends, fixtures,
    rest::{User, finished, get, post, sign_up, start_job, upload},
};
use reqwest::StatusCode;
use serde_json::json;

/// A platform whose gateway keeps status bodies for a minute: only the job's
/// announcements can make it see a change within the tests' time.
async fn platform(backend: Backend) -> TestPlatform {
    let mut options = Options::new(backend);
    options.status_cache_ttl = Duration::from_secs(60);
    if backend == Backend::Postgres {
        // Announcements through Redis, as between replicas.
        options.queue = QueueBackend::Redis;
    }
    TestPlatform::spawn_with(options).await
}

async fn completed_job(platform: &TestPlatform, user: &User) -> String {
    let image = upload(platform, user, fixtures::png(32, 32)).await;
    let job = start_job(platform, user, &image, "lineart", json!({})).await;
    let done = finished(platform, user, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    job
}

async fn logs_and_queue_position_only_when_asked(backend: Backend) {
    let platform = platform(backend).await;
    let user = sign_up(&platform, "poll@example.com").await;
    let job = completed_job(&platform, &user).await;

    let (status, plain) = get(&platform, &user, format!("/api/processing/{job}/status")).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(
        plain["logs"],
        json!([]),
        "no log read unless asked: {plain}"
    );
    assert!(
        plain["outputs"][0]["url"]
            .as_str()
            .is_some_and(|url| !url.is_empty()),
        "{plain}"
    );

    let (status, full) = get(
        &platform,
        &user,
        format!("/api/processing/{job}/status?include=logs,queue_position"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert!(
        full["logs"].as_array().is_some_and(|logs| !logs.is_empty()),
        "the simulator logs every run: {full}"
    );
    assert_eq!(
        full["queue_position"],
        json!(null),
        "a finished job waits nowhere"
    );
    assert_eq!(full["status"], plain["status"]);
    assert_eq!(
        full["outputs"], plain["outputs"],
        "the same signed URLs, reused"
    );

    let (status, problem) = get(
        &platform,
        &user,
        format!("/api/processing/{job}/status?include=logs,everything"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "include", "{problem}");

    // A deleted output leaves the kept view at once.
    let output = plain["outputs"][0]["image_id"].as_str().expect("output id");
    let deleted = reqwest::Client::new()
        .delete(format!("{}/api/images/{output}", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (_, after) = get(&platform, &user, format!("/api/processing/{job}/status")).await;
    assert!(
        after["outputs"]
            .as_array()
            .is_some_and(|outputs| outputs.iter().all(|o| o["image_id"] != output)),
        "{after}"
    );
}

async fn another_users_job_is_not_found_though_kept(backend: Backend) {
    let platform = platform(backend).await;
    let alice = sign_up(&platform, "alice@example.com").await;
    let bob = sign_up(&platform, "bob@example.com").await;
    let job = completed_job(&platform, &alice).await;
    let path = format!("/api/processing/{job}/status");
    // Alice's view is kept now.
    for _ in 0..2 {
        assert_eq!(get(&platform, &alice, &path).await.0, StatusCode::OK);
    }
    let (status, problem) = get(&platform, &bob, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        !problem.to_string().contains(&alice.id),
        "nothing of alice's: {problem}"
    );
    let (status, _) = get(&platform, &bob, format!("{path}?include=logs")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Without a token, nothing.
    let anonymous = reqwest::Client::new()
        .get(format!("{}{path}", platform.gateway_url))
        .send()
        .await
        .expect("status");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn a_change_is_seen_at_once(backend: Backend) {
    let platform = platform(backend).await;
    let user = sign_up(&platform, "change@example.com").await;
    // The job waits at fal long enough to be read, kept, then cancelled.
    let mut timing = platform.fal_sim().knobs().timing;
    timing.queue_delay = Duration::from_secs(30);
    platform.fal_sim().set_timing(timing);
    let image = upload(&platform, &user, fixtures::png(32, 32)).await;
    let job = start_job(&platform, &user, &image, "lineart", json!({})).await;
    let path = format!("/api/processing/{job}/status");
    let (_, before) = get(&platform, &user, &path).await;
    assert_ne!(before["status"], "cancelled", "{before}");
    let (status, cancelled) = post(
        &platform,
        &user,
        format!("/api/processing/{job}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cancelled}");
    // The announcement travels (through Redis on PostgreSQL): a little while, far
    // less than the minute the body would otherwise be kept.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, now) = get(&platform, &user, &path).await;
        if now["status"] == "cancelled" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kept status was not dropped: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

backends!(
    logs_and_queue_position_only_when_asked,
    another_users_job_is_not_found_though_kept,
    a_change_is_seen_at_once
);
