//! Announcements that a job changed, for whoever keeps job state in memory (the
//! gateway's status cache). The processing service publishes every stored job event
//! on the Redis channel [`CHANNEL`] (under the platform's prefix) when `REDIS_URL` is
//! set, and always within its own process here, so a gateway in the same process (the
//! embedded default) hears it without Redis.

use std::sync::LazyLock;

use tokio::sync::broadcast;
use uuid::Uuid;

/// The Redis channel job events are published on: JSON `{"job_id": ..., "seq": ...}`.
pub const CHANNEL: &str = "job-events";

static LOCAL: LazyLock<broadcast::Sender<Uuid>> = LazyLock::new(|| broadcast::channel(4096).0);

/// Tells this process's listeners that job `job_id` changed.
pub fn announce_local(job_id: Uuid) {
    // Nobody listening is fine: no cache to drop.
    let _ = LOCAL.send(job_id);
}

/// This process's announcements from now on. A receiver that lags must assume
/// every job changed.
pub fn subscribe_local() -> broadcast::Receiver<Uuid> {
    LOCAL.subscribe()
}
