//! Batches: one workflow over many images, started, cancelled and retried as one.

use atelier_common::FieldViolation;
use uuid::Uuid;

use super::{
    Jobs,
    start::{StartRequest, replay},
};
use crate::{
    domain::job::{Job, Status},
    error::ProcessingError,
};

/// A batch: one workflow over many images, as its jobs add up.
#[derive(Clone, Debug)]
pub struct BatchView {
    pub id: Uuid,
    pub jobs: Vec<Job>,
}

impl BatchView {
    pub fn count(&self, statuses: &[Status]) -> usize {
        self.jobs
            .iter()
            .filter(|job| statuses.contains(&job.status))
            .count()
    }

    /// The share of jobs that finished, whatever the outcome.
    pub fn progress(&self) -> f64 {
        if self.jobs.is_empty() {
            return 1.0;
        }
        self.count(&[Status::Completed, Status::Failed, Status::Cancelled]) as f64
            / self.jobs.len() as f64
    }
}

impl Jobs {
    /// Starts `workflow_id` on each image as one batch, all or none: every image
    /// must be the caller's, every result must fit the platform's limits, and the
    /// whole batch must fit the caller's quota, or no job starts.
    pub async fn start_batch(
        &self,
        request: StartRequest,
        image_ids: &[Uuid],
    ) -> Result<(BatchView, bool), ProcessingError> {
        if image_ids.is_empty() || image_ids.len() > 100 {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "image_ids",
                "must list between 1 and 100 images",
            )]));
        }
        let key = |index: usize| {
            request
                .idempotency_key
                .as_ref()
                .map(|key| format!("{key}#{index}"))
        };
        if let Some(first) = key(0)
            && self
                .store
                .by_idempotency_key(request.user_id, &first)
                .await?
                .is_some()
        {
            return self.replay_batch(&request, image_ids).await;
        }
        let quota = self
            .quotas
            .admit(
                &self.store,
                request.user_id,
                image_ids.len() as i64,
                request.priority,
                self.clock.now(),
            )
            .await?;
        let mut images = Vec::with_capacity(image_ids.len());
        for image_id in image_ids {
            images.push(self.owned_image(request.user_id, *image_id).await?);
        }
        let dimensions: Vec<_> = image_ids
            .iter()
            .zip(&images)
            .map(|(id, image)| (*id, image.width, image.height))
            .collect();
        let (validated, costs) = self
            .check(
                &request.workflow_id,
                &request.parameters,
                &dimensions,
                "image_ids",
            )
            .await?;
        let estimate: f64 = costs.iter().flatten().map(|priced| priced.cost).sum();
        self.spend.admit(request.user_id, &quota, estimate).await?;
        let batch_id = Uuid::now_v7();
        let rows: Vec<Job> = image_ids
            .iter()
            .zip(images)
            .zip(costs)
            .enumerate()
            .map(|(index, ((image_id, image), cost))| {
                let job = StartRequest {
                    image_id: *image_id,
                    batch_id: Some(batch_id),
                    idempotency_key: key(index),
                    ..request.clone()
                };
                self.new_row(&job, &validated, &image.original_filename, cost)
            })
            .collect();
        if !self.insert(&quota, &rows).await? {
            if request.idempotency_key.is_none() {
                return Err(ProcessingError::Internal(anyhow::anyhow!(
                    "a new job's id was taken"
                )));
            }
            // Two requests with one key raced: the other one made the batch.
            return self.replay_batch(&request, image_ids).await;
        }
        self.line_up(&rows).await?;
        self.raise_alerts(request.user_id, &quota).await;
        Ok((
            BatchView {
                id: batch_id,
                jobs: rows,
            },
            false,
        ))
    }

    /// The batch an idempotency key already started (it was counted then).
    async fn replay_batch(
        &self,
        request: &StartRequest,
        image_ids: &[Uuid],
    ) -> Result<(BatchView, bool), ProcessingError> {
        let key = request.idempotency_key.as_deref().unwrap_or_default();
        let mut jobs = Vec::with_capacity(image_ids.len());
        for (index, image_id) in image_ids.iter().enumerate() {
            let existing = self
                .store
                .by_idempotency_key(request.user_id, &format!("{key}#{index}"))
                .await?
                .ok_or(ProcessingError::IdempotencyConflict)?;
            let job = StartRequest {
                image_id: *image_id,
                ..request.clone()
            };
            jobs.push(replay(existing, &job)?.0);
        }
        let id = jobs
            .first()
            .and_then(|job| job.batch_id)
            .ok_or(ProcessingError::IdempotencyConflict)?;
        Ok((BatchView { id, jobs }, true))
    }

    pub async fn batch(&self, user_id: Uuid, batch_id: Uuid) -> Result<BatchView, ProcessingError> {
        let jobs = self.store.of_batch(user_id, batch_id).await?;
        if jobs.is_empty() {
            return Err(ProcessingError::NotFound);
        }
        Ok(BatchView { id: batch_id, jobs })
    }

    /// Cancels the batch's unfinished jobs; returns the batch as it is then, and
    /// how many jobs were cancelled.
    pub async fn cancel_batch(
        &self,
        user_id: Uuid,
        batch_id: Uuid,
    ) -> Result<(BatchView, i32), ProcessingError> {
        let batch = self.batch(user_id, batch_id).await?;
        let mut cancelled = 0;
        for job in &batch.jobs {
            if !job.status.is_final() && self.cancel(user_id, job.id).await.is_ok() {
                cancelled += 1;
            }
        }
        Ok((self.batch(user_id, batch_id).await?, cancelled))
    }

    /// Runs the batch's failed jobs again; returns the batch as it is then, and
    /// the jobs retried.
    pub async fn retry_batch(
        &self,
        user_id: Uuid,
        batch_id: Uuid,
    ) -> Result<(BatchView, Vec<Uuid>), ProcessingError> {
        let batch = self.batch(user_id, batch_id).await?;
        let failed: Vec<Uuid> = batch
            .jobs
            .iter()
            .filter(|job| job.status == Status::Failed)
            .map(|job| job.id)
            .collect();
        let retried = self
            .retry_many(user_id, &failed)
            .await?
            .iter()
            .map(|job| job.id)
            .collect();
        Ok((self.batch(user_id, batch_id).await?, retried))
    }
}
