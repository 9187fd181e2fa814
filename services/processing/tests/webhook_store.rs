//! Outgoing webhooks' tables on both databases: a job's final state change writes
//! its message in the same write (only for a user with an enabled endpoint), a
//! message fans out once to the endpoints that want it, a batch whose last job
//! finishes adds one `batch.completed`, and a claimed delivery is one worker's
//! until its lease runs out.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use atelier_common::Clock;
use atelier_processing::{
    domain::{
        Job, Priority, Quota, Status,
        outbound::{Attempt, Deliverer, Endpoint, WebhookSettings, payload},
    },
    migration::Migrator,
    store::{
        Store,
        webhooks::{AfterAttempt, WebhookStore},
    },
};
use atelier_testkit::TestDb;
use sea_orm::DatabaseConnection;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

async fn postgres() -> (DatabaseConnection, TestDb) {
    let db = TestDb::create().await.expect("TEST_DATABASE_URL reachable");
    let conn = atelier_common::db::connect_postgres(&db.url, "processing")
        .await
        .expect("connect");
    (conn, db)
}

async fn sqlite(dir: &tempfile::TempDir) -> DatabaseConnection {
    let path = dir.path().join("processing.db");
    atelier_common::db::connect_sqlite(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("connect")
}

/// A clock the test moves.
struct TestClock(Mutex<OffsetDateTime>);

impl TestClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().expect("clock")
    }
}

fn unlimited() -> Quota {
    Quota {
        tier: "free".into(),
        jobs_per_day: None,
        concurrent_jobs: None,
        parallel_jobs: None,
        high_priority: true,
        period_start: OffsetDateTime::UNIX_EPOCH,
        period_end: OffsetDateTime::now_utc() + time::Duration::days(1),
        daily_budget: None,
        monthly_budget: None,
    }
}

fn job(user_id: Uuid, batch_id: Option<Uuid>, now: OffsetDateTime) -> Job {
    Job {
        id: Uuid::now_v7(),
        user_id,
        image_id: Uuid::new_v4(),
        workflow_id: "lineart".into(),
        workflow_name: "Line art".into(),
        workflow_version: 1,
        fal_endpoint: "fal-ai/lineart".into(),
        parameters: json!({}),
        priority: Priority::Normal,
        status: Status::Queued,
        fal_request_id: None,
        result_image_id: None,
        result_image_ids: json!([]),
        error_code: None,
        error_message: None,
        error_details: None,
        attempts: 0,
        queue_position: None,
        progress: None,
        processing_time_ms: None,
        idempotency_key: None,
        batch_id,
        created_at: now,
        started_at: None,
        completed_at: None,
        updated_at: now,
        search_text: "line art".into(),
        input_filename: Some("photo.png".into()),
        estimated_cost: None,
        cost_currency: None,
        unit_price: None,
        price_unit: None,
        actual_cost: None,
    }
}

fn endpoint(user_id: Uuid, event_types: &[&str], now: OffsetDateTime) -> Endpoint {
    Endpoint {
        id: Uuid::now_v7(),
        user_id,
        url: "http://127.0.0.1:9/hook".into(),
        description: String::new(),
        event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        previous_secret: None,
        previous_secret_expires_at: None,
        enabled: true,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        failed_deliveries: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Completes `job` (queued) through the store, as a worker would.
async fn complete(store: &Store, job: &Job, now: OffsetDateTime) {
    store
        .transition(
            job.id,
            &[Status::Queued],
            |job| {
                job.status = Status::Completed;
                job.completed_at = Some(now);
                job.result_image_ids = json!(["7f1d8a4e-0000-4000-8000-000000000001"]);
            },
            Some(("status_changed", json!({"status": "completed"}))),
            now,
        )
        .await
        .expect("complete")
        .expect("completed");
}

async fn outbox_fan_out_and_leases(conn: DatabaseConnection) {
    atelier_common::db::migrate::<Migrator>(&conn, "processing")
        .await
        .expect("migrate");
    let store = Store::new(conn.clone());
    let hooks = WebhookStore::new(conn);
    let start = OffsetDateTime::now_utc();
    let clock = Arc::new(TestClock(Mutex::new(start)));
    let settings = Arc::new(WebhookSettings {
        schedule: vec![Duration::ZERO, Duration::from_secs(60)],
        lease: Duration::from_secs(30),
        ..WebhookSettings::default()
    });
    let deliverer = |clock: Arc<TestClock>| {
        Deliverer::new(
            hooks.clone(),
            store.clone(),
            clock,
            settings.clone(),
            Arc::new(tokio::sync::Notify::new()),
        )
    };
    let (a, b) = (deliverer(clock.clone()), deliverer(clock.clone()));

    // A user without endpoints: their job's completion writes no message.
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let batch = Uuid::now_v7();
    let jobs = [
        job(other, None, start),
        job(user, Some(batch), start),
        job(user, Some(batch), start),
    ];
    for jobs in [&jobs[..1], &jobs[1..]] {
        store
            .insert_admitted(
                jobs,
                &[("created", json!({"status": "queued"}))],
                &unlimited(),
            )
            .await
            .expect("insert")
            .expect("admitted");
    }
    complete(&store, &jobs[0], start).await;
    assert!(
        hooks
            .unsent_messages(10)
            .await
            .expect("messages")
            .is_empty()
    );

    // The user's endpoints: one for every type, one for failures only, one disabled.
    let every = endpoint(user, &[], start);
    let failures = endpoint(user, &[payload::JOB_FAILED], start);
    let mut disabled = endpoint(user, &[], start);
    disabled.enabled = false;
    for endpoint in [&every, &failures, &disabled] {
        hooks.insert_endpoint(endpoint).await.expect("endpoint");
    }
    complete(&store, &jobs[1], start).await;
    let messages = hooks.unsent_messages(10).await.expect("messages");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let body: serde_json::Value = serde_json::from_str(&messages[0].payload).expect("json");
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["data"]["id"], jobs[1].id.to_string());
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(
        body["data"]["result_image_ids"],
        json!(["7f1d8a4e-0000-4000-8000-000000000001"])
    );
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

    // Fanned out once, to the endpoint that wants it; the batch is not final yet.
    assert_eq!(a.fan_out().await.expect("fan out"), 1);
    assert_eq!(b.fan_out().await.expect("fan out"), 0);
    let claimed = a.claim(10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint.id, every.id);
    assert_eq!(claimed[0].message.id, messages[0].id);
    // Held by `a`: `b` gets nothing until the lease runs out.
    assert!(b.claim(10).await.expect("claim").is_empty());

    // The batch's last job: its message, then one `batch.completed`.
    clock.advance(Duration::from_secs(1));
    complete(&store, &jobs[2], clock.now()).await;
    assert_eq!(b.fan_out().await.expect("fan out"), 2);
    assert_eq!(a.fan_out().await.expect("fan out"), 0);
    let due = b.claim(10).await.expect("claim");
    let mut types: Vec<&str> = due
        .iter()
        .map(|due| due.message.event_type.as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["batch.completed", "job.completed"], "{due:?}");
    let batch_due = due
        .iter()
        .find(|due| due.message.event_type == "batch.completed")
        .expect("batch.completed");
    let batch_body: serde_json::Value =
        serde_json::from_str(&batch_due.message.payload).expect("json");
    assert_eq!(batch_body["data"]["id"], batch.to_string());
    assert_eq!(batch_body["data"]["status"], "completed");
    assert_eq!(batch_body["data"]["total"], 2);
    // Seeing the same final batch again makes no second message.
    let again = payload::batch_message(
        batch,
        &store.of_batch(user, batch).await.expect("batch"),
        clock.now(),
    )
    .expect("a final batch");
    hooks
        .insert_message(&again)
        .await
        .expect("dropped as a duplicate");
    assert_eq!(a.fan_out().await.expect("fan out"), 0);

    // `a`'s lease runs out (not yet `b`'s, taken a second later): `b` takes the
    // first delivery over; a record by a worker that no longer holds it is refused.
    clock.advance(settings.lease - Duration::from_secs(1));
    let taken = b.claim(10).await.expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].delivery.id, claimed[0].delivery.id);
    let attempt = |delivery_id| Attempt {
        delivery_id,
        number: 1,
        at: clock.now(),
        response_status: Some(503),
        response_body: Some("busy".into()),
        latency_ms: 3,
        error: None,
    };
    assert!(
        hooks
            .record_attempt(
                "another worker",
                &attempt(claimed[0].delivery.id),
                every.id,
                AfterAttempt::Failed
            )
            .await
            .expect("record")
            .is_none()
    );
}

#[tokio::test]
async fn outbox_fan_out_and_leases_on_postgres() {
    let (conn, _db) = postgres().await;
    outbox_fan_out_and_leases(conn).await;
}

#[tokio::test]
async fn outbox_fan_out_and_leases_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    outbox_fan_out_and_leases(sqlite(&dir).await).await;
}
