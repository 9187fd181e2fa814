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
    domain::{Catalogue, Workflow},
    error::WorkflowError,
};

pub struct WorkflowApi {
    catalogue: Arc<Catalogue>,
}

impl WorkflowApi {
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        Self { catalogue }
    }
}

fn encode(workflow: &Workflow) -> pb::Workflow {
    let row = &workflow.row;
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
}
