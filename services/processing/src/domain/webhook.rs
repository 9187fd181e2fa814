//! fal's webhooks, once verified: the outcome of a request, applied to its job
//! once however often fal delivers it.

use std::sync::Arc;

use atelier_fal::webhook::{WebhookEvent, WebhookStatus};

use super::{Jobs, failure, outcome::Outcome, results::Results};
use crate::error::ProcessingError;

/// What a webhook did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// It finished its job.
    Applied,
    /// Its job had finished already (fal redelivers).
    Duplicate,
    /// It names no job of this platform, or the worker watching the request
    /// finishes the job.
    Ignored,
}

#[derive(Clone)]
pub struct Webhooks {
    jobs: Arc<Jobs>,
    results: Results,
}

impl Webhooks {
    pub fn new(jobs: Arc<Jobs>, results: Results) -> Self {
        Self { jobs, results }
    }

    /// A verified fal webhook: finishes the job it names, once. A delivery for a
    /// job already finished (fal redelivers up to 10 times) is a duplicate.
    pub async fn apply(&self, event: WebhookEvent) -> Result<WebhookOutcome, ProcessingError> {
        let Some(row) = self.jobs.of_fal_request(&event.request_id).await? else {
            return Ok(WebhookOutcome::Ignored);
        };
        if row.status.is_final() {
            return Ok(WebhookOutcome::Duplicate);
        }
        match event.status {
            WebhookStatus::Ok => match self.results.store(&row, &event.payload).await {
                Outcome::Done => {}
                Outcome::Fail(failure) => self.jobs.fail_with(row.id, failure).await,
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
