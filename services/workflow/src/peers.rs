//! What the workflow service needs from others: the audit log (the auth
//! service, over gRPC) and fal's model API (through the one fal client).

use async_trait::async_trait;
use atelier_common::audit::{self, AuditRecord};
use atelier_fal::{EndpointId, FalClient};
use atelier_proto::audit::v1::audit_service_client::AuditServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::{
    domain::manage::{AuditLog, ModelApi},
    error::WorkflowError,
    refresh,
};

/// The audit log behind the auth service's channel.
pub struct GrpcAudit(AuditServiceClient<Channel>);

impl GrpcAudit {
    /// The audit log over `auth`, a channel to the auth service.
    pub fn new(auth: Channel) -> Self {
        Self(AuditServiceClient::new(auth))
    }
}

#[async_trait]
impl AuditLog for GrpcAudit {
    async fn record(&self, record: AuditRecord) -> Result<(), WorkflowError> {
        audit::record(&self.0, record)
            .await
            .map_err(|status| WorkflowError::Unavailable(status.message().to_owned()))
    }
}

/// fal's model API (or the simulator's).
pub struct FalModels(pub FalClient);

#[async_trait]
impl ModelApi for FalModels {
    async fn input_schema(&self, endpoint: &str) -> Result<Option<Option<Value>>, WorkflowError> {
        let id = EndpointId::parse(endpoint).map_err(|err| {
            WorkflowError::InvalidInput(vec![atelier_common::FieldViolation::new(
                "fal_endpoint",
                err.to_string(),
            )])
        })?;
        let openapi = self.0.openapi(&id).await.map_err(|err| {
            WorkflowError::Unavailable(format!("fal's model API cannot be reached: {err}"))
        })?;
        Ok(openapi.map(|openapi| refresh::input_schema(&openapi, endpoint)))
    }
}

/// No model API configured: adding a workflow needs its schema given.
pub struct NoModels;

#[async_trait]
impl ModelApi for NoModels {
    async fn input_schema(&self, _endpoint: &str) -> Result<Option<Option<Value>>, WorkflowError> {
        Err(WorkflowError::Unavailable(
            "no fal model API is configured: give parameters_schema".to_owned(),
        ))
    }
}
