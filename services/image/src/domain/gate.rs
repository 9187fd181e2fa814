//! The decode gate: at most a configured number of image decodes run at once
//! (`MAX_PARALLEL_DECODES`), each on the blocking pool; the others wait their turn,
//! so a burst of uploads cannot hold many decoders' memory at the same time.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

pub struct DecodeGate {
    permits: Semaphore,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl DecodeGate {
    /// A gate letting `at_once` decodes through together (at least one).
    pub fn new(at_once: usize) -> Self {
        Self {
            permits: Semaphore::new(at_once.max(1)),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        }
    }

    /// Runs the blocking `decode` once a place is free, and returns its result.
    pub async fn run<T, F>(&self, decode: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let waiting = metrics::gauge!("atelier_image_decodes_waiting");
        waiting.increment(1.0);
        let permit = self.permits.acquire().await;
        waiting.decrement(1.0);
        let _permit = permit.map_err(|_| anyhow::anyhow!("the decode gate is closed"))?;
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(running, Ordering::SeqCst);
        let gauge = metrics::gauge!("atelier_image_decodes_running");
        gauge.increment(1.0);
        let decoded = tokio::task::spawn_blocking(decode).await;
        gauge.decrement(1.0);
        self.running.fetch_sub(1, Ordering::SeqCst);
        decoded.map_err(|err| anyhow::anyhow!("decoding an image: {err}"))
    }

    /// The most decodes that ran at once so far.
    pub fn most_at_once(&self) -> usize {
        self.most_at_once.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decodes_beyond_the_gate_wait_their_turn() {
        let gate = Arc::new(DecodeGate::new(2));
        let decodes: Vec<_> = (0..8)
            .map(|i| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    gate.run(move || {
                        std::thread::sleep(Duration::from_millis(30));
                        i
                    })
                    .await
                })
            })
            .collect();
        let mut done = Vec::new();
        for decode in decodes {
            done.push(decode.await.expect("task").expect("decode"));
        }
        assert_eq!(done, (0..8).collect::<Vec<_>>(), "every decode ran");
        assert_eq!(gate.most_at_once(), 2, "never more than the gate allows");
    }
}
