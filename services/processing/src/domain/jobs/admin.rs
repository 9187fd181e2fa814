//! What administrators do about jobs the queue gave up on (dead letters), and
//! what they see of failures and of fal: retried, a dead letter runs again;
//! discarded, its job stays failed with the administrator's reason.

use async_trait::async_trait;
use atelier_common::audit::AuditRecord;
use atelier_queue::{Concurrency, DeadLetter, QueueDepth};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Jobs;
use crate::{
    domain::{
        failure,
        job::{Job, Status},
    },
    error::ProcessingError,
};

/// The platform's audit log (kept by the auth service).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `record`; an error means the action must not happen.
    async fn record(&self, record: AuditRecord) -> Result<(), ProcessingError>;
}

/// A dead letter with its job (`None` when the job was deleted since).
#[derive(Clone, Debug)]
pub struct Inspected {
    pub letter: DeadLetter,
    pub job: Option<Job>,
}

/// Failures of one error type within a window.
#[derive(Clone, Debug)]
pub struct FailureGroup {
    pub error_type: String,
    pub count: u64,
    pub last_at: Option<OffsetDateTime>,
    /// The most recent first.
    pub examples: Vec<Job>,
}

/// The error type a failure without a code is grouped under.
const UNKNOWN: &str = "unknown";

/// Most dead letters listed at once.
pub const MAX_DEAD_LETTERS: usize = 500;

impl Jobs {
    /// The queue's depth and its bound on jobs in flight.
    pub async fn queue_state(&self) -> Result<(QueueDepth, Concurrency), ProcessingError> {
        Ok((self.queue.depth().await?, self.queue.concurrency().await?))
    }

    /// The breaker state of every fal host called so far.
    pub fn breakers(&self) -> Vec<(String, &'static str)> {
        self.fal
            .breaker_states()
            .into_iter()
            .map(|(host, state)| (host, state.as_str()))
            .collect()
    }

    /// The most recent dead letters with their jobs, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<Inspected>, ProcessingError> {
        let letters = self.queue.dead_letters(limit.min(MAX_DEAD_LETTERS)).await?;
        let mut inspected = Vec::with_capacity(letters.len());
        for letter in letters {
            let job = self.store.by_id(letter.job_id).await?;
            inspected.push(Inspected { letter, job });
        }
        Ok(inspected)
    }

    /// Job `id`'s dead letter with the job; NOT_FOUND when it has none.
    pub async fn dead_letter(&self, id: Uuid) -> Result<Inspected, ProcessingError> {
        let letter = self
            .queue
            .dead_letter(id)
            .await?
            .ok_or(ProcessingError::NotFound)?;
        let job = self.store.by_id(id).await?;
        Ok(Inspected { letter, job })
    }

    /// Runs dead-lettered job `id` again: back to pending and into the queue,
    /// its attempts counted afresh, out of the dead letters. `record` (the
    /// audit entry) is written first; when it cannot be, nothing changes.
    pub async fn retry_dead_letter(
        &self,
        id: Uuid,
        audit: &dyn AuditLog,
        record: AuditRecord,
    ) -> Result<Job, ProcessingError> {
        let Inspected { letter, job } = self.dead_letter(id).await?;
        let Some(job) = job else {
            // Its job is gone (the account was deleted): nothing to run.
            self.queue.discard_dead_letter(id).await?;
            return Err(ProcessingError::NotFound);
        };
        audit.record(record).await?;
        if !Status::RETRYABLE.contains(&job.status) {
            // Dead-lettered while its row still said it ran (a worker that
            // stopped on its last attempt): it failed, as far as anyone knows.
            self.fail(id, "attempts_exhausted", failure::GAVE_UP, None)
                .await;
        }
        let retried = self
            .retry_many(letter.user_id, &[id])
            .await?
            .pop()
            .ok_or(ProcessingError::NotRetryable(job.status.as_str()))?;
        self.queue.discard_dead_letter(id).await?;
        let _ = self
            .note(
                id,
                "dead_letter_retried",
                json!({"attempts": letter.attempts, "reason": letter.reason}),
            )
            .await;
        tracing::info!(job_id = %id, "dead letter retried");
        Ok(retried)
    }

    /// Gives dead-lettered job `id` up: out of the dead letters, failed (if it
    /// was not already) with `reason`. `record` as for
    /// [`Jobs::retry_dead_letter`].
    pub async fn discard_dead_letter(
        &self,
        id: Uuid,
        reason: &str,
        audit: &dyn AuditLog,
        record: AuditRecord,
    ) -> Result<Option<Job>, ProcessingError> {
        self.dead_letter(id).await?;
        audit.record(record).await?;
        if self.queue.discard_dead_letter(id).await?.is_none() {
            // Another administrator took it first.
            return Err(ProcessingError::NotFound);
        }
        self.fail(id, "discarded", reason, None).await;
        let _ = self
            .note(id, "dead_letter_discarded", json!({"reason": reason}))
            .await;
        tracing::info!(job_id = %id, reason, "dead letter discarded");
        Ok(self.store.by_id(id).await?)
    }

    /// Jobs failed at or after `since`, by error type, most frequent first,
    /// with up to `examples` recent ones each.
    pub async fn failures_since(
        &self,
        since: OffsetDateTime,
        examples: u64,
    ) -> Result<Vec<FailureGroup>, ProcessingError> {
        let mut groups = Vec::new();
        for count in self.store.failure_counts(since).await? {
            let examples = self
                .store
                .failed_with(count.error_code.as_deref(), since, examples)
                .await?;
            groups.push(FailureGroup {
                error_type: count.error_code.unwrap_or_else(|| UNKNOWN.to_owned()),
                count: u64::try_from(count.count).unwrap_or_default(),
                last_at: count.last_at,
                examples,
            });
        }
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.error_type.cmp(&b.error_type))
        });
        Ok(groups)
    }

    /// The platform's clock, for the default window.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
