//! Rows written straight into a service's schema, for tests and benchmarks that
//! measure reads over many rows without running every job through fal.

use atelier_processing::{
    domain::search_text,
    store::jobs::{self, JobPriority, JobStatus},
};
use sea_orm::{ConnectionTrait, EntityTrait};
use serde_json::json;

use crate::TestPlatform;

const WORKFLOWS: [(&str, &str); 2] = [
    ("esrgan-upscale", "ESRGAN upscaler"),
    ("flux-image-to-image", "FLUX image-to-image"),
];
const STATUSES: [JobStatus; 3] = [
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];
/// The prompts of the image-to-image jobs, in turn.
pub const PROMPTS: [&str; 3] = [
    "a lighthouse at sunset",
    "sunsets over the harbour",
    "a cat in a hat",
];

/// `count` finished jobs of `user` on `image`, created a minute apart from `start`:
/// job `i` is upscale when `i` is even, image-to-image with `PROMPTS[i % 3]` when odd,
/// and `STATUSES[i % 3]`.
pub async fn finished_jobs(
    platform: &TestPlatform,
    user: &str,
    image: &str,
    count: usize,
    start: time::OffsetDateTime,
) {
    let db = atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("processing db");
    let user_id: uuid::Uuid = user.parse().expect("user id");
    let image_id: uuid::Uuid = image.parse().expect("image id");
    let rows: Vec<jobs::ActiveModel> = (0..count)
        .map(|i| {
            let (workflow_id, workflow_name) = WORKFLOWS[i % 2];
            let parameters = if i % 2 == 0 {
                json!({"scale": 2})
            } else {
                json!({"prompt": PROMPTS[i % 3]})
            };
            let created = start + time::Duration::minutes(i as i64);
            sea_orm::IntoActiveModel::into_active_model(jobs::Model {
                id: uuid::Uuid::now_v7(),
                user_id,
                image_id,
                workflow_id: workflow_id.to_owned(),
                workflow_name: workflow_name.to_owned(),
                workflow_version: 1,
                fal_endpoint: "fal-ai/esrgan".to_owned(),
                search_text: search_text(workflow_name, workflow_id, "input.png", &parameters),
                input_filename: Some("input.png".to_owned()),
                estimated_cost: None,
                cost_currency: None,
                unit_price: None,
                price_unit: None,
                actual_cost: None,
                parameters,
                priority: JobPriority::Normal,
                status: STATUSES[i % 3],
                fal_request_id: None,
                result_image_id: None,
                result_image_ids: json!([]),
                error_code: None,
                error_message: None,
                error_details: None,
                attempts: 1,
                queue_position: None,
                progress: None,
                processing_time_ms: Some(100),
                idempotency_key: None,
                batch_id: None,
                created_at: created,
                started_at: Some(created),
                completed_at: Some(created),
                updated_at: created,
            })
        })
        .collect();
    for chunk in rows.chunks(1000) {
        jobs::Entity::insert_many(chunk.to_vec())
            .exec(&db)
            .await
            .expect("seeding jobs");
    }
    // What autovacuum does after a bulk load: without statistics the planner takes
    // the table for empty and picks plans that are slow at this size.
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_unprepared("ANALYZE processing_jobs")
            .await
            .expect("analyze");
    }
}

/// One job written straight into the processing schema by [`jobs`]: what spend and
/// analytics read of it.
#[derive(Clone, Debug)]
pub struct SeedJob {
    pub user_id: uuid::Uuid,
    pub workflow_id: &'static str,
    /// `completed`, `failed`, `cancelled`, ...
    pub status: &'static str,
    pub created_at: time::OffsetDateTime,
    pub started_at: Option<time::OffsetDateTime>,
    pub processing_time_ms: Option<i64>,
    pub estimated_cost: Option<f64>,
    pub actual_cost: Option<f64>,
}

/// Writes `rows` (their ids in order, so they sort as given) into the processing
/// schema.
pub async fn jobs(platform: &TestPlatform, rows: &[SeedJob]) {
    let db = atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("processing db");
    let models: Vec<jobs::ActiveModel> = rows
        .iter()
        .map(|row| {
            let status = match row.status {
                "pending" => JobStatus::Pending,
                "queued" => JobStatus::Queued,
                "submitted" => JobStatus::Submitted,
                "processing" => JobStatus::Processing,
                "completed" => JobStatus::Completed,
                "failed" => JobStatus::Failed,
                "cancelled" => JobStatus::Cancelled,
                other => panic!("no status {other}"),
            };
            let parameters = json!({});
            let finished = matches!(row.status, "completed" | "failed" | "cancelled");
            sea_orm::IntoActiveModel::into_active_model(jobs::Model {
                id: uuid::Uuid::now_v7(),
                user_id: row.user_id,
                image_id: uuid::Uuid::now_v7(),
                workflow_id: row.workflow_id.to_owned(),
                workflow_name: row.workflow_id.to_owned(),
                workflow_version: 1,
                fal_endpoint: "fal-ai/test".to_owned(),
                search_text: search_text(
                    row.workflow_id,
                    row.workflow_id,
                    "input.png",
                    &parameters,
                ),
                input_filename: Some("input.png".to_owned()),
                estimated_cost: row.estimated_cost,
                cost_currency: Some("USD".to_owned()),
                unit_price: None,
                price_unit: None,
                actual_cost: row.actual_cost,
                parameters,
                priority: JobPriority::Normal,
                status,
                fal_request_id: None,
                result_image_id: None,
                result_image_ids: json!([]),
                error_code: None,
                error_message: None,
                error_details: None,
                attempts: 1,
                queue_position: None,
                progress: None,
                processing_time_ms: row.processing_time_ms,
                idempotency_key: None,
                batch_id: None,
                created_at: row.created_at,
                started_at: row.started_at,
                completed_at: finished.then_some(row.created_at),
                updated_at: row.created_at,
            })
        })
        .collect();
    jobs::Entity::insert_many(models)
        .exec(&db)
        .await
        .expect("seeding jobs");
}
