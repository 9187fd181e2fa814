//! Every change of a job's status, each from the states it may come from:
//! queued, claimed and submitted by a worker, processing, completed, failed,
//! cancelled, and retried.

use atelier_queue::Enqueue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Jobs;
use crate::{
    domain::{
        failure::{self, Failure},
        job::{Job, Status},
    },
    error::ProcessingError,
};

/// How long a submission claim without a request id holds off other workers.
const CLAIM_LEASE: time::Duration = time::Duration::seconds(60);

/// Who submits a job to fal.
pub enum Claim {
    /// This worker: it submits (the job as claimed).
    Mine(Box<Job>),
    /// Already at fal: watch its request (the job).
    Watch(Box<Job>),
    /// Another worker is submitting it right now.
    Busy,
    /// Finished or deleted meanwhile.
    Gone,
    /// The database could not say (why).
    Unknown(String),
}

impl Jobs {
    /// Puts a job in the queue and, if it was pending, marks it queued. A job
    /// already in the queue is left where it is; returns whether it was added.
    pub(crate) async fn enqueue(&self, row: Job) -> Result<(Job, bool), ProcessingError> {
        let added = self
            .queue
            .enqueue(Enqueue {
                job_id: row.id,
                user_id: row.user_id,
                priority: row.priority,
                delay: None,
            })
            .await?;
        let position = self.queue.position(row.id).await.ok().flatten();
        let queued = self
            .transition(
                row.id,
                &[Status::Pending],
                |job| {
                    job.status = Status::Queued;
                    job.queue_position = position.map(|p| p as i32);
                },
                (
                    "status_changed",
                    json!({"status": Status::Queued.as_str(), "queue_position": position}),
                ),
            )
            .await?;
        Ok((queued.unwrap_or(row), added))
    }

    /// Claims the job for submission: one conditional update moves a waiting job
    /// to `submitted`, so of two workers holding one job (a redelivery racing the
    /// first delivery) exactly one submits. A job already submitted is watched. A
    /// claim without a request id that is older than [`CLAIM_LEASE`] belongs to a
    /// worker that died mid-submission.
    pub(crate) async fn claim(&self, id: Uuid, attempt: u32) -> Claim {
        let now = self.clock.now();
        let attempt = attempt as i32;
        match self.store.claim_waiting(id, attempt, now).await {
            Ok(Some(claimed)) => return Claim::Mine(Box::new(claimed)),
            Ok(None) => {}
            Err(err) => return Claim::Unknown(err.to_string()),
        }
        let current = match self.store.by_id(id).await {
            Ok(Some(current)) => current,
            Ok(None) => return Claim::Gone,
            Err(err) => return Claim::Unknown(err.to_string()),
        };
        if current.status.is_final() {
            return Claim::Gone;
        }
        if current.fal_request_id.is_some() {
            return Claim::Watch(Box::new(current));
        }
        if current.status != Status::Submitted || now - current.updated_at <= CLAIM_LEASE {
            // Being submitted by another worker, or given back a moment ago.
            return Claim::Busy;
        }
        // Its claimer died before storing a request id: take it over.
        let taken = self
            .store
            .transition(
                &current,
                &[Status::Submitted],
                |job| job.attempts = attempt,
                None,
                now,
            )
            .await;
        match taken {
            Ok(Some((taken, _))) => Claim::Mine(Box::new(taken)),
            _ => Claim::Busy,
        }
    }

    /// Gives a claim back when the submission did not happen.
    pub(crate) async fn release(&self, id: Uuid) {
        let now = self.clock.now();
        let released = self
            .store
            .transition(
                id,
                &[Status::Submitted],
                |job| {
                    if job.fal_request_id.is_none() {
                        job.status = Status::Queued;
                        job.started_at = None;
                    }
                },
                None,
                now,
            )
            .await;
        if let Err(err) = released {
            tracing::warn!(job_id = %id, error = %err, "cannot release a submission claim; it lapses");
        }
    }

    /// Records the fal request a claimed job was submitted as; `None` when the job
    /// was cancelled meanwhile.
    pub(crate) async fn submitted(
        &self,
        row: &Job,
        request_id: &str,
        queue_position: Option<u32>,
    ) -> Result<Option<Job>, ProcessingError> {
        self.transition(
            row,
            &[Status::Submitted],
            |job| {
                job.fal_request_id = Some(request_id.to_owned());
                job.queue_position = queue_position.map(|p| p as i32);
            },
            (
                "status_changed",
                json!({"status": Status::Submitted.as_str(), "fal_request_id": request_id}),
            ),
        )
        .await
    }

    /// fal started running the job.
    pub(crate) async fn processing(&self, row: &Job) -> Result<Option<Job>, ProcessingError> {
        self.transition(
            row,
            &[Status::Submitted],
            |job| {
                job.status = Status::Processing;
                job.queue_position = None;
            },
            (
                "status_changed",
                json!({"status": Status::Processing.as_str()}),
            ),
        )
        .await
    }

    /// Keeps the job's place in fal's queue, for display (no event); true when it
    /// was written.
    pub(crate) async fn waiting_at(&self, id: Uuid, queue_position: Option<i32>) -> bool {
        self.store
            .set_progress(id, queue_position, None)
            .await
            .is_ok()
    }

    /// Finishes a job fal ran as completed with its stored results, `stored` in
    /// output order.
    /// `cost` is what fal billed for the stored outputs, when the price is known.
    pub(crate) async fn completed(&self, row: &Job, stored: &[Uuid], cost: Option<f64>) {
        let now = self.clock.now();
        let started = row.started_at.unwrap_or(row.created_at);
        let elapsed = (now - started).whole_milliseconds() as i64;
        let first = stored.first().copied();
        let ids: Vec<Value> = stored
            .iter()
            .map(|id| Value::String(id.to_string()))
            .collect();
        let finished = self
            .transition(
                row,
                &[Status::Submitted, Status::Processing],
                |job| {
                    job.status = Status::Completed;
                    job.actual_cost = cost;
                    job.result_image_id = first;
                    job.result_image_ids = Value::Array(ids.clone());
                    job.completed_at = Some(now);
                    job.processing_time_ms = Some(elapsed);
                    job.progress = Some(1.0);
                    job.queue_position = None;
                },
                ("status_changed", json!({"status": Status::Completed.as_str(), "result_image_id": first.map(|id| id.to_string()), "actual_cost": cost})),
            )
            .await;
        if let Ok(Some(_)) = finished {
            tracing::info!(job_id = %row.id, elapsed_ms = elapsed, "job completed");
            metrics::counter!("atelier_jobs_finished_total", "status" => "completed").increment(1);
            metrics::histogram!("atelier_job_processing_seconds", "workflow" => row.workflow_id.clone())
                .record(elapsed as f64 / 1000.0);
        }
    }

    /// Finishes an unfinished job as failed, with why.
    pub(crate) async fn fail(&self, id: Uuid, code: &str, message: &str, details: Option<Value>) {
        let now = self.clock.now();
        let failed = self
            .transition(
                id,
                &Status::UNFINISHED,
                |job| {
                    job.status = Status::Failed;
                    // fal bills successful outputs only.
                    job.actual_cost = job.cost_currency.as_ref().map(|_| 0.0);
                    job.error_code = Some(code.to_owned());
                    job.error_message = Some(message.to_owned());
                    job.error_details = details.clone();
                    job.completed_at = Some(now);
                    job.queue_position = None;
                },
                (
                    "status_changed",
                    json!({"status": Status::Failed.as_str(), "error": {
                        "code": code,
                        "message": message,
                        "details": details,
                        "retryable": failure::retryable(code),
                    }}),
                ),
            )
            .await;
        match failed {
            Ok(Some(_)) => {
                tracing::info!(job_id = %id, code, message, "job failed");
                metrics::counter!("atelier_jobs_finished_total", "status" => "failed").increment(1);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(job_id = %id, error = %err, "cannot record a job's failure"),
        }
    }

    /// [`Self::fail`], with the technical cause, when there is one, logged.
    pub(crate) async fn fail_with(&self, id: Uuid, failure: Failure) {
        let Failure {
            code,
            message,
            details,
            cause,
        } = failure;
        if let Some(cause) = cause {
            tracing::warn!(job_id = %id, code, cause, "job failed");
        }
        self.fail(id, &code, &message, details).await;
    }

    /// Cancels a job in any unfinished state: out of the queue, or at fal.
    pub async fn cancel(&self, user_id: Uuid, id: Uuid) -> Result<Job, ProcessingError> {
        let row = self.get(user_id, id).await?;
        if row.status.is_final() {
            return Err(ProcessingError::AlreadyFinished(row.status.as_str()));
        }
        self.queue.remove(id).await?;
        // The row is cancelled before fal is told: a worker watching the request
        // then sees the job final and stops, rather than taking fal's "cancelled by
        // the client" answer for a failure.
        let now = self.clock.now();
        let cancelled = self
            .transition(
                id,
                &Status::UNFINISHED,
                |job| {
                    job.status = Status::Cancelled;
                    job.actual_cost = job.cost_currency.as_ref().map(|_| 0.0);
                    job.completed_at = Some(now);
                    job.queue_position = None;
                },
                (
                    "status_changed",
                    json!({"status": Status::Cancelled.as_str()}),
                ),
            )
            .await?;
        let Some(row) = cancelled else {
            // It finished while we were cancelling.
            let row = self.get(user_id, id).await?;
            return Err(ProcessingError::AlreadyFinished(row.status.as_str()));
        };
        tracing::info!(job_id = %id, "job cancelled");
        if let Some(request_id) = &row.fal_request_id
            && let Ok(endpoint) = atelier_fal::EndpointId::parse(&row.fal_endpoint)
            && let Err(err) = self.fal.cancel(&endpoint, request_id).await
        {
            tracing::warn!(job_id = %id, error = %err, "cannot cancel at fal; the job is cancelled here all the same");
        }
        Ok(row)
    }

    /// Runs a failed or cancelled job again, as the same job: its events go on.
    pub async fn retry(&self, user_id: Uuid, id: Uuid) -> Result<Job, ProcessingError> {
        let row = self.get(user_id, id).await?;
        if !Status::RETRYABLE.contains(&row.status) {
            return Err(ProcessingError::NotRetryable(row.status.as_str()));
        }
        self.retry_many(user_id, &[id])
            .await?
            .pop()
            .ok_or(ProcessingError::NotRetryable(row.status.as_str()))
    }

    /// Runs the caller's failed or cancelled jobs among `ids` again, all or none:
    /// a retry is a new run, so it counts against the daily quota and the limit of
    /// unfinished jobs as a start does. Jobs in other states are left alone.
    pub async fn retry_many(
        &self,
        user_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<Job>, ProcessingError> {
        let quota = self.quotas.limits(user_id).await?;
        // A retry costs again: it must fit the budgets as a start does.
        let mut estimate = 0.0;
        for id in ids {
            if let Some(job) = self.store.owned(user_id, *id).await?
                && matches!(job.status, Status::Failed | Status::Cancelled)
            {
                estimate += job.estimated_cost.unwrap_or_default();
            }
        }
        self.spend.admit(user_id, &quota, estimate).await?;
        let retried = self
            .store
            .retry_admitted(
                user_id,
                ids,
                |job| {
                    job.status = Status::Pending;
                    job.priority = quota.retry_priority(job.priority);
                    job.fal_request_id = None;
                    job.error_code = None;
                    job.error_message = None;
                    job.error_details = None;
                    job.completed_at = None;
                    job.started_at = None;
                    job.progress = None;
                    job.processing_time_ms = None;
                    job.actual_cost = None;
                },
                (
                    "status_changed",
                    json!({"status": Status::Pending.as_str(), "retry": true}),
                ),
                self.clock.now(),
                &quota,
            )
            .await?
            .map_err(ProcessingError::QuotaExceeded)?;
        let mut rows = Vec::with_capacity(retried.len());
        for (row, event) in retried {
            self.bus.publish(event.job_id, event.seq).await;
            rows.push(self.enqueue(row).await?.0);
        }
        self.raise_alerts(user_id, &quota).await;
        Ok(rows)
    }
}
