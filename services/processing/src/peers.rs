//! What the processing service needs from the other services, as traits the
//! domain calls: [`ImageDirectory`] (the image service), [`WorkflowCatalogue`]
//! (the workflow service) and [`TierSource`] (the user service). Their gRPC
//! implementations are here, and so is the one mapping of a peer's `Status` to a
//! [`ProcessingError`]: the domain never sees a gRPC code.

use std::{pin::Pin, sync::Arc};

use async_trait::async_trait;
use atelier_common::{
    ErrorCode, FieldViolation,
    json::{from_struct, map_to_struct},
};
use atelier_proto::{
    image::v1::{
        CheckOwnershipRequest, GetDownloadUrlRequest, GetPlatformStorageUsageRequest, ImageVariant,
        StoreResultMetadata, StoreResultRequest, image_service_client::ImageServiceClient,
        store_result_request,
    },
    user::v1::{
        GetQuotaRequest, GetQuotaResponse, SubscriptionTier, user_service_client::UserServiceClient,
    },
    workflow::v1::{
        EstimateInput, EstimateRequest, ValidateParametersRequest,
        workflow_service_client::WorkflowServiceClient,
    },
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::error::ProcessingError;

/// An input image, as the image service describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputImage {
    pub original_filename: String,
    /// 0 when not known.
    pub width: u32,
    pub height: u32,
}

/// A result to store: whose, from which job, and how to show it.
#[derive(Clone, Debug)]
pub struct NewResult {
    pub user_id: Uuid,
    pub job_id: Uuid,
    pub output_index: usize,
    pub source_image_id: Uuid,
    pub filename: String,
    /// The type fal declared; the image service decides by the content.
    pub mime_type: Option<String>,
    pub metadata: Map<String, Value>,
    pub size: Option<u64>,
}

/// The bytes of a result, in order (gRPC streams must be `Sync`).
pub type Chunks = Pin<Box<dyn Stream<Item = Bytes> + Send + Sync>>;

/// Why the image service did not store a result.
#[derive(Debug)]
pub enum StoreRefusal {
    /// It is not an image the platform stores; why, written for people.
    Invalid(String),
    /// The malware scanner found this signature in it: nothing was kept.
    Malware(String),
    /// The job or its owner is gone: nothing was kept.
    Gone(String),
    /// Anything else (storage, the connection): it may pass.
    Failed(ProcessingError),
}

#[async_trait]
pub trait ImageDirectory: Send + Sync {
    /// Image `image_id` when it is `user_id`'s; `None` when it is not there or
    /// someone else's.
    async fn owned(
        &self,
        user_id: Uuid,
        image_id: Uuid,
    ) -> Result<Option<InputImage>, ProcessingError>;

    /// Where fal reads the original of `image_id` from: a URL signed for an hour,
    /// or the image itself as a `data:` URI when it is at most `inline_max_bytes`.
    async fn input_url(
        &self,
        user_id: Uuid,
        image_id: Uuid,
        inline_max_bytes: u64,
    ) -> Result<String, ProcessingError>;

    /// Stores `chunks` as a result image; returns it. The store completes when
    /// `chunks` ends; dropping the returned future while `chunks` is still open
    /// cancels it, and nothing is kept.
    async fn store_result(
        &self,
        result: NewResult,
        chunks: Chunks,
    ) -> Result<StoredImage, StoreRefusal>;
}

/// A result image as stored: its id and size (0 when not known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredImage {
    pub id: Uuid,
    pub width: u32,
    pub height: u32,
}

/// Parameters the workflow service accepted, with the workflow they run on.
#[derive(Clone, Debug)]
pub struct Validated {
    pub parameters: Map<String, Value>,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub fal_endpoint: String,
}

/// What running a workflow on some images would do.
#[derive(Clone, Debug)]
pub struct Estimate {
    pub validated: Validated,
    /// The currency of the costs; empty when the workflow has no price.
    pub currency: String,
    /// fal's price: so much `currency` per unit (`image`, `megapixels`, ...).
    pub price: Option<(f64, String)>,
    /// One per image estimated.
    pub jobs: Vec<ImageEstimate>,
}

/// What running the workflow on one image would do.
#[derive(Clone, Debug)]
pub struct ImageEstimate {
    pub image_id: Uuid,
    /// Whether the result fits the platform's limits; else `reason` says why,
    /// about parameter `field` (empty: about the image).
    pub allowed: bool,
    pub field: String,
    pub reason: String,
    pub cost: Option<f64>,
    /// How many images (not masks) it would produce: none, and nothing can
    /// follow it in a pipeline.
    pub image_outputs: usize,
}

#[async_trait]
pub trait WorkflowCatalogue: Send + Sync {
    /// `parameters` checked against `workflow_id`'s schema, its defaults filled in.
    /// Refusals name the fields under `parameters`.
    async fn validate(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
    ) -> Result<Validated, ProcessingError>;

    /// What running `workflow_id` with `parameters` on `images` (id, width,
    /// height; sizes known) would produce and cost; checks the parameters too.
    async fn estimate(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
        images: &[(Uuid, u32, u32)],
    ) -> Result<Estimate, ProcessingError>;
}

/// One user's tier and limits, as the user service gives them; the rules on
/// them are the domain's ([`crate::domain::quota`]).
#[derive(Clone, Debug)]
pub struct Quota {
    pub tier: String,
    pub jobs_per_day: Option<i64>,
    pub concurrent_jobs: Option<i32>,
    pub parallel_jobs: Option<i32>,
    /// Whether the tier's jobs may run at high priority.
    pub high_priority: bool,
    /// The quota window: jobs count from here.
    pub period_start: OffsetDateTime,
    /// When the window ends and the daily count resets.
    pub period_end: OffsetDateTime,
    /// The tier's spend budgets per UTC day and month; `None`: no budget.
    pub daily_budget: Option<f64>,
    pub monthly_budget: Option<f64>,
}

#[async_trait]
pub trait StorageSource: Send + Sync {
    /// Bytes and number of every stored image.
    async fn platform_storage(&self) -> Result<(i64, i64), ProcessingError>;
}

#[async_trait]
pub trait TierSource: Send + Sync {
    /// The user's tier, limits and current quota window.
    async fn quota(&self, user_id: Uuid) -> Result<Quota, ProcessingError>;
}

/// A status from another service, as this service's error.
pub fn upstream(status: tonic::Status) -> ProcessingError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => {
            ProcessingError::Unavailable(status.message().to_owned())
        }
        _ => ProcessingError::Internal(anyhow::anyhow!("{}: {}", status.code(), status.message())),
    }
}

/// A workflow the workflow service does not have or does not run: the same for
/// every call.
fn workflow_error(status: tonic::Status) -> ProcessingError {
    match status.code() {
        Code::NotFound => ProcessingError::WorkflowNotFound,
        Code::FailedPrecondition => ProcessingError::WorkflowInactive(status.message().to_owned()),
        _ => upstream(status),
    }
}

/// The image, workflow and user services over gRPC.
#[derive(Clone)]
pub struct GrpcPeers {
    images: ImageServiceClient<Channel>,
    workflows: WorkflowServiceClient<Channel>,
    users: UserServiceClient<Channel>,
}

impl GrpcPeers {
    /// `image` must let a result stream as long as it takes (no request deadline).
    pub fn new(image: Channel, workflow: Channel, user: Channel) -> Arc<Self> {
        Arc::new(Self {
            images: ImageServiceClient::new(image),
            workflows: WorkflowServiceClient::new(workflow),
            users: UserServiceClient::new(user),
        })
    }
}

#[async_trait]
impl ImageDirectory for GrpcPeers {
    async fn owned(
        &self,
        user_id: Uuid,
        image_id: Uuid,
    ) -> Result<Option<InputImage>, ProcessingError> {
        let owned = self
            .images
            .clone()
            .check_ownership(CheckOwnershipRequest {
                user_id: user_id.to_string(),
                image_id: image_id.to_string(),
            })
            .await
            .map_err(upstream)?
            .into_inner();
        Ok(owned.image.filter(|_| owned.owned).map(|image| InputImage {
            original_filename: image.original_filename,
            width: image.width,
            height: image.height,
        }))
    }

    async fn input_url(
        &self,
        user_id: Uuid,
        image_id: Uuid,
        inline_max_bytes: u64,
    ) -> Result<String, ProcessingError> {
        Ok(self
            .images
            .clone()
            .get_download_url(GetDownloadUrlRequest {
                user_id: user_id.to_string(),
                image_id: image_id.to_string(),
                variant: ImageVariant::Original as i32,
                ttl_seconds: 3600,
                inline_max_bytes: i64::try_from(inline_max_bytes).unwrap_or(i64::MAX),
            })
            .await
            .map_err(upstream)?
            .into_inner()
            .url)
    }

    async fn store_result(
        &self,
        result: NewResult,
        chunks: Chunks,
    ) -> Result<StoredImage, StoreRefusal> {
        let messages = store_messages(result, chunks);
        let mut client = self.images.clone();
        let reply = client.store_result(messages).await;
        match reply {
            Ok(reply) => reply
                .into_inner()
                .image
                .and_then(|image| {
                    Some(StoredImage {
                        id: Uuid::parse_str(&image.id).ok()?,
                        width: image.width,
                        height: image.height,
                    })
                })
                .ok_or_else(|| {
                    StoreRefusal::Failed(ProcessingError::Internal(anyhow::anyhow!(
                        "the image service stored no image"
                    )))
                }),
            Err(status) => Err(match status.code() {
                _ if ErrorCode::of(&status) == ErrorCode::MalwareDetected => StoreRefusal::Malware(
                    atelier_common::error::error_metadata(&status)
                        .remove("signature")
                        .unwrap_or_else(|| "malware".to_owned()),
                ),
                Code::InvalidArgument | Code::OutOfRange => {
                    StoreRefusal::Invalid(status.message().to_owned())
                }
                Code::NotFound => StoreRefusal::Gone(status.message().to_owned()),
                _ => StoreRefusal::Failed(upstream(status)),
            }),
        }
    }
}

/// The messages of a result's store: its metadata, then its bytes.
fn store_messages(
    result: NewResult,
    chunks: Chunks,
) -> impl Stream<Item = StoreResultRequest> + Send + Sync + 'static {
    let metadata = StoreResultMetadata {
        user_id: result.user_id.to_string(),
        job_id: result.job_id.to_string(),
        output_index: result.output_index as i32,
        source_image_id: result.source_image_id.to_string(),
        filename: result.filename,
        mime_type: result.mime_type.unwrap_or_default(),
        metadata: Some(map_to_struct(&result.metadata)),
        size_bytes: result.size.map(|size| size as i64),
    };
    let first = StoreResultRequest {
        data: Some(store_result_request::Data::Metadata(metadata)),
    };
    futures::stream::iter([first]).chain(chunks.map(|chunk| StoreResultRequest {
        data: Some(store_result_request::Data::Chunk(chunk)),
    }))
}

/// The [`Validated`] parameters of a validation's or an estimate's reply (the
/// same fields in both).
macro_rules! validated {
    ($reply:expr) => {
        Validated {
            parameters: from_struct($reply.parameters),
            workflow_name: $reply.workflow_name,
            workflow_version: $reply.workflow_version,
            fal_endpoint: $reply.fal_endpoint,
        }
    };
}

#[async_trait]
impl WorkflowCatalogue for GrpcPeers {
    async fn validate(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
    ) -> Result<Validated, ProcessingError> {
        let validated = self
            .workflows
            .clone()
            .validate_parameters(ValidateParametersRequest {
                workflow_id: workflow_id.to_owned(),
                parameters: Some(map_to_struct(parameters)),
            })
            .await
            .map_err(workflow_error)?
            .into_inner();
        if !validated.valid {
            let violations = validated
                .violations
                .into_iter()
                .map(|violation| {
                    FieldViolation::new(
                        format!("parameters{}", violation.field.replace('/', ".")),
                        violation.description,
                    )
                })
                .collect();
            return Err(ProcessingError::InvalidInput(violations));
        }
        Ok(validated!(validated))
    }

    async fn estimate(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
        images: &[(Uuid, u32, u32)],
    ) -> Result<Estimate, ProcessingError> {
        let reply = self
            .workflows
            .clone()
            .estimate(EstimateRequest {
                workflow_id: workflow_id.to_owned(),
                parameters: Some(map_to_struct(parameters)),
                inputs: images
                    .iter()
                    .map(|(id, width, height)| EstimateInput {
                        image_id: id.to_string(),
                        width: *width,
                        height: *height,
                    })
                    .collect(),
            })
            .await
            .map_err(|status| match status.code() {
                Code::InvalidArgument => {
                    ProcessingError::InvalidInput(atelier_common::error::field_violations(&status))
                }
                _ => workflow_error(status),
            })?
            .into_inner();
        Ok(Estimate {
            validated: validated!(reply),
            currency: reply
                .pricing
                .as_ref()
                .map(|pricing| pricing.currency.clone())
                .unwrap_or_default(),
            price: reply
                .pricing
                .map(|pricing| (pricing.unit_price, pricing.unit)),
            jobs: reply
                .jobs
                .into_iter()
                .filter_map(|job| {
                    Some(ImageEstimate {
                        image_id: Uuid::parse_str(&job.image_id).ok()?,
                        allowed: job.allowed,
                        field: job.field,
                        reason: job.reason,
                        cost: job.cost,
                        image_outputs: job
                            .outputs
                            .iter()
                            .filter(|output| output.role == "image")
                            .count(),
                    })
                })
                .collect(),
        })
    }
}

fn quota_of(reply: GetQuotaResponse) -> Quota {
    let limits = reply.limits.unwrap_or_default();
    let at = |at: Option<prost_types::Timestamp>| {
        at.and_then(atelier_common::instant)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    Quota {
        tier: SubscriptionTier::slug_of(reply.tier).to_owned(),
        jobs_per_day: limits.jobs_per_day,
        concurrent_jobs: limits.concurrent_jobs,
        parallel_jobs: limits.parallel_jobs,
        high_priority: limits.high_priority.unwrap_or(true),
        period_start: at(reply.period_start),
        period_end: at(reply.period_end),
        daily_budget: limits.daily_budget,
        monthly_budget: limits.monthly_budget,
    }
}

#[async_trait]
impl StorageSource for GrpcPeers {
    async fn platform_storage(&self) -> Result<(i64, i64), ProcessingError> {
        let reply = self
            .images
            .clone()
            .get_platform_storage_usage(GetPlatformStorageUsageRequest {})
            .await
            .map_err(upstream)?
            .into_inner();
        Ok((reply.storage_bytes, reply.image_count))
    }
}

#[async_trait]
impl TierSource for GrpcPeers {
    async fn quota(&self, user_id: Uuid) -> Result<Quota, ProcessingError> {
        let reply = self
            .users
            .clone()
            .get_quota(GetQuotaRequest {
                user_id: user_id.to_string(),
            })
            .await
            .map_err(|status| match status.code() {
                Code::NotFound => ProcessingError::UserNotFound,
                _ => upstream(status),
            })?;
        Ok(quota_of(reply.into_inner()))
    }
}

/// The platform's audit log, kept by the auth service.
pub struct GrpcAudit(atelier_proto::audit::v1::audit_service_client::AuditServiceClient<Channel>);

impl GrpcAudit {
    /// The audit log over `auth`, a channel to the auth service.
    pub fn new(auth: Channel) -> Self {
        Self(atelier_proto::audit::v1::audit_service_client::AuditServiceClient::new(auth))
    }
}

#[async_trait]
impl crate::domain::jobs::admin::AuditLog for GrpcAudit {
    async fn record(
        &self,
        record: atelier_common::audit::AuditRecord,
    ) -> Result<(), ProcessingError> {
        atelier_common::audit::record(&self.0, record)
            .await
            .map_err(|status| ProcessingError::Unavailable(status.message().to_owned()))
    }
}

/// Peers in memory, for tests of the rules.
#[cfg(test)]
pub mod fakes {
    use std::{
        collections::HashMap,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use super::*;

    /// Images, by owner and id.
    #[derive(Default)]
    pub struct Images(pub Mutex<HashMap<(Uuid, Uuid), InputImage>>);

    impl Images {
        pub fn add(&self, user_id: Uuid, width: u32, height: u32) -> Uuid {
            let id = Uuid::new_v4();
            let image = InputImage {
                original_filename: format!("{id}.png"),
                width,
                height,
            };
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert((user_id, id), image);
            id
        }
    }

    #[async_trait]
    impl ImageDirectory for Images {
        async fn owned(
            &self,
            user_id: Uuid,
            image_id: Uuid,
        ) -> Result<Option<InputImage>, ProcessingError> {
            Ok(self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(&(user_id, image_id))
                .cloned())
        }

        async fn input_url(
            &self,
            _user_id: Uuid,
            image_id: Uuid,
            _inline_max_bytes: u64,
        ) -> Result<String, ProcessingError> {
            Ok(format!("https://images.test/{image_id}"))
        }

        async fn store_result(
            &self,
            _result: NewResult,
            chunks: Chunks,
        ) -> Result<StoredImage, StoreRefusal> {
            chunks.for_each(|_| async {}).await;
            Ok(StoredImage {
                id: Uuid::new_v4(),
                width: 1000,
                height: 1000,
            })
        }
    }

    /// One workflow, `lineart`, whose results fit only for inputs at most
    /// `max_width` wide; each run costs 0.01 USD.
    pub struct Workflows {
        pub max_width: u32,
    }

    fn lineart(parameters: &Map<String, Value>) -> Validated {
        Validated {
            parameters: parameters.clone(),
            workflow_name: "Line art".to_owned(),
            workflow_version: 1,
            fal_endpoint: "fal-ai/lineart".to_owned(),
        }
    }

    #[async_trait]
    impl WorkflowCatalogue for Workflows {
        async fn validate(
            &self,
            workflow_id: &str,
            parameters: &Map<String, Value>,
        ) -> Result<Validated, ProcessingError> {
            match workflow_id {
                "lineart" => Ok(lineart(parameters)),
                _ => Err(ProcessingError::WorkflowNotFound),
            }
        }

        async fn estimate(
            &self,
            workflow_id: &str,
            parameters: &Map<String, Value>,
            images: &[(Uuid, u32, u32)],
        ) -> Result<Estimate, ProcessingError> {
            let validated = self.validate(workflow_id, parameters).await?;
            Ok(Estimate {
                validated,
                currency: "USD".to_owned(),
                price: Some((0.01, "image".to_owned())),
                jobs: images
                    .iter()
                    .map(|(image_id, width, _)| ImageEstimate {
                        image_id: *image_id,
                        allowed: *width <= self.max_width,
                        field: String::new(),
                        reason: "the result would be too large".to_owned(),
                        cost: Some(0.01),
                        image_outputs: 1,
                    })
                    .collect(),
            })
        }
    }

    /// Answers with the quota set last, counting the questions.
    pub struct Tiers {
        pub quota: Mutex<Quota>,
        pub asked: AtomicUsize,
    }

    impl Tiers {
        pub fn new(quota: Quota) -> Self {
            Self {
                quota: Mutex::new(quota),
                asked: AtomicUsize::new(0),
            }
        }

        pub fn set(&self, quota: Quota) {
            *self
                .quota
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = quota;
        }

        pub fn asked(&self) -> usize {
            self.asked.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl TierSource for Tiers {
        async fn quota(&self, _user_id: Uuid) -> Result<Quota, ProcessingError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .quota
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone())
        }
    }
}
