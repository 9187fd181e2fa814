//! `/api/admin/workflows`: administrators manage the catalogue: every workflow
//! with what only they see, enabling and disabling, metadata and defaults,
//! pinning the schema, adding a workflow from a fal endpoint. Anyone else gets
//! `404`, as for a missing resource.

use atelier_common::{FieldViolation, json::map_to_struct};
use atelier_proto::workflow::v1::{self as pb, workflow_service_client::WorkflowServiceClient};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tonic::transport::Channel;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::Body,
    problem::Problem,
    state::{AppState, grpc_request},
    workflows::{WorkflowBody, body},
};

fn client(state: &AppState) -> WorkflowServiceClient<Channel> {
    WorkflowServiceClient::new(state.workflow.clone())
}

/// A workflow as administrators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminWorkflowBody {
    #[serde(flatten)]
    pub workflow: WorkflowBody,
    /// The schema is pinned: fal's periodic refresh leaves it as it is.
    pub pinned: bool,
    /// The version the workflow would have with the latest schema fal offers:
    /// `version` when current, higher when a newer schema waits (pinned).
    pub latest_version: i32,
    /// Added by an administrator, not from the built-in catalogue.
    pub custom: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminWorkflowList {
    /// Every workflow, disabled ones included, by category then display order.
    pub workflows: Vec<AdminWorkflowBody>,
}

fn admin_body(workflow: pb::Workflow) -> AdminWorkflowBody {
    AdminWorkflowBody {
        pinned: workflow.pinned,
        latest_version: workflow.latest_version,
        custom: workflow.custom,
        workflow: body(workflow),
    }
}

/// The workflow with its version as `ETag`, for the next change's `If-Match`.
fn reply(status: StatusCode, workflow: Option<pb::Workflow>) -> Result<Response, Problem> {
    let workflow =
        workflow.ok_or_else(|| Problem::from(tonic::Status::internal("reply without workflow")))?;
    let etag = format!("\"{}\"", workflow.version);
    let mut response = (status, Json(admin_body(workflow))).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// Every workflow, disabled ones included, with whether its schema is pinned
/// and the latest version fal offers.
#[utoipa::path(
    get, path = "/api/admin/workflows", tag = "admin", operation_id = "admin_list_workflows",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every workflow", body = AdminWorkflowList),
        (status = 403, description = "Called with an API key: no key is an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller is not an administrator (answered as for a missing resource)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AdminWorkflowList>, Problem> {
    let reply = client(&state)
        .admin_list_workflows(grpc_request(pb::AdminListWorkflowsRequest {}, &headers))
        .await?
        .into_inner();
    Ok(Json(AdminWorkflowList {
        workflows: reply.workflows.into_iter().map(admin_body).collect(),
    }))
}

/// A change to a workflow: only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkflowBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    /// The parameter values used where a caller gives none; checked against
    /// the workflow's schema.
    #[schema(value_type = Option<Object>)]
    pub defaults: Option<Map<String, Value>>,
    /// `false` takes the workflow out of the catalogue and refuses new jobs;
    /// jobs already running finish.
    pub active: Option<bool>,
    /// `true` keeps the schema as it is when fal's changes; `false` takes the
    /// latest fal offers.
    pub pinned: Option<bool>,
}

/// The version an `If-Match` names (`"3"`, `W/"3"` or `3`).
fn expected_version(headers: &HeaderMap) -> Result<i32, Problem> {
    let missing = || {
        Problem::invalid(vec![FieldViolation::new(
            "If-Match",
            "send the workflow's ETag (its version) as If-Match",
        )])
    };
    let raw = headers
        .get(header::IF_MATCH)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(missing)?;
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map_err(|_| missing())
}

/// Changes a workflow. Send the `ETag` you read as `If-Match`: when someone
/// changed the workflow since, the change is refused with 412 and nothing
/// changes. Audited (`workflow.updated`, `workflow.enabled`,
/// `workflow.disabled`, `workflow.pinned`, `workflow.unpinned`).
#[utoipa::path(
    patch, path = "/api/admin/workflows/{id}", tag = "admin", operation_id = "admin_update_workflow",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Workflow id"),
        ("If-Match" = String, Header, description = "The workflow's ETag (its version) the change is based on"),
    ),
    request_body = UpdateWorkflowBody,
    responses(
        (status = 200, description = "The workflow as changed, with its new ETag", body = AdminWorkflowBody),
        (status = 403, description = "Called with an API key: no key is an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow, or the caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The workflow changed since that ETag", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or defaults (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(change): Body<UpdateWorkflowBody>,
) -> Result<Response, Problem> {
    let expected_version = expected_version(&headers)?;
    let result = client(&state)
        .admin_update_workflow(grpc_request(
            pb::AdminUpdateWorkflowRequest {
                workflow_id: id,
                expected_version,
                name: change.name,
                description: change.description,
                category: change.category,
                defaults: change.defaults.as_ref().map(map_to_struct),
                active: change.active,
                pinned: change.pinned,
            },
            &headers,
        ))
        .await;
    match result {
        Ok(answer) => reply(StatusCode::OK, answer.into_inner().workflow),
        Err(status) if status.code() == tonic::Code::Aborted => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            status.message().to_owned(),
        )),
        Err(status) => Err(status.into()),
    }
}

/// A workflow to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWorkflowBody {
    /// Lowercase letters, digits and dashes, e.g. `esrgan-fast`.
    pub id: String,
    /// A fal endpoint id, e.g. `fal-ai/esrgan`.
    pub fal_endpoint: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// e.g. `upscale`, `background-removal`, `image-to-image`, `utility`.
    pub category: String,
    /// The parameters' JSON Schema; absent: read from fal's model API.
    #[schema(value_type = Option<Object>)]
    pub parameters_schema: Option<Map<String, Value>>,
    /// Absent: the schema's own defaults.
    #[schema(value_type = Option<Object>)]
    pub defaults: Option<Map<String, Value>>,
    /// In the catalogue at once (default `false`).
    #[serde(default)]
    pub active: bool,
}

/// Adds a workflow running a fal endpoint. Its parameters schema is read from
/// fal's model API unless given; an endpoint fal does not know, or a schema
/// that is not usable, is a 422 naming the field. Audited (`workflow.added`).
#[utoipa::path(
    post, path = "/api/admin/workflows", tag = "admin", operation_id = "admin_add_workflow",
    security(("bearer" = [])),
    request_body = AddWorkflowBody,
    responses(
        (status = 201, description = "The workflow added, with its ETag", body = AdminWorkflowBody),
        (status = 403, description = "Called with an API key: no key is an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller is not an administrator (answered as for a missing resource)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A workflow with this id exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, an endpoint fal does not know, or an unusable schema (each named)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "fal's model API cannot be reached", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(new): Body<AddWorkflowBody>,
) -> Result<Response, Problem> {
    let answer = client(&state)
        .admin_add_workflow(grpc_request(
            pb::AdminAddWorkflowRequest {
                workflow_id: new.id,
                fal_endpoint: new.fal_endpoint,
                name: new.name,
                description: new.description,
                category: new.category,
                parameters_schema: new.parameters_schema.as_ref().map(map_to_struct),
                defaults: new.defaults.as_ref().map(map_to_struct),
                active: new.active,
            },
            &headers,
        ))
        .await?
        .into_inner();
    reply(StatusCode::CREATED, answer.workflow)
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(update))
}
