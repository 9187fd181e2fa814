//! What the events say: `{"type", "timestamp", "data"}`, the data a job or a batch
//! as the REST API shows it (ids, status, workflow, input and result images, error,
//! times).

use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use super::Message;
use crate::domain::{
    failure,
    job::{Job, Status},
};

pub const JOB_COMPLETED: &str = "job.completed";
pub const JOB_FAILED: &str = "job.failed";
pub const JOB_CANCELLED: &str = "job.cancelled";
pub const BATCH_COMPLETED: &str = "batch.completed";
pub const TEST: &str = "webhook.test";

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 6] = [
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELLED,
    BATCH_COMPLETED,
    crate::domain::spend::THRESHOLD_REACHED,
    TEST,
];

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn body(event_type: &str, at: OffsetDateTime, data: Value) -> String {
    json!({"type": event_type, "timestamp": rfc3339(at), "data": data}).to_string()
}

/// A new message of `user_id`'s.
fn message(
    user_id: Uuid,
    event_type: &str,
    at: OffsetDateTime,
    data: Value,
    dedupe_key: Option<String>,
) -> Message {
    Message {
        id: Uuid::now_v7(),
        user_id,
        event_type: event_type.to_owned(),
        payload: body(event_type, at, data),
        dedupe_key,
        created_at: at,
    }
}

/// A job as events show it.
pub fn job_data(job: &Job) -> Value {
    let outputs: Vec<Value> = job
        .result_image_ids
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| match entry {
            Value::String(id) => Some(json!({"image_id": id, "role": "image"})),
            Value::Object(entry) => Some(json!({
                "image_id": entry.get("image_id")?.as_str()?,
                "role": entry.get("role").and_then(Value::as_str).unwrap_or("image"),
            })),
            _ => None,
        })
        .collect();
    let result_image_ids: Vec<&Value> = outputs.iter().map(|output| &output["image_id"]).collect();
    let error = job.error_message.as_ref().map(|message| {
        let code = job.error_code.clone().unwrap_or_default();
        json!({"code": code, "message": message, "retryable": failure::retryable(&code)})
    });
    json!({
        "id": job.id,
        "status": job.status.as_str(),
        "workflow_id": job.workflow_id,
        "image_id": job.image_id,
        "batch_id": job.batch_id,
        "result_image_id": result_image_ids.first(),
        "result_image_ids": result_image_ids,
        "outputs": outputs,
        "error": error,
        "attempts": job.attempts,
        "processing_time_ms": job.processing_time_ms,
        "created_at": rfc3339(job.created_at),
        "started_at": job.started_at.map(rfc3339),
        "completed_at": job.completed_at.map(rfc3339),
        "actual_cost": job.actual_cost,
    })
}

/// The message a job's change from `before` to `after` sends: one when it reached
/// a final state.
pub fn job_message(before: &Job, after: &Job, at: OffsetDateTime) -> Option<Message> {
    if before.status.is_final() || !after.status.is_final() {
        return None;
    }
    let event_type = match after.status {
        Status::Completed => JOB_COMPLETED,
        Status::Failed => JOB_FAILED,
        _ => JOB_CANCELLED,
    };
    Some(message(
        after.user_id,
        event_type,
        at,
        job_data(after),
        None,
    ))
}

/// `batch.completed` for a batch whose every job is final; `None` while one runs.
/// Sent once per outcome: the key names the batch and its last change, so two
/// replicas that both see it finish make one message, and a retried batch that
/// finishes again makes another.
pub fn batch_message(batch_id: Uuid, jobs: &[Job], at: OffsetDateTime) -> Option<Message> {
    let first = jobs.first()?;
    if jobs.iter().any(|job| !job.status.is_final()) {
        return None;
    }
    let count = |status: Status| jobs.iter().filter(|job| job.status == status).count();
    let failed = count(Status::Failed);
    let last_change = jobs.iter().map(|job| job.updated_at).max()?;
    let data = json!({
        "id": batch_id,
        "status": if failed > 0 { "completed_with_failures" } else { "completed" },
        "workflow_id": first.workflow_id,
        "total": jobs.len(),
        "completed": count(Status::Completed),
        "failed": failed,
        "cancelled": count(Status::Cancelled),
        "job_ids": jobs.iter().map(|job| job.id).collect::<Vec<_>>(),
        "jobs": jobs.iter().map(job_data).collect::<Vec<_>>(),
    });
    let key = format!(
        "{BATCH_COMPLETED}:{batch_id}:{}",
        last_change.unix_timestamp_nanos()
    );
    Some(message(first.user_id, BATCH_COMPLETED, at, data, Some(key)))
}

/// The `webhook.test` message.
pub fn test_message(user_id: Uuid, endpoint_id: Uuid, at: OffsetDateTime) -> Message {
    message(
        user_id,
        TEST,
        at,
        json!({"endpoint_id": endpoint_id, "message": "a test event from Atelier"}),
        None,
    )
}
