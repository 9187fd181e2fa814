//! `/api/workflows/*`: the catalogue, over the workflow service.

use atelier_common::{
    FieldViolation,
    json::{from_struct, map_to_struct, restore_order},
};
use atelier_proto::{
    image::v1::{BatchGetImagesRequest, image_service_client::ImageServiceClient},
    workflow::v1::{self as pb, workflow_service_client::WorkflowServiceClient},
};
use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    views::rfc3339,
};

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
    /// fal's price for one unit of the workflow's output; `null` while fal has
    /// given none.
    pub pricing: Option<PricingBody>,
}

/// What fal charges (account discounts aside).
#[derive(Debug, Serialize, ToSchema)]
pub struct PricingBody {
    /// The price of one unit, in `currency`.
    pub unit_price: f64,
    /// `image` (per output image), `megapixels` (per output megapixel), or
    /// another unit (e.g. `second` of GPU time) that cannot be estimated before
    /// the run.
    pub unit: String,
    /// ISO 4217, e.g. `USD`.
    pub currency: String,
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

pub(crate) fn body(workflow: pb::Workflow) -> WorkflowBody {
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
        pricing: workflow.pricing.map(|pricing| PricingBody {
            unit_price: pricing.unit_price,
            unit: pricing.unit,
            currency: pricing.currency,
        }),
    }
}

fn client(state: &AppState) -> WorkflowServiceClient<tonic::transport::Channel> {
    WorkflowServiceClient::new(state.workflow.clone())
}

/// The catalogue: active workflows, optionally of one category.
#[utoipa::path(
    get, path = "/api/workflows", tag = "workflows", operation_id = "list_workflows",
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
    get, path = "/api/workflows/{id}", tag = "workflows", operation_id = "get_workflow",
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
    get, path = "/api/workflows/{id}/parameters", tag = "workflows", operation_id = "get_workflow_parameters",
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
    post, path = "/api/workflows/{id}/validate", tag = "workflows", operation_id = "validate_parameters",
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct EstimateBody {
    /// The images the workflow would run on (1 to 100 of yours).
    #[serde(default)]
    #[schema(required = true, value_type = Vec<uuid::Uuid>, min_items = 1, max_items = 100)]
    pub image_ids: Vec<String>,
    /// The workflow's parameters, as a start would take them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

/// One output a job would make.
#[derive(Debug, Serialize, ToSchema)]
pub struct EstimatedOutputBody {
    /// `image` or `mask`.
    pub role: String,
    pub width: u32,
    pub height: u32,
    /// An upper bound of the file's size in bytes.
    pub estimated_bytes: i64,
}

/// What one image would give.
#[derive(Debug, Serialize, ToSchema)]
pub struct EstimatedJobBody {
    pub image_id: String,
    pub input_width: u32,
    pub input_height: u32,
    pub outputs: Vec<EstimatedOutputBody>,
    /// The sum of the outputs' bytes.
    pub estimated_bytes: i64,
    /// The cost at fal's price; `null` when there is no price or it cannot be
    /// known before the run (e.g. billed per GPU second).
    pub cost: Option<f64>,
    /// Whether the result fits the platform's limits; a start that does not is
    /// refused.
    pub allowed: bool,
    /// Why not, when not allowed; `null` otherwise.
    pub reason: Option<String>,
}

/// What a run would produce and cost before it starts.
#[derive(Debug, Serialize, ToSchema)]
pub struct EstimateResult {
    pub workflow_id: String,
    /// `null` when the workflow has no price.
    pub currency: Option<String>,
    pub unit_price: Option<f64>,
    /// fal's billing unit (`image`, `megapixels`, ...); `null` without a price.
    pub unit: Option<String>,
    /// The largest result file accepted, in bytes.
    pub max_result_bytes: i64,
    /// The largest result accepted, in pixels (width × height).
    pub max_result_pixels: i64,
    /// The sum of the jobs' costs; `null` when any is.
    pub total_cost: Option<f64>,
    /// One per image, in the order asked.
    pub jobs: Vec<EstimatedJobBody>,
}

/// Estimate a run before starting it: each output's size, an upper bound of its
/// bytes, the cost at fal's price, and whether it fits the largest result the
/// platform accepts (a start that does not is refused with the same reason).
#[utoipa::path(
    post, path = "/api/workflows/{id}/estimate", tag = "workflows", operation_id = "estimate_cost",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Workflow id")),
    request_body = EstimateBody,
    responses(
        (status = 200, description = "The estimate, per image and in total", body = EstimateResult),
        (status = 404, description = "No such workflow, or an image that is not yours", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The workflow is inactive", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameters or image list (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn estimate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(request): Body<EstimateBody>,
) -> Result<Json<EstimateResult>, Problem> {
    if request.image_ids.is_empty() || request.image_ids.len() > 100 {
        return Err(Problem::invalid(vec![FieldViolation::new(
            "image_ids",
            "must hold 1 to 100 image ids",
        )]));
    }
    let images = ImageServiceClient::new(state.image.clone())
        .batch_get_images(grpc_request(
            BatchGetImagesRequest {
                image_ids: request.image_ids.clone(),
            },
            &headers,
        ))
        .await?
        .into_inner()
        .images;
    let inputs = request
        .image_ids
        .iter()
        .map(|id| {
            images
                .iter()
                .find(|image| &image.id == id)
                .map(|image| pb::EstimateInput {
                    image_id: image.id.clone(),
                    width: image.width,
                    height: image.height,
                })
                .ok_or_else(Problem::not_found)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reply = client(&state)
        .estimate(grpc_request(
            pb::EstimateRequest {
                workflow_id: id,
                parameters: Some(map_to_struct(&request.parameters)),
                inputs,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(EstimateResult {
        workflow_id: reply.workflow_id,
        currency: reply.pricing.as_ref().map(|p| p.currency.clone()),
        unit_price: reply.pricing.as_ref().map(|p| p.unit_price),
        unit: reply.pricing.as_ref().map(|p| p.unit.clone()),
        max_result_bytes: reply.max_result_bytes,
        max_result_pixels: reply.max_result_pixels,
        total_cost: reply.total_cost,
        jobs: reply
            .jobs
            .into_iter()
            .map(|job| EstimatedJobBody {
                image_id: job.image_id,
                input_width: job.input_width,
                input_height: job.input_height,
                outputs: job
                    .outputs
                    .into_iter()
                    .map(|output| EstimatedOutputBody {
                        role: output.role,
                        width: output.width,
                        height: output.height,
                        estimated_bytes: output.estimated_bytes,
                    })
                    .collect(),
                estimated_bytes: job.estimated_bytes,
                cost: job.cost,
                allowed: job.allowed,
                reason: Some(job.reason).filter(|reason| !reason.is_empty()),
            })
            .collect(),
    }))
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(parameters))
        .routes(routes!(validate))
        .routes(routes!(estimate))
}
