//! `/api/processing/*`: start, watch and cancel jobs, over the processing
//! service; live events as Server-Sent Events (resumable with `Last-Event-ID`);
//! and fal's webhooks, handed on for verification.

use std::{collections::HashMap, convert::Infallible, time::Instant};

use atelier_common::{
    Caller, FieldViolation,
    json::{from_struct, map_to_struct},
};
use atelier_proto::{
    image::v1::{
        self as image_pb, BatchGetImagesRequest, image_service_client::ImageServiceClient,
    },
    processing::v1::{self as pb, processing_service_client::ProcessingServiceClient},
};
use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
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

use crate::{AppState, auth::Body, grpc_request, images::rfc3339, problem::Problem};

fn client(state: &AppState) -> ProcessingServiceClient<tonic::transport::Channel> {
    ProcessingServiceClient::new(state.processing.clone())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StartBody {
    #[serde(default)]
    pub image_id: String,
    #[serde(default)]
    pub workflow_id: String,
    /// The workflow's parameters; missing ones take their defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// `high` (when your plan allows it: `limits.high_priority` of your profile),
    /// `normal` (default) or `low`.
    #[serde(default)]
    pub priority: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub job_id: String,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobError {
    /// A stable code: fal's error type, or one of the platform's
    /// (`result_too_large`, `attempts_exhausted`, ...).
    pub code: String,
    /// What went wrong, written for the person who started the job.
    pub message: String,
    /// Whether running the job again may succeed.
    pub retryable: bool,
}

/// One output of a completed job: a result image with signed URLs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobOutputBody {
    pub image_id: String,
    /// A signed URL of the image; it expires (`SIGNED_URL_TTL`).
    pub url: String,
    /// A signed URL of its 512 px preview, when there is one.
    pub thumbnail_url: Option<String>,
    /// A download name: `<original stem>_<workflow id>[_<n>].<ext>`.
    pub filename: String,
    pub mime_type: String,
    pub width: u32,
    pub height: u32,
    /// Size in bytes.
    pub file_size: i64,
    /// `image`, or `mask` for a segmentation mask.
    pub role: String,
}

/// An amount of money.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostBody {
    pub amount: f64,
    /// ISO 4217, e.g. `USD`.
    pub currency: String,
}

fn cost_body(cost: Option<pb::Cost>) -> Option<CostBody> {
    cost.map(|cost| CostBody {
        amount: cost.amount,
        currency: cost.currency,
    })
}

/// A job as the REST API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBody {
    pub job_id: String,
    /// `pending`, `queued`, `submitted`, `processing`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub workflow_id: String,
    pub image_id: String,
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub queue_position: Option<i32>,
    pub progress: Option<f64>,
    pub logs: Vec<String>,
    /// The first output's image (kept for older clients; see `outputs`).
    pub result_image_id: Option<String>,
    /// A signed URL of the first output, when there is one (see `outputs`).
    pub result_url: Option<String>,
    /// Every output of a completed job, in fal's output order (images, then a
    /// mask where the workflow adds one); empty until the job completes, and
    /// without the outputs deleted since.
    pub outputs: Vec<JobOutputBody>,
    /// The cost estimated at fal's price when the job started; `null` when the
    /// workflow had no price, or one (per GPU second) not known before the run.
    pub estimated_cost: Option<CostBody>,
    pub error: Option<JobError>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub processing_time_ms: Option<i64>,
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
            job_id: job.id,
            status: status_name(job.status).to_owned(),
        }),
    ))
}

pub fn status_name(code: i32) -> &'static str {
    match pb::JobStatus::try_from(code) {
        Ok(pb::JobStatus::Pending) => "pending",
        Ok(pb::JobStatus::Queued) => "queued",
        Ok(pb::JobStatus::Submitted) => "submitted",
        Ok(pb::JobStatus::Processing) => "processing",
        Ok(pb::JobStatus::Completed) => "completed",
        Ok(pb::JobStatus::Failed) => "failed",
        Ok(pb::JobStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// A comma-separated list of job states (`completed,failed`) as status codes.
pub fn parse_statuses(raw: Option<&str>) -> Result<Vec<i32>, FieldViolation> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            status_code(name).ok_or_else(|| {
                FieldViolation::new("status", format!("{name:?} is not a job status"))
            })
        })
        .collect()
}

fn status_code(name: &str) -> Option<i32> {
    Some(
        (match name {
            "pending" => pb::JobStatus::Pending,
            "queued" => pb::JobStatus::Queued,
            "submitted" => pb::JobStatus::Submitted,
            "processing" => pb::JobStatus::Processing,
            "completed" => pb::JobStatus::Completed,
            "failed" => pb::JobStatus::Failed,
            "cancelled" => pb::JobStatus::Cancelled,
            _ => return None,
        }) as i32,
    )
}

/// The result images of some jobs with signed URLs, by id, fetched with as few
/// BatchGetImages calls as there are hundreds of them. Images that are gone are
/// missing from the map; a failure leaves every output out rather than failing
/// the job's view.
pub async fn result_images(
    state: &AppState,
    headers: &HeaderMap,
    jobs: &[pb::Job],
) -> HashMap<String, image_pb::Image> {
    outputs_of(state, headers, jobs).await.images
}

/// What [`outputs_of`] found.
pub struct Outputs {
    pub images: HashMap<String, image_pb::Image>,
    /// Whether every lookup was answered (a view missing outputs for want of an
    /// answer is not worth keeping).
    pub complete: bool,
    /// When the first of the signed URLs is due for renewal.
    pub renew_at: Option<Instant>,
}

/// The result images of `jobs`, their signed URLs reused from [`UrlCache`] while
/// they are fresh enough, the rest asked of the image service on the caller's
/// behalf (it answers only the caller's own). An image is reused only for the
/// user the image service said owns it, who is also the jobs' owner.
pub async fn outputs_of(state: &AppState, headers: &HeaderMap, jobs: &[pb::Job]) -> Outputs {
    let mut found = HashMap::new();
    let mut renew_at: Option<Instant> = None;
    let mut missing = std::collections::BTreeSet::new();
    for job in jobs {
        for (id, _) in job_output_ids(job) {
            match state.urls.get(&job.user_id, &id) {
                Some((image, until)) => {
                    renew_at = Some(renew_at.map_or(until, |at| at.min(until)));
                    found.insert(id, image);
                }
                None => {
                    missing.insert(id);
                }
            }
        }
    }
    let missing: Vec<String> = missing.into_iter().collect();
    let calls = missing.chunks(100).map(|chunk| {
        let mut images = ImageServiceClient::new(state.image.clone());
        let request = grpc_request(
            BatchGetImagesRequest {
                image_ids: chunk.to_vec(),
            },
            headers,
        );
        async move { images.batch_get_images(request).await }
    });
    let mut complete = true;
    for reply in futures::future::join_all(calls).await {
        match reply {
            Ok(reply) => {
                for image in reply.into_inner().images {
                    if let Some(until) = state.urls.put(&image) {
                        renew_at = Some(renew_at.map_or(until, |at| at.min(until)));
                    }
                    found.insert(image.id.clone(), image);
                }
            }
            Err(status) => {
                complete = false;
                tracing::warn!(code = ?status.code(), message = status.message(), "result images unavailable");
            }
        }
    }
    Outputs {
        images: found,
        complete,
        renew_at,
    }
}

/// A job's output ids with the role the processing service recorded, in order
/// (from `result_image_ids` for a service that sends no `outputs`).
fn job_output_ids(job: &pb::Job) -> Vec<(String, String)> {
    if job.outputs.is_empty() {
        job.result_image_ids
            .iter()
            .map(|id| (id.clone(), "image".to_owned()))
            .collect()
    } else {
        job.outputs
            .iter()
            .map(|output| (output.image_id.clone(), output.role.clone()))
            .collect()
    }
}

/// The output as shown: the role is the result image's `output_role` metadata
/// (set when it was stored), else the one the job recorded, else `image`.
fn output_body(image: &image_pb::Image, recorded_role: &str) -> JobOutputBody {
    let role = image
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.fields.get("output_role"))
        .and_then(|value| match &value.kind {
            Some(prost_types::value::Kind::StringValue(role)) => Some(role.as_str()),
            _ => None,
        })
        .filter(|role| !role.is_empty())
        .unwrap_or(if recorded_role.is_empty() {
            "image"
        } else {
            recorded_role
        });
    JobOutputBody {
        image_id: image.id.clone(),
        url: image.url.clone(),
        thumbnail_url: Some(image.thumbnail_url.clone()).filter(|url| !url.is_empty()),
        filename: image.original_filename.clone(),
        mime_type: image.mime_type.clone(),
        width: image.width,
        height: image.height,
        file_size: image.file_size,
        role: role.to_owned(),
    }
}

/// A job for REST, its outputs taken from `images` (see [`result_images`]).
pub fn encode_job(job: pb::Job, images: &HashMap<String, image_pb::Image>) -> JobBody {
    let outputs: Vec<JobOutputBody> = job_output_ids(&job)
        .iter()
        .filter_map(|(id, role)| images.get(id).map(|image| output_body(image, role)))
        .collect();
    let result_url = images
        .get(&job.result_image_id)
        .map(|image| image.url.clone());
    JobBody {
        status: status_name(job.status).to_owned(),
        job_id: job.id,
        workflow_id: job.workflow_id,
        image_id: job.image_id,
        parameters: Value::Object(from_struct(job.parameters)),
        queue_position: job.queue_position,
        progress: job.progress,
        logs: job.logs.into_iter().map(|log| log.message).collect(),
        result_image_id: Some(job.result_image_id).filter(|id| !id.is_empty()),
        result_url,
        outputs,
        estimated_cost: cost_body(job.estimated_cost),
        error: job.error.map(|error| JobError {
            code: error.code,
            message: error.message,
            retryable: error.retryable,
        }),
        created_at: rfc3339(job.created_at),
        started_at: rfc3339(job.started_at),
        completed_at: rfc3339(job.completed_at),
        processing_time_ms: job.processing_time_ms,
    }
}

/// Jobs for REST, with their outputs fetched in one go.
pub async fn encode_jobs(
    state: &AppState,
    headers: &HeaderMap,
    jobs: Vec<pb::Job>,
) -> Vec<JobBody> {
    let images = result_images(state, headers, &jobs).await;
    jobs.into_iter()
        .map(|job| encode_job(job, &images))
        .collect()
}

/// Start processing one of your images with a workflow.
#[utoipa::path(
    post, path = "/api/processing/start", tag = "processing",
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
    let priority = priority_of(request.priority.as_deref())?;
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

/// What a status read adds to the job's row: `(logs, live queue position)`.
fn includes(raw: Option<&str>) -> Result<(bool, bool), Problem> {
    let (mut logs, mut queue_position) = (false, false);
    for part in raw.unwrap_or_default().split(',').map(str::trim) {
        match part {
            "" => {}
            "logs" => logs = true,
            "queue_position" => queue_position = true,
            other => {
                return Err(Problem::invalid(vec![FieldViolation::new(
                    "include",
                    format!("{other:?} is not one of logs, queue_position"),
                )]));
            }
        }
    }
    Ok((logs, queue_position))
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
    get, path = "/api/processing/{job_id}/status", tag = "processing",
    security(("bearer" = [])),
    params(
        ("job_id" = String, Path, description = "Job id"),
        ("include" = Option<String>, Query, description = "Comma-separated extras: `logs` fills `logs` with the job's log lines (empty otherwise); `queue_position` sets `queue_position` to the job's place in the queue right now (otherwise the place recorded when it was queued, or the one fal last reported)"),
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
    // The plain view of a signed-in caller's job is what the cache keeps.
    let cached = match (caller, Uuid::parse_str(&job_id)) {
        (Some(Extension(caller)), Ok(id))
            if !include_logs && !include_queue_position && state.statuses.enabled() =>
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
    post, path = "/api/processing/{job_id}/cancel", tag = "processing",
    security(("bearer" = [])),
    params(("job_id" = String, Path, description = "Job id")),
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
    get, path = "/api/processing/jobs", tag = "processing", operation_id = "processing_list",
    security(("bearer" = [])),
    params(
        ("page_size" = Option<i32>, Query, description = "Jobs per page (default 20, at most 100)"),
        ("page_token" = Option<String>, Query, description = "The `next_page_token` of the previous page"),
        ("status" = Option<String>, Query, description = "Comma-separated statuses"),
        ("workflow_id" = Option<String>, Query, description = "Only this workflow"),
        ("image_id" = Option<String>, Query, description = "Only jobs of this image"),
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
    let reply = client(&state)
        .list_jobs(grpc_request(
            pb::ListJobsRequest {
                page_size: params.page_size.unwrap_or(0),
                page_token: params.page_token.unwrap_or_default(),
                statuses,
                workflow_id: params.workflow_id.unwrap_or_default(),
                image_id: params.image_id.unwrap_or_default(),
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

/// The event of a job as an SSE data object.
pub fn event_json(event: &pb::JobEvent) -> Value {
    let mut data = Value::Object(from_struct(event.data.clone()));
    if let Value::Object(object) = &mut data {
        object.insert("job_id".into(), event.job_id.clone().into());
        object.insert("seq".into(), event.seq.into());
        object.insert("at".into(), rfc3339(event.at).into());
    }
    data
}

pub fn event_kind(kind: i32) -> &'static str {
    match pb::JobEventKind::try_from(kind) {
        Ok(pb::JobEventKind::Created) => "created",
        Ok(pb::JobEventKind::StatusChanged) => "status",
        Ok(pb::JobEventKind::QueuePosition) => "queue_position",
        Ok(pb::JobEventKind::Progress) => "progress",
        Ok(pb::JobEventKind::Log) => "log",
        Ok(pb::JobEventKind::RetryScheduled) => "retry",
        _ => "event",
    }
}

/// Live events of one of your jobs (Server-Sent Events). Each event's id is its
/// sequence number: reconnect with `Last-Event-ID` to miss nothing. The stream
/// ends after the job finishes.
#[utoipa::path(
    get, path = "/api/processing/{job_id}/events", tag = "processing",
    security(("bearer" = [])),
    params(
        ("job_id" = String, Path, description = "Job id"),
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
    // Without a valid token the service refuses the call below.
    let slot = caller
        .map(|Extension(caller)| state.streams.take(caller.user_id))
        .transpose()?;
    let after_seq = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or(0);
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
    post, path = "/api/processing/{job_id}/retry", tag = "processing",
    security(("bearer" = [])),
    params(("job_id" = String, Path, description = "Job id")),
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
    #[serde(default)]
    pub image_ids: Vec<String>,
    #[serde(default)]
    pub workflow_id: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub priority: Option<String>,
}

/// A batch's aggregate state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchBody {
    pub batch_id: String,
    /// `running`, `completed` or `completed_with_failures`.
    pub status: String,
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
    let status = match pb::BatchStatus::try_from(batch.status) {
        Ok(pb::BatchStatus::Completed) => "completed",
        Ok(pb::BatchStatus::CompletedWithFailures) => "completed_with_failures",
        _ => "running",
    };
    BatchBody {
        batch_id: batch.id,
        status: status.to_owned(),
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

fn priority_of(name: Option<&str>) -> Result<pb::JobPriority, Problem> {
    match name {
        None | Some("normal") => Ok(pb::JobPriority::Normal),
        Some("high") => Ok(pb::JobPriority::High),
        Some("low") => Ok(pb::JobPriority::Low),
        Some(_) => Err(Problem::invalid(vec![FieldViolation::new(
            "priority",
            "must be high, normal or low",
        )])),
    }
}

/// Start one workflow over many of your images.
#[utoipa::path(
    post, path = "/api/processing/batch", tag = "processing",
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
    let priority = priority_of(request.priority.as_deref())?;
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
    get, path = "/api/processing/batch/{batch_id}", tag = "processing",
    security(("bearer" = [])),
    params(("batch_id" = String, Path, description = "Batch id")),
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
    post, path = "/api/processing/batch/{batch_id}/cancel", tag = "processing",
    security(("bearer" = [])),
    params(("batch_id" = String, Path, description = "Batch id")),
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
    post, path = "/api/processing/batch/{batch_id}/retry", tag = "processing",
    security(("bearer" = [])),
    params(("batch_id" = String, Path, description = "Batch id")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, role: Option<&str>) -> image_pb::Image {
        let mut metadata = Map::new();
        metadata.insert("format".into(), "png".into());
        if let Some(role) = role {
            metadata.insert("output_role".into(), role.into());
        }
        image_pb::Image {
            id: id.into(),
            original_filename: format!("{id}.png"),
            mime_type: "image/png".into(),
            width: 4,
            height: 3,
            file_size: 99,
            url: format!("https://files.example/{id}"),
            metadata: Some(map_to_struct(&metadata)),
            ..Default::default()
        }
    }

    #[test]
    fn outputs_follow_the_job_order_take_their_role_from_the_image_and_skip_deleted_ones() {
        let job = pb::Job {
            id: "job".into(),
            status: pb::JobStatus::Completed as i32,
            result_image_id: "a".into(),
            result_image_ids: vec!["a".into(), "gone".into(), "m".into()],
            outputs: ["a", "gone", "m"]
                .iter()
                .enumerate()
                .map(|(index, id)| pb::JobOutput {
                    image_id: (*id).into(),
                    index: index as i32,
                    role: "image".into(),
                })
                .collect(),
            ..Default::default()
        };
        let images: HashMap<String, image_pb::Image> = [image("a", None), image("m", Some("mask"))]
            .into_iter()
            .map(|image| (image.id.clone(), image))
            .collect();
        let body = encode_job(job, &images);
        let outputs: Vec<(&str, &str, &str)> = body
            .outputs
            .iter()
            .map(|output| {
                (
                    output.image_id.as_str(),
                    output.role.as_str(),
                    output.filename.as_str(),
                )
            })
            .collect();
        assert_eq!(outputs, [("a", "image", "a.png"), ("m", "mask", "m.png")]);
        assert_eq!(body.result_url.as_deref(), Some("https://files.example/a"));
        assert_eq!(body.outputs[1].width, 4);
        assert_eq!(body.outputs[1].file_size, 99);
        assert_eq!(body.estimated_cost.map(|cost| cost.amount), None);
    }

    #[test]
    fn a_job_without_outputs_falls_back_to_its_result_ids() {
        let job = pb::Job {
            result_image_ids: vec!["a".into()],
            ..Default::default()
        };
        let images: HashMap<String, image_pb::Image> =
            std::iter::once(("a".to_owned(), image("a", None))).collect();
        let body = encode_job(job, &images);
        assert_eq!(body.outputs.len(), 1);
        assert_eq!(body.outputs[0].role, "image");
    }
}
