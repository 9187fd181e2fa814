//! A job's history: its log lines, and its events as they happen.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use uuid::Uuid;

use super::Jobs;
use crate::{domain::job::Event, error::ProcessingError};

impl Jobs {
    /// The caller's job's logs, oldest first.
    pub async fn logs(&self, id: Uuid) -> Result<Vec<Value>, ProcessingError> {
        Ok(self
            .store
            .events_after(id, 0)
            .await?
            .into_iter()
            .filter(|event| event.kind == "log")
            .flat_map(|event| event.data["logs"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// How many log lines were recorded for fal request `request_id` of job `id`:
    /// those after the event that stored the request id.
    pub(crate) async fn logs_recorded_for(
        &self,
        id: Uuid,
        request_id: &str,
    ) -> Result<usize, ProcessingError> {
        let events = self.store.events_after(id, 0).await?;
        let since = events
            .iter()
            .rposition(|event| event.data["fal_request_id"].as_str() == Some(request_id))
            .map_or(0, |at| at + 1);
        Ok(events[since..]
            .iter()
            .filter(|event| event.kind == "log")
            .map(|event| event.data["logs"].as_array().map_or(0, Vec::len))
            .sum())
    }

    /// The caller's job's events after `after_seq`, then live ones until the job
    /// is finished. Subscribes before reading the table, so nothing falls between.
    pub async fn events(
        self: &Arc<Self>,
        user_id: Uuid,
        id: Uuid,
        after_seq: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Event>, ProcessingError> {
        self.get(user_id, id).await?;
        let mut live = self.bus.subscribe();
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = after_seq;
            loop {
                let Ok(events) = this.store.events_after(id, last).await else {
                    break;
                };
                // Whether the job is finished is its latest status, not any status
                // in the batch: a retried job's history holds an earlier failure.
                let mut finished = false;
                for event in events {
                    last = event.seq;
                    if event.kind == "status_changed" {
                        finished = event.is_final();
                    }
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                if finished {
                    return;
                }
                // Wait for news of this job (or a periodic re-read, should a
                // notification be lost).
                let wait = async {
                    loop {
                        match live.recv().await {
                            Ok(published) if published.job_id == id && published.seq > last => {
                                return true;
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                return true;
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
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
