//! Runs: one pipeline on one image. A run moves only through
//! [`PipelineStore::update_run`](crate::store::pipelines::PipelineStore::update_run),
//! which applies a change to the version it was read at, so replicas advancing
//! one run at once cannot both win; and each step's job is started with an
//! idempotency key of the run, the step and the attempt, so a step started by a
//! replica that then died is found again, not started twice. The driver
//! advances a run when its step's job changes (the job event bus), and every
//! running run periodically (after a restart, or a lost notification).

use std::{sync::Arc, time::Duration};

use atelier_common::FieldViolation;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{MAX_IMAGES, Pipelines, Run, RunStatus, RunStep, StepSpec, StepStatus};
use crate::{
    domain::{Priority, StartRequest, Status as JobStatus},
    error::ProcessingError,
    store::pipelines::KeyTaken,
};

/// What a run is started from.
#[derive(Clone, Debug)]
pub enum Source {
    Saved(Uuid),
    Steps(Vec<StepSpec>),
}

/// The idempotency key of attempt `attempt` of step `step` of run `run_id`'s job.
fn step_key(run_id: Uuid, step: usize, attempt: i32) -> String {
    format!("pipeline:{run_id}:{step}:{attempt}")
}

/// Whether an error is the platform's (try again later) rather than the step's.
fn transient(err: &ProcessingError) -> bool {
    matches!(
        err,
        ProcessingError::Unavailable(_)
            | ProcessingError::Database(_)
            | ProcessingError::Queue(_)
            | ProcessingError::Internal(_)
    )
}

impl Pipelines {
    /// Starts the pipeline on each image, one run per image, all or none; replays
    /// the runs an idempotency key started before.
    pub async fn start(
        &self,
        user_id: Uuid,
        source: Source,
        image_ids: &[Uuid],
        idempotency_key: Option<String>,
    ) -> Result<(Vec<Run>, bool), ProcessingError> {
        if let Some(key) = &idempotency_key
            && key.len() > 200
        {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "idempotency_key",
                "must be at most 200 characters",
            )]));
        }
        if image_ids.is_empty() || image_ids.len() > MAX_IMAGES {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "image_ids",
                format!("must list between 1 and {MAX_IMAGES} images"),
            )]));
        }
        for (index, id) in image_ids.iter().enumerate() {
            if image_ids[..index].contains(id) {
                return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                    format!("image_ids[{index}]"),
                    "is listed twice",
                )]));
            }
        }
        let key = |index: usize| idempotency_key.as_ref().map(|key| format!("{key}#{index}"));
        if let Some(first) = key(0)
            && self.store.run_by_key(user_id, &first).await?.is_some()
        {
            return self.replay(user_id, image_ids, &key).await;
        }
        let (pipeline_id, pipeline_name, steps) = match source {
            Source::Saved(id) => {
                let pipeline = self.get(user_id, id).await?;
                (Some(pipeline.id), pipeline.name, pipeline.steps)
            }
            Source::Steps(steps) => (None, String::new(), steps),
        };
        let steps = self.checked(steps).await?;
        for image_id in image_ids {
            if self.images.owned(user_id, *image_id).await?.is_none() {
                return Err(ProcessingError::ImageNotFound);
            }
        }
        let now = self.clock.now();
        let batch_id = Uuid::now_v7();
        let runs: Vec<Run> = image_ids
            .iter()
            .enumerate()
            .map(|(index, image_id)| Run {
                id: Uuid::now_v7(),
                user_id,
                pipeline_id,
                pipeline_name: pipeline_name.clone(),
                image_id: *image_id,
                batch_id,
                status: RunStatus::Running,
                current_step: 0,
                steps: steps.iter().cloned().map(RunStep::new).collect(),
                error: None,
                idempotency_key: key(index),
                version: 1,
                created_at: now,
                updated_at: now,
                completed_at: None,
            })
            .collect();
        if let Err(KeyTaken) = self.store.insert_runs(&runs, "run_started").await? {
            // Two starts with one key raced: the other one made the runs.
            return self.replay(user_id, image_ids, &key).await;
        }
        metrics::counter!("atelier_pipeline_runs_started_total").increment(runs.len() as u64);
        let mut started = Vec::with_capacity(runs.len());
        for run in runs {
            self.bus.publish(run.id, run.version).await;
            tracing::info!(run_id = %run.id, steps = run.steps.len(), "pipeline run started");
            // A failure here leaves the run to the driver, which tries again.
            if let Err(err) = self.advance(run.id).await {
                tracing::warn!(run_id = %run.id, error = %err, "pipeline run not advanced yet");
            }
            started.push(self.store.run(run.id).await?.unwrap_or(run));
        }
        Ok((started, false))
    }

    async fn replay(
        &self,
        user_id: Uuid,
        image_ids: &[Uuid],
        key: &impl Fn(usize) -> Option<String>,
    ) -> Result<(Vec<Run>, bool), ProcessingError> {
        let mut runs = Vec::with_capacity(image_ids.len());
        for (index, image_id) in image_ids.iter().enumerate() {
            let run = self
                .store
                .run_by_key(user_id, &key(index).unwrap_or_default())
                .await?
                .filter(|run| run.image_id == *image_id)
                .ok_or(ProcessingError::IdempotencyConflict)?;
            runs.push(run);
        }
        Ok((runs, true))
    }

    /// The caller's run, with its steps' jobs as they are now.
    pub async fn run(&self, user_id: Uuid, id: Uuid) -> Result<Run, ProcessingError> {
        let run = self.owned_run(user_id, id).await?;
        self.with_jobs(run).await
    }

    pub(super) async fn owned_run(&self, user_id: Uuid, id: Uuid) -> Result<Run, ProcessingError> {
        self.store
            .run(id)
            .await?
            .filter(|run| run.user_id == user_id)
            .ok_or(ProcessingError::RunNotFound)
    }

    /// `run` with the status and progress of each step's job.
    pub(super) async fn with_jobs(&self, mut run: Run) -> Result<Run, ProcessingError> {
        for step in &mut run.steps {
            if let Some(job_id) = step.job_id
                && let Some(job) = self.jobs.find(job_id).await?
            {
                step.job = Some(super::JobState {
                    status: job.status.as_str(),
                    progress: job.progress,
                });
            }
        }
        Ok(run)
    }

    /// The caller's runs, newest first, and the cursor of the next page.
    pub async fn runs(
        &self,
        user_id: Uuid,
        pipeline_id: Option<Uuid>,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<Run>, Option<Uuid>), ProcessingError> {
        let mut runs = self
            .store
            .runs(user_id, pipeline_id, after, page_size + 1)
            .await?;
        let next = if runs.len() as u64 > page_size {
            runs.truncate(page_size as usize);
            runs.last().map(|run| run.id)
        } else {
            None
        };
        Ok((runs, next))
    }

    /// Stops a running run and cancels its step's job.
    pub async fn cancel(&self, user_id: Uuid, id: Uuid) -> Result<Run, ProcessingError> {
        loop {
            let run = self.owned_run(user_id, id).await?;
            if run.status.is_final() {
                return Err(ProcessingError::RunFinished(run.status.as_str()));
            }
            let step = run.current_step;
            let next = self.changed(&run, |next| {
                next.status = RunStatus::Cancelled;
                next.steps[step].status = StepStatus::Cancelled;
            });
            if self.commit(&next, "run_cancelled", Some(step)).await? {
                self.cancel_jobs(&next).await;
                tracing::info!(run_id = %id, step, "pipeline run cancelled");
                return self.run(user_id, id).await;
            }
        }
    }

    /// Cancels every unfinished job of a run that is not running any more.
    async fn cancel_jobs(&self, run: &Run) {
        let jobs = match self.store.jobs_of_run(run.id).await {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(run_id = %run.id, error = %err, "cannot list a cancelled run's jobs");
                return;
            }
        };
        for job_id in jobs {
            match self.jobs.find(job_id).await {
                Ok(Some(job)) if !job.status.is_final() => {
                    if let Err(err) = self.jobs.cancel(run.user_id, job_id).await {
                        tracing::warn!(run_id = %run.id, job_id = %job_id, error = %err, "cannot cancel a stopped run's job");
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs a failed or cancelled run again from the step that did not
    /// complete; the completed steps' results are kept.
    pub async fn retry(&self, user_id: Uuid, id: Uuid) -> Result<Run, ProcessingError> {
        loop {
            let run = self.owned_run(user_id, id).await?;
            if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
                return Err(ProcessingError::RunNotRetryable(run.status.as_str()));
            }
            let step = run.current_step;
            let next = self.changed(&run, |next| {
                next.status = RunStatus::Running;
                next.error = None;
                next.completed_at = None;
                let current = &mut next.steps[step];
                current.status = StepStatus::Pending;
                current.job_id = None;
                current.error = None;
                current.result_image_id = None;
                current.completed_at = None;
            });
            if self.commit(&next, "run_retried", Some(step)).await? {
                tracing::info!(run_id = %id, step, "pipeline run retried");
                if let Err(err) = self.advance(id).await {
                    tracing::warn!(run_id = %id, error = %err, "pipeline run not advanced yet");
                }
                return self.run(user_id, id).await;
            }
        }
    }

    /// `run` changed by `change`, one version on.
    fn changed(&self, run: &Run, change: impl FnOnce(&mut Run)) -> Run {
        let mut next = run.clone();
        change(&mut next);
        let now = self.clock.now();
        next.version += 1;
        next.updated_at = now;
        if next.status.is_final() && next.completed_at.is_none() {
            next.completed_at = Some(now);
        }
        next
    }

    /// Stores a change with its event and publishes it; false when another
    /// change came first.
    async fn commit(
        &self,
        next: &Run,
        kind: &str,
        step: Option<usize>,
    ) -> Result<bool, ProcessingError> {
        if !self.store.update_run(next, kind, step).await? {
            return Ok(false);
        }
        self.bus.publish(next.id, next.version).await;
        if next.status.is_final() {
            metrics::counter!("atelier_pipeline_runs_finished_total", "status" => next.status.as_str())
                .increment(1);
        }
        Ok(true)
    }

    /// Moves run `id` on as far as its steps' jobs allow: starts the current
    /// step's job when it has none, goes to the next step when it completed,
    /// fails or cancels the run when it did. Safe to call any number of times,
    /// from any replica.
    pub async fn advance(&self, id: Uuid) -> Result<(), ProcessingError> {
        // Each pass moves the run by one change at most; a run has at most 8
        // steps, so a bound well above what a run needs ends a livelock.
        for _ in 0..64 {
            let Some(run) = self.store.run(id).await? else {
                return Ok(());
            };
            if run.status != RunStatus::Running {
                return Ok(());
            }
            let index = run.current_step;
            let Some(step) = run.steps.get(index) else {
                return Ok(());
            };
            match step.job_id {
                None => {
                    if !self.start_step(&run).await? {
                        return Ok(());
                    }
                }
                Some(job_id) => {
                    let Some(job) = self.jobs.find(job_id).await? else {
                        // The job is gone (the user's account went): nothing to wait for.
                        self.fail(&run, "the step's job was deleted".to_owned())
                            .await?;
                        continue;
                    };
                    match job.status {
                        JobStatus::Completed => match job.result_image_id {
                            Some(result) => {
                                let last = index + 1 == run.steps.len();
                                let next = self.changed(&run, |next| {
                                    let current = &mut next.steps[index];
                                    current.status = StepStatus::Completed;
                                    current.result_image_id = Some(result);
                                    current.completed_at = job.completed_at;
                                    next.current_step = index + 1;
                                    if last {
                                        next.status = RunStatus::Completed;
                                    }
                                });
                                let kind = if last {
                                    "run_completed"
                                } else {
                                    "step_completed"
                                };
                                if self.commit(&next, kind, Some(index)).await? && last {
                                    tracing::info!(run_id = %id, "pipeline run completed");
                                }
                            }
                            None => {
                                self.fail(&run, "the step's job produced no image".to_owned())
                                    .await?;
                            }
                        },
                        JobStatus::Failed => {
                            let reason = job
                                .error_message
                                .unwrap_or_else(|| "the step's job failed".to_owned());
                            self.fail(&run, reason).await?;
                        }
                        JobStatus::Cancelled => {
                            let next = self.changed(&run, |next| {
                                next.status = RunStatus::Cancelled;
                                next.steps[index].status = StepStatus::Cancelled;
                            });
                            self.commit(&next, "run_cancelled", Some(index)).await?;
                        }
                        _ => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts the job of `run`'s current step; false when the run is not to be
    /// advanced further now.
    async fn start_step(&self, run: &Run) -> Result<bool, ProcessingError> {
        let index = run.current_step;
        let step = &run.steps[index];
        let input = if index == 0 {
            Some(run.image_id)
        } else {
            run.steps[index - 1].result_image_id
        };
        let Some(input) = input else {
            self.fail(run, "the previous step left no image".to_owned())
                .await?;
            return Ok(true);
        };
        let attempt = step.attempts + 1;
        let request = StartRequest {
            user_id: run.user_id,
            image_id: input,
            workflow_id: step.workflow_id.clone(),
            parameters: step.parameters.clone(),
            priority: Priority::Normal,
            idempotency_key: Some(step_key(run.id, index, attempt)),
            batch_id: None,
        };
        let job = match self.jobs.start(request).await {
            Ok((job, _)) => job,
            Err(err) if transient(&err) => return Err(err),
            Err(err) => {
                self.fail(run, err.to_string()).await?;
                return Ok(true);
            }
        };
        self.store.link_job(job.id, run.id, index, attempt).await?;
        let now = self.clock.now();
        let next = self.changed(run, |next| {
            let current = &mut next.steps[index];
            current.status = StepStatus::Running;
            current.job_id = Some(job.id);
            current.attempts = attempt;
            current.input_image_id = Some(input);
            current.started_at = Some(now);
        });
        if self.commit(&next, "step_started", Some(index)).await? {
            tracing::info!(run_id = %run.id, step = index, job_id = %job.id, "pipeline step started");
        } else if let Some(now) = self.store.run(run.id).await?
            && now.status != RunStatus::Running
        {
            // Cancelled meanwhile: the job just started must not run on.
            self.cancel_jobs(&now).await;
        }
        Ok(true)
    }

    /// Fails `run` at its current step for `reason`.
    async fn fail(&self, run: &Run, reason: String) -> Result<(), ProcessingError> {
        let index = run.current_step;
        let now = self.clock.now();
        let next = self.changed(run, |next| {
            next.status = RunStatus::Failed;
            next.error = Some(format!(
                "step {} ({}) failed: {reason}",
                index + 1,
                next.steps[index].workflow_id
            ));
            let current = &mut next.steps[index];
            current.status = StepStatus::Failed;
            current.error = Some(reason);
            current.completed_at = Some(now);
        });
        if self.commit(&next, "run_failed", Some(index)).await? {
            tracing::info!(run_id = %run.id, step = index, "pipeline run failed");
        }
        Ok(())
    }

    /// Advances the run whose step job `job_id` is, if any.
    async fn on_job_event(&self, job_id: Uuid) -> Result<(), ProcessingError> {
        if let Some(run_id) = self.store.run_of_job(job_id).await? {
            self.advance(run_id).await?;
        }
        Ok(())
    }

    /// Advances every running run once; returns how many it looked at.
    pub async fn reconcile(&self) -> Result<usize, ProcessingError> {
        let running = self.store.running(1000).await?;
        for id in &running {
            if let Err(err) = self.advance(*id).await {
                tracing::warn!(run_id = %id, error = %err, "pipeline run not advanced");
            }
        }
        Ok(running.len())
    }
}

/// Advances runs as their steps' jobs change, and every running run every
/// `every` (and once at start-up), until `shutdown`.
pub fn spawn_driver(pipelines: Arc<Pipelines>, every: Duration, shutdown: CancellationToken) {
    let mut events = pipelines.bus.subscribe();
    let listener = Arc::clone(&pipelines);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let published = tokio::select! {
                received = events.recv() => received,
                () = stop.cancelled() => return,
            };
            match published {
                Ok(published) => {
                    if let Err(err) = listener.on_job_event(published.job_id).await {
                        tracing::warn!(job_id = %published.job_id, error = %err, "pipeline run not advanced");
                    }
                }
                // Missed notifications: the periodic pass catches up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = pipelines.reconcile().await {
                        tracing::warn!(error = %err, "pipeline reconciliation failed");
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    });
}
