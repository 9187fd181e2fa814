//! What the user service needs from the services that own accounts, jobs,
//! images and workflows, as traits the domain calls, with their gRPC
//! implementations. Another service's refusal passes through as it came (see
//! [`UserError::Upstream`]): this service adds nothing to it.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use atelier_common::{
    FieldViolation,
    audit::{self, AuditRecord},
    grpc::on_behalf,
    json::map_to_struct,
    timestamp,
};
use atelier_proto::{
    audit::v1::audit_service_client::AuditServiceClient,
    auth::v1::{
        DeleteCurrentUserRequest, GetSessionStateRequest, auth_service_client::AuthServiceClient,
    },
    image::v1::{
        BatchGetImagesRequest, DeleteUserImagesRequest, GetStorageUsageRequest, Image,
        UpdateRetentionRequest, image_service_client::ImageServiceClient,
    },
    processing::v1::{
        DeleteUserJobsRequest, GetJobUsageRequest, ListJobsRequest,
        processing_service_client::ProcessingServiceClient,
    },
    user::v1 as pb,
    workflow::v1::{
        GetWorkflowRequest, ValidateParametersRequest,
        workflow_service_client::WorkflowServiceClient,
    },
};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tonic::{Code, Request, transport::Channel};
use uuid::Uuid;

use crate::error::UserError;

/// The caller's own credentials, for what another service does only on the
/// caller's behalf (it verifies the token itself).
pub struct Credentials(Request<()>);

impl Credentials {
    pub fn of<T>(request: &Request<T>) -> Self {
        Self(on_behalf(request, ()))
    }

    /// No credentials at all (tests).
    #[cfg(test)]
    pub fn none() -> Self {
        Self(Request::new(()))
    }
}

/// The accounts (the auth service).
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Whether the account `user_id` exists (is not deleted).
    async fn exists(&self, user_id: Uuid) -> Result<bool, UserError>;

    /// Deletes the caller's account, which ends its sessions.
    async fn delete(&self, caller: &Credentials) -> Result<(), UserError>;
}

/// The platform's audit log (kept by the auth service).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `record`; an error (`UNAVAILABLE`) means the action must not happen.
    async fn record(&self, record: AuditRecord) -> Result<(), UserError>;
}

/// The jobs (the processing service).
#[async_trait]
pub trait JobLedger: Send + Sync {
    /// Jobs `user_id` ran since `since`, and how many of theirs are unfinished.
    async fn usage(&self, user_id: Uuid, since: OffsetDateTime) -> Result<(i64, i32), UserError>;

    /// Deletes every job of `user_id`.
    async fn delete_all(&self, user_id: Uuid) -> Result<(), UserError>;
}

/// The images (the image service).
#[async_trait]
pub trait ImageLibrary: Send + Sync {
    /// Bytes `user_id` stores, and how many images.
    async fn storage(&self, user_id: Uuid) -> Result<(i64, i64), UserError>;

    /// Keeps `user_id`'s images `days` days (0: the service's default).
    async fn set_retention(&self, user_id: Uuid, days: i32) -> Result<(), UserError>;

    /// Deletes every image of `user_id`.
    async fn delete_all(&self, user_id: Uuid) -> Result<(), UserError>;
}

/// The catalogue of workflows (the workflow service).
#[async_trait]
pub trait WorkflowCatalogue: Send + Sync {
    /// Whether workflow `id` is in the catalogue.
    async fn contains(&self, id: &str) -> Result<bool, UserError>;

    /// What is wrong with `parameters` for workflow `id`, each field as a JSON
    /// Pointer into them; `None` when `id` is not a workflow that runs.
    async fn violations(
        &self,
        id: &str,
        parameters: &Map<String, Value>,
    ) -> Result<Option<Vec<FieldViolation>>, UserError>;
}

/// Every peer, over gRPC.
#[derive(Clone)]
pub struct GrpcPeers {
    auth: AuthServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    jobs: ProcessingServiceClient<Channel>,
    workflows: WorkflowServiceClient<Channel>,
}

impl GrpcPeers {
    pub fn new(auth: Channel, image: Channel, processing: Channel, workflow: Channel) -> Arc<Self> {
        Arc::new(Self {
            audit: AuditServiceClient::new(auth.clone()),
            auth: AuthServiceClient::new(auth),
            images: ImageServiceClient::new(image),
            jobs: ProcessingServiceClient::new(processing),
            workflows: WorkflowServiceClient::new(workflow),
        })
    }

    /// A page of the caller's history: their jobs, as the processing service
    /// lists them, each with its input and result images, fetched on their
    /// behalf (with signed URLs). No rule of this service is involved.
    pub async fn history(
        &self,
        request: &Request<pb::GetHistoryRequest>,
    ) -> Result<pb::GetHistoryResponse, UserError> {
        let query = request.get_ref().clone();
        let page = self
            .jobs
            .clone()
            .list_jobs(on_behalf(
                request,
                ListJobsRequest {
                    page_size: query.page_size,
                    page_token: query.page_token,
                    statuses: query.statuses,
                    workflow_id: query.workflow_id,
                    created_after: query.created_after,
                    created_before: query.created_before,
                    query: query.query,
                    ..ListJobsRequest::default()
                },
            ))
            .await?
            .into_inner();
        let ids = page
            .jobs
            .iter()
            .flat_map(|job| std::iter::once(&job.image_id).chain(&job.result_image_ids))
            .filter(|id| !id.is_empty())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let images = self.images_of(request, ids).await?;
        let entries = page
            .jobs
            .into_iter()
            .map(|job| pb::HistoryEntry {
                input_image: images.get(&job.image_id).cloned(),
                result_images: job
                    .result_image_ids
                    .iter()
                    .filter_map(|id| images.get(id).cloned())
                    .collect(),
                job: Some(job),
            })
            .collect();
        Ok(pb::GetHistoryResponse {
            entries,
            next_page_token: page.next_page_token,
        })
    }

    /// The images of one history page, by id, fetched on the caller's behalf (with
    /// their signed URLs).
    async fn images_of<T>(
        &self,
        request: &Request<T>,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Image>, UserError> {
        let calls = ids.chunks(100).map(|chunk| {
            let mut images = self.images.clone();
            let batch = on_behalf(
                request,
                BatchGetImagesRequest {
                    image_ids: chunk.to_vec(),
                },
            );
            async move { images.batch_get_images(batch).await }
        });
        let mut found = HashMap::new();
        for reply in futures::future::try_join_all(calls).await? {
            found.extend(
                reply
                    .into_inner()
                    .images
                    .into_iter()
                    .map(|image| (image.id.clone(), image)),
            );
        }
        Ok(found)
    }
}

#[async_trait]
impl Accounts for GrpcPeers {
    async fn exists(&self, user_id: Uuid) -> Result<bool, UserError> {
        let state = self
            .auth
            .clone()
            .get_session_state(GetSessionStateRequest {
                user_id: user_id.to_string(),
            })
            .await?;
        Ok(!state.into_inner().deleted)
    }

    async fn delete(&self, caller: &Credentials) -> Result<(), UserError> {
        self.auth
            .clone()
            .delete_current_user(on_behalf(&caller.0, DeleteCurrentUserRequest {}))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl AuditLog for GrpcPeers {
    async fn record(&self, record: AuditRecord) -> Result<(), UserError> {
        audit::record(&self.audit, record)
            .await
            .map_err(UserError::Upstream)
    }
}

#[async_trait]
impl JobLedger for GrpcPeers {
    async fn usage(&self, user_id: Uuid, since: OffsetDateTime) -> Result<(i64, i32), UserError> {
        let usage = self
            .jobs
            .clone()
            .get_job_usage(GetJobUsageRequest {
                user_id: user_id.to_string(),
                since: Some(timestamp(since)),
            })
            .await?
            .into_inner();
        Ok((usage.jobs_since, usage.active_jobs))
    }

    async fn delete_all(&self, user_id: Uuid) -> Result<(), UserError> {
        self.jobs
            .clone()
            .delete_user_jobs(DeleteUserJobsRequest {
                user_id: user_id.to_string(),
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl ImageLibrary for GrpcPeers {
    async fn storage(&self, user_id: Uuid) -> Result<(i64, i64), UserError> {
        let usage = self
            .images
            .clone()
            .get_storage_usage(GetStorageUsageRequest {
                user_id: user_id.to_string(),
            })
            .await?
            .into_inner();
        Ok((usage.storage_bytes, usage.image_count))
    }

    async fn set_retention(&self, user_id: Uuid, days: i32) -> Result<(), UserError> {
        self.images
            .clone()
            .update_retention(UpdateRetentionRequest {
                user_id: user_id.to_string(),
                retention_days: days,
            })
            .await?;
        Ok(())
    }

    async fn delete_all(&self, user_id: Uuid) -> Result<(), UserError> {
        self.images
            .clone()
            .delete_user_images(DeleteUserImagesRequest {
                user_id: user_id.to_string(),
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl WorkflowCatalogue for GrpcPeers {
    async fn contains(&self, id: &str) -> Result<bool, UserError> {
        match self
            .workflows
            .clone()
            .get_workflow(GetWorkflowRequest {
                workflow_id: id.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(status.into()),
        }
    }

    async fn violations(
        &self,
        id: &str,
        parameters: &Map<String, Value>,
    ) -> Result<Option<Vec<FieldViolation>>, UserError> {
        match self
            .workflows
            .clone()
            .validate_parameters(ValidateParametersRequest {
                workflow_id: id.to_owned(),
                parameters: Some(map_to_struct(parameters)),
            })
            .await
        {
            Ok(reply) => Ok(Some(
                reply
                    .into_inner()
                    .violations
                    .into_iter()
                    .map(|violation| FieldViolation::new(violation.field, violation.description))
                    .collect(),
            )),
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {
                Ok(None)
            }
            Err(status) => Err(status.into()),
        }
    }
}

/// Peers in memory, for tests of the rules.
#[cfg(test)]
pub mod fakes {
    use std::{collections::HashSet, sync::Mutex};

    use super::*;

    /// Every service at once: accounts that exist unless deleted, fixed usage,
    /// the workflows named, and a log of what was asked to change, in order.
    #[derive(Default)]
    pub struct Peers {
        pub deleted_accounts: Mutex<HashSet<Uuid>>,
        pub workflows: Vec<String>,
        pub log: Mutex<Vec<String>>,
        /// The audit entries recorded.
        pub audited: Mutex<Vec<AuditRecord>>,
        /// The audit log refuses every entry (it is away).
        pub audit_down: std::sync::atomic::AtomicBool,
    }

    impl Peers {
        pub fn with_workflows(ids: &[&str]) -> Self {
            Self {
                workflows: ids.iter().map(|id| (*id).to_owned()).collect(),
                ..Self::default()
            }
        }

        fn record(&self, entry: String) {
            self.log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(entry);
        }

        pub fn logged(&self) -> Vec<String> {
            self.log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        }
    }

    #[async_trait]
    impl Accounts for Peers {
        async fn exists(&self, user_id: Uuid) -> Result<bool, UserError> {
            Ok(!self
                .deleted_accounts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(&user_id))
        }

        async fn delete(&self, _caller: &Credentials) -> Result<(), UserError> {
            self.record("account deleted".to_owned());
            Ok(())
        }
    }

    #[async_trait]
    impl AuditLog for Peers {
        async fn record(&self, record: AuditRecord) -> Result<(), UserError> {
            if self.audit_down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(UserError::Upstream(tonic::Status::unavailable(
                    "the audit log is away",
                )));
            }
            self.audited
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(record);
            Ok(())
        }
    }

    #[async_trait]
    impl JobLedger for Peers {
        async fn usage(
            &self,
            _user_id: Uuid,
            _since: OffsetDateTime,
        ) -> Result<(i64, i32), UserError> {
            Ok((4, 1))
        }

        async fn delete_all(&self, _user_id: Uuid) -> Result<(), UserError> {
            self.record("jobs deleted".to_owned());
            Ok(())
        }
    }

    #[async_trait]
    impl ImageLibrary for Peers {
        async fn storage(&self, _user_id: Uuid) -> Result<(i64, i64), UserError> {
            Ok((2048, 2))
        }

        async fn set_retention(&self, _user_id: Uuid, days: i32) -> Result<(), UserError> {
            self.record(format!("retention {days}"));
            Ok(())
        }

        async fn delete_all(&self, _user_id: Uuid) -> Result<(), UserError> {
            self.record("images deleted".to_owned());
            Ok(())
        }
    }

    /// A parameter named `bad` is refused by every workflow.
    #[async_trait]
    impl WorkflowCatalogue for Peers {
        async fn contains(&self, id: &str) -> Result<bool, UserError> {
            Ok(self.workflows.iter().any(|known| known == id))
        }

        async fn violations(
            &self,
            id: &str,
            parameters: &Map<String, Value>,
        ) -> Result<Option<Vec<FieldViolation>>, UserError> {
            if !self.contains(id).await? {
                return Ok(None);
            }
            Ok(Some(
                parameters
                    .keys()
                    .filter(|key| *key == "bad")
                    .map(|key| FieldViolation::new(format!("/{key}"), "is not allowed"))
                    .collect(),
            ))
        }
    }
}
