//! gRPC handlers: decode, authorize, call the domain, encode.

pub mod operations;
pub mod pipelines;
pub mod spend;
pub mod webhooks;

use std::{pin::Pin, sync::Arc};

use atelier_common::{
    FieldViolation,
    grpc::caller,
    json::{from_struct, to_struct},
    page, timestamp,
};
use atelier_proto::processing::v1::{self as pb, processing_service_server::ProcessingService};
use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        BatchView, Event, Job, JobFilter, Jobs, Priority, StartRequest, Status as JobStatus,
        WebhookOutcome, Webhooks, failure,
    },
    error::ProcessingError,
};

pub struct ProcessingApi {
    jobs: Arc<Jobs>,
    webhooks: Webhooks,
    /// Checks fal's signature on webhooks; `None` refuses them.
    verifier: Option<Arc<atelier_fal::webhook::WebhookVerifier>>,
    /// The user's outgoing webhooks, deleted with their jobs.
    outbound: Option<crate::domain::outbound::Webhooks>,
    /// The user's pipelines and runs, deleted with their jobs.
    pipelines: Option<Arc<crate::domain::pipelines::Pipelines>>,
}

impl ProcessingApi {
    /// Deletes a user's outgoing webhooks too when their jobs go.
    pub fn with_outbound(mut self, outbound: crate::domain::outbound::Webhooks) -> Self {
        self.outbound = Some(outbound);
        self
    }

    /// Deletes a user's pipelines and runs too when their jobs go.
    pub fn with_pipelines(mut self, pipelines: Arc<crate::domain::pipelines::Pipelines>) -> Self {
        self.pipelines = Some(pipelines);
        self
    }

    pub fn new(
        jobs: Arc<Jobs>,
        webhooks: Webhooks,
        verifier: Option<Arc<atelier_fal::webhook::WebhookVerifier>>,
    ) -> Self {
        Self {
            jobs,
            webhooks,
            verifier,
            outbound: None,
            pipelines: None,
        }
    }
}

fn job_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| ProcessingError::NotFound)
}

fn status_code(status: JobStatus) -> i32 {
    (match status {
        JobStatus::Pending => pb::JobStatus::Pending,
        JobStatus::Queued => pb::JobStatus::Queued,
        JobStatus::Submitted => pb::JobStatus::Submitted,
        JobStatus::Processing => pb::JobStatus::Processing,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }) as i32
}

fn status_of(code: i32) -> Option<JobStatus> {
    Some(match pb::JobStatus::try_from(code).ok()? {
        pb::JobStatus::Pending => JobStatus::Pending,
        pb::JobStatus::Queued => JobStatus::Queued,
        pb::JobStatus::Submitted => JobStatus::Submitted,
        pb::JobStatus::Processing => JobStatus::Processing,
        pb::JobStatus::Completed => JobStatus::Completed,
        pb::JobStatus::Failed => JobStatus::Failed,
        pb::JobStatus::Cancelled => JobStatus::Cancelled,
        pb::JobStatus::Unspecified => return None,
    })
}

fn priority(code: i32) -> Priority {
    match pb::JobPriority::try_from(code) {
        Ok(pb::JobPriority::High) => Priority::High,
        Ok(pb::JobPriority::Low) => Priority::Low,
        _ => Priority::Normal,
    }
}

fn priority_code(priority: Priority) -> i32 {
    (match priority {
        Priority::High => pb::JobPriority::High,
        Priority::Normal => pb::JobPriority::Normal,
        Priority::Low => pb::JobPriority::Low,
    }) as i32
}

fn error_of(row: &Job) -> Option<pb::JobError> {
    let message = row.error_message.clone()?;
    let field_violations = row
        .error_details
        .as_ref()
        .and_then(|details| details.as_array())
        .map(|issues| {
            issues
                .iter()
                .map(|issue| pb::FieldViolation {
                    field: issue["field"].as_str().unwrap_or_default().to_owned(),
                    description: issue["message"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let code = row.error_code.clone().unwrap_or_default();
    Some(pb::JobError {
        retryable: failure::retryable(&code),
        code,
        message,
        field_violations,
    })
}

/// The outputs recorded with a job, in output order. An entry is the result
/// image's id, or an object `{"image_id", "role"}` where the role was recorded;
/// a plain id is an `image`.
pub fn outputs_of(row: &Job) -> Vec<pb::JobOutput> {
    row.result_image_ids
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| match entry {
            serde_json::Value::String(id) => Some((id.clone(), None)),
            serde_json::Value::Object(entry) => Some((
                entry.get("image_id")?.as_str()?.to_owned(),
                entry.get("role").and_then(|role| role.as_str()),
            )),
            _ => None,
        })
        .enumerate()
        .map(|(index, (image_id, role))| pb::JobOutput {
            image_id,
            index: index as i32,
            role: role.unwrap_or("image").to_owned(),
        })
        .collect()
}

pub fn encode(row: &Job) -> pb::Job {
    let outputs = outputs_of(row);
    pb::Job {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        image_id: row.image_id.to_string(),
        workflow_id: row.workflow_id.clone(),
        workflow_name: row.workflow_name.clone(),
        workflow_version: row.workflow_version,
        parameters: to_struct(&row.parameters),
        priority: priority_code(row.priority),
        status: status_code(row.status),
        fal_request_id: row.fal_request_id.clone().unwrap_or_default(),
        result_image_id: row
            .result_image_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        result_image_ids: outputs.iter().map(|o| o.image_id.clone()).collect(),
        outputs,
        estimated_cost: match (row.estimated_cost, &row.cost_currency) {
            (Some(amount), Some(currency)) => Some(pb::Cost {
                amount,
                currency: currency.clone(),
            }),
            _ => None,
        },
        actual_cost: match (row.actual_cost, &row.cost_currency) {
            (Some(amount), Some(currency)) => Some(pb::Cost {
                amount,
                currency: currency.clone(),
            }),
            _ => None,
        },
        result_url: String::new(),
        error: error_of(row),
        attempts: row.attempts,
        queue_position: row.queue_position,
        progress: row.progress,
        logs: Vec::new(),
        processing_time_ms: row.processing_time_ms,
        created_at: Some(timestamp(row.created_at)),
        started_at: row.started_at.map(timestamp),
        completed_at: row.completed_at.map(timestamp),
        idempotency_key: row.idempotency_key.clone().unwrap_or_default(),
        batch_id: row.batch_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

pub fn encode_event(event: &Event) -> pb::JobEvent {
    let kind = match event.kind.as_str() {
        "created" => pb::JobEventKind::Created,
        "status_changed" => pb::JobEventKind::StatusChanged,
        "queue_position" => pb::JobEventKind::QueuePosition,
        "progress" => pb::JobEventKind::Progress,
        "log" => pb::JobEventKind::Log,
        "retry_scheduled" => pb::JobEventKind::RetryScheduled,
        _ => pb::JobEventKind::Unspecified,
    };
    let data = &event.data;
    pb::JobEvent {
        job_id: event.job_id.to_string(),
        seq: event.seq,
        at: Some(timestamp(event.at)),
        kind: kind as i32,
        status: data["status"]
            .as_str()
            .and_then(JobStatus::parse)
            .map(status_code)
            .unwrap_or_default(),
        queue_position: data["queue_position"].as_i64().map(|p| p as i32),
        progress: data["progress"].as_f64(),
        logs: data["logs"]
            .as_array()
            .map(|logs| {
                logs.iter()
                    .map(|log| pb::JobLog {
                        at: None,
                        level: log["level"].as_str().unwrap_or_default().to_owned(),
                        message: log["message"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        error: data
            .get("error")
            .filter(|error| error.is_object())
            .map(|error| {
                let code = error["code"].as_str().unwrap_or_default();
                pb::JobError {
                    code: code.to_owned(),
                    message: error["message"].as_str().unwrap_or_default().to_owned(),
                    field_violations: Vec::new(),
                    retryable: failure::retryable(code),
                }
            }),
        result_image_id: data["result_image_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        retry_at: None,
        data: to_struct(data),
    }
}

pub fn encode_batch(batch: &BatchView) -> pb::Batch {
    use JobStatus as S;
    let first = batch.jobs.first();
    let failed = batch.count(&[S::Failed]);
    let unfinished = batch.count(&[S::Pending, S::Queued, S::Submitted, S::Processing]);
    let status = if unfinished > 0 {
        pb::BatchStatus::Running
    } else if failed > 0 {
        pb::BatchStatus::CompletedWithFailures
    } else {
        pb::BatchStatus::Completed
    };
    pb::Batch {
        id: batch.id.to_string(),
        user_id: first.map(|job| job.user_id.to_string()).unwrap_or_default(),
        workflow_id: first.map(|job| job.workflow_id.clone()).unwrap_or_default(),
        parameters: first.and_then(|job| to_struct(&job.parameters)),
        priority: first
            .map(|job| priority_code(job.priority))
            .unwrap_or_default(),
        status: status as i32,
        total: batch.jobs.len() as i32,
        waiting: batch.count(&[S::Pending, S::Queued]) as i32,
        running: batch.count(&[S::Submitted, S::Processing]) as i32,
        completed: batch.count(&[S::Completed]) as i32,
        failed: failed as i32,
        cancelled: batch.count(&[S::Cancelled]) as i32,
        progress: batch.progress(),
        created_at: first.map(|job| timestamp(job.created_at)),
        completed_at: if unfinished == 0 {
            batch
                .jobs
                .iter()
                .filter_map(|job| job.completed_at)
                .max()
                .map(timestamp)
        } else {
            None
        },
        estimated_cost: batch_cost(&batch.jobs),
    }
}

/// The sum of the jobs' estimated costs, when every job has one in one currency.
fn batch_cost(jobs: &[Job]) -> Option<pb::Cost> {
    let currency = jobs.first()?.cost_currency.clone()?;
    let mut amount = 0.0;
    for job in jobs {
        if job.cost_currency.as_ref() != Some(&currency) {
            return None;
        }
        amount += job.estimated_cost?;
    }
    Some(pb::Cost {
        amount: (amount * 1_000_000.0).round() / 1_000_000.0,
        currency,
    })
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::StreamJobEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProcessingService for ProcessingApi {
    async fn start_processing(
        &self,
        request: Request<pb::StartProcessingRequest>,
    ) -> Result<Response<pb::StartProcessingResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let image_id = Uuid::parse_str(&request.image_id).map_err(|_| {
            ProcessingError::InvalidInput(vec![FieldViolation::new(
                "image_id",
                "is not a valid image id",
            )])
        })?;
        if request.workflow_id.is_empty() {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "workflow_id",
                "is required",
            )])
            .into());
        }
        let (row, replayed) = self
            .jobs
            .start(StartRequest {
                user_id: caller.user_id,
                image_id,
                workflow_id: request.workflow_id,
                parameters: from_struct(request.parameters),
                priority: priority(request.priority),
                idempotency_key: Some(request.idempotency_key).filter(|key| !key.is_empty()),
                batch_id: None,
            })
            .await?;
        Ok(Response::new(pb::StartProcessingResponse {
            job: Some(encode(&row)),
            replayed,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        // One read of the job's row; the queue and the log events only when asked,
        // so a client polling for the status costs one indexed lookup.
        let row = self
            .jobs
            .get(caller.user_id, job_id(&request.job_id)?)
            .await?;
        let mut job = encode(&row);
        // Not waiting in the queue (any more): the recorded place is fal's.
        if request.include_queue_position
            && let Some(position) = self.jobs.queue_position(row.id).await
        {
            job.queue_position = Some(position as i32);
        }
        if request.include_logs {
            job.logs = self
                .jobs
                .logs(row.id)
                .await?
                .iter()
                .map(|log| pb::JobLog {
                    at: None,
                    level: log["level"].as_str().unwrap_or_default().to_owned(),
                    message: log["message"].as_str().unwrap_or_default().to_owned(),
                })
                .collect();
        }
        Ok(Response::new(pb::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let (mut violations, (size, after)) =
            match page::request::<Uuid>(request.page_size, &request.page_token) {
                Ok(page) => (Vec::new(), page),
                Err(violations) => (violations, (0, None)),
            };
        let image_id = match request.image_id.as_str() {
            "" => None,
            raw => Uuid::parse_str(raw)
                .map_err(|_| violations.push(FieldViolation::new("image_id", "is not a valid id")))
                .ok(),
        };
        if !violations.is_empty() {
            return Err(ProcessingError::InvalidInput(violations).into());
        }
        let filter = JobFilter {
            statuses: request
                .statuses
                .iter()
                .filter_map(|code| status_of(*code))
                .collect(),
            workflow_id: Some(request.workflow_id).filter(|id| !id.is_empty()),
            image_id,
            batch_id: Uuid::parse_str(&request.batch_id).ok(),
            created_after: request.created_after.and_then(atelier_common::instant),
            created_before: request.created_before.and_then(atelier_common::instant),
            query: Some(request.query).filter(|query| !query.trim().is_empty()),
        };
        let (rows, next) = self.jobs.list(caller.user_id, &filter, after, size).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: rows.iter().map(encode).collect(),
            next_page_token: next.map(|id| page::encode(&id)).unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = caller(&request)?;
        let id = job_id(&request.get_ref().job_id)?;
        let row = self.jobs.cancel(caller.user_id, id).await?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(encode(&row)),
        }))
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::RetryJobResponse>, Status> {
        let caller = caller(&request)?;
        let row = self
            .jobs
            .retry(caller.user_id, job_id(&request.get_ref().job_id)?)
            .await?;
        Ok(Response::new(pb::RetryJobResponse {
            job: Some(encode(&row)),
        }))
    }

    type StreamJobEventsStream = Events;

    async fn stream_job_events(
        &self,
        request: Request<pb::StreamJobEventsRequest>,
    ) -> Result<Response<Self::StreamJobEventsStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let receiver = self
            .jobs
            .events(
                caller.user_id,
                job_id(&request.job_id)?,
                request.after_seq.max(0),
            )
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let stream = futures::StreamExt::map(stream, |event| {
            Ok(pb::StreamJobEventsResponse {
                event: Some(encode_event(&event)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn start_batch(
        &self,
        request: Request<pb::StartBatchRequest>,
    ) -> Result<Response<pb::StartBatchResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let image_ids = request
            .image_ids
            .iter()
            .map(|id| Uuid::parse_str(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ProcessingError::InvalidInput(vec![FieldViolation::new(
                    "image_ids",
                    "lists an invalid image id",
                )])
            })?;
        if request.workflow_id.is_empty() {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "workflow_id",
                "is required",
            )])
            .into());
        }
        let template = StartRequest {
            user_id: caller.user_id,
            image_id: Uuid::nil(),
            workflow_id: request.workflow_id,
            parameters: from_struct(request.parameters),
            priority: priority(request.priority),
            idempotency_key: Some(request.idempotency_key).filter(|key| !key.is_empty()),
            batch_id: None,
        };
        let (batch, replayed) = self.jobs.start_batch(template, &image_ids).await?;
        Ok(Response::new(pb::StartBatchResponse {
            job_ids: batch.jobs.iter().map(|job| job.id.to_string()).collect(),
            batch: Some(encode_batch(&batch)),
            replayed,
        }))
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::GetBatchResponse>, Status> {
        let caller = caller(&request)?;
        let batch = self
            .jobs
            .batch(caller.user_id, job_id(&request.get_ref().batch_id)?)
            .await?;
        Ok(Response::new(pb::GetBatchResponse {
            batch: Some(encode_batch(&batch)),
        }))
    }

    async fn cancel_batch(
        &self,
        request: Request<pb::CancelBatchRequest>,
    ) -> Result<Response<pb::CancelBatchResponse>, Status> {
        let caller = caller(&request)?;
        let batch_id = job_id(&request.get_ref().batch_id)?;
        let (batch, cancelled) = self.jobs.cancel_batch(caller.user_id, batch_id).await?;
        Ok(Response::new(pb::CancelBatchResponse {
            batch: Some(encode_batch(&batch)),
            cancelled_count: cancelled,
        }))
    }

    async fn retry_batch(
        &self,
        request: Request<pb::RetryBatchRequest>,
    ) -> Result<Response<pb::RetryBatchResponse>, Status> {
        let caller = caller(&request)?;
        let batch_id = job_id(&request.get_ref().batch_id)?;
        let (batch, retried) = self.jobs.retry_batch(caller.user_id, batch_id).await?;
        Ok(Response::new(pb::RetryBatchResponse {
            batch: Some(encode_batch(&batch)),
            retried_job_ids: retried.iter().map(Uuid::to_string).collect(),
        }))
    }

    async fn handle_fal_webhook(
        &self,
        request: Request<pb::HandleFalWebhookRequest>,
    ) -> Result<Response<pb::HandleFalWebhookResponse>, Status> {
        let Some(verifier) = &self.verifier else {
            return Err(Status::failed_precondition("webhooks are not configured"));
        };
        let request = request.into_inner();
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("x-fal-webhook-request-id", &request.webhook_request_id),
            ("x-fal-webhook-user-id", &request.webhook_user_id),
            ("x-fal-webhook-timestamp", &request.webhook_timestamp),
            ("x-fal-webhook-signature", &request.webhook_signature),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        let event = verifier
            .verify(&headers, &request.body, time::OffsetDateTime::now_utc())
            .await
            .map_err(|err| Status::unauthenticated(format!("webhook rejected: {err}")))?;
        let outcome = match self.webhooks.apply(event).await? {
            WebhookOutcome::Applied => pb::WebhookOutcome::Applied,
            WebhookOutcome::Duplicate => pb::WebhookOutcome::Duplicate,
            WebhookOutcome::Ignored => pb::WebhookOutcome::Ignored,
        };
        Ok(Response::new(pb::HandleFalWebhookResponse {
            outcome: outcome as i32,
        }))
    }

    async fn get_job_usage(
        &self,
        request: Request<pb::GetJobUsageRequest>,
    ) -> Result<Response<pb::GetJobUsageResponse>, Status> {
        let request = request.into_inner();
        let user_id = parse_id("user_id", &request.user_id)?;
        let since = request
            .since
            .and_then(atelier_common::instant)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let (started, active) = self.jobs.usage(user_id, since).await?;
        Ok(Response::new(pb::GetJobUsageResponse {
            jobs_since: started as i64,
            active_jobs: active as i32,
        }))
    }

    async fn delete_user_jobs(
        &self,
        request: Request<pb::DeleteUserJobsRequest>,
    ) -> Result<Response<pb::DeleteUserJobsResponse>, Status> {
        let user_id = parse_id("user_id", &request.get_ref().user_id)?;
        let deleted = self.jobs.delete_user(user_id).await?;
        self.jobs.spend().delete_user(user_id).await?;
        if let Some(outbound) = &self.outbound {
            outbound.delete_user(user_id).await?;
        }
        if let Some(pipelines) = &self.pipelines {
            pipelines.delete_user(user_id).await?;
        }
        Ok(Response::new(pb::DeleteUserJobsResponse {
            deleted_count: deleted as i64,
        }))
    }

    async fn check_job(
        &self,
        request: Request<pb::CheckJobRequest>,
    ) -> Result<Response<pb::CheckJobResponse>, Status> {
        let request = request.into_inner();
        let user_id = parse_id("user_id", &request.user_id)?;
        let job_id = parse_id("job_id", &request.job_id)?;
        let exists = self.jobs.exists(user_id, job_id).await?;
        Ok(Response::new(pb::CheckJobResponse { exists }))
    }
}

/// An id an internal caller passed; malformed, it is a field violation.
fn parse_id(field: &str, raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| {
        ProcessingError::InvalidInput(vec![FieldViolation::new(field, "is not a valid id")])
    })
}
