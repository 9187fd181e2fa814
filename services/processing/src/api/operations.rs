//! `atelier.operations.v1.OperationsService`: what administrators see of the
//! queue, its dead letters, fal's breakers and recent failures, and what they
//! do about dead letters. The access policy lets only administrators (and the
//! operator certificate) in.

use std::sync::Arc;

use atelier_common::{
    FieldViolation,
    audit::{AuditRecord, RequestOrigin},
    grpc::caller,
    timestamp,
};
use atelier_proto::operations::v1::{self as pb, operations_service_server::OperationsService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        Job, Jobs,
        jobs::admin::{AuditLog, Inspected},
    },
    error::ProcessingError,
};

pub struct OperationsApi {
    jobs: Arc<Jobs>,
    audit: Arc<dyn AuditLog>,
}

impl OperationsApi {
    pub fn new(jobs: Arc<Jobs>, audit: Arc<dyn AuditLog>) -> Self {
        Self { jobs, audit }
    }
}

/// Dead letters listed when the request names no limit.
const DEFAULT_DEAD_LETTERS: usize = 50;
/// Examples per error type when the request names none, and at most.
const DEFAULT_EXAMPLES: u64 = 3;
const MAX_EXAMPLES: u64 = 20;
/// The failures window when the request names no start.
const DEFAULT_WINDOW: time::Duration = time::Duration::hours(24);
/// Longest reason a discard keeps.
const MAX_REASON: usize = 500;

fn job_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| ProcessingError::NotFound)
}

/// An administrator's action on job `id`, for the audit log.
fn record<T>(request: &Request<T>, action: &str, job: Uuid) -> AuditRecord {
    AuditRecord::new(action, RequestOrigin::of(request))
        .actor(caller(request).ok().map(|caller| caller.user_id))
        .target("job", job)
}

fn encode(inspected: Inspected) -> pb::DeadLetter {
    let Inspected { letter, job } = inspected;
    let mut encoded = pb::DeadLetter {
        job_id: letter.job_id.to_string(),
        user_id: letter.user_id.to_string(),
        attempts: letter.attempts,
        reason: letter.reason,
        ..Default::default()
    };
    if let Some(job) = job {
        encoded.workflow_id = job.workflow_id;
        encoded.status = job.status.as_str().to_owned();
        encoded.error_code = job.error_code.unwrap_or_default();
        encoded.error_message = job.error_message.unwrap_or_default();
        encoded.created_at = Some(timestamp(job.created_at));
        encoded.completed_at = job.completed_at.map(timestamp);
    }
    encoded
}

fn example(job: Job) -> pb::FailureExample {
    pb::FailureExample {
        job_id: job.id.to_string(),
        user_id: job.user_id.to_string(),
        workflow_id: job.workflow_id,
        message: job.error_message.unwrap_or_default(),
        at: job.completed_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    async fn get_queue_state(
        &self,
        _request: Request<pb::GetQueueStateRequest>,
    ) -> Result<Response<pb::GetQueueStateResponse>, Status> {
        let (depth, concurrency) = self.jobs.queue_state().await?;
        Ok(Response::new(pb::GetQueueStateResponse {
            high: depth.high,
            normal: depth.normal,
            low: depth.low,
            delayed: depth.delayed,
            in_flight: depth.in_flight,
            dead: depth.dead,
            in_flight_limit: concurrency.limit,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => DEFAULT_DEAD_LETTERS,
            limit => usize::try_from(limit).map_err(|_| {
                ProcessingError::InvalidInput(vec![FieldViolation::new(
                    "limit",
                    "must be positive",
                )])
            })?,
        };
        let letters = self.jobs.dead_letters(limit).await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(encode).collect(),
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::GetDeadLetterResponse>, Status> {
        let id = job_id(&request.get_ref().job_id)?;
        let inspected = self.jobs.dead_letter(id).await?;
        Ok(Response::new(pb::GetDeadLetterResponse {
            dead_letter: Some(encode(inspected)),
        }))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<pb::RetryDeadLetterRequest>,
    ) -> Result<Response<pb::RetryDeadLetterResponse>, Status> {
        let id = job_id(&request.get_ref().job_id)?;
        let record = record(&request, "job.dead_letter_retried", id);
        let job = self
            .jobs
            .retry_dead_letter(id, self.audit.as_ref(), record)
            .await?;
        Ok(Response::new(pb::RetryDeadLetterResponse {
            job_id: job.id.to_string(),
            status: job.status.as_str().to_owned(),
        }))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<pb::DiscardDeadLetterRequest>,
    ) -> Result<Response<pb::DiscardDeadLetterResponse>, Status> {
        let id = job_id(&request.get_ref().job_id)?;
        let reason = request.get_ref().reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > MAX_REASON {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "reason",
                format!("must be 1 to {MAX_REASON} characters"),
            )])
            .into());
        }
        let record = record(&request, "job.dead_letter_discarded", id).detail("reason", &*reason);
        let job = self
            .jobs
            .discard_dead_letter(id, &reason, self.audit.as_ref(), record)
            .await?;
        Ok(Response::new(pb::DiscardDeadLetterResponse {
            job_id: id.to_string(),
            status: job
                .map(|job| job.status.as_str().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn get_fal_state(
        &self,
        _request: Request<pb::GetFalStateRequest>,
    ) -> Result<Response<pb::GetFalStateResponse>, Status> {
        let since = self.jobs.now() - time::Duration::hours(1);
        let recent_failures = self
            .jobs
            .failures_since(since, 0)
            .await?
            .iter()
            .map(|group| group.count)
            .sum();
        Ok(Response::new(pb::GetFalStateResponse {
            breakers: self
                .jobs
                .breakers()
                .into_iter()
                .map(|(host, state)| pb::Breaker {
                    host,
                    state: state.to_owned(),
                })
                .collect(),
            recent_failures,
        }))
    }

    async fn list_recent_failures(
        &self,
        request: Request<pb::ListRecentFailuresRequest>,
    ) -> Result<Response<pb::ListRecentFailuresResponse>, Status> {
        let request = request.into_inner();
        let since = match request.since {
            Some(since) => atelier_common::instant(since).ok_or_else(|| {
                ProcessingError::InvalidInput(vec![FieldViolation::new(
                    "since",
                    "is not a valid instant",
                )])
            })?,
            None => self.jobs.now() - DEFAULT_WINDOW,
        };
        let examples = match request.examples {
            0 => DEFAULT_EXAMPLES,
            n => u64::try_from(n).unwrap_or(0).min(MAX_EXAMPLES),
        };
        let groups = self.jobs.failures_since(since, examples).await?;
        Ok(Response::new(pb::ListRecentFailuresResponse {
            since: Some(timestamp(since)),
            groups: groups
                .into_iter()
                .map(|group| pb::FailureGroup {
                    error_type: group.error_type,
                    count: group.count,
                    last_at: group.last_at.map(timestamp),
                    examples: group.examples.into_iter().map(example).collect(),
                })
                .collect(),
        }))
    }
}
