//! `/api/workflows/*`: the catalogue, over the workflow service.

use atelier_common::json::{from_struct, map_to_struct, restore_order};
use atelier_proto::workflow::v1::{self as pb, workflow_service_client::WorkflowServiceClient};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{AppState, auth::Body, grpc_request, images::rfc3339, problem::Problem};

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowBody {
    pub id: String,
    pub name: String,
    pub description: String,
    /// e.g. `upscale`, `background-removal`, `image-to-image`, `utility`.
    pub category: String,
    /// The fal endpoint it runs.
    pub fal_endpoint: String,
    /// JSON Schema (draft 2020-12) of the parameters, properties in display order.
    #[schema(value_type = Object)]
    pub parameters_schema: Value,
    #[schema(value_type = Object)]
    pub defaults: Value,
    pub active: bool,
    pub version: i32,
    pub updated_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowBody>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub category: Option<String>,
    pub include_inactive: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateBody {
    /// The parameters to check; missing ones take their defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParameterViolation {
    /// JSON Pointer to the offending value, e.g. `/strength`.
    pub field: String,
    /// The schema keyword that failed, e.g. `maximum`.
    pub keyword: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationResult {
    pub valid: bool,
    pub violations: Vec<ParameterViolation>,
    /// When valid: the parameters with defaults filled in.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    pub workflow_version: i32,
}

/// The schema with its properties in display order.
fn ordered(mut schema: Value) -> Value {
    restore_order(&mut schema);
    schema
}

fn body(workflow: pb::Workflow) -> WorkflowBody {
    WorkflowBody {
        id: workflow.id,
        name: workflow.name,
        description: workflow.description,
        category: workflow.category,
        fal_endpoint: workflow.fal_endpoint,
        parameters_schema: ordered(Value::Object(from_struct(workflow.parameters_schema))),
        defaults: Value::Object(from_struct(workflow.defaults)),
        active: workflow.active,
        version: workflow.version,
        updated_at: rfc3339(workflow.updated_at),
    }
}

fn client(state: &AppState) -> WorkflowServiceClient<tonic::transport::Channel> {
    WorkflowServiceClient::new(state.workflow.clone())
}

/// The catalogue: active workflows, optionally of one category.
#[utoipa::path(
    get, path = "/api/workflows", tag = "workflows", operation_id = "workflows_list",
    params(
        ("category" = Option<String>, Query, description = "Only this category"),
        ("include_inactive" = Option<bool>, Query, description = "Also list inactive workflows"),
    ),
    responses((status = 200, description = "The workflows, by category then catalogue order", body = WorkflowList))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<WorkflowList>, Problem> {
    let mut workflows = Vec::new();
    let mut page_token = String::new();
    loop {
        let reply = client(&state)
            .list_workflows(grpc_request(
                pb::ListWorkflowsRequest {
                    category: params.category.clone().unwrap_or_default(),
                    include_inactive: params.include_inactive.unwrap_or(false),
                    page_size: 100,
                    page_token,
                },
                &headers,
            ))
            .await?
            .into_inner();
        workflows.extend(reply.workflows.into_iter().map(body));
        if reply.next_page_token.is_empty() {
            break;
        }
        page_token = reply.next_page_token;
    }
    Ok(Json(WorkflowList { workflows }))
}

/// One workflow.
#[utoipa::path(
    get, path = "/api/workflows/{id}", tag = "workflows", operation_id = "workflows_get",
    params(("id" = String, Path, description = "Workflow id, e.g. esrgan-upscale")),
    responses(
        (status = 200, description = "The workflow", body = WorkflowBody),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<WorkflowBody>, Problem> {
    let reply = client(&state)
        .get_workflow(grpc_request(
            pb::GetWorkflowRequest { workflow_id: id },
            &headers,
        ))
        .await?
        .into_inner();
    let workflow = reply
        .workflow
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without workflow")))?;
    Ok(Json(body(workflow)))
}

/// A workflow's parameters as a JSON Schema (draft 2020-12), with defaults.
#[utoipa::path(
    get, path = "/api/workflows/{id}/parameters", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The JSON Schema", body = Object),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn parameters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let reply = client(&state)
        .get_workflow_parameters(grpc_request(
            pb::GetWorkflowParametersRequest { workflow_id: id },
            &headers,
        ))
        .await?
        .into_inner();
    let mut schema = ordered(Value::Object(from_struct(reply.parameters_schema)));
    if let Value::Object(object) = &mut schema {
        object.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
    }
    Ok(Json(schema))
}

/// Check parameters against a workflow without starting anything.
#[utoipa::path(
    post, path = "/api/workflows/{id}/validate", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    request_body = ValidateBody,
    responses(
        (status = 200, description = "Whether they are valid, and every violation", body = ValidationResult),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The workflow is inactive", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(request): Body<ValidateBody>,
) -> Result<Json<ValidationResult>, Problem> {
    let reply = client(&state)
        .validate_parameters(grpc_request(
            pb::ValidateParametersRequest {
                workflow_id: id,
                parameters: Some(map_to_struct(&request.parameters)),
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(ValidationResult {
        valid: reply.valid,
        violations: reply
            .violations
            .into_iter()
            .map(|violation| ParameterViolation {
                field: violation.field,
                keyword: violation.keyword,
                detail: violation.description,
            })
            .collect(),
        parameters: reply
            .valid
            .then(|| Value::Object(from_struct(reply.parameters))),
        workflow_version: reply.workflow_version,
    }))
}
