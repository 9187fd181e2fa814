//! The decode gate: at most a configured number of image decodes work at once
//! (`MAX_PARALLEL_DECODES`), each on the blocking pool; the others wait their turn,
//! so a burst of uploads cannot hold many decoders' memory, or every core, at the
//! same time.
//!
//! A decode of a file at hand holds its place from start to end ([`DecodeGate::run`]).
//! A decode that follows an upload as its bytes arrive ([`DecodeGate::spawn`]) holds
//! its place only while it works, and gives it back while it waits for the network:
//! a slow client never keeps others' decodes waiting. Such decodes keep little state
//! (a few rows of a PNG, a JPEG scaled down in the DCT), so the ones waiting cost
//! little memory.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    runtime::Handle,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

pub struct DecodeGate {
    permits: Arc<Semaphore>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl Counts {
    fn started(&self) {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(running, Ordering::SeqCst);
        metrics::gauge!("atelier_image_decodes_running").increment(1.0);
    }

    fn stopped(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("atelier_image_decodes_running").decrement(1.0);
    }
}

impl DecodeGate {
    /// A gate letting `at_once` decodes through together (at least one).
    pub fn new(at_once: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
            counts: Arc::default(),
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
        self.counts.started();
        let decoded = tokio::task::spawn_blocking(decode).await;
        self.counts.stopped();
        decoded.map_err(|err| anyhow::anyhow!("decoding an image: {err}"))
    }

    /// Starts the blocking `decode` on the blocking pool at once, with a [`Slot`] it
    /// holds while it works and gives back while it waits.
    pub fn spawn<T, F>(&self, decode: F) -> JoinHandle<T>
    where
        F: FnOnce(&mut Slot) -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut slot = Slot {
            permits: Arc::clone(&self.permits),
            counts: Arc::clone(&self.counts),
            permit: None,
            runtime: Handle::current(),
        };
        tokio::task::spawn_blocking(move || decode(&mut slot))
    }

    /// The most decodes that worked at once so far.
    pub fn most_at_once(&self) -> usize {
        self.counts.most_at_once.load(Ordering::SeqCst)
    }
}

/// A decode's place in the gate, held or not. Used from the blocking pool only.
pub struct Slot {
    permits: Arc<Semaphore>,
    counts: Arc<Counts>,
    permit: Option<OwnedSemaphorePermit>,
    runtime: Handle,
}

impl Slot {
    /// Takes a place, waiting for one to be free; does nothing when held already.
    pub fn hold(&mut self) {
        if self.permit.is_some() {
            return;
        }
        let waiting = metrics::gauge!("atelier_image_decodes_waiting");
        waiting.increment(1.0);
        // The semaphore is never closed, so this always gets a permit.
        self.permit = self
            .runtime
            .block_on(Arc::clone(&self.permits).acquire_owned())
            .ok();
        waiting.decrement(1.0);
        if self.permit.is_some() {
            self.counts.started();
        }
    }

    /// Gives the place back, for another decode to take while this one waits.
    pub fn release(&mut self) {
        if let Some(permit) = self.permit.take() {
            // Counted out before the place is free for another.
            self.counts.stopped();
            drop(permit);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streaming_decodes_give_their_place_back_while_they_wait() {
        let gate = DecodeGate::new(1);
        // Six decodes that work a little, then wait (for the network): each gets to
        // wait only if those waiting already gave the one place back.
        let (go, wait) = tokio::sync::watch::channel(false);
        let waiting = Arc::new(AtomicUsize::new(0));
        let decodes: Vec<_> = (0..6)
            .map(|i| {
                let mut wait = wait.clone();
                let waiting = Arc::clone(&waiting);
                gate.spawn(move |slot| {
                    slot.hold();
                    std::thread::sleep(Duration::from_millis(5));
                    slot.release();
                    waiting.fetch_add(1, Ordering::SeqCst);
                    Handle::current()
                        .block_on(wait.wait_for(|go| *go))
                        .expect("the test goes on");
                    slot.hold();
                    std::thread::sleep(Duration::from_millis(5));
                    i
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), async {
            while waiting.load(Ordering::SeqCst) < 6 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every decode waits at once");
        go.send(true).expect("decodes listen");
        let mut done = Vec::new();
        for decode in decodes {
            done.push(decode.await.expect("decode"));
        }
        assert_eq!(done, (0..6).collect::<Vec<_>>(), "every decode ran");
        assert_eq!(gate.most_at_once(), 1, "never more than the gate allows");
        assert_eq!(
            gate.permits.available_permits(),
            1,
            "every place given back"
        );
    }
}
