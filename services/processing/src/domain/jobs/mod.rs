//! The job lifecycle: `pending → queued → submitted → processing → completed |
//! failed | cancelled`. The row is the truth; every change appends an event (with
//! the next sequence number) in the same transaction and is then published.

pub mod admin;
mod batches;
mod events;
mod start;
mod status;

use std::sync::Arc;

use atelier_common::Clock;
use atelier_fal::FalClient;
use atelier_queue::Queue;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use batches::BatchView;
pub use start::StartRequest;
pub use status::Claim;

use super::{
    Quota, Quotas,
    job::{Job, JobFilter, Status},
    spend::Spend,
};
use crate::{
    error::ProcessingError,
    events::Bus,
    peers::{ImageDirectory, WorkflowCatalogue},
    store::{JobRef, Store},
};

/// The services jobs are checked against when they start.
#[derive(Clone)]
pub struct Peers {
    pub images: Arc<dyn ImageDirectory>,
    pub workflows: Arc<dyn WorkflowCatalogue>,
}

pub struct Jobs {
    store: Store,
    queue: Arc<dyn Queue>,
    bus: Bus,
    clock: Arc<dyn Clock>,
    images: Arc<dyn ImageDirectory>,
    workflows: Arc<dyn WorkflowCatalogue>,
    quotas: Arc<Quotas>,
    /// Told when a job running there is cancelled.
    fal: FalClient,
    spend: Arc<Spend>,
}

impl Jobs {
    pub fn new(
        store: Store,
        queue: Arc<dyn Queue>,
        bus: Bus,
        clock: Arc<dyn Clock>,
        peers: Peers,
        quotas: Arc<Quotas>,
        fal: FalClient,
    ) -> Arc<Self> {
        let spend = Arc::new(Spend::new(store.spend(), clock.clone(), quotas.clone()));
        Arc::new(Self {
            store,
            queue,
            bus,
            clock,
            images: peers.images,
            workflows: peers.workflows,
            quotas,
            fal,
            spend,
        })
    }

    /// Spend, budgets and alerts.
    pub fn spend(&self) -> &Arc<Spend> {
        &self.spend
    }

    /// Raises the budget alerts a start reached; a failure is logged, the start
    /// stands.
    async fn raise_alerts(&self, user_id: Uuid, quota: &Quota) {
        if let Err(err) = self.spend.raise_alerts(user_id, quota).await {
            tracing::warn!(%user_id, error = %err, "budget alerts not checked");
        }
    }

    /// Applies a state change and publishes its event.
    async fn transition(
        &self,
        job: impl Into<JobRef<'_>>,
        from: &[Status],
        change: impl Fn(&mut Job),
        event: (&str, Value),
    ) -> Result<Option<Job>, ProcessingError> {
        let changed = self
            .store
            .transition(job, from, change, Some(event), self.clock.now())
            .await?;
        Ok(match changed {
            Some((row, event)) => {
                if let Some(event) = event {
                    self.bus.publish(event.job_id, event.seq).await;
                }
                Some(row)
            }
            None => None,
        })
    }

    /// Appends an event that is not a state change, and publishes it.
    pub(crate) async fn note(
        &self,
        id: Uuid,
        kind: &str,
        data: Value,
    ) -> Result<(), ProcessingError> {
        let event = self
            .store
            .append_event(id, self.clock.now(), kind, data)
            .await?;
        self.bus.publish(event.job_id, event.seq).await;
        Ok(())
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<Job, ProcessingError> {
        self.store
            .owned(user_id, id)
            .await?
            .ok_or(ProcessingError::NotFound)
    }

    /// Job `id`, whoever's it is; `None` when it is not there.
    pub(crate) async fn find(&self, id: Uuid) -> Result<Option<Job>, ProcessingError> {
        Ok(self.store.by_id(id).await?)
    }

    /// The job fal request `request_id` runs.
    pub(crate) async fn of_fal_request(
        &self,
        request_id: &str,
    ) -> Result<Option<Job>, ProcessingError> {
        Ok(self.store.by_fal_request(request_id).await?)
    }

    /// Whether job `id` is there and `user_id`'s.
    pub async fn exists(&self, user_id: Uuid, id: Uuid) -> Result<bool, ProcessingError> {
        Ok(self
            .store
            .by_id(id)
            .await?
            .is_some_and(|job| job.user_id == user_id))
    }

    pub async fn list(
        &self,
        user_id: Uuid,
        filter: &JobFilter,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<Job>, Option<Uuid>), ProcessingError> {
        let mut rows = self
            .store
            .page(user_id, filter, after, page_size + 1)
            .await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|row| row.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Where job `id` waits in the queue; `None` when it does not (any more), or
    /// the queue cannot say.
    pub async fn queue_position(&self, id: Uuid) -> Option<u64> {
        match self.queue.position(id).await {
            Ok(position) => position,
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "cannot read a job's queue position");
                None
            }
        }
    }

    /// Runs (starts and retries) of `user_id`'s jobs since `since`, and how many of
    /// their jobs are unfinished.
    pub async fn usage(
        &self,
        user_id: Uuid,
        since: OffsetDateTime,
    ) -> Result<(u64, u64), ProcessingError> {
        Ok(self
            .store
            .usage(user_id, since, &Status::UNFINISHED)
            .await?)
    }

    /// Deletes every job of `user_id`, out of the queue too; returns how many.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<usize, ProcessingError> {
        let deleted = self.store.delete_user(user_id).await?;
        for id in &deleted {
            let _ = self.queue.remove(*id).await;
        }
        Ok(deleted.len())
    }

    /// Unfinished jobs, oldest first, at most `limit` (the reconciler's view).
    pub(crate) async fn unfinished(&self, limit: u64) -> Result<Vec<Job>, ProcessingError> {
        Ok(self.store.with_status(&Status::UNFINISHED, limit).await?)
    }
}
