//! The reconciler: re-queues unfinished jobs the queue has lost (Redis emptied, a
//! crash between writing the row and enqueuing). The row is the truth.

use std::{collections::HashMap, sync::Arc, time::Duration};

use atelier_queue::Queue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Jobs, failure};
use crate::error::ProcessingError;

/// Reconciles every `every` until `shutdown`.
pub fn spawn_reconciler(
    jobs: Arc<Jobs>,
    queue: Arc<dyn Queue>,
    every: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match reconcile(&jobs, queue.as_ref()).await {
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
pub async fn reconcile(jobs: &Jobs, queue: &dyn Queue) -> Result<usize, ProcessingError> {
    let unfinished = jobs.unfinished(10_000).await?;
    // A job the queue gave up on (its worker kept dying) is failed, not revived.
    let dead: HashMap<Uuid, String> = queue
        .dead_letters(10_000)
        .await?
        .into_iter()
        .map(|letter| (letter.job_id, letter.reason))
        .collect();
    let mut restored = 0;
    for row in unfinished {
        if queue.contains(row.id).await? {
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
