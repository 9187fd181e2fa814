//! Workers: take a job from the queue, run it at fal exactly once, store its
//! results, and finish it. A redelivered job with a fal request id resumes
//! watching that request instead of submitting again; an open circuit breaker
//! puts the job back without spending an attempt. A reconciler re-queues
//! unfinished jobs the queue has lost.

use std::{sync::Arc, time::Duration};

use atelier_fal::{EndpointId, FalClient, FalError, QueueStatus, SubmitOptions};
use atelier_proto::image::v1::{
    GetDownloadUrlRequest, ImageVariant, StoreResultMetadata, StoreResultRequest,
    store_result_request,
};
use atelier_queue::{Delivery, Retried};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    error::{ProcessingError, upstream},
    jobs::{Jobs, Status},
    store::JobRow,
};

/// How long a submission claim without a request id holds off other workers.
const CLAIM_LEASE: time::Duration = time::Duration::seconds(60);

/// Who submits a job to fal.
enum Claim {
    /// This worker: it submits.
    Mine,
    /// Already at fal: watch this request.
    Watch(String),
    /// Another worker is submitting it right now.
    Busy,
    /// Finished or deleted meanwhile.
    Gone,
}

/// How a worker reaches fal.
#[derive(Clone)]
pub struct Dispatch {
    pub jobs: Arc<Jobs>,
    pub fal: FalClient,
    /// Where fal should POST outcomes (`PUBLIC_URL` + `/api/fal/webhook`); polling when `None`.
    pub webhook_url: Option<String>,
    pub concurrency: usize,
    pub consumer: String,
}

/// Why a job stopped short of finishing.
enum Outcome {
    Done,
    /// Back into the queue without spending an attempt.
    Wait(Duration),
    /// Back into the queue as a new attempt.
    Retry(String),
    /// Finished as failed.
    Fail {
        code: String,
        message: String,
        details: Option<Value>,
    },
}

impl Dispatch {
    /// Runs workers until `shutdown`; in-flight jobs finish first.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            let next = tokio::select! {
                next = self.jobs.queue.next(&self.consumer, Duration::from_secs(1)) => next,
                () = shutdown.cancelled() => break,
            };
            match next {
                Ok(Some(delivery)) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.handle(delivery).await;
                        drop(permit);
                    });
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "queue unavailable, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // Wait for in-flight jobs.
        let _ = slots.acquire_many(self.concurrency.max(1) as u32).await;
    }

    async fn handle(&self, delivery: Delivery) {
        // Keeps the delivery from being reclaimed while the job runs, however long
        // its submission, watch or result download takes.
        let heartbeat = {
            let queue = self.jobs.queue.clone();
            let delivery = delivery.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(err) = queue.extend(&delivery).await {
                        tracing::debug!(job_id = %delivery.job_id, error = %err, "cannot extend a delivery");
                    }
                }
            })
        };
        self.settle(delivery).await;
        heartbeat.abort();
    }

    async fn settle(&self, delivery: Delivery) {
        let job_id = delivery.job_id;
        let outcome = match self.jobs.store.by_id(job_id).await {
            Ok(Some(row)) if Status::parse(&row.status).is_none_or(Status::is_final) => {
                Outcome::Done
            }
            Ok(Some(row)) => self.run_job(row, &delivery).await,
            Ok(None) => Outcome::Done,
            Err(err) => Outcome::Retry(format!("database: {err}")),
        };
        let queue = &self.jobs.queue;
        let result = match outcome {
            Outcome::Done => queue.complete(&delivery).await,
            Outcome::Wait(delay) => queue.defer(&delivery, delay).await,
            Outcome::Retry(reason) => {
                tracing::warn!(%job_id, attempt = delivery.attempt, reason, "job will be retried");
                match queue.retry(&delivery, &reason).await {
                    Ok(Retried::DeadLettered) => {
                        self.jobs
                            .fail(job_id, "attempts_exhausted", &reason, None)
                            .await;
                        Ok(())
                    }
                    Ok(_) => {
                        let _ = self
                            .jobs
                            .note(
                                job_id,
                                "retry_scheduled",
                                json!({"attempt": delivery.attempt, "reason": reason}),
                            )
                            .await;
                        Ok(())
                    }
                    Err(err) => Err(err),
                }
            }
            Outcome::Fail {
                code,
                message,
                details,
            } => {
                self.jobs.fail(job_id, &code, &message, details).await;
                queue.complete(&delivery).await
            }
        };
        if let Err(err) = result {
            tracing::warn!(%job_id, error = %err, "cannot settle a queue delivery; it will be redelivered");
        }
    }

    async fn run_job(&self, row: JobRow, delivery: &Delivery) -> Outcome {
        let Ok(endpoint) = EndpointId::parse(&row.fal_endpoint) else {
            return Outcome::Fail {
                code: "invalid_endpoint".into(),
                message: format!("{} is not a fal endpoint id", row.fal_endpoint),
                details: None,
            };
        };
        let request_id = match &row.fal_request_id {
            // Redelivered after a submission: watch that request, never submit twice.
            Some(request_id) => request_id.clone(),
            None => match self.claim(&row, delivery).await {
                Claim::Mine => match self.submit(&row, &endpoint).await {
                    Ok(request_id) => request_id,
                    Err(outcome) => {
                        self.release(row.id).await;
                        return outcome;
                    }
                },
                Claim::Watch(request_id) => request_id,
                Claim::Busy => return Outcome::Wait(Duration::from_secs(2)),
                Claim::Gone => return Outcome::Done,
            },
        };
        let status = match self.watch(&row, &endpoint, &request_id, delivery).await {
            Ok(status) => status,
            Err(outcome) => return outcome,
        };
        if let Some(error) = status.error {
            return Outcome::Fail {
                code: status
                    .error_type
                    .unwrap_or_else(|| "fal_request_failed".into()),
                message: error,
                details: None,
            };
        }
        let output = match self.fal.result(&endpoint, &request_id).await {
            Ok(output) => output,
            Err(err) => return fal_outcome(err),
        };
        self.store_results(&row, &output).await
    }

    /// Claims the job for submission: one conditional update moves it to
    /// `submitted`, so of two workers holding one job (a redelivery racing the
    /// first delivery) exactly one submits. A claim without a request id that is
    /// older than [`CLAIM_LEASE`] belongs to a worker that died mid-submission.
    async fn claim(&self, row: &JobRow, delivery: &Delivery) -> Claim {
        let now = self.jobs.clock.now();
        let attempt = delivery.attempt as i32;
        let claimed = self
            .jobs
            .store
            .transition(
                row.id,
                &["pending", "queued"],
                |job| {
                    job.status = Status::Submitted.as_str().to_owned();
                    job.started_at = Some(now);
                    job.attempts = attempt;
                },
                None,
                now,
            )
            .await;
        if let Ok(Some(_)) = claimed {
            return Claim::Mine;
        }
        match self.jobs.store.by_id(row.id).await {
            Ok(Some(current)) if Status::parse(&current.status).is_none_or(Status::is_final) => {
                Claim::Gone
            }
            Ok(Some(current)) => match current.fal_request_id {
                Some(request_id) => Claim::Watch(request_id),
                None if now - current.updated_at > CLAIM_LEASE => {
                    // Its claimer died before storing a request id: take it over.
                    let taken = self
                        .jobs
                        .store
                        .transition(
                            row.id,
                            &["submitted"],
                            |job| job.attempts = attempt,
                            None,
                            now,
                        )
                        .await;
                    if matches!(taken, Ok(Some(_))) {
                        Claim::Mine
                    } else {
                        Claim::Busy
                    }
                }
                None => Claim::Busy,
            },
            Ok(None) => Claim::Gone,
            Err(_) => Claim::Busy,
        }
    }

    /// Gives a claim back when the submission did not happen.
    async fn release(&self, id: Uuid) {
        let now = self.jobs.clock.now();
        let released = self
            .jobs
            .store
            .transition(
                id,
                &["submitted"],
                |job| {
                    if job.fal_request_id.is_none() {
                        job.status = Status::Queued.as_str().to_owned();
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

    async fn submit(&self, row: &JobRow, endpoint: &EndpointId) -> Result<String, Outcome> {
        let url = self
            .jobs
            .images
            .clone()
            .get_download_url(GetDownloadUrlRequest {
                user_id: row.user_id.to_string(),
                image_id: row.image_id.to_string(),
                variant: ImageVariant::Original as i32,
                ttl_seconds: 3600,
            })
            .await
            .map_err(|status| match upstream(status) {
                ProcessingError::Unavailable(why) => {
                    Outcome::Retry(format!("image service: {why}"))
                }
                _ => Outcome::Fail {
                    code: "image_unavailable".into(),
                    message: "the input image no longer exists".into(),
                    details: None,
                },
            })?
            .into_inner()
            .url;
        let mut input = row.parameters.as_object().cloned().unwrap_or_default();
        input.insert("image_url".into(), Value::String(url));
        let options = SubmitOptions {
            webhook_url: self.webhook_url.clone(),
            ..SubmitOptions::default()
        };
        let submitted = self
            .fal
            .submit(endpoint, &Value::Object(input), &options)
            .await
            .map_err(fal_outcome)?;
        // The request id is stored before anything else: a crash from here on
        // resumes this request instead of submitting again.
        let request_id = submitted.request_id.clone();
        let stored = self
            .jobs
            .transition(
                row.id,
                &["submitted"],
                |job| {
                    job.fal_request_id = Some(request_id.clone());
                    job.queue_position = submitted.queue_position.map(|p| p as i32);
                },
                (
                    "status_changed",
                    json!({"status": "submitted", "fal_request_id": submitted.request_id}),
                ),
            )
            .await;
        match stored {
            Ok(Some(_)) => Ok(submitted.request_id),
            // Cancelled meanwhile: drop the fal request too.
            Ok(None) => {
                let _ = self.fal.cancel(endpoint, &submitted.request_id).await;
                Err(Outcome::Done)
            }
            Err(err) => Err(Outcome::Retry(format!("database: {err}"))),
        }
    }

    /// Follows the request until fal says it completed, keeping the job's status,
    /// position and logs current.
    async fn watch(
        &self,
        row: &JobRow,
        endpoint: &EndpointId,
        request_id: &str,
        delivery: &Delivery,
    ) -> Result<atelier_fal::RequestStatus, Outcome> {
        let mut delay = Duration::from_millis(100);
        let mut seen_logs = 0;
        let mut processing = row.status == Status::Processing.as_str();
        loop {
            // A cancel (here or by another replica) stops the watch.
            match self.jobs.store.by_id(row.id).await {
                Ok(Some(current))
                    if Status::parse(&current.status).is_none_or(Status::is_final) =>
                {
                    // A cancel that read the job before its request id was stored
                    // could not reach fal: the request is dropped here instead.
                    if current.status == Status::Cancelled.as_str() {
                        let _ = self.fal.cancel(endpoint, request_id).await;
                    }
                    return Err(Outcome::Done);
                }
                Ok(_) => {}
                Err(err) => return Err(Outcome::Retry(format!("database: {err}"))),
            }
            let status = self
                .fal
                .status(endpoint, request_id, true)
                .await
                .map_err(fal_outcome)?;
            if status.logs.len() > seen_logs {
                let fresh: Vec<_> = status.logs[seen_logs..]
                    .iter()
                    .map(|log| json!({"level": log.level, "message": log.message, "timestamp": log.timestamp}))
                    .collect();
                seen_logs = status.logs.len();
                let _ = self.jobs.note(row.id, "log", json!({"logs": fresh})).await;
            }
            match status.status {
                QueueStatus::InQueue => {
                    let position = status.queue_position.map(|p| p as i32);
                    let _ = self.jobs.store.set_progress(row.id, position, None).await;
                }
                QueueStatus::InProgress if !processing => {
                    processing = true;
                    let _ = self
                        .jobs
                        .transition(
                            row.id,
                            &["submitted"],
                            |job| {
                                job.status = Status::Processing.as_str().to_owned();
                                job.queue_position = None;
                            },
                            ("status_changed", json!({"status": "processing"})),
                        )
                        .await;
                }
                QueueStatus::InProgress => {}
                QueueStatus::Completed => return Ok(status),
            }
            if let Err(err) = self.jobs.queue.extend(delivery).await {
                tracing::debug!(error = %err, "cannot extend a delivery");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }

    /// Downloads every output image, stores it through the image service and
    /// finishes the job.
    async fn store_results(&self, row: &JobRow, output: &Value) -> Outcome {
        let urls = output_urls(output);
        if urls.is_empty() {
            return Outcome::Fail {
                code: "no_output".into(),
                message: "fal returned no image".into(),
                details: Some(output.clone()),
            };
        }
        let mut stored = Vec::with_capacity(urls.len());
        for (index, url) in urls.iter().enumerate() {
            let downloaded = match self.fal.download(url).await {
                Ok(downloaded) => downloaded,
                Err(err @ (FalError::ForbiddenUrl(_) | FalError::TooLarge)) => {
                    return Outcome::Fail {
                        code: "result_refused".into(),
                        message: err.to_string(),
                        details: None,
                    };
                }
                Err(err) => return fal_outcome(err),
            };
            let metadata = StoreResultMetadata {
                user_id: row.user_id.to_string(),
                job_id: row.id.to_string(),
                output_index: index as i32,
                source_image_id: row.image_id.to_string(),
                filename: format!("{}-{index}", row.workflow_id),
                mime_type: downloaded.content_type.clone().unwrap_or_default(),
                metadata: None,
                size_bytes: Some(downloaded.bytes.len() as i64),
            };
            let messages = vec![
                StoreResultRequest {
                    data: Some(store_result_request::Data::Metadata(metadata)),
                },
                StoreResultRequest {
                    data: Some(store_result_request::Data::Chunk(downloaded.bytes)),
                },
            ];
            match self
                .jobs
                .images
                .clone()
                .store_result(futures::stream::iter(messages))
                .await
            {
                Ok(reply) => {
                    if let Some(image) = reply.into_inner().image
                        && let Ok(id) = Uuid::parse_str(&image.id)
                    {
                        stored.push(id);
                    }
                }
                Err(status) => match upstream(status) {
                    ProcessingError::Unavailable(why) => {
                        return Outcome::Retry(format!("image service: {why}"));
                    }
                    other => {
                        return Outcome::Fail {
                            code: "result_rejected".into(),
                            message: other.to_string(),
                            details: None,
                        };
                    }
                },
            }
        }
        let now = self.jobs.clock.now();
        let started = row.started_at.unwrap_or(row.created_at);
        let elapsed = (now - started).whole_milliseconds() as i64;
        let first = stored.first().copied();
        let ids: Vec<Value> = stored
            .iter()
            .map(|id| Value::String(id.to_string()))
            .collect();
        let finished = self
            .jobs
            .transition(
                row.id,
                &["submitted", "processing"],
                |job| {
                    job.status = Status::Completed.as_str().to_owned();
                    job.result_image_id = first;
                    job.result_image_ids = Value::Array(ids.clone());
                    job.completed_at = Some(now);
                    job.processing_time_ms = Some(elapsed);
                    job.progress = Some(1.0);
                    job.queue_position = None;
                },
                ("status_changed", json!({"status": "completed", "result_image_id": first.map(|id| id.to_string())})),
            )
            .await;
        if let Ok(Some(_)) = finished {
            tracing::info!(job_id = %row.id, elapsed_ms = elapsed, "job completed");
            metrics::counter!("atelier_jobs_finished_total", "status" => "completed").increment(1);
            metrics::histogram!("atelier_job_processing_seconds", "workflow" => row.workflow_id.clone())
                .record(elapsed as f64 / 1000.0);
        }
        Outcome::Done
    }
}

/// The image URLs of a fal output: `image`, `images[]`, and `mask_image`.
fn output_urls(output: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    if let Some(url) = output.pointer("/image/url").and_then(Value::as_str) {
        urls.push(url.to_owned());
    }
    for image in output
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(url) = image.get("url").and_then(Value::as_str) {
            urls.push(url.to_owned());
        }
    }
    if let Some(url) = output.pointer("/mask_image/url").and_then(Value::as_str) {
        urls.push(url.to_owned());
    }
    urls
}

/// What a fal error means for the job.
fn fal_outcome(err: FalError) -> Outcome {
    match err {
        FalError::Unavailable { retry_after } => {
            Outcome::Wait(retry_after.max(Duration::from_secs(1)))
        }
        FalError::Validation(issues) => Outcome::Fail {
            code: "invalid_parameters".into(),
            message: "fal rejected the parameters".into(),
            details: Some(json!(
                issues
                    .iter()
                    .map(|issue| json!({"field": issue.field, "message": issue.message}))
                    .collect::<Vec<_>>()
            )),
        },
        // fal may be running it: submitting again could run and bill it twice. The
        // job stops with a clear reason; the user can retry it knowingly.
        FalError::MaybeSent { message } => Outcome::Fail {
            code: "submission_unknown".into(),
            message: format!(
                "fal did not confirm the submission ({message}); it was not sent again, to avoid running it twice"
            ),
            details: None,
        },
        FalError::RequestFailed { error, error_type } => Outcome::Fail {
            code: error_type.unwrap_or_else(|| "fal_request_failed".into()),
            message: error,
            details: None,
        },
        err if err.is_transient() => Outcome::Retry(err.to_string()),
        err => Outcome::Fail {
            code: "fal_error".into(),
            message: err.to_string(),
            details: None,
        },
    }
}

/// Re-queues unfinished jobs the queue no longer holds (Redis emptied, a crash
/// between writing the row and enqueuing), every `every` until `shutdown`.
pub fn spawn_reconciler(jobs: Arc<Jobs>, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match reconcile(&jobs).await {
                        Ok(0) => {}
                        Ok(restored) => tracing::info!(restored, "unfinished jobs re-queued"),
                        Err(err) => tracing::warn!(error = %err, "reconciliation failed"),
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
    });
}

/// One reconciliation pass; returns how many jobs it re-queued.
pub async fn reconcile(jobs: &Jobs) -> Result<usize, ProcessingError> {
    let unfinished = jobs.store.with_status(&Status::UNFINISHED, 10_000).await?;
    // A job the queue gave up on (its worker kept dying) is failed, not revived.
    let dead: std::collections::HashMap<Uuid, String> = jobs
        .queue
        .dead_letters(10_000)
        .await?
        .into_iter()
        .map(|letter| (letter.job_id, letter.reason))
        .collect();
    let mut restored = 0;
    for row in unfinished {
        if jobs.queue.contains(row.id).await? {
            continue;
        }
        if let Some(reason) = dead.get(&row.id) {
            let message = format!("gave up after every attempt: {reason}");
            jobs.fail(row.id, "attempts_exhausted", &message, None)
                .await;
            continue;
        }
        let (_, added) = jobs.enqueue(row).await?;
        if added {
            restored += 1;
        }
    }
    metrics::counter!("atelier_jobs_reconciled_total").increment(restored as u64);
    Ok(restored)
}

impl Dispatch {
    /// A verified fal webhook: finishes the job it names, once. A delivery for a
    /// job already finished (fal redelivers up to 10 times) is a duplicate.
    pub async fn apply_webhook(
        &self,
        event: atelier_fal::webhook::WebhookEvent,
    ) -> Result<atelier_proto::processing::v1::WebhookOutcome, ProcessingError> {
        use atelier_fal::webhook::WebhookStatus;
        use atelier_proto::processing::v1::WebhookOutcome;
        let Some(row) = self.jobs.store.by_fal_request(&event.request_id).await? else {
            return Ok(WebhookOutcome::Ignored);
        };
        if Status::parse(&row.status).is_none_or(Status::is_final) {
            return Ok(WebhookOutcome::Duplicate);
        }
        match event.status {
            WebhookStatus::Ok => match self.store_results(&row, &event.payload).await {
                Outcome::Done => {}
                Outcome::Fail {
                    code,
                    message,
                    details,
                } => self.jobs.fail(row.id, &code, &message, details).await,
                // The worker watching this request will finish it.
                Outcome::Wait(_) | Outcome::Retry(_) => return Ok(WebhookOutcome::Ignored),
            },
            WebhookStatus::Error => {
                let message = event
                    .error
                    .unwrap_or_else(|| "fal reported an error".into());
                self.jobs
                    .fail(row.id, "fal_request_failed", &message, Some(event.payload))
                    .await;
            }
        }
        Ok(WebhookOutcome::Applied)
    }
}
