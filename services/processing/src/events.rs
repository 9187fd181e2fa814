//! Job events fan out to every replica: an in-process broadcast, fed by Redis
//! pub/sub when Redis is configured. Events are also rows (`job_events`), so a
//! subscriber that falls behind or reconnects re-reads what it missed.

use std::sync::Arc;

use atelier_common::redis::Redis;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use uuid::Uuid;

/// The channel every replica publishes job events on.
const CHANNEL: &str = atelier_common::job_changes::CHANNEL;
const CAPACITY: usize = 4096;

/// What travels between replicas: enough to know whose event it is and where.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub job_id: Uuid,
    pub seq: i64,
}

#[derive(Clone)]
pub struct Bus {
    local: broadcast::Sender<Published>,
    redis: Option<Arc<Redis>>,
}

impl Bus {
    /// A bus for one process only.
    pub fn local() -> Self {
        Self {
            local: broadcast::channel(CAPACITY).0,
            redis: None,
        }
    }

    /// A bus shared by every replica through Redis pub/sub.
    pub async fn redis(redis: Redis) -> anyhow::Result<Self> {
        let local = broadcast::channel(CAPACITY).0;
        let subscriber = redis.client.clone_new();
        subscriber.init().await?;
        let channel = redis.key(CHANNEL);
        subscriber.subscribe(channel.clone()).await?;
        let mut messages = subscriber.message_rx();
        let forward = local.clone();
        tokio::spawn(async move {
            // Keeps the subscriber client alive as long as the forwarding runs.
            let _subscriber = subscriber;
            while let Ok(message) = messages.recv().await {
                let Some(text) = message.value.as_str() else {
                    continue;
                };
                if let Ok(published) = serde_json::from_str::<Published>(&text) {
                    let _ = forward.send(published);
                }
            }
        });
        Ok(Self {
            local,
            redis: Some(Arc::new(redis)),
        })
    }

    /// Tells every subscriber, on every replica, that event `seq` of job `job_id`
    /// was stored.
    pub async fn publish(&self, job_id: Uuid, seq: i64) {
        let published = Published { job_id, seq };
        // A gateway in this process drops its cached view of the job at once.
        atelier_common::job_changes::announce_local(job_id);
        match &self.redis {
            Some(redis) => {
                let text = serde_json::to_string(&published).unwrap_or_default();
                if let Err(err) = redis
                    .client
                    .publish::<i64, _, _>(redis.key(CHANNEL), text)
                    .await
                {
                    tracing::warn!(error = %err, "cannot publish a job event; subscribers catch up from the table");
                    let _ = self.local.send(published);
                }
            }
            None => {
                let _ = self.local.send(published);
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.local.subscribe()
    }
}
