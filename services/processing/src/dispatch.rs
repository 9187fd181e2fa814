//! Workers: take a job from the queue, run it at fal exactly once, store its
//! results, and finish it. A redelivered job with a fal request id resumes
//! watching that request instead of submitting again; an open circuit breaker
//! puts the job back without spending an attempt. A reconciler re-queues
//! unfinished jobs the queue has lost.
//!
//! How many jobs run at fal at once is the queue's bound (`FAL_MAX_CONCURRENCY`,
//! shared by every replica): a worker takes as many deliveries as it has free
//! slots. When fal answers 429 the worker lowers the bound for everyone
//! ([`atelier_queue::Queue::throttle`]) and puts the job back without spending an
//! attempt; each accepted submission raises it again while it is lowered.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use atelier_common::json::map_to_struct;
use atelier_fal::{EndpointId, FalClient, FalError, QueueStatus, SubmitOptions};
use atelier_proto::image::v1::{
    CheckOwnershipRequest, GetDownloadUrlRequest, ImageVariant, StoreResultMetadata,
    StoreResultRequest, store_result_request,
};
use atelier_queue::{Concurrency, Delivery, Retried};
use futures::StreamExt;
use sea_orm::DbErr;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    error::{ProcessingError, upstream},
    failure,
    jobs::{Jobs, Status},
    store::JobRow,
};

/// How long a submission claim without a request id holds off other workers.
const CLAIM_LEASE: time::Duration = time::Duration::seconds(60);

/// Who submits a job to fal.
enum Claim {
    /// This worker: it submits (the job's row as claimed).
    Mine(Box<JobRow>),
    /// Already at fal: watch its request (the job's row).
    Watch(Box<JobRow>),
    /// Another worker is submitting it right now.
    Busy,
    /// Finished or deleted meanwhile.
    Gone,
    /// The database could not say.
    Unknown(DbErr),
}

/// How a worker reaches fal.
#[derive(Clone)]
pub struct Dispatch {
    pub jobs: Arc<Jobs>,
    pub fal: FalClient,
    /// Where fal should POST outcomes (`PUBLIC_URL` + `/api/fal/webhook`); polling when `None`.
    pub webhook_url: Option<String>,
    pub concurrency: usize,
    /// Inputs up to this many bytes are sent to fal inline (`data:` URIs).
    pub inline_input_bytes: u64,
    pub consumer: String,
    /// Whether the queue's bound was last seen below its max (after a 429): only
    /// then does an accepted submission raise it.
    pub throttled: Arc<AtomicBool>,
}

/// Why a job stopped short of finishing.
enum Outcome {
    Done,
    /// Back into the queue without spending an attempt.
    Wait(Duration),
    /// Back into the queue as a new attempt.
    Retry(String),
    /// Finished as failed, with a message for the user; the technical `cause`, when
    /// there is one, goes to the log only.
    Fail {
        code: String,
        message: String,
        details: Option<Value>,
        cause: Option<String>,
    },
}

impl Outcome {
    fn fail(code: &str, message: impl Into<String>) -> Self {
        Self::Fail {
            code: code.to_owned(),
            message: message.into(),
            details: None,
            cause: None,
        }
    }

    fn because(self, why: impl std::fmt::Display) -> Self {
        match self {
            Self::Fail {
                code,
                message,
                details,
                ..
            } => Self::Fail {
                code,
                message,
                details,
                cause: Some(why.to_string()),
            },
            other => other,
        }
    }
}

impl Dispatch {
    /// Runs workers until `shutdown`; in-flight jobs finish first.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        self.spawn_gauges(shutdown.clone());
        loop {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(first) = first else { break };
            // Every free slot at once: one round trip takes as many jobs as the
            // shared bound lets this worker have.
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let next = tokio::select! {
                next = self.jobs.queue.next_many(&self.consumer, permits.len(), Duration::from_secs(1)) => next,
                () = shutdown.cancelled() => break,
            };
            match next {
                Ok(deliveries) => {
                    for (delivery, permit) in deliveries.into_iter().zip(permits) {
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.handle(delivery).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "queue unavailable, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // Wait for in-flight jobs.
        let _ = slots.acquire_many(self.concurrency.max(1) as u32).await;
    }

    /// Keeps the fal concurrency gauges current (every replica reads the shared
    /// bound, so the one that saw a 429 need not be the one that raises it again).
    fn spawn_gauges(&self, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                match this.jobs.queue.concurrency().await {
                    Ok(concurrency) => this.saw(concurrency),
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot read the fal concurrency bound")
                    }
                }
            }
        });
    }

    /// Notes the bound and how many jobs hold it.
    fn saw(&self, concurrency: Concurrency) {
        if let Some(limit) = concurrency.limit {
            metrics::gauge!("atelier_fal_concurrency_limit").set(f64::from(limit));
        }
        metrics::gauge!("atelier_fal_jobs_in_flight").set(concurrency.in_flight as f64);
        self.throttled
            .store(concurrency.limit < concurrency.max, Ordering::Relaxed);
    }

    /// fal refused a submission for the account's limits: lowers the bound for
    /// every worker and puts the job back, without spending an attempt, once a
    /// slot may be free again.
    async fn throttle(&self, row: &JobRow, err: &FalError) -> Outcome {
        metrics::counter!("atelier_fal_throttled_total").increment(1);
        match self.jobs.queue.throttle().await {
            Ok(concurrency) => {
                tracing::warn!(job_id = %row.id, error = %err, limit = ?concurrency.limit, in_flight = concurrency.in_flight, "fal refused a job for its concurrency; fewer jobs run at once for a while");
                self.saw(concurrency);
            }
            Err(queue) => {
                tracing::warn!(job_id = %row.id, error = %err, queue_error = %queue, "fal refused a job for its concurrency; the bound could not be lowered");
            }
        }
        // Spread out, so the jobs refused together do not come back together.
        Outcome::Wait(Duration::from_millis(500 + rand::random::<u64>() % 1000))
    }

    /// fal accepted a submission: while the bound is lowered, raises it a little.
    async fn relieve(&self) {
        if !self.throttled.load(Ordering::Relaxed) {
            return;
        }
        match self.jobs.queue.relieve().await {
            Ok(concurrency) => self.saw(concurrency),
            Err(err) => tracing::debug!(error = %err, "cannot raise the fal concurrency bound"),
        }
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
        let outcome = match self.claim(job_id, &delivery).await {
            Claim::Mine(row) => self.run_job(*row, &delivery, true).await,
            Claim::Watch(row) => self.run_job(*row, &delivery, false).await,
            Claim::Busy => Outcome::Wait(Duration::from_secs(2)),
            Claim::Gone => Outcome::Done,
            Claim::Unknown(err) => Outcome::Retry(format!("database: {err}")),
        };
        let queue = &self.jobs.queue;
        let result = match outcome {
            Outcome::Done => queue.complete(&delivery).await,
            Outcome::Wait(delay) => queue.defer(&delivery, delay).await,
            Outcome::Retry(reason) => {
                tracing::warn!(%job_id, attempt = delivery.attempt, reason, "job will be retried");
                match queue.retry(&delivery, &reason).await {
                    Ok(Retried::DeadLettered) => {
                        tracing::warn!(%job_id, attempt = delivery.attempt, reason, "job gave up after its last attempt");
                        self.jobs
                            .fail(job_id, "attempts_exhausted", failure::GAVE_UP, None)
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
                cause,
            } => {
                if let Some(cause) = cause {
                    tracing::warn!(%job_id, code, cause, "job failed");
                }
                self.jobs.fail(job_id, &code, &message, details).await;
                queue.complete(&delivery).await
            }
        };
        if let Err(err) = result {
            tracing::warn!(%job_id, error = %err, "cannot settle a queue delivery; it will be redelivered");
        }
    }

    /// Runs a job at fal: submits it when this worker has just claimed it
    /// (`claimed`), else watches the request it was submitted as.
    async fn run_job(&self, row: JobRow, delivery: &Delivery, claimed: bool) -> Outcome {
        let Ok(endpoint) = EndpointId::parse(&row.fal_endpoint) else {
            return Outcome::fail("invalid_endpoint", failure::MISCONFIGURED)
                .because(format!("{} is not a fal endpoint id", row.fal_endpoint));
        };
        // Whether this worker submitted the request just now: then nothing of it is
        // recorded yet and the job was seen unfinished a moment ago.
        let mut row = row;
        let (request_id, fresh) = match row.fal_request_id.clone() {
            // Redelivered after a submission: watch that request, never submit twice.
            Some(request_id) => (request_id, false),
            None if claimed => match self.submit(&row, &endpoint).await {
                Ok(submitted) => {
                    row = submitted;
                    (row.fal_request_id.clone().unwrap_or_default(), true)
                }
                Err(outcome) => {
                    self.release(row.id).await;
                    return outcome;
                }
            },
            None => return Outcome::Wait(Duration::from_secs(2)),
        };
        let status = match self
            .watch(&mut row, &endpoint, &request_id, delivery, fresh)
            .await
        {
            Ok(status) => status,
            Err(outcome) => return outcome,
        };
        if let Some(error) = status.error {
            return fal_failed(error, status.error_type);
        }
        let output = match self.fal.result(&endpoint, &request_id).await {
            Ok(output) => output,
            Err(err) => return fal_outcome(err),
        };
        self.store_results(&row, &output).await
    }

    /// Claims the job for submission: one conditional update moves a waiting job
    /// to `submitted`, so of two workers holding one job (a redelivery racing the
    /// first delivery) exactly one submits. A job already submitted is watched. A
    /// claim without a request id that is older than [`CLAIM_LEASE`] belongs to a
    /// worker that died mid-submission.
    async fn claim(&self, id: Uuid, delivery: &Delivery) -> Claim {
        let now = self.jobs.clock.now();
        let attempt = delivery.attempt as i32;
        match self.jobs.store.claim_waiting(id, attempt, now).await {
            Ok(Some(claimed)) => return Claim::Mine(Box::new(claimed)),
            Ok(None) => {}
            Err(err) => return Claim::Unknown(err),
        }
        let current = match self.jobs.store.by_id(id).await {
            Ok(Some(current)) => current,
            Ok(None) => return Claim::Gone,
            Err(err) => return Claim::Unknown(err),
        };
        if Status::parse(&current.status).is_none_or(Status::is_final) {
            return Claim::Gone;
        }
        if current.fal_request_id.is_some() {
            return Claim::Watch(Box::new(current));
        }
        if current.status != Status::Submitted.as_str() || now - current.updated_at <= CLAIM_LEASE {
            // Being submitted by another worker, or given back a moment ago.
            return Claim::Busy;
        }
        // Its claimer died before storing a request id: take it over.
        let taken = self
            .jobs
            .store
            .transition(
                &current,
                &["submitted"],
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

    /// Submits the claimed job to fal; returns its row with the request id stored.
    async fn submit(&self, row: &JobRow, endpoint: &EndpointId) -> Result<JobRow, Outcome> {
        let url = self
            .jobs
            .images
            .clone()
            .get_download_url(GetDownloadUrlRequest {
                user_id: row.user_id.to_string(),
                image_id: row.image_id.to_string(),
                variant: ImageVariant::Original as i32,
                ttl_seconds: 3600,
                inline_max_bytes: i64::try_from(self.inline_input_bytes).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|status| match upstream(status) {
                ProcessingError::Unavailable(why) => {
                    Outcome::Retry(format!("image service: {why}"))
                }
                _ => Outcome::fail("image_unavailable", "The input image no longer exists."),
            })?
            .into_inner()
            .url;
        let mut input = row.parameters.as_object().cloned().unwrap_or_default();
        input.insert("image_url".into(), Value::String(url));
        let options = SubmitOptions {
            webhook_url: self.webhook_url.clone(),
            ..SubmitOptions::default()
        };
        let submitted = match self
            .fal
            .submit(endpoint, &Value::Object(input), &options)
            .await
        {
            Ok(submitted) => {
                self.relieve().await;
                submitted
            }
            Err(err) if err.is_throttled() => return Err(self.throttle(row, &err).await),
            Err(err) => return Err(fal_outcome(err)),
        };
        // The request id is stored before anything else: a crash from here on
        // resumes this request instead of submitting again.
        let request_id = submitted.request_id.clone();
        let stored = self
            .jobs
            .transition(
                row,
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
            Ok(Some(row)) => Ok(row),
            // Cancelled meanwhile: drop the fal request too.
            Ok(None) => {
                let _ = self.fal.cancel(endpoint, &submitted.request_id).await;
                Err(Outcome::Done)
            }
            Err(err) => Err(Outcome::Retry(format!("database: {err}"))),
        }
    }

    /// Follows the request until fal says it completed, keeping the job's status,
    /// position and logs current: over fal's status stream, which tells each change
    /// as it happens (a request that takes 5 ms is seen done in about 5 ms), and by
    /// polling should the stream fail. The job's row is read every 2 s meanwhile, so
    /// a cancel here or on another replica stops the watch.
    async fn watch(
        &self,
        row: &mut JobRow,
        endpoint: &EndpointId,
        request_id: &str,
        delivery: &Delivery,
        fresh: bool,
    ) -> Result<atelier_fal::RequestStatus, Outcome> {
        let mut seen_logs = 0;
        if !fresh {
            // A redelivered job resumes a request whose first lines are recorded already.
            seen_logs = self
                .jobs
                .logs_recorded_for(row.id, request_id)
                .await
                .unwrap_or(0);
            self.check_still_wanted(row, endpoint, request_id).await?;
        }
        let mut processing = row.status == Status::Processing.as_str();
        let mut stream = std::pin::pin!(self.fal.status_stream(endpoint, request_id));
        let mut check = tokio::time::interval(Duration::from_secs(2));
        check.tick().await;
        // Log lines the stream sent: its first event holds every line so far, each
        // later one only the new lines.
        let mut streamed = 0;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(status)) => {
                        let fresh: Vec<_> = status
                            .logs
                            .iter()
                            .enumerate()
                            .filter(|(at, _)| streamed + at >= seen_logs)
                            .map(|(_, log)| log)
                            .collect();
                        streamed += status.logs.len();
                        seen_logs = seen_logs.max(streamed);
                        self.note_logs(row, &fresh).await;
                        if status.status == QueueStatus::Completed {
                            return Ok(status);
                        }
                        self.note_status(row, &status, &mut processing).await;
                    }
                    Some(Err(err)) => {
                        tracing::debug!(job_id = %row.id, error = %err, "status stream failed, polling");
                        break;
                    }
                    None => break,
                },
                _ = check.tick() => self.check_still_wanted(row, endpoint, request_id).await?,
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            self.check_still_wanted(row, endpoint, request_id).await?;
            let status = self
                .fal
                .status(endpoint, request_id, true)
                .await
                .map_err(fal_outcome)?;
            if status.logs.len() > seen_logs {
                let fresh: Vec<_> = status.logs[seen_logs..].iter().collect();
                seen_logs = status.logs.len();
                self.note_logs(row, &fresh).await;
            }
            if status.status == QueueStatus::Completed {
                return Ok(status);
            }
            self.note_status(row, &status, &mut processing).await;
            if let Err(err) = self.jobs.queue.extend(delivery).await {
                tracing::debug!(error = %err, "cannot extend a delivery");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }

    /// Stops a watch (`Err(Done)`) when the job finished or was deleted meanwhile.
    async fn check_still_wanted(
        &self,
        row: &JobRow,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<(), Outcome> {
        match self.jobs.store.by_id(row.id).await {
            Ok(Some(current)) if Status::parse(&current.status).is_none_or(Status::is_final) => {
                // A cancel that read the job before its request id was stored
                // could not reach fal: the request is dropped here instead.
                if current.status == Status::Cancelled.as_str() {
                    let _ = self.fal.cancel(endpoint, request_id).await;
                }
                Err(Outcome::Done)
            }
            Ok(None) => Err(Outcome::Done),
            Ok(Some(_)) => Ok(()),
            Err(err) => Err(Outcome::Retry(format!("database: {err}"))),
        }
    }

    /// Records log lines fal sent for the first time.
    async fn note_logs(&self, row: &JobRow, fresh: &[&atelier_fal::LogEntry]) {
        if fresh.is_empty() {
            return;
        }
        let fresh: Vec<_> = fresh
            .iter()
            .map(|log| json!({"level": log.level, "message": log.message, "timestamp": log.timestamp}))
            .collect();
        let _ = self.jobs.note(row.id, "log", json!({"logs": fresh})).await;
    }

    /// Keeps the job's queue position and status in step with fal's.
    async fn note_status(
        &self,
        row: &mut JobRow,
        status: &atelier_fal::RequestStatus,
        processing: &mut bool,
    ) {
        match status.status {
            QueueStatus::InQueue => {
                let position = status.queue_position.map(|p| p as i32);
                if position != row.queue_position
                    && self
                        .jobs
                        .store
                        .set_progress(row.id, position, None)
                        .await
                        .is_ok()
                {
                    row.queue_position = position;
                    row.progress = None;
                }
            }
            QueueStatus::InProgress if !*processing => {
                *processing = true;
                let changed = self
                    .jobs
                    .transition(
                        &*row,
                        &["submitted"],
                        |job| {
                            job.status = Status::Processing.as_str().to_owned();
                            job.queue_position = None;
                        },
                        ("status_changed", json!({"status": "processing"})),
                    )
                    .await;
                if let Ok(Some(changed)) = changed {
                    *row = changed;
                }
            }
            QueueStatus::InProgress | QueueStatus::Completed => {}
        }
    }

    /// Streams every output image of fal's `output` into the image service and
    /// finishes the job.
    async fn store_results(&self, row: &JobRow, output: &Value) -> Outcome {
        let outputs = output_images(output);
        if outputs.is_empty() {
            return Outcome::Fail {
                code: "no_output".into(),
                message: failure::NO_OUTPUT.into(),
                details: None,
                cause: Some(format!("fal's output has no image: {output}")),
            };
        }
        let base = self.result_name(row).await;
        let mut stored = Vec::with_capacity(outputs.len());
        for (index, (url, role)) in outputs.iter().enumerate() {
            let name = if outputs.len() > 1 {
                format!("{base}_{}", index + 1)
            } else {
                base.clone()
            };
            match self.store_output(row, index, url, role, name).await {
                Ok(id) => stored.push(id),
                Err(outcome) => return outcome,
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
                row,
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

impl Dispatch {
    /// `<input's name without extension>_<workflow id>`: what a job's results are
    /// called (the image service adds the extension of the type it finds).
    async fn result_name(&self, row: &JobRow) -> String {
        if let Some(input) = &row.input_filename {
            return result_name(input, &row.workflow_id);
        }
        // Jobs from before input names were kept ask the image service.
        let input = self
            .jobs
            .images
            .clone()
            .check_ownership(CheckOwnershipRequest {
                user_id: row.user_id.to_string(),
                image_id: row.image_id.to_string(),
            })
            .await
            .ok()
            .and_then(|reply| reply.into_inner().image)
            .map(|image| image.original_filename)
            .unwrap_or_default();
        result_name(&input, &row.workflow_id)
    }

    /// Streams one output from fal into the image service, chunk by chunk: no
    /// buffer ever holds the whole image. A download that fails mid-way cancels
    /// the store, so nothing half-written is kept.
    async fn store_output(
        &self,
        row: &JobRow,
        index: usize,
        url: &str,
        role: &str,
        name: String,
    ) -> Result<Uuid, Outcome> {
        let result = self.fal.download(url).await.map_err(download_outcome)?;
        let mut details = serde_json::Map::new();
        details.insert("output_role".into(), role.into());
        if let Some(request_id) = &row.fal_request_id {
            details.insert("fal_request_id".into(), request_id.clone().into());
        }
        let metadata = StoreResultMetadata {
            user_id: row.user_id.to_string(),
            job_id: row.id.to_string(),
            output_index: index as i32,
            source_image_id: row.image_id.to_string(),
            filename: name,
            mime_type: result.content_type.unwrap_or_default(),
            metadata: Some(map_to_struct(&details)),
            size_bytes: result.size.map(|size| size as i64),
        };
        // A pump feeds the store from the download, one chunk at a time. When the
        // download fails, the request stream is left open (never ended, which would
        // store a truncated image) and the store is dropped, which cancels it.
        let (messages, queue) = tokio::sync::mpsc::channel(2);
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<FalError>();
        let first = StoreResultRequest {
            data: Some(store_result_request::Data::Metadata(metadata)),
        };
        let mut body = result.body;
        let pump = tokio::spawn(async move {
            if messages.send(first).await.is_err() {
                return;
            }
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        let message = StoreResultRequest {
                            data: Some(store_result_request::Data::Chunk(chunk)),
                        };
                        if messages.send(message).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        let _ = failed_tx.send(err);
                        messages.closed().await;
                        return;
                    }
                }
            }
        });
        let _pump = AbortOnDrop(pump);
        let mut images = self.jobs.images.clone();
        let reply = tokio::select! {
            reply = images.store_result(tokio_stream::wrappers::ReceiverStream::new(queue)) => reply,
            Ok(err) = failed_rx => return Err(download_outcome(err)),
        };
        match reply {
            Ok(reply) => reply
                .into_inner()
                .image
                .and_then(|image| Uuid::parse_str(&image.id).ok())
                .ok_or_else(|| Outcome::Retry("the image service stored no image".into())),
            Err(status) => Err(match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                    Outcome::fail("result_invalid", failure::result_invalid(status.message()))
                        .because(status.message())
                }
                // The job (or its owner's account) was deleted meanwhile: the image
                // service kept nothing, and there is nothing left to finish.
                tonic::Code::NotFound => {
                    tracing::info!(job_id = %row.id, reason = status.message(), "result dropped, its job is gone");
                    Outcome::Done
                }
                // Anything else (storage or the connection failing, an internal
                // error) may pass: the job is tried again, and the redelivery
                // resumes the same fal request.
                _ => Outcome::Retry(format!("storing the result: {}", upstream(status))),
            }),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `<input stem>_<workflow id>`, from an input's display name.
fn result_name(input: &str, workflow_id: &str) -> String {
    let stem = match input.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && ext.len() <= 5 => stem,
        _ => input,
    };
    let stem = stem.trim();
    if stem.is_empty() {
        workflow_id.to_owned()
    } else {
        format!("{stem}_{workflow_id}")
    }
}

/// The images of a fal output with their role, in fal's order: `image`, `images[]`
/// (role `image`), then `mask_image` (role `mask`).
fn output_images(output: &Value) -> Vec<(String, &'static str)> {
    let mut images = Vec::new();
    if let Some(url) = output.pointer("/image/url").and_then(Value::as_str) {
        images.push((url.to_owned(), "image"));
    }
    for image in output
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(url) = image.get("url").and_then(Value::as_str) {
            images.push((url.to_owned(), "image"));
        }
    }
    if let Some(url) = output.pointer("/mask_image/url").and_then(Value::as_str) {
        images.push((url.to_owned(), "mask"));
    }
    images
}

/// What a failed result download means for the job.
fn download_outcome(err: FalError) -> Outcome {
    match err {
        FalError::TooLarge => Outcome::fail("result_too_large", failure::TOO_LARGE).because(err),
        FalError::ForbiddenUrl(_) => {
            Outcome::fail("result_refused", failure::REFUSED_HOST).because(err)
        }
        err => fal_outcome(err),
    }
}

/// A request fal ran and failed, under fal's error type; fal's own text is logged.
fn fal_failed(error: String, error_type: Option<String>) -> Outcome {
    Outcome::Fail {
        message: failure::fal_failed(error_type.as_deref(), &error),
        code: error_type.unwrap_or_else(|| "fal_request_failed".into()),
        details: None,
        cause: Some(error),
    }
}

/// What a fal error means for the job.
fn fal_outcome(err: FalError) -> Outcome {
    match err {
        FalError::Unavailable { retry_after } => {
            Outcome::Wait(retry_after.max(Duration::from_secs(1)))
        }
        FalError::Validation(issues) => Outcome::Fail {
            code: "invalid_parameters".into(),
            message: failure::INVALID_PARAMETERS.into(),
            details: Some(json!(
                issues
                    .iter()
                    .map(|issue| json!({"field": issue.field, "message": issue.message}))
                    .collect::<Vec<_>>()
            )),
            cause: None,
        },
        // fal may be running it: submitting again could run and bill it twice. The
        // job stops with a clear reason; the user can retry it knowingly.
        FalError::MaybeSent { message } => {
            Outcome::fail("submission_unknown", failure::SUBMISSION_UNKNOWN).because(message)
        }
        FalError::RequestFailed { error, error_type } => fal_failed(error, error_type),
        err if err.is_transient() => Outcome::Retry(err.to_string()),
        err => Outcome::fail("fal_error", failure::FAL_ERROR).because(err),
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
            tracing::warn!(job_id = %row.id, reason, "job gave up after its last attempt");
            jobs.fail(row.id, "attempts_exhausted", failure::GAVE_UP, None)
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
                    cause,
                } => {
                    if let Some(cause) = cause {
                        tracing::warn!(job_id = %row.id, code, cause, "job failed");
                    }
                    self.jobs.fail(row.id, &code, &message, details).await;
                }
                // The worker watching this request will finish it.
                Outcome::Wait(_) | Outcome::Retry(_) => return Ok(WebhookOutcome::Ignored),
            },
            WebhookStatus::Error => {
                let text = event.error.unwrap_or_default();
                tracing::warn!(job_id = %row.id, cause = text, "fal reported a failed request");
                let message = failure::fal_failed(None, &text);
                self.jobs
                    .fail(row.id, "fal_request_failed", &message, Some(event.payload))
                    .await;
            }
        }
        Ok(WebhookOutcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_named_after_their_input_and_workflow() {
        assert_eq!(
            result_name("IMG_2041.JPG", "esrgan-upscale"),
            "IMG_2041_esrgan-upscale"
        );
        assert_eq!(
            result_name("holiday.photo.png", "rembg"),
            "holiday.photo_rembg"
        );
        assert_eq!(result_name("scan", "rembg"), "scan_rembg");
        assert_eq!(result_name("", "rembg"), "rembg");
        assert_eq!(result_name(".png", "rembg"), ".png_rembg");
    }

    #[test]
    fn outputs_keep_fal_order_and_name_the_mask() {
        let output = json!({
            "image": {"url": "https://v3.fal.media/a.png"},
            "images": [{"url": "https://v3.fal.media/b.png"}, {"no_url": true}],
            "mask_image": {"url": "https://v3.fal.media/m.png"},
        });
        assert_eq!(
            output_images(&output),
            vec![
                ("https://v3.fal.media/a.png".to_owned(), "image"),
                ("https://v3.fal.media/b.png".to_owned(), "image"),
                ("https://v3.fal.media/m.png".to_owned(), "mask"),
            ]
        );
        assert!(output_images(&json!({"seed": 1})).is_empty());
    }

    #[test]
    fn too_large_and_off_list_results_fail_for_good_with_a_plain_reason() {
        for (err, code) in [
            (FalError::TooLarge, "result_too_large"),
            (FalError::ForbiddenUrl("x".into()), "result_refused"),
        ] {
            let Outcome::Fail {
                code: got,
                message,
                cause,
                ..
            } = download_outcome(err)
            else {
                panic!("{code} must fail the job");
            };
            assert_eq!(got, code);
            assert!(!failure::retryable(&got));
            assert!(message.ends_with('.') && !message.contains("fal result"));
            assert!(cause.is_some(), "the technical cause is logged");
        }
        assert!(matches!(
            download_outcome(FalError::Transient {
                status: None,
                error_type: None,
                message: "connection reset".into(),
            }),
            Outcome::Retry(_)
        ));
    }
}
