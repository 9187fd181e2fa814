//! A run's events as they happen: the stored ones after a sequence number, then
//! live ones, with the current step's job progress in between.

use std::{sync::Arc, time::Duration};

use tokio::sync::{broadcast::error::RecvError, mpsc};
use uuid::Uuid;

use super::{Pipelines, RunEvent};
use crate::error::ProcessingError;

impl Pipelines {
    /// The caller's run's events after `after_seq`, then live ones until the run
    /// is completed, failed or cancelled. A "step_progress" event (not stored,
    /// carrying the last stored seq) follows whenever the current step's job
    /// changes. Subscribes before reading the table, so nothing falls between.
    pub async fn events(
        self: &Arc<Self>,
        user_id: Uuid,
        id: Uuid,
        after_seq: i64,
    ) -> Result<mpsc::Receiver<RunEvent>, ProcessingError> {
        self.owned_run(user_id, id).await?;
        let mut live = self.bus.subscribe();
        let (sender, receiver) = mpsc::channel(64);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = after_seq;
            let mut shown: Option<(Uuid, &'static str, Option<f64>)> = None;
            loop {
                let Ok(events) = this.store.events_after(id, last).await else {
                    break;
                };
                let mut finished = false;
                for event in events {
                    last = event.seq;
                    finished = event.run.status.is_final();
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                if finished {
                    return;
                }
                let Ok(Some(run)) = this.store.run(id).await else {
                    return;
                };
                if run.status.is_final() {
                    // Its final event is stored: the next read sends it.
                    continue;
                }
                let job_id = run.current_job();
                if let Some(job_id) = job_id
                    && let Ok(run) = this.with_jobs(run.clone()).await
                    && let Some(job) = run
                        .steps
                        .get(run.current_step)
                        .and_then(|step| step.job.clone())
                    && shown != Some((job_id, job.status, job.progress))
                {
                    shown = Some((job_id, job.status, job.progress));
                    let event = RunEvent {
                        seq: last,
                        at: run.updated_at.max(this.clock.now()),
                        kind: "step_progress".to_owned(),
                        step: Some(run.current_step),
                        run,
                    };
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                // Wait for news of this run or its step's job (or re-read now
                // and then, should a notification be lost).
                let wait = async {
                    loop {
                        match live.recv().await {
                            Ok(published)
                                if published.job_id == id || Some(published.job_id) == job_id =>
                            {
                                return true;
                            }
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => return true,
                            Err(RecvError::Closed) => return false,
                        }
                    }
                };
                tokio::select! {
                    open = wait => if !open { return },
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = sender.closed() => return,
                }
            }
        });
        Ok(receiver)
    }
}
