//! `/api/processing/*`: start, watch and cancel jobs, over the processing
//! service; live events as Server-Sent Events (resumable with `Last-Event-ID`);
//! and fal's webhooks, handed on for verification.

use std::convert::Infallible;

use atelier_common::{Caller, json::map_to_struct};
use atelier_proto::processing::v1::{
    self as pb, processing_service_client::ProcessingServiceClient,
};
use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    views::{
        CostBody, JobBody, JobStatus, Started, comma_list, cost_body, encode_job, encode_jobs,
        event_json, event_kind, optional_id, outputs_of, page_size, page_token, parse_statuses,
    },
};

fn client(state: &AppState) -> ProcessingServiceClient<tonic::transport::Channel> {
    ProcessingServiceClient::new(state.processing.clone())
}

/// How soon a job runs: `high` when your plan allows it (`limits.high_priority` of
/// your profile), `normal` (the default) or `low`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    fn to_proto(self) -> pb::JobPriority {
        match self {
            Self::High => pb::JobPriority::High,
            Self::Normal => pb::JobPriority::Normal,
            Self::Low => pb::JobPriority::Low,
        }
    }
}

// Fields the service checks default to empty here, so that every missing one is
// named in the problem at once rather than the first alone.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartBody {
    #[serde(default)]
    #[schema(required = true, format = Uuid)]
    pub image_id: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub workflow_id: String,
    /// The workflow's parameters; missing ones take their defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub priority: Priority,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobBody>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    pub status: Option<String>,
    pub workflow_id: Option<String>,
    pub image_id: Option<String>,
}

/// `202 Accepted` with the job's id and status.
fn accepted(job: Option<pb::Job>) -> Result<(StatusCode, Json<Started>), Problem> {
    let job = job.ok_or_else(|| Problem::from(tonic::Status::internal("reply without job")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Started {
            status: job.status().into(),
            job_id: job.id,
        }),
    ))
}

/// Start processing one of your images with a workflow.
#[utoipa::path(
    post, path = "/api/processing/start", tag = "processing", operation_id = "start_job",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a start safely: the same key gives the same job")),
    request_body = StartBody,
    responses(
        (status = 202, description = "Accepted: the job is queued", body = Started),
        (status = 404, description = "No such image of yours, or no such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The idempotency key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`priority: high` is not part of your plan (the problem names the field `priority`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameters (each named)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over a quota of your plan (`jobs_per_day`, with `Retry-After` and `resets_at`, or `concurrent_jobs`); the problem names the `limit`, its `allowed` value, what is `used`, what was `requested` and the `tier`. Nothing was started", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<StartBody>,
) -> Result<impl IntoResponse, Problem> {
    let priority = request.priority.to_proto();
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let job = client(&state)
        .start_processing(grpc_request(
            pb::StartProcessingRequest {
                image_id: request.image_id,
                workflow_id: request.workflow_id,
                parameters: Some(map_to_struct(&request.parameters)),
                priority: priority as i32,
                idempotency_key,
            },
            &headers,
        ))
        .await?
        .into_inner()
        .job;
    accepted(job)
}

#[derive(Debug, Default, Deserialize)]
pub struct StatusParams {
    pub include: Option<String>,
}

/// What a status read may add to the job's row, each a read of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusInclude {
    /// The job's log lines, in `logs`.
    Logs,
    /// The job's place in the queue right now, in `queue_position`.
    QueuePosition,
}

/// What a status read adds to the job's row: `(logs, live queue position)`.
fn includes(raw: Option<&str>) -> Result<(bool, bool), Problem> {
    let includes: Vec<StatusInclude> =
        comma_list("include", raw).map_err(|violation| Problem::invalid(vec![violation]))?;
    Ok((
        includes.contains(&StatusInclude::Logs),
        includes.contains(&StatusInclude::QueuePosition),
    ))
}

fn json_bytes(body: Bytes) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// One of your jobs: its status, progress, outputs with signed URLs. Cheap to poll:
/// the log lines and the live place in the queue, each a read of its own, come only
/// when asked for with `include`.
#[utoipa::path(
    get, path = "/api/processing/{job_id}/status", tag = "processing", operation_id = "get_job_status",
    security(("bearer" = [])),
    params(
        ("job_id" = Uuid, Path, description = "Job id"),
        ("include" = Option<Vec<StatusInclude>>, Query, style = Form, explode = false, min_items = 1, description = "Extras (comma-separated): `logs` fills `logs` with the job's log lines (empty otherwise); `queue_position` sets `queue_position` to the job's place in the queue right now (otherwise the place recorded when it was queued, or the one fal last reported)"),
    ),
    responses(
        (status = 200, description = "The job", body = JobBody),
        (status = 404, description = "No such job of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`include` names something else", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    Query(params): Query<StatusParams>,
) -> Result<Response, Problem> {
    let (include_logs, include_queue_position) = includes(params.include.as_deref())?;
    // The plain view of a signed-in caller's job is what the cache keeps. It
    // holds the job's result images: an API key is answered from it only with the
    // scopes the services would ask for both (without them, the services answer).
    let cached = match (caller, Uuid::parse_str(&job_id)) {
        (Some(Extension(caller)), Ok(id))
            if !include_logs
                && !include_queue_position
                && state.statuses.enabled()
                && caller.may("processing:read")
                && caller.may("images:read") =>
        {
            Some((caller.user_id, id))
        }
        _ => None,
    };
    if let Some((user, id)) = cached
        && let Some(body) = state.statuses.get(id, user)
    {
        return Ok(json_bytes(body));
    }
    let generation = cached.map(|(_, id)| state.statuses.generation(id));
    let job = client(&state)
        .get_job(grpc_request(
            pb::GetJobRequest {
                job_id,
                include_logs,
                include_queue_position,
            },
            &headers,
        ))
        .await?
        .into_inner()
        .job
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without job")))?;
    let owner = Uuid::parse_str(&job.user_id).ok();
    let outputs = outputs_of(&state, &headers, std::slice::from_ref(&job)).await;
    let body = Bytes::from(
        serde_json::to_vec(&encode_job(job, &outputs.images))
            .map_err(|err| Problem::from(tonic::Status::internal(err.to_string())))?,
    );
    if let (Some((user, id)), Some(generation)) = (cached, generation)
        && outputs.complete
        && owner == Some(user)
    {
        state
            .statuses
            .put(id, user, body.clone(), generation, outputs.renew_at);
    }
    Ok(json_bytes(body))
}

/// Cancel one of your jobs, in any unfinished state.
#[utoipa::path(
    post, path = "/api/processing/{job_id}/cancel", tag = "processing", operation_id = "cancel_job",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancelled", body = Started),
        (status = 404, description = "No such job of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let job = client(&state)
        .cancel_job(grpc_request(pb::CancelJobRequest { job_id }, &headers))
        .await?
        .into_inner()
        .job;
    accepted(job)
}

/// Your jobs, newest first.
#[utoipa::path(
    get, path = "/api/processing/jobs", tag = "processing", operation_id = "list_jobs",
    security(("bearer" = [])),
    params(
        ("page_size" = Option<i32>, Query, minimum = 1, maximum = 100, description = "Jobs per page (default 20, at most 100)"),
        ("page_token" = Option<String>, Query, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "The `next_page_token` of the previous page"),
        ("status" = Option<Vec<JobStatus>>, Query, style = Form, explode = false, min_items = 1, description = "Only jobs in one of these states (comma-separated)"),
        ("workflow_id" = Option<String>, Query, description = "Only this workflow"),
        ("image_id" = Option<Uuid>, Query, description = "Only jobs of this image"),
    ),
    responses((status = 200, description = "One page of jobs", body = JobList))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<JobList>, Problem> {
    let statuses =
        parse_statuses(params.status.as_deref()).map_err(|v| Problem::invalid(vec![v]))?;
    let page_size = page_size(params.page_size).map_err(|v| Problem::invalid(vec![v]))?;
    let reply = client(&state)
        .list_jobs(grpc_request(
            pb::ListJobsRequest {
                page_size,
                page_token: page_token(params.page_token)
                    .map_err(|violation| Problem::invalid(vec![violation]))?,
                statuses,
                workflow_id: params.workflow_id.unwrap_or_default(),
                image_id: optional_id("image_id", params.image_id)
                    .map_err(|violation| Problem::invalid(vec![violation]))?,
                ..Default::default()
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(JobList {
        jobs: encode_jobs(&state, &headers, reply.jobs).await,
        next_page_token: Some(reply.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// What an SSE stream of events starts with: a live-stream slot of the caller's
/// (held until the stream ends; without a valid token the service refuses the call
/// that follows), and the sequence number to resume after (`Last-Event-ID`, else 0).
pub fn stream_start(
    state: &AppState,
    caller: Option<Extension<Caller>>,
    headers: &HeaderMap,
) -> Result<(Option<crate::live::StreamSlot>, i64), Problem> {
    let slot = caller
        .map(|Extension(caller)| state.streams.take(caller.user_id))
        .transpose()?;
    let after_seq = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or(0);
    Ok((slot, after_seq))
}

/// Live events of one of your jobs (Server-Sent Events). Each event's id is its
/// sequence number: reconnect with `Last-Event-ID` to miss nothing. The stream
/// ends after the job finishes.
#[utoipa::path(
    get, path = "/api/processing/{job_id}/events", tag = "processing", operation_id = "stream_job_events",
    security(("bearer" = [])),
    params(
        ("job_id" = Uuid, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "A text/event-stream of job events", content_type = "text/event-stream"),
        (status = 404, description = "No such job of yours", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many live streams open (`MAX_STREAMS_PER_USER`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let (slot, after_seq) = stream_start(&state, caller, &headers)?;
    let stream = client(&state)
        .stream_job_events(grpc_request(
            pb::StreamJobEventsRequest { job_id, after_seq },
            &headers,
        ))
        .await?
        .into_inner();
    let events = stream.filter_map(move |message| {
        // The stream holds its slot until it ends or the client goes away.
        let _slot = &slot;
        async move {
            let event = message.ok()?.event?;
            let sse = Event::default()
                .id(event.seq.to_string())
                .event(event_kind(event.kind))
                .json_data(event_json(&event))
                .ok()?;
            Some(Ok(sse))
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.stream_config.keep_alive)))
}

/// fal's webhook: verified by the processing service (ED25519 signature,
/// timestamp), applied once per request.
pub async fn fal_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    client(&state)
        .handle_fal_webhook(pb::HandleFalWebhookRequest {
            body: body.to_vec(),
            webhook_request_id: header("x-fal-webhook-request-id"),
            webhook_user_id: header("x-fal-webhook-user-id"),
            webhook_timestamp: header("x-fal-webhook-timestamp"),
            webhook_signature: header("x-fal-webhook-signature"),
        })
        .await?;
    Ok(StatusCode::OK)
}

/// Run a failed or cancelled job again, as the same job.
#[utoipa::path(
    post, path = "/api/processing/{job_id}/retry", tag = "processing", operation_id = "retry_job",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Queued again", body = Started),
        (status = 404, description = "No such job of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is neither failed nor cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over a quota of your plan: a retry is a new run and counts as a start does", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let job = client(&state)
        .retry_job(grpc_request(pb::RetryJobRequest { job_id }, &headers))
        .await?
        .into_inner()
        .job;
    accepted(job)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchStartBody {
    /// 1 to 100 of your images.
    #[serde(default)]
    #[schema(required = true, value_type = Vec<uuid::Uuid>, min_items = 1, max_items = 100)]
    pub image_ids: Vec<String>,
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub workflow_id: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub priority: Priority,
}

/// Where a batch stands: `running` while any job is unfinished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Running,
    Completed,
    CompletedWithFailures,
}

impl From<pb::BatchStatus> for BatchStatus {
    fn from(status: pb::BatchStatus) -> Self {
        match status {
            pb::BatchStatus::Completed => Self::Completed,
            pb::BatchStatus::CompletedWithFailures => Self::CompletedWithFailures,
            pb::BatchStatus::Running | pb::BatchStatus::Unspecified => Self::Running,
        }
    }
}

/// A batch's aggregate state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchBody {
    pub batch_id: String,
    pub status: BatchStatus,
    pub workflow_id: String,
    pub total: i32,
    pub waiting: i32,
    pub running: i32,
    pub completed: i32,
    pub failed: i32,
    pub cancelled: i32,
    /// Finished jobs over all jobs, 0 to 1.
    pub progress: f64,
    /// The batch's jobs (for a retry: the jobs sent round again).
    pub job_ids: Vec<String>,
    /// Every job of the batch with its outputs, newest first.
    pub jobs: Vec<JobBody>,
    /// The sum of the jobs' estimated costs; `null` when any job has none.
    pub estimated_cost: Option<CostBody>,
}

fn batch_body(batch: pb::Batch, job_ids: Vec<String>, jobs: Vec<JobBody>) -> BatchBody {
    BatchBody {
        status: batch.status().into(),
        batch_id: batch.id,
        workflow_id: batch.workflow_id,
        total: batch.total,
        waiting: batch.waiting,
        running: batch.running,
        completed: batch.completed,
        failed: batch.failed,
        cancelled: batch.cancelled,
        progress: batch.progress,
        job_ids,
        jobs,
        estimated_cost: cost_body(batch.estimated_cost),
    }
}

/// Start one workflow over many of your images.
#[utoipa::path(
    post, path = "/api/processing/batch", tag = "processing", operation_id = "start_batch",
    security(("bearer" = [])),
    request_body = BatchStartBody,
    responses(
        (status = 202, description = "Accepted: every job is queued", body = BatchBody),
        (status = 404, description = "An image is not yours, or no such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`priority: high` is not part of your plan (the problem names the field `priority`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameters or image list", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The whole batch does not fit a quota of your plan (the problem names the `limit`); no job was started", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<BatchStartBody>,
) -> Result<impl IntoResponse, Problem> {
    let priority = request.priority.to_proto();
    let reply = client(&state)
        .start_batch(grpc_request(
            pb::StartBatchRequest {
                image_ids: request.image_ids,
                workflow_id: request.workflow_id,
                parameters: Some(map_to_struct(&request.parameters)),
                priority: priority as i32,
                idempotency_key: headers
                    .get("idempotency-key")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            },
            &headers,
        ))
        .await?
        .into_inner();
    let batch = reply
        .batch
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without batch")))?;
    let jobs = batch_jobs(&state, &headers, &batch.id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(batch_body(batch, reply.job_ids, jobs)),
    ))
}

/// Every job of a batch (at most 100, the batch limit), encoded with outputs.
async fn batch_jobs(
    state: &AppState,
    headers: &HeaderMap,
    batch_id: &str,
) -> Result<Vec<JobBody>, Problem> {
    let jobs = client(state)
        .list_jobs(grpc_request(
            pb::ListJobsRequest {
                page_size: 100,
                batch_id: batch_id.to_owned(),
                ..Default::default()
            },
            headers,
        ))
        .await?
        .into_inner()
        .jobs;
    Ok(encode_jobs(state, headers, jobs).await)
}

fn ids_of(jobs: &[JobBody]) -> Vec<String> {
    jobs.iter().map(|job| job.job_id.clone()).collect()
}

/// One of your batches, as its jobs add up.
#[utoipa::path(
    get, path = "/api/processing/batch/{batch_id}", tag = "processing", operation_id = "get_batch",
    security(("bearer" = [])),
    params(("batch_id" = Uuid, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The batch", body = BatchBody),
        (status = 404, description = "No such batch of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
) -> Result<Json<BatchBody>, Problem> {
    let batch = client(&state)
        .get_batch(grpc_request(
            pb::GetBatchRequest {
                batch_id: batch_id.clone(),
            },
            &headers,
        ))
        .await?
        .into_inner()
        .batch
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without batch")))?;
    let jobs = batch_jobs(&state, &headers, &batch_id).await?;
    Ok(Json(batch_body(batch, ids_of(&jobs), jobs)))
}

/// Cancel every unfinished job of a batch.
#[utoipa::path(
    post, path = "/api/processing/batch/{batch_id}/cancel", tag = "processing", operation_id = "cancel_batch",
    security(("bearer" = [])),
    params(("batch_id" = Uuid, Path, description = "Batch id")),
    responses((status = 202, description = "Cancelled what was unfinished", body = BatchBody))
)]
pub async fn cancel_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let batch = client(&state)
        .cancel_batch(grpc_request(
            pb::CancelBatchRequest {
                batch_id: batch_id.clone(),
            },
            &headers,
        ))
        .await?
        .into_inner()
        .batch
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without batch")))?;
    let jobs = batch_jobs(&state, &headers, &batch_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(batch_body(batch, ids_of(&jobs), jobs)),
    ))
}

/// Run a batch's failed jobs again; the others are left alone.
#[utoipa::path(
    post, path = "/api/processing/batch/{batch_id}/retry", tag = "processing", operation_id = "retry_batch",
    security(("bearer" = [])),
    params(("batch_id" = Uuid, Path, description = "Batch id")),
    responses(
        (status = 202, description = "The failed jobs are queued again", body = BatchBody),
        (status = 429, description = "They do not all fit a quota of your plan; none was retried", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let reply = client(&state)
        .retry_batch(grpc_request(
            pb::RetryBatchRequest {
                batch_id: batch_id.clone(),
            },
            &headers,
        ))
        .await?
        .into_inner();
    let batch = reply
        .batch
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without batch")))?;
    let jobs = batch_jobs(&state, &headers, &batch_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(batch_body(batch, reply.retried_job_ids, jobs)),
    ))
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(list))
        .routes(routes!(status))
        .routes(routes!(cancel))
        .routes(routes!(events))
        .routes(routes!(retry))
        .routes(routes!(start_batch))
        .routes(routes!(get_batch))
        .routes(routes!(cancel_batch))
        .routes(routes!(retry_batch))
        .route("/api/fal/webhook", axum::routing::post(fal_webhook))
}
