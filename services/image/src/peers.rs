//! What the image service needs from other services, as traits the domain
//! calls: the uploader's tier ([`TierSource`], the user service) and whether a
//! result's job exists ([`JobRegistry`], the processing service), with their
//! gRPC implementation. A peer's refusal passes through as it came
//! ([`ImageError::Upstream`]).

use std::sync::Arc;

use async_trait::async_trait;
use atelier_common::audit::{self, AuditRecord};
use atelier_proto::{
    audit::v1::audit_service_client::AuditServiceClient,
    processing::v1::{CheckJobRequest, processing_service_client::ProcessingServiceClient},
    user::v1::{GetQuotaRequest, SubscriptionTier, user_service_client::UserServiceClient},
};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::ImageError;

/// What a user's tier allows of their images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub tier: String,
    pub max_file_size_bytes: Option<i64>,
    pub storage_bytes: Option<i64>,
    /// The retention the user chose, within their tier; `None` for the service's
    /// default.
    pub retention_days: Option<u32>,
}

#[async_trait]
pub trait TierSource: Send + Sync {
    async fn tier(&self, user_id: Uuid) -> Result<Tier, ImageError>;
}

#[async_trait]
pub trait JobRegistry: Send + Sync {
    /// Whether job `job_id` exists and is `user_id`'s.
    async fn exists(&self, user_id: Uuid, job_id: Uuid) -> Result<bool, ImageError>;
}

/// The platform's audit log (kept by the auth service).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `record`; an error (`UNAVAILABLE`) means the action must not happen.
    async fn record(&self, record: AuditRecord) -> Result<(), ImageError>;
}

/// The user, processing and auth services over gRPC.
#[derive(Clone)]
pub struct GrpcPeers {
    users: UserServiceClient<Channel>,
    jobs: ProcessingServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
}

impl GrpcPeers {
    pub fn new(user: Channel, processing: Channel, auth: Channel) -> Arc<Self> {
        Arc::new(Self {
            users: UserServiceClient::new(user),
            jobs: ProcessingServiceClient::new(processing),
            audit: AuditServiceClient::new(auth),
        })
    }
}

#[async_trait]
impl AuditLog for GrpcPeers {
    async fn record(&self, record: AuditRecord) -> Result<(), ImageError> {
        audit::record(&self.audit, record)
            .await
            .map_err(ImageError::Upstream)
    }
}

#[async_trait]
impl TierSource for GrpcPeers {
    async fn tier(&self, user_id: Uuid) -> Result<Tier, ImageError> {
        let quota = self
            .users
            .clone()
            .get_quota(GetQuotaRequest {
                user_id: user_id.to_string(),
            })
            .await
            .map_err(ImageError::Upstream)?
            .into_inner();
        let limits = quota.limits.unwrap_or_default();
        Ok(Tier {
            tier: SubscriptionTier::slug_of(quota.tier).to_owned(),
            max_file_size_bytes: limits.max_file_size_bytes,
            storage_bytes: limits.storage_bytes,
            retention_days: u32::try_from(quota.retention_days)
                .ok()
                .filter(|days| *days > 0),
        })
    }
}

#[async_trait]
impl JobRegistry for GrpcPeers {
    async fn exists(&self, user_id: Uuid, job_id: Uuid) -> Result<bool, ImageError> {
        Ok(self
            .jobs
            .clone()
            .check_job(CheckJobRequest {
                user_id: user_id.to_string(),
                job_id: job_id.to_string(),
            })
            .await
            .map_err(ImageError::Upstream)?
            .into_inner()
            .exists)
    }
}
