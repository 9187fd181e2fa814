//! Job state changes on both databases: a change made from the row a worker holds
//! writes only what it changes, and a stale row is read again rather than trusted.

use atelier_processing::{
    domain::{Job, Priority, Quota, Status},
    migration::Migrator,
    store::Store,
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

fn queued_job(now: OffsetDateTime) -> Job {
    Job {
        id: Uuid::now_v7(),
        user_id: Uuid::new_v4(),
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
        batch_id: None,
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

async fn changes_from_a_held_row(conn: DatabaseConnection) {
    atelier_common::db::migrate::<Migrator>(&conn, "processing")
        .await
        .expect("migrate");
    let store = Store::new(conn);
    let now = OffsetDateTime::now_utc();
    let job = queued_job(now);
    let events = store
        .insert_admitted(
            std::slice::from_ref(&job),
            &[
                ("created", json!({"status": "pending"})),
                ("status_changed", json!({"status": "queued"})),
            ],
            &unlimited(),
        )
        .await
        .expect("insert")
        .expect("admitted");
    assert_eq!(
        events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    let held = store.by_id(job.id).await.expect("read").expect("job");
    assert_eq!(held.status, Status::Queued);
    // Its run is recorded with it (the three inserts are one statement on PostgreSQL).
    assert_eq!(
        store
            .usage(job.user_id, OffsetDateTime::UNIX_EPOCH, &[Status::Queued])
            .await
            .expect("usage"),
        (1, 1)
    );

    // Claimed from the held row: the returned row is the stored one.
    let (claimed, none) = store
        .transition(
            &held,
            &[Status::Queued],
            |job| {
                job.status = Status::Submitted;
                job.attempts = 1;
            },
            None,
            now,
        )
        .await
        .expect("claim")
        .expect("claimed");
    assert!(none.is_none());
    assert_eq!((claimed.status, claimed.attempts), (Status::Submitted, 1));
    assert_eq!(
        store.by_id(job.id).await.expect("read"),
        Some(claimed.clone())
    );

    // Another writer sets the queue position; a change made from the row held
    // before that leaves it alone, since it does not change it.
    store
        .set_progress(job.id, Some(3), Some(0.5))
        .await
        .expect("progress");
    let (processing, event) = store
        .transition(
            &claimed,
            &[Status::Submitted],
            |job| job.status = Status::Processing,
            Some(("status_changed", json!({"status": "processing"}))),
            now,
        )
        .await
        .expect("transition")
        .expect("changed");
    assert_eq!(processing.status, Status::Processing);
    assert_eq!(processing.queue_position, Some(3), "not written back");
    assert_eq!(processing.progress, Some(0.5));
    assert_eq!(event.expect("event").seq, 3);

    // A held row whose status moved on is read again and the change decided anew:
    // still allowed from the current status, it applies...
    let (finished, _) = store
        .transition(
            &claimed,
            &[Status::Submitted, Status::Processing],
            |job| {
                job.status = Status::Completed;
                job.queue_position = None;
            },
            Some(("status_changed", json!({"status": "completed"}))),
            now,
        )
        .await
        .expect("transition")
        .expect("completed from the current status");
    assert_eq!(finished.status, Status::Completed);
    assert_eq!(finished.queue_position, None);
    // ...and not allowed from it, nothing changes.
    let refused = store
        .transition(
            &held,
            &[Status::Queued],
            |job| job.status = Status::Submitted,
            Some(("status_changed", json!({"status": "submitted"}))),
            now,
        )
        .await
        .expect("transition");
    assert!(refused.is_none());
    let stored = store.by_id(job.id).await.expect("read").expect("job");
    assert_eq!(stored, finished);
    assert_eq!(
        store
            .events_after(job.id, 0)
            .await
            .expect("events")
            .iter()
            .map(|event| event.seq)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "one event per change made, none for the refused one"
    );
}

#[tokio::test]
async fn changes_from_a_held_row_on_postgres() {
    let (conn, _db) = postgres().await;
    changes_from_a_held_row(conn).await;
}

#[tokio::test]
async fn changes_from_a_held_row_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    changes_from_a_held_row(sqlite(&dir).await).await;
}
