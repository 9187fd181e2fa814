//! `/api/pipelines/*` and `/api/pipeline-runs/*`: saved pipelines (workflows
//! chained, each step's result the next one's input), their validation, and
//! their runs with live events as Server-Sent Events (resumable with
//! `Last-Event-ID`), over the processing service's `PipelineService`.

use std::convert::Infallible;

use atelier_common::{Caller, FieldViolation, json::map_to_struct};
use atelier_proto::pipeline::v1::{self as pb, pipeline_service_client::PipelineServiceClient};
use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    views::{optional_id, page_size, page_token, rfc3339},
};

fn client(state: &AppState) -> PipelineServiceClient<tonic::transport::Channel> {
    PipelineServiceClient::new(state.processing.clone())
}

/// One step: a workflow and its parameters (missing ones take their defaults).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PipelineStepBody {
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub workflow_id: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

fn steps_to_proto(steps: Vec<PipelineStepBody>) -> Vec<pb::PipelineStep> {
    steps
        .into_iter()
        .map(|step| pb::PipelineStep {
            workflow_id: step.workflow_id,
            parameters: Some(map_to_struct(&step.parameters)),
        })
        .collect()
}

fn step_body(step: pb::PipelineStep) -> PipelineStepBody {
    PipelineStepBody {
        workflow_id: step.workflow_id,
        parameters: atelier_common::json::from_struct(step.parameters),
    }
}

/// A saved pipeline of yours.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    /// In order, 1 to 8.
    pub steps: Vec<PipelineStepBody>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

fn pipeline_body(pipeline: Option<pb::Pipeline>) -> Result<PipelineBody, Problem> {
    let pipeline = pipeline.ok_or_else(|| Problem::from(tonic::Status::internal("no pipeline")))?;
    Ok(PipelineBody {
        id: pipeline.id,
        name: pipeline.name,
        steps: pipeline.steps.into_iter().map(step_body).collect(),
        created_at: rfc3339(pipeline.created_at),
        updated_at: rfc3339(pipeline.updated_at),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePipelineBody {
    /// 1 to 100 characters.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default)]
    #[schema(required = true, min_items = 1, max_items = 8)]
    pub steps: Vec<PipelineStepBody>,
}

/// The fields to change; the others stay.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdatePipelineBody {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(min_items = 1, max_items = 8)]
    pub steps: Option<Vec<PipelineStepBody>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineList {
    /// Newest first.
    pub pipelines: Vec<PipelineBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidatePipelineBody {
    #[serde(default)]
    pub steps: Vec<PipelineStepBody>,
}

/// A field that is not valid, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineViolation {
    /// E.g. `steps[1].parameters.scale`.
    pub field: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineValidation {
    /// True when `violations` is empty.
    pub valid: bool,
    pub violations: Vec<PipelineViolation>,
}

/// Where a run is.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelineRunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// Where a step of a run is.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelineStepStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

fn some(text: String) -> Option<String> {
    Some(text).filter(|text| !text.is_empty())
}

/// One step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineRunStepBody {
    /// From 0.
    pub index: i32,
    pub workflow_id: String,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    pub status: PipelineStepStatus,
    /// The job of the step's latest attempt (see `/api/processing/{job_id}`).
    #[schema(format = Uuid)]
    pub job_id: Option<String>,
    pub attempts: i32,
    /// The run's image for the first step, the previous step's result after.
    #[schema(format = Uuid)]
    pub input_image_id: Option<String>,
    /// The step's result (its job's first image output), once completed.
    #[schema(format = Uuid)]
    pub result_image_id: Option<String>,
    pub error: Option<String>,
    /// The job's status (`queued`, `processing`, ...), once started.
    pub job_status: Option<String>,
    /// The job's progress from 0 to 1, when fal reports one.
    pub progress: Option<f64>,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
}

/// A pipeline run on one image.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineRunBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// The saved pipeline it ran; none for steps given inline.
    #[schema(format = Uuid)]
    pub pipeline_id: Option<String>,
    pub pipeline_name: Option<String>,
    #[schema(format = Uuid)]
    pub image_id: String,
    pub status: PipelineRunStatus,
    /// The step running, or the one that failed or was cancelled; the number of
    /// steps once completed.
    pub current_step: i32,
    pub steps: Vec<PipelineRunStepBody>,
    /// The last step's result, once completed.
    #[schema(format = Uuid)]
    pub result_image_id: Option<String>,
    pub error: Option<String>,
    /// Shared by the runs one start made.
    #[schema(format = Uuid)]
    pub batch_id: String,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
}

fn run_step_body(step: pb::PipelineRunStep) -> PipelineRunStepBody {
    PipelineRunStepBody {
        index: step.index,
        workflow_id: step.workflow_id,
        parameters: atelier_common::json::from_struct(step.parameters),
        status: match pb::StepStatus::try_from(step.status) {
            Ok(pb::StepStatus::Running) => PipelineStepStatus::Running,
            Ok(pb::StepStatus::Completed) => PipelineStepStatus::Completed,
            Ok(pb::StepStatus::Failed) => PipelineStepStatus::Failed,
            Ok(pb::StepStatus::Cancelled) => PipelineStepStatus::Cancelled,
            _ => PipelineStepStatus::Pending,
        },
        job_id: some(step.job_id),
        attempts: step.attempts,
        input_image_id: some(step.input_image_id),
        result_image_id: some(step.result_image_id),
        error: some(step.error),
        job_status: some(step.job_status),
        progress: step.progress,
        started_at: rfc3339(step.started_at),
        completed_at: rfc3339(step.completed_at),
    }
}

fn run_body(run: pb::PipelineRun) -> PipelineRunBody {
    PipelineRunBody {
        status: match pb::PipelineRunStatus::try_from(run.status) {
            Ok(pb::PipelineRunStatus::Completed) => PipelineRunStatus::Completed,
            Ok(pb::PipelineRunStatus::Failed) => PipelineRunStatus::Failed,
            Ok(pb::PipelineRunStatus::Cancelled) => PipelineRunStatus::Cancelled,
            _ => PipelineRunStatus::Running,
        },
        id: run.id,
        pipeline_id: some(run.pipeline_id),
        pipeline_name: some(run.pipeline_name),
        image_id: run.image_id,
        current_step: run.current_step,
        steps: run.steps.into_iter().map(run_step_body).collect(),
        result_image_id: some(run.result_image_id),
        error: some(run.error),
        batch_id: run.batch_id,
        created_at: rfc3339(run.created_at),
        updated_at: rfc3339(run.updated_at),
        completed_at: rfc3339(run.completed_at),
    }
}

fn required_run(run: Option<pb::PipelineRun>) -> Result<PipelineRunBody, Problem> {
    run.map(run_body)
        .ok_or_else(|| Problem::from(tonic::Status::internal("no run")))
}

/// What to run, and on which images: a saved pipeline (`pipeline_id`) or
/// `steps` given here.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartPipelineRunBody {
    #[schema(format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub pipeline_id: Option<String>,
    pub steps: Option<Vec<PipelineStepBody>>,
    /// Your images, 1 to 100: one run each.
    #[serde(default)]
    #[schema(required = true, min_items = 1, max_items = 100)]
    pub image_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StartedPipelineRuns {
    /// One per image, in the order of `image_ids`.
    pub runs: Vec<PipelineRunBody>,
    /// True when the `Idempotency-Key` matched runs started before.
    pub replayed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineRunList {
    /// Newest first.
    pub runs: Vec<PipelineRunBody>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RunParams {
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    pub pipeline_id: Option<String>,
}

/// One event of a run: the run as it is after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineRunEventBody {
    /// The stored event's sequence number (a `step_progress` event carries the
    /// last stored one's and is sent without an SSE id).
    pub seq: i64,
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// `run_started`, `step_started`, `step_progress`, `step_completed`,
    /// `run_completed`, `run_failed`, `run_cancelled` or `run_retried`.
    pub kind: String,
    /// The step it is about, if any.
    pub step: Option<i32>,
    pub run: Option<PipelineRunBody>,
}

const PIPELINE_NOT_FOUND: &str = "No such pipeline of yours";
const RUN_NOT_FOUND: &str = "No such pipeline run of yours";

/// Save a pipeline: a name and 1 to 8 steps, checked as `/api/pipelines/validate`
/// checks them.
#[utoipa::path(
    post, path = "/api/pipelines", tag = "pipelines", operation_id = "create_pipeline",
    security(("bearer" = [])),
    request_body = CreatePipelineBody,
    responses(
        (status = 201, description = "Saved", body = PipelineBody),
        (status = 422, description = "Invalid fields, each naming its step (e.g. `steps[1].parameters.scale`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<CreatePipelineBody>,
) -> Result<(StatusCode, Json<PipelineBody>), Problem> {
    let reply = client(&state)
        .create_pipeline(grpc_request(
            pb::CreatePipelineRequest {
                name: request.name,
                steps: steps_to_proto(request.steps),
            },
            &headers,
        ))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(pipeline_body(reply.into_inner().pipeline)?),
    ))
}

/// Your saved pipelines, newest first.
#[utoipa::path(
    get, path = "/api/pipelines", tag = "pipelines", operation_id = "list_pipelines",
    security(("bearer" = [])),
    responses((status = 200, description = "Your pipelines", body = PipelineList))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PipelineList>, Problem> {
    let reply = client(&state)
        .list_pipelines(grpc_request(pb::ListPipelinesRequest {}, &headers))
        .await?;
    Ok(Json(PipelineList {
        pipelines: reply
            .into_inner()
            .pipelines
            .into_iter()
            .map(|pipeline| pipeline_body(Some(pipeline)))
            .collect::<Result<_, _>>()?,
    }))
}

/// One saved pipeline.
#[utoipa::path(
    get, path = "/api/pipelines/{pipeline_id}", tag = "pipelines", operation_id = "get_pipeline",
    security(("bearer" = [])),
    params(("pipeline_id" = Uuid, Path, description = "Pipeline id")),
    responses(
        (status = 200, description = "The pipeline", body = PipelineBody),
        (status = 404, description = PIPELINE_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pipeline_id): Path<String>,
) -> Result<Json<PipelineBody>, Problem> {
    let reply = client(&state)
        .get_pipeline(grpc_request(
            pb::GetPipelineRequest { pipeline_id },
            &headers,
        ))
        .await?;
    Ok(Json(pipeline_body(reply.into_inner().pipeline)?))
}

/// Rename a pipeline and/or replace its steps. Runs already started keep theirs.
#[utoipa::path(
    patch, path = "/api/pipelines/{pipeline_id}", tag = "pipelines", operation_id = "update_pipeline",
    security(("bearer" = [])),
    params(("pipeline_id" = Uuid, Path, description = "Pipeline id")),
    request_body = UpdatePipelineBody,
    responses(
        (status = 200, description = "The changed pipeline", body = PipelineBody),
        (status = 404, description = PIPELINE_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each naming its step", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pipeline_id): Path<String>,
    Body(patch): Body<UpdatePipelineBody>,
) -> Result<Json<PipelineBody>, Problem> {
    let reply = client(&state)
        .update_pipeline(grpc_request(
            pb::UpdatePipelineRequest {
                pipeline_id,
                name: patch.name,
                steps: patch.steps.map(|steps| pb::PipelineSteps {
                    steps: steps_to_proto(steps),
                }),
            },
            &headers,
        ))
        .await?;
    Ok(Json(pipeline_body(reply.into_inner().pipeline)?))
}

/// Delete a saved pipeline; its runs stay.
#[utoipa::path(
    delete, path = "/api/pipelines/{pipeline_id}", tag = "pipelines", operation_id = "delete_pipeline",
    security(("bearer" = [])),
    params(("pipeline_id" = Uuid, Path, description = "Pipeline id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = PIPELINE_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pipeline_id): Path<String>,
) -> Result<StatusCode, Problem> {
    client(&state)
        .delete_pipeline(grpc_request(
            pb::DeletePipelineRequest { pipeline_id },
            &headers,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check steps without saving or running them: 1 to 8 steps, each an active
/// workflow with parameters its schema accepts, each step but the last
/// producing an image. Every violation names its step.
#[utoipa::path(
    post, path = "/api/pipelines/validate", tag = "pipelines", operation_id = "validate_pipeline",
    security(("bearer" = [])),
    request_body = ValidatePipelineBody,
    responses(
        (status = 200, description = "The violations found (none: valid)", body = PipelineValidation),
        (status = 422, description = "A step without a workflow id: the request itself is malformed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<ValidatePipelineBody>,
) -> Result<Json<PipelineValidation>, Problem> {
    // What the body's schema says is refused as for any request; what only the
    // catalogue can tell (a workflow, its parameters) is the answer's violations.
    let malformed: Vec<FieldViolation> = request
        .steps
        .iter()
        .enumerate()
        .filter(|(_, step)| step.workflow_id.is_empty())
        .map(|(index, _)| FieldViolation::new(format!("steps[{index}].workflow_id"), "is required"))
        .collect();
    if !malformed.is_empty() {
        return Err(Problem::invalid(malformed));
    }
    let reply = client(&state)
        .validate_pipeline(grpc_request(
            pb::ValidatePipelineRequest {
                steps: steps_to_proto(request.steps),
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(PipelineValidation {
        valid: reply.valid,
        violations: reply
            .violations
            .into_iter()
            .map(|violation| PipelineViolation {
                field: violation.field,
                detail: violation.description,
            })
            .collect(),
    }))
}

/// Run a saved pipeline, or steps given here, on your images: one run per image,
/// all or none. Each step runs as a job of yours (quotas apply to each).
#[utoipa::path(
    post, path = "/api/pipeline-runs", tag = "pipelines", operation_id = "start_pipeline_run",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a start safely: the same key gives the same runs")),
    request_body = StartPipelineRunBody,
    responses(
        (status = 202, description = "Started", body = StartedPipelineRuns),
        (status = 404, description = "No such pipeline or image of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The idempotency key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each naming its step (e.g. `steps[1].parameters.scale`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<StartPipelineRunBody>,
) -> Result<(StatusCode, Json<StartedPipelineRuns>), Problem> {
    let pipeline_id = optional_id("pipeline_id", request.pipeline_id)
        .map_err(|violation: FieldViolation| Problem::invalid(vec![violation]))?;
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let reply = client(&state)
        .start_pipeline_run(grpc_request(
            pb::StartPipelineRunRequest {
                pipeline_id,
                steps: steps_to_proto(request.steps.unwrap_or_default()),
                image_ids: request.image_ids,
                idempotency_key,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedPipelineRuns {
            runs: reply.runs.into_iter().map(run_body).collect(),
            replayed: reply.replayed,
        }),
    ))
}

/// Your pipeline runs, newest first.
#[utoipa::path(
    get, path = "/api/pipeline-runs", tag = "pipelines", operation_id = "list_pipeline_runs",
    security(("bearer" = [])),
    params(
        ("page_size" = Option<i32>, Query, description = "1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "The `next_page_token` of the page before", pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"),
        ("pipeline_id" = Option<Uuid>, Query, description = "Only the runs of this saved pipeline"),
    ),
    responses((status = 200, description = "A page of runs", body = PipelineRunList))
)]
pub async fn runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<RunParams>,
) -> Result<Json<PipelineRunList>, Problem> {
    let (size, token, pipeline) = (
        page_size(params.page_size),
        page_token(params.page_token),
        optional_id("pipeline_id", params.pipeline_id),
    );
    let (page_size, page_token, pipeline_id) = match (size, token, pipeline) {
        (Ok(size), Ok(token), Ok(pipeline)) => (size, token, pipeline),
        (size, token, pipeline) => {
            return Err(Problem::invalid(
                size.err()
                    .into_iter()
                    .chain(token.err())
                    .chain(pipeline.err())
                    .collect(),
            ));
        }
    };
    let reply = client(&state)
        .list_pipeline_runs(grpc_request(
            pb::ListPipelineRunsRequest {
                page_size,
                page_token,
                pipeline_id,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(PipelineRunList {
        runs: reply.runs.into_iter().map(run_body).collect(),
        next_page_token: some(reply.next_page_token),
    }))
}

/// One run with its steps, the current step's job progress included.
#[utoipa::path(
    get, path = "/api/pipeline-runs/{run_id}", tag = "pipelines", operation_id = "get_pipeline_run",
    security(("bearer" = [])),
    params(("run_id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = PipelineRunBody),
        (status = 404, description = RUN_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Json<PipelineRunBody>, Problem> {
    let reply = client(&state)
        .get_pipeline_run(grpc_request(pb::GetPipelineRunRequest { run_id }, &headers))
        .await?;
    Ok(Json(required_run(reply.into_inner().run)?))
}

/// Stop a running run; its current job is cancelled, completed steps stay.
#[utoipa::path(
    post, path = "/api/pipeline-runs/{run_id}/cancel", tag = "pipelines", operation_id = "cancel_pipeline_run",
    security(("bearer" = [])),
    params(("run_id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The cancelled run", body = PipelineRunBody),
        (status = 404, description = RUN_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Json<PipelineRunBody>, Problem> {
    let reply = client(&state)
        .cancel_pipeline_run(grpc_request(
            pb::CancelPipelineRunRequest { run_id },
            &headers,
        ))
        .await?;
    Ok(Json(required_run(reply.into_inner().run)?))
}

/// Run a failed or cancelled run again from the step that did not complete;
/// the completed steps' results are reused, not run again.
#[utoipa::path(
    post, path = "/api/pipeline-runs/{run_id}/retry", tag = "pipelines", operation_id = "retry_pipeline_run",
    security(("bearer" = [])),
    params(("run_id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 202, description = "Running again", body = PipelineRunBody),
        (status = 404, description = RUN_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is neither failed nor cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<(StatusCode, Json<PipelineRunBody>), Problem> {
    let reply = client(&state)
        .retry_pipeline_run(grpc_request(
            pb::RetryPipelineRunRequest { run_id },
            &headers,
        ))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(required_run(reply.into_inner().run)?),
    ))
}

/// Live events of one of your runs (Server-Sent Events), each with the run as it
/// is after it. Stored events carry their sequence number as the SSE id:
/// reconnect with `Last-Event-ID` to miss none. `step_progress` events (the
/// current step's job status and progress) carry no id. The stream ends once the
/// run is completed, failed or cancelled.
#[utoipa::path(
    get, path = "/api/pipeline-runs/{run_id}/events", tag = "pipelines", operation_id = "stream_pipeline_run_events",
    security(("bearer" = [])),
    params(
        ("run_id" = Uuid, Path, description = "Run id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "A text/event-stream of PipelineRunEventBody", content_type = "text/event-stream", body = PipelineRunEventBody),
        (status = 404, description = RUN_NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many live streams open (`MAX_STREAMS_PER_USER`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let (slot, after_seq) = crate::processing::stream_start(&state, caller, &headers)?;
    let stream = client(&state)
        .stream_pipeline_run_events(grpc_request(
            pb::StreamPipelineRunEventsRequest { run_id, after_seq },
            &headers,
        ))
        .await?
        .into_inner();
    let events = stream.filter_map(move |message| {
        // The stream holds its slot until it ends or the client goes away.
        let _slot = &slot;
        async move {
            let event = message.ok()?.event?;
            let stored = event.kind != "step_progress";
            let body = PipelineRunEventBody {
                seq: event.seq,
                at: rfc3339(event.at),
                step: Some(event.step).filter(|step| *step >= 0),
                run: event.run.map(run_body),
                kind: event.kind,
            };
            let mut sse = Event::default().event(body.kind.clone());
            if stored {
                sse = sse.id(body.seq.to_string());
            }
            Some(Ok(sse.json_data(&body).ok()?))
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.stream_config.keep_alive)))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(validate))
        .routes(routes!(get, update, delete))
        .routes(routes!(start, runs))
        .routes(routes!(run))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(events))
}
