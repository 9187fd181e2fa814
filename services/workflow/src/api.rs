//! gRPC handlers: decode, call the domain, encode.

use std::sync::Arc;

use atelier_common::{
    FieldViolation,
    json::{from_struct, to_struct},
    page, timestamp,
};
use atelier_proto::workflow::v1::{self as pb, workflow_service_server::WorkflowService};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Catalogue, Definition, Workflow,
        manage::{Actor, Change, Management, NewWorkflow},
    },
    error::WorkflowError,
    estimate::{Limits, Price, round_cost},
};

pub struct WorkflowApi {
    catalogue: Arc<Catalogue>,
    limits: Limits,
    /// What administrators do; without it their methods answer NOT_FOUND.
    management: Option<Arc<Management>>,
}

/// The limits of the embedded default: `FAL_MAX_RESULT_BYTES` and
/// `MAX_IMAGE_PIXELS` as their services default them.
pub fn default_limits() -> Limits {
    Limits {
        max_bytes: atelier_fal::FalConfig::new("default").max_result_bytes,
        max_pixels: 100_000_000,
    }
}

impl WorkflowApi {
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        Self::with_limits(catalogue, default_limits())
    }

    /// An API whose estimates hold results to `limits`.
    pub fn with_limits(catalogue: Arc<Catalogue>, limits: Limits) -> Self {
        Self {
            catalogue,
            limits,
            management: None,
        }
    }

    /// An API that also serves administrators' methods through `management`.
    pub fn with_management(mut self, management: Arc<Management>) -> Self {
        self.management = Some(management);
        self
    }

    fn management(&self) -> Result<&Management, Status> {
        self.management
            .as_deref()
            .ok_or_else(|| WorkflowError::NotFound.into())
    }
}

/// Who made an administrator's request: their user id (none for the operator
/// certificate) and where the request came from.
fn actor<T>(request: &Request<T>) -> Actor {
    Actor {
        user_id: atelier_common::grpc::caller(request)
            .ok()
            .map(|caller| caller.user_id),
        origin: atelier_common::audit::RequestOrigin::of(request),
    }
}

/// Most inputs one estimate covers (a batch's limit).
const MAX_ESTIMATE_INPUTS: usize = 100;

fn encode_price(price: &Price) -> pb::WorkflowPricing {
    pb::WorkflowPricing {
        unit_price: price.unit_price,
        unit: price.unit.clone(),
        currency: price.currency.clone(),
        priced_at: None,
    }
}

fn encode(workflow: &Workflow) -> pb::Workflow {
    encode_row(&workflow.row)
}

/// `row` as an administrator sees it: with the latest version fal offers.
fn encode_admin(row: &Definition) -> pb::Workflow {
    pb::Workflow {
        latest_version: row.latest_version(),
        ..encode_row(row)
    }
}

fn encode_row(row: &Definition) -> pb::Workflow {
    pb::Workflow {
        id: row.id.clone(),
        name: row.name.clone(),
        description: row.description.clone(),
        category: row.category.clone(),
        fal_endpoint: row.fal_endpoint.clone(),
        parameters_schema: to_struct(&row.parameters_schema),
        defaults: to_struct(&row.defaults),
        active: row.is_active,
        version: row.version,
        updated_at: Some(timestamp(row.updated_at)),
        pricing: match (&row.unit_price, &row.price_unit, &row.currency) {
            (Some(unit_price), Some(unit), Some(currency)) => Some(pb::WorkflowPricing {
                unit_price: *unit_price,
                unit: unit.clone(),
                currency: currency.clone(),
                priced_at: row.priced_at.map(timestamp),
            }),
            _ => None,
        },
        pinned: row.pinned,
        latest_version: 0,
        custom: row.custom,
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let request = request.into_inner();
        let (size, offset) = page::request::<usize>(request.page_size, &request.page_token)
            .map_err(WorkflowError::InvalidInput)?;
        let (size, offset) = (size as usize, offset.unwrap_or(0));
        let category = Some(request.category.as_str()).filter(|category| !category.is_empty());
        let workflows = self
            .catalogue
            .list(category, request.include_inactive)
            .await?;
        let page: Vec<_> = workflows
            .iter()
            .skip(offset)
            .take(size)
            .map(encode)
            .collect();
        let next = offset + page.len();
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: page,
            next_page_token: if next < workflows.len() {
                page::encode(&next)
            } else {
                String::new()
            },
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        let workflow = self.catalogue.get(&request.get_ref().workflow_id).await?;
        Ok(Response::new(pb::GetWorkflowResponse {
            workflow: Some(encode(&workflow)),
        }))
    }

    async fn get_workflow_parameters(
        &self,
        request: Request<pb::GetWorkflowParametersRequest>,
    ) -> Result<Response<pb::GetWorkflowParametersResponse>, Status> {
        let workflow = self.catalogue.get(&request.get_ref().workflow_id).await?;
        let encoded = encode(&workflow);
        Ok(Response::new(pb::GetWorkflowParametersResponse {
            parameters_schema: encoded.parameters_schema,
            defaults: encoded.defaults,
            version: encoded.version,
        }))
    }

    async fn validate_parameters(
        &self,
        request: Request<pb::ValidateParametersRequest>,
    ) -> Result<Response<pb::ValidateParametersResponse>, Status> {
        let request = request.into_inner();
        if request.workflow_id.is_empty() {
            return Err(WorkflowError::InvalidInput(vec![FieldViolation::new(
                "workflow_id",
                "is required",
            )])
            .into());
        }
        let params = from_struct(request.parameters);
        let reply = match self
            .catalogue
            .validate(&request.workflow_id, params)
            .await?
        {
            Ok(valid) => pb::ValidateParametersResponse {
                valid: true,
                violations: Vec::new(),
                parameters: Some(atelier_common::json::map_to_struct(&valid.parameters)),
                workflow_version: valid.version,
                fal_endpoint: valid.fal_endpoint,
                workflow_name: valid.name,
            },
            Err(violations) => pb::ValidateParametersResponse {
                valid: false,
                violations: violations
                    .into_iter()
                    .map(|violation| pb::ParameterViolation {
                        field: violation.field,
                        keyword: violation.keyword,
                        description: violation.description,
                    })
                    .collect(),
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn estimate(
        &self,
        request: Request<pb::EstimateRequest>,
    ) -> Result<Response<pb::EstimateResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        if request.workflow_id.is_empty() {
            violations.push(FieldViolation::new("workflow_id", "is required"));
        }
        if request.inputs.is_empty() || request.inputs.len() > MAX_ESTIMATE_INPUTS {
            violations.push(FieldViolation::new(
                "inputs",
                format!("must hold 1 to {MAX_ESTIMATE_INPUTS} images"),
            ));
        }
        for (index, input) in request.inputs.iter().enumerate() {
            if input.width == 0 || input.height == 0 {
                violations.push(FieldViolation::new(
                    format!("inputs[{index}]"),
                    "must have a width and a height",
                ));
            }
        }
        if !violations.is_empty() {
            return Err(WorkflowError::InvalidInput(violations).into());
        }
        let inputs: Vec<(String, u32, u32)> = request
            .inputs
            .into_iter()
            .map(|input| (input.image_id, input.width, input.height))
            .collect();
        let estimate = match self
            .catalogue
            .estimate(
                &request.workflow_id,
                from_struct(request.parameters),
                &inputs,
                self.limits,
            )
            .await?
        {
            Ok(estimate) => estimate,
            Err(violations) => {
                return Err(WorkflowError::InvalidInput(
                    violations
                        .into_iter()
                        .map(|violation| {
                            FieldViolation::new(
                                format!("parameters{}", violation.field.replace('/', ".")),
                                violation.description,
                            )
                        })
                        .collect(),
                )
                .into());
            }
        };
        let total_cost = estimate
            .jobs
            .iter()
            .map(|(_, _, _, job)| job.cost)
            .sum::<Option<f64>>()
            .map(round_cost);
        let jobs = estimate
            .jobs
            .into_iter()
            .map(|(image_id, input_width, input_height, job)| {
                let (reason, field) = job.refusal.clone().unwrap_or_default();
                pb::EstimatedJob {
                    image_id,
                    input_width,
                    input_height,
                    outputs: job
                        .outputs
                        .iter()
                        .map(|output| pb::EstimatedOutput {
                            role: output.role.to_owned(),
                            width: output.width,
                            height: output.height,
                            estimated_bytes: output.bytes as i64,
                        })
                        .collect(),
                    estimated_bytes: job.bytes as i64,
                    cost: job.cost,
                    allowed: job.refusal.is_none(),
                    reason,
                    field,
                }
            })
            .collect();
        Ok(Response::new(pb::EstimateResponse {
            workflow_id: request.workflow_id,
            pricing: estimate.price.as_ref().map(encode_price),
            max_result_bytes: self.limits.max_bytes as i64,
            max_result_pixels: self.limits.max_pixels as i64,
            total_cost,
            jobs,
            parameters: Some(atelier_common::json::map_to_struct(
                &estimate.validated.parameters,
            )),
            workflow_version: estimate.validated.version,
            fal_endpoint: estimate.validated.fal_endpoint,
            workflow_name: estimate.validated.name,
        }))
    }

    async fn admin_list_workflows(
        &self,
        _request: Request<pb::AdminListWorkflowsRequest>,
    ) -> Result<Response<pb::AdminListWorkflowsResponse>, Status> {
        let rows = self.management()?.list().await?;
        Ok(Response::new(pb::AdminListWorkflowsResponse {
            workflows: rows.iter().map(encode_admin).collect(),
        }))
    }

    async fn admin_update_workflow(
        &self,
        request: Request<pb::AdminUpdateWorkflowRequest>,
    ) -> Result<Response<pb::AdminUpdateWorkflowResponse>, Status> {
        let actor = actor(&request);
        let request = request.into_inner();
        let change = Change {
            name: request.name,
            description: request.description,
            category: request.category,
            defaults: request.defaults.map(|defaults| from_struct(Some(defaults))),
            active: request.active,
            pinned: request.pinned,
        };
        let row = self
            .management()?
            .update(
                &request.workflow_id,
                request.expected_version,
                change,
                actor,
                time::OffsetDateTime::now_utc(),
            )
            .await?;
        Ok(Response::new(pb::AdminUpdateWorkflowResponse {
            workflow: Some(encode_admin(&row)),
        }))
    }

    async fn admin_add_workflow(
        &self,
        request: Request<pb::AdminAddWorkflowRequest>,
    ) -> Result<Response<pb::AdminAddWorkflowResponse>, Status> {
        let actor = actor(&request);
        let request = request.into_inner();
        let new = NewWorkflow {
            id: request.workflow_id,
            fal_endpoint: request.fal_endpoint,
            name: request.name,
            description: request.description,
            category: request.category,
            parameters_schema: request
                .parameters_schema
                .map(|schema| serde_json::Value::Object(from_struct(Some(schema)))),
            defaults: request.defaults.map(|defaults| from_struct(Some(defaults))),
            active: request.active,
        };
        let row = self
            .management()?
            .add(new, actor, time::OffsetDateTime::now_utc())
            .await?;
        Ok(Response::new(pb::AdminAddWorkflowResponse {
            workflow: Some(encode_admin(&row)),
        }))
    }
}
