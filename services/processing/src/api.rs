//! gRPC handlers: decode, authorize, call the domain, encode.

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
    dispatch::Dispatch,
    error::ProcessingError,
    jobs::{Jobs, StartRequest, Status as JobStatus},
    store::{EventRow, JobFilter, JobRow},
};

pub struct ProcessingApi {
    jobs: Arc<Jobs>,
    dispatch: Dispatch,
    webhooks: Option<Arc<atelier_fal::webhook::WebhookVerifier>>,
}

impl ProcessingApi {
    pub fn new(
        jobs: Arc<Jobs>,
        dispatch: Dispatch,
        webhooks: Option<Arc<atelier_fal::webhook::WebhookVerifier>>,
    ) -> Self {
        Self {
            jobs,
            dispatch,
            webhooks,
        }
    }
}

fn job_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| ProcessingError::NotFound)
}

fn status_code(status: &str) -> i32 {
    (match JobStatus::parse(status) {
        Some(JobStatus::Pending) => pb::JobStatus::Pending,
        Some(JobStatus::Queued) => pb::JobStatus::Queued,
        Some(JobStatus::Submitted) => pb::JobStatus::Submitted,
        Some(JobStatus::Processing) => pb::JobStatus::Processing,
        Some(JobStatus::Completed) => pb::JobStatus::Completed,
        Some(JobStatus::Failed) => pb::JobStatus::Failed,
        Some(JobStatus::Cancelled) => pb::JobStatus::Cancelled,
        None => pb::JobStatus::Unspecified,
    }) as i32
}

fn status_name(code: i32) -> Option<&'static str> {
    Some(match pb::JobStatus::try_from(code).ok()? {
        pb::JobStatus::Pending => "pending",
        pb::JobStatus::Queued => "queued",
        pb::JobStatus::Submitted => "submitted",
        pb::JobStatus::Processing => "processing",
        pb::JobStatus::Completed => "completed",
        pb::JobStatus::Failed => "failed",
        pb::JobStatus::Cancelled => "cancelled",
        pb::JobStatus::Unspecified => return None,
    })
}

fn priority(code: i32) -> atelier_queue::Priority {
    match pb::JobPriority::try_from(code) {
        Ok(pb::JobPriority::High) => atelier_queue::Priority::High,
        Ok(pb::JobPriority::Low) => atelier_queue::Priority::Low,
        _ => atelier_queue::Priority::Normal,
    }
}

fn priority_code(name: &str) -> i32 {
    (match name {
        "high" => pb::JobPriority::High,
        "low" => pb::JobPriority::Low,
        _ => pb::JobPriority::Normal,
    }) as i32
}

fn error_of(row: &JobRow) -> Option<pb::JobError> {
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
        retryable: crate::failure::retryable(&code),
        code,
        message,
        field_violations,
    })
}

/// The outputs recorded with a job, in output order. An entry is the result
/// image's id, or an object `{"image_id", "role"}` where the role was recorded;
/// a plain id is an `image`.
pub fn outputs_of(row: &JobRow) -> Vec<pb::JobOutput> {
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

pub fn encode(row: &JobRow) -> pb::Job {
    let outputs = outputs_of(row);
    pb::Job {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        image_id: row.image_id.to_string(),
        workflow_id: row.workflow_id.clone(),
        workflow_name: row.workflow_name.clone(),
        workflow_version: row.workflow_version,
        parameters: to_struct(&row.parameters),
        priority: priority_code(&row.priority),
        status: status_code(&row.status),
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

pub fn encode_event(event: &EventRow) -> pb::JobEvent {
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
        status: data["status"].as_str().map(status_code).unwrap_or_default(),
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
                    retryable: crate::failure::retryable(code),
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

pub fn encode_batch(batch: &crate::jobs::BatchView) -> pb::Batch {
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
            .map(|job| priority_code(&job.priority))
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
fn batch_cost(jobs: &[JobRow]) -> Option<pb::Cost> {
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
        if request.include_queue_position {
            match self.jobs.queue.position(row.id).await {
                Ok(Some(position)) => job.queue_position = Some(position as i32),
                // Not waiting in the queue (any more): the recorded place is fal's.
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(job_id = %row.id, error = %err, "cannot read a job's queue position")
                }
            }
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
                .filter_map(|code| status_name(*code).map(str::to_owned))
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
        let row = self
            .jobs
            .cancel(caller.user_id, id, Some(&self.dispatch.fal))
            .await?;
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
        let batch = self.jobs.batch(caller.user_id, batch_id).await?;
        let mut cancelled = 0;
        for job in &batch.jobs {
            if JobStatus::parse(&job.status).is_some_and(|status| !status.is_final())
                && self
                    .jobs
                    .cancel(caller.user_id, job.id, Some(&self.dispatch.fal))
                    .await
                    .is_ok()
            {
                cancelled += 1;
            }
        }
        let batch = self.jobs.batch(caller.user_id, batch_id).await?;
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
        let batch = self.jobs.batch(caller.user_id, batch_id).await?;
        let failed: Vec<Uuid> = batch
            .jobs
            .iter()
            .filter(|job| job.status == "failed")
            .map(|job| job.id)
            .collect();
        let retried = self
            .jobs
            .retry_many(caller.user_id, &failed)
            .await?
            .iter()
            .map(|row| row.id.to_string())
            .collect();
        let batch = self.jobs.batch(caller.user_id, batch_id).await?;
        Ok(Response::new(pb::RetryBatchResponse {
            batch: Some(encode_batch(&batch)),
            retried_job_ids: retried,
        }))
    }

    async fn handle_fal_webhook(
        &self,
        request: Request<pb::HandleFalWebhookRequest>,
    ) -> Result<Response<pb::HandleFalWebhookResponse>, Status> {
        let Some(verifier) = &self.webhooks else {
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
        let outcome = self.dispatch.apply_webhook(event).await?;
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
        let (started, active) = self
            .jobs
            .store
            .usage(user_id, since, &JobStatus::UNFINISHED)
            .await
            .map_err(ProcessingError::from)?;
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
        let deleted = self
            .jobs
            .store
            .delete_user(user_id)
            .await
            .map_err(ProcessingError::from)?;
        for id in &deleted {
            let _ = self.jobs.queue.remove(*id).await;
        }
        Ok(Response::new(pb::DeleteUserJobsResponse {
            deleted_count: deleted.len() as i64,
        }))
    }

    async fn check_job(
        &self,
        request: Request<pb::CheckJobRequest>,
    ) -> Result<Response<pb::CheckJobResponse>, Status> {
        let request = request.into_inner();
        let user_id = parse_id("user_id", &request.user_id)?;
        let job_id = parse_id("job_id", &request.job_id)?;
        let job = self
            .jobs
            .store
            .by_id(job_id)
            .await
            .map_err(ProcessingError::from)?;
        Ok(Response::new(pb::CheckJobResponse {
            exists: job.is_some_and(|job| job.user_id == user_id),
        }))
    }
}

/// An id an internal caller passed; malformed, it is a field violation.
fn parse_id(field: &str, raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| {
        ProcessingError::InvalidInput(vec![FieldViolation::new(field, "is not a valid id")])
    })
}
