//! Workers: take a job from the queue, run it at fal exactly once, store its
//! results, and finish it. A redelivered job with a fal request id resumes
//! watching that request instead of submitting again; an open circuit breaker
//! puts the job back without spending an attempt.
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

use atelier_fal::{EndpointId, FalClient, FalError, QueueStatus, SubmitOptions};
use atelier_queue::{Concurrency, Delivery, Queue, Retried};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{
    Claim, Jobs, failure,
    job::{Job, Status},
    outcome::{Outcome, database, fal_failed, fal_outcome},
    results::Results,
};
use crate::{error::ProcessingError, peers::ImageDirectory};

/// How workers reach fal.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Where fal should POST outcomes (`PUBLIC_URL` + `/api/fal/webhook`); polling when `None`.
    pub webhook_url: Option<String>,
    pub concurrency: usize,
    /// Inputs up to this many bytes are sent to fal inline (`data:` URIs).
    pub inline_input_bytes: u64,
    /// This process's name among the queue's consumers.
    pub consumer: String,
}

#[derive(Clone)]
pub struct Worker {
    jobs: Arc<Jobs>,
    queue: Arc<dyn Queue>,
    images: Arc<dyn ImageDirectory>,
    fal: FalClient,
    results: Results,
    config: Arc<WorkerConfig>,
    /// Whether the queue's bound was last seen below its max (after a 429): only
    /// then does an accepted submission raise it.
    throttled: Arc<AtomicBool>,
}

impl Worker {
    pub fn new(
        jobs: Arc<Jobs>,
        queue: Arc<dyn Queue>,
        images: Arc<dyn ImageDirectory>,
        fal: FalClient,
        config: WorkerConfig,
    ) -> Self {
        Self {
            results: Results::new(jobs.clone(), images.clone(), fal.clone()),
            jobs,
            queue,
            images,
            fal,
            config: Arc::new(config),
            throttled: Arc::default(),
        }
    }

    /// What stores a request's results: webhooks use it too.
    pub fn results(&self) -> Results {
        self.results.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
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
                next = self.queue.next_many(&self.config.consumer, permits.len(), Duration::from_secs(1)) => next,
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
        let _ = slots
            .acquire_many(self.config.concurrency.max(1) as u32)
            .await;
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
                match this.queue.concurrency().await {
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
    async fn throttle(&self, row: &Job, err: &FalError) -> Outcome {
        metrics::counter!("atelier_fal_throttled_total").increment(1);
        match self.queue.throttle().await {
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
        match self.queue.relieve().await {
            Ok(concurrency) => self.saw(concurrency),
            Err(err) => tracing::debug!(error = %err, "cannot raise the fal concurrency bound"),
        }
    }

    async fn handle(&self, delivery: Delivery) {
        // Keeps the delivery from being reclaimed while the job runs, however long
        // its submission, watch or result download takes.
        let heartbeat = {
            let queue = self.queue.clone();
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
        let outcome = match self.jobs.claim(job_id, delivery.attempt).await {
            Claim::Mine(row) => self.run_job(*row, &delivery, true).await,
            Claim::Watch(row) => self.run_job(*row, &delivery, false).await,
            Claim::Busy => Outcome::Wait(Duration::from_secs(2)),
            Claim::Gone => Outcome::Done,
            Claim::Unknown(why) => Outcome::Retry(format!("database: {why}")),
        };
        let queue = &self.queue;
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
            Outcome::Fail(failure) => {
                self.jobs.fail_with(job_id, failure).await;
                queue.complete(&delivery).await
            }
        };
        if let Err(err) = result {
            tracing::warn!(%job_id, error = %err, "cannot settle a queue delivery; it will be redelivered");
        }
    }

    /// Runs a job at fal: submits it when this worker has just claimed it
    /// (`claimed`), else watches the request it was submitted as.
    async fn run_job(&self, row: Job, delivery: &Delivery, claimed: bool) -> Outcome {
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
                    self.jobs.release(row.id).await;
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
        self.results.store(&row, &output).await
    }

    /// Submits the claimed job to fal; returns its row with the request id stored.
    async fn submit(&self, row: &Job, endpoint: &EndpointId) -> Result<Job, Outcome> {
        let url = self
            .images
            .input_url(row.user_id, row.image_id, self.config.inline_input_bytes)
            .await
            .map_err(|err| match err {
                ProcessingError::Unavailable(why) => {
                    Outcome::Retry(format!("image service: {why}"))
                }
                _ => Outcome::fail("image_unavailable", "The input image no longer exists."),
            })?;
        let mut input = row.parameters.as_object().cloned().unwrap_or_default();
        input.insert("image_url".into(), Value::String(url));
        let options = SubmitOptions {
            webhook_url: self.config.webhook_url.clone(),
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
        let stored = self
            .jobs
            .submitted(row, &submitted.request_id, submitted.queue_position)
            .await;
        match stored {
            Ok(Some(row)) => Ok(row),
            // Cancelled meanwhile: drop the fal request too.
            Ok(None) => {
                let _ = self.fal.cancel(endpoint, &submitted.request_id).await;
                Err(Outcome::Done)
            }
            Err(err) => Err(database(&err)),
        }
    }

    /// Follows the request until fal says it completed, keeping the job's status,
    /// position and logs current: over fal's status stream, which tells each change
    /// as it happens (a request that takes 5 ms is seen done in about 5 ms), and by
    /// polling should the stream fail. The job's row is read every 2 s meanwhile, so
    /// a cancel here or on another replica stops the watch.
    async fn watch(
        &self,
        row: &mut Job,
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
        let mut processing = row.status == Status::Processing;
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
            if let Err(err) = self.queue.extend(delivery).await {
                tracing::debug!(error = %err, "cannot extend a delivery");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }

    /// Stops a watch (`Err(Done)`) when the job finished or was deleted meanwhile.
    async fn check_still_wanted(
        &self,
        row: &Job,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<(), Outcome> {
        match self.jobs.find(row.id).await {
            Ok(Some(current)) if current.status.is_final() => {
                // A cancel that read the job before its request id was stored
                // could not reach fal: the request is dropped here instead.
                if current.status == Status::Cancelled {
                    let _ = self.fal.cancel(endpoint, request_id).await;
                }
                Err(Outcome::Done)
            }
            Ok(None) => Err(Outcome::Done),
            Ok(Some(_)) => Ok(()),
            Err(err) => Err(database(&err)),
        }
    }

    /// Records log lines fal sent for the first time.
    async fn note_logs(&self, row: &Job, fresh: &[&atelier_fal::LogEntry]) {
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
        row: &mut Job,
        status: &atelier_fal::RequestStatus,
        processing: &mut bool,
    ) {
        match status.status {
            QueueStatus::InQueue => {
                let position = status.queue_position.map(|p| p as i32);
                if position != row.queue_position && self.jobs.waiting_at(row.id, position).await {
                    row.queue_position = position;
                    row.progress = None;
                }
            }
            QueueStatus::InProgress if !*processing => {
                *processing = true;
                if let Ok(Some(changed)) = self.jobs.processing(row).await {
                    *row = changed;
                }
            }
            QueueStatus::InProgress | QueueStatus::Completed => {}
        }
    }
}
