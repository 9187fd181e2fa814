//! The processing service's job queue, behind one trait, [`Queue`], with two backends:
//! Redis Streams ([`RedisQueue`], through fred) and in-process ([`MemoryQueue`], the
//! embedded default). Both run the same conformance suite.
//!
//! The job row in the database is the truth; the queue only delivers job ids. Delivery is
//! at least once: a delivery that is not settled within the visibility timeout (and not
//! [extended](Queue::extend)) is delivered again, so the effects of running a job must be
//! idempotent.
//!
//! A job's life in the queue:
//!
//! ```text
//! enqueue ─► waiting ─next─► in flight ─complete──────────► gone
//!    │          ▲  │              │  └─retry/defer─► delayed ─(due)─► waiting
//!    └─delay─► delayed            │  └─retry after max_attempts───► dead letters
//!               parked ◄──────────┘ (user at their cap: parked until one of theirs settles)
//! ```
//!
//! [`Queue::next`] honours, in this order: priorities (high, then normal, then low), the
//! platform-wide bound on deliveries in flight ([`QueueConfig::max_in_flight`], lowered
//! for a while by [`Queue::throttle`]), the optional shared rate limit, and the per-user
//! concurrency cap. A job whose user is at their cap is *parked*: it leaves the line
//! without counting an attempt, so the jobs of other users behind it are delivered, and it
//! is put back at the end of its priority's line when one of that user's jobs in flight
//! settles (completes, is retried, deferred or dead-lettered). Nothing spins on a capped
//! user and nothing is lost.
//!
//! Under the bound each user gets a fair share: a user's cap is at most the bound divided
//! by the number of users with jobs in the queue (rounded up), so one user with 10,000
//! jobs cannot hold every slot while others wait.
//!
//! The bound is what fal limits: how many of the account's requests run at once. When
//! fal answers 429 anyway (the account's limit is lower, or other clients share it), the
//! worker calls [`Queue::throttle`], which halves the effective bound for every worker of
//! every replica (at most once a second), and each job fal accepts calls
//! [`Queue::relieve`], which raises it by `1 / bound` (one slot per bound's worth of
//! successes) back up to `max_in_flight`: additive increase, multiplicative decrease.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use uuid::Uuid;

pub mod memory;
mod metric;
pub mod redis;

pub use memory::MemoryQueue;
pub use redis::RedisQueue;

/// How urgent a job is: the queue delivers every waiting high job before any normal one,
/// and every normal one before any low one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    /// Every priority, most urgent first: the order [`Queue::next`] reads them in.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The lowercase name, as used in Redis keys, tokens and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// 0 for high, 1 for normal, 2 for low.
    fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The priority at `index` (see [`Priority::index`]).
    fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to add to the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueue {
    /// The job row's id: the queue holds each job id at most once.
    pub job_id: Uuid,
    /// The job's owner, whose concurrency cap applies.
    pub user_id: Uuid,
    pub priority: Priority,
    /// Deliver no sooner than this from now (`None`: at once).
    pub delay: Option<Duration>,
}

/// A job handed to a worker by [`Queue::next`]; settle it with [`Queue::complete`],
/// [`Queue::retry`] or [`Queue::defer`], and keep it with [`Queue::extend`] while it runs
/// longer than the visibility timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub job_id: Uuid,
    pub user_id: Uuid,
    pub priority: Priority,
    /// Which attempt this is, from 1. Retries and reclaims (a delivery not settled within
    /// the visibility timeout) count; deferrals and waits behind the user's cap do not.
    pub attempt: u32,
    /// The backend's handle on this delivery (Redis: the stream and entry id).
    pub token: String,
}

/// What [`Queue::retry`] did with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retried {
    /// Back in the queue after `delay`, as the next attempt.
    Scheduled { delay: Duration },
    /// That was the last attempt: the job is in the dead letters and no longer in the
    /// queue. The caller marks the job failed.
    DeadLettered,
}

/// How many jobs are where (see [`Queue::depth`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting high-priority jobs (parked ones included).
    pub high: u64,
    /// Waiting normal-priority jobs (parked ones included).
    pub normal: u64,
    /// Waiting low-priority jobs (parked ones included).
    pub low: u64,
    /// Jobs waiting for a delay to pass (enqueued with a delay, retried or deferred).
    pub delayed: u64,
    /// Jobs delivered and not yet settled.
    pub in_flight: u64,
    /// Dead letters kept (at most about [`QueueConfig::finished_retention`]).
    pub dead: u64,
}

impl QueueDepth {
    /// Waiting jobs of every priority.
    pub fn waiting(&self) -> u64 {
        self.high + self.normal + self.low
    }
}

/// A job that ran out of attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub job_id: Uuid,
    pub user_id: Uuid,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub reason: String,
}

/// How long to wait before a retry: `base × 2^(attempt − 1)`, at most `max`, less a
/// random share of up to `jitter` of it (so retries of jobs that failed together spread
/// out, and the delay never exceeds `max`).
///
/// Written out rather than taken from tokio-retry, whose `ExponentialBackoff::from_millis(b)`
/// grows as `b^n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay after the first attempt fails (before jitter).
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The largest share of the delay taken off at random, from 0 (none) to 1.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max: Duration::from_secs(5 * 60),
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// The delay after attempt `attempt` (from 1) failed, with random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }

    /// The delay after attempt `attempt` (from 1) failed, `unit` (in `[0, 1]`) choosing
    /// the jitter: 0 takes nothing off, 1 takes off the whole `jitter` share.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.max);
        let share = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        full.mul_f64(1.0 - share)
    }
}

/// A rate limit shared by every worker: at most `jobs` deliveries per `per`, as a token
/// bucket (a burst of `jobs`, then one every `per / jobs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Deliveries allowed per `per` (0 is taken as 1).
    pub jobs: u32,
    /// The window (at least 1 ms).
    pub per: Duration,
}

impl RateLimit {
    /// `jobs` deliveries per minute.
    pub fn per_minute(jobs: u32) -> Self {
        Self {
            jobs,
            per: Duration::from_secs(60),
        }
    }

    /// Milliseconds per window, at least 1.
    fn per_ms(&self) -> u64 {
        millis(self.per).max(1)
    }

    /// Deliveries per window, at least 1.
    fn jobs(&self) -> u32 {
        self.jobs.max(1)
    }
}

/// How the queue behaves; the same for both backends.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    /// Attempts before a job goes to the dead letters (0 is taken as 1).
    pub max_attempts: u32,
    /// The delay before each retry.
    pub retry: Backoff,
    /// How long a delivery may go unsettled (and not extended) before it is delivered
    /// again, to another worker, as the next attempt.
    pub visibility_timeout: Duration,
    /// The platform-wide bound on deliveries in flight, shared by every worker of the
    /// queue (on Redis, by every replica); `None`: unbounded. The processing service
    /// sets it to how many jobs may run at fal at once (`FAL_MAX_CONCURRENCY`).
    pub max_in_flight: Option<u32>,
    /// A rate limit on deliveries, shared by every worker of the queue; off by default:
    /// fal limits how many requests run at once, not how many start per minute.
    pub rate_limit: Option<RateLimit>,
    /// How many dead letters to keep (Redis trims its stream to about this many).
    pub finished_retention: usize,
    /// How often an idle [`Queue::next`] looks again when nothing wakes it. Both backends
    /// are woken as soon as something changes (Redis: through a pub/sub channel), so
    /// this only bounds the wait should a wake-up be lost (e.g. a Redis reconnection).
    pub poll_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry: Backoff::default(),
            visibility_timeout: Duration::from_secs(5 * 60),
            max_in_flight: None,
            rate_limit: None,
            finished_retention: 10_000,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl QueueConfig {
    fn max_attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    fn visibility_ms(&self) -> u64 {
        millis(self.visibility_timeout).max(1)
    }

    /// The bound as the scripts take it: 0 for none, at least 1 otherwise.
    fn max_in_flight(&self) -> u32 {
        self.max_in_flight.map_or(0, |max| max.max(1))
    }
}

/// How the effective bound falls when fal answers 429: halved...
pub(crate) const THROTTLE_FACTOR: f64 = 0.5;
/// ...at most once per this long, so the 429s of one burst (every request in flight
/// refused at once) count as one.
pub(crate) const THROTTLE_COOLDOWN: Duration = Duration::from_secs(1);

/// The bound on deliveries in flight, now (see [`Queue::concurrency`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Concurrency {
    /// Deliveries in flight, over every worker.
    pub in_flight: u64,
    /// The effective bound: [`QueueConfig::max_in_flight`], or less after a
    /// [`Queue::throttle`]; `None` when unbounded.
    pub limit: Option<u32>,
    /// [`QueueConfig::max_in_flight`].
    pub max: Option<u32>,
}

/// The effective bound after a 429 (`current`, at most `max`): halved, at least 1.
pub(crate) fn throttled(current: f64) -> f64 {
    (current * THROTTLE_FACTOR).floor().max(1.0)
}

/// The effective bound after a success: one more slot per `current` successes, at most
/// `max`.
pub(crate) fn relieved(current: f64, max: f64) -> f64 {
    (current + 1.0 / current.max(1.0)).min(max)
}

/// A user's cap under the bound `limit` (0: none) with `users` users holding jobs in
/// the queue: their own `cap`, at most an even share of the bound (rounded up).
pub(crate) fn fair_share(cap: usize, limit: u64, users: u64) -> usize {
    if limit == 0 {
        return cap.max(1);
    }
    let share = limit.div_ceil(users.max(1));
    cap.min(usize::try_from(share).unwrap_or(usize::MAX)).max(1)
}

/// The per-user concurrency cap (by subscription tier): how many of the user's jobs may
/// be in flight at once. 0 is taken as 1, so every user can run something.
pub type UserLimit = Arc<dyn Fn(Uuid) -> usize + Send + Sync>;

/// What can go wrong with the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The delivery is no longer this worker's: it was settled already, or it went unsettled
    /// past the visibility timeout and was delivered again.
    #[error(
        "the delivery is no longer held (settled, or redelivered after the visibility timeout)"
    )]
    Lost,
    /// The delivery's token was not made by this backend.
    #[error("invalid delivery token {0:?}")]
    InvalidToken(String),
    /// Redis answered something the queue did not write.
    #[error("unexpected answer from redis: {0}")]
    Protocol(String),
}

/// The job queue: [`RedisQueue`] or [`MemoryQueue`].
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds a job; enqueuing a job id that is already waiting, delayed or in flight is a
    /// no-op (dedupe) and returns false.
    async fn enqueue(&self, job: Enqueue) -> Result<bool, QueueError>;

    /// Adds several jobs at once (one round trip on Redis); what [`Queue::enqueue`]
    /// returns for each, in order.
    async fn enqueue_many(&self, jobs: &[Enqueue]) -> Result<Vec<bool>, QueueError>;

    /// Waits up to `wait` for the next job this worker (`consumer`, a name unique to the
    /// worker) may run, honouring in order: priorities (high, then normal, then low), the
    /// bound on deliveries in flight, the rate limit if any, and the per-user concurrency
    /// cap (`user_limit(user_id)` jobs in flight at most, and at most a fair share of the
    /// bound; a capped user's jobs are parked, not lost, so other users are not
    /// starved). A delivery unsettled past the visibility timeout is delivered again here
    /// as the next attempt, or dead-lettered when that was the last. `None` on timeout.
    async fn next(&self, consumer: &str, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        Ok(self.next_many(consumer, 1, wait).await?.pop())
    }

    /// Like [`Queue::next`], up to `max` deliveries at once (at least one, unless `wait`
    /// passes first): what a worker with `max` free slots takes in one round trip.
    async fn next_many(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Finished (done, failed for good, or cancelled): removed for good, releasing the
    /// user's slot. Completing a delivery already settled does nothing.
    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.complete_many(std::slice::from_ref(delivery)).await
    }

    /// [`Queue::complete`] for several deliveries at once (one round trip on Redis).
    async fn complete_many(&self, deliveries: &[Delivery]) -> Result<(), QueueError>;

    /// Try again later: back into the queue after [`QueueConfig::retry`]'s delay for this
    /// attempt, as attempt + 1; after [`QueueConfig::max_attempts`] it goes to the dead
    /// letters instead and this returns [`Retried::DeadLettered`]. [`QueueError::Lost`]
    /// when the delivery is no longer held.
    async fn retry(&self, delivery: &Delivery, reason: &str) -> Result<Retried, QueueError>;

    /// Put back after `delay` without counting an attempt (e.g. fal's circuit breaker is
    /// open: the job waits, it does not fail). [`QueueError::Lost`] when the delivery is no
    /// longer held.
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError>;

    /// Keeps an in-flight delivery from being reclaimed for another visibility timeout
    /// (heartbeat for long jobs). [`QueueError::Lost`] when the delivery is no longer held:
    /// the worker should stop, another has the job.
    async fn extend(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Removes a job wherever it waits (waiting, parked, delayed); true if it was found.
    /// In flight: returns false (the worker handles cancellation).
    async fn remove(&self, job_id: Uuid) -> Result<bool, QueueError>;

    /// Whether the job id is anywhere in the queue (waiting, delayed or in flight); the
    /// reconciler re-enqueues jobs that are not.
    async fn contains(&self, job_id: Uuid) -> Result<bool, QueueError>;

    /// Position among waiting jobs (0 = next), for display; `None` when not waiting. For a
    /// parked job (its user at their cap) it is an estimate: every job waiting ahead of it
    /// in its and higher priorities, then the user's own parked jobs before it.
    async fn position(&self, job_id: Uuid) -> Result<Option<u64>, QueueError>;

    /// How many jobs are where; also sets the `atelier_queue_depth{priority}` gauges.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;

    /// The most recent dead letters, newest first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Job `job_id`'s dead letter, if it has one (the newest, should it have several).
    async fn dead_letter(&self, job_id: Uuid) -> Result<Option<DeadLetter>, QueueError>;

    /// Takes job `job_id` out of the dead letters (every letter of it): the newest
    /// letter, or `None` when it had none. Whoever gets `Some` owns what follows
    /// (an administrator's retry or discard), so two at once do not both act.
    async fn discard_dead_letter(&self, job_id: Uuid) -> Result<Option<DeadLetter>, QueueError>;

    /// Puts a dead-lettered job back in the queue as a new job (its attempts
    /// counted from 1): false when `job.job_id` is not a dead letter.
    async fn retry_dead_letter(&self, job: Enqueue) -> Result<bool, QueueError> {
        if self.discard_dead_letter(job.job_id).await?.is_none() {
            return Ok(false);
        }
        self.enqueue(job).await?;
        Ok(true)
    }

    /// fal refused a job for its concurrency (429): halves the effective bound on
    /// deliveries in flight for every worker (at most once per second, so one burst of
    /// refusals counts once), down to 1. A no-op without [`QueueConfig::max_in_flight`].
    /// The caller defers the refused job ([`Queue::defer`]: no attempt is spent).
    async fn throttle(&self) -> Result<Concurrency, QueueError>;

    /// fal accepted a job: raises the effective bound by `1 / bound`, back up to
    /// [`QueueConfig::max_in_flight`]. Cheap to skip while [`Concurrency::limit`] is at
    /// the max.
    async fn relieve(&self) -> Result<Concurrency, QueueError>;

    /// Deliveries in flight and the effective bound; also sets the
    /// `atelier_queue_in_flight_limit` and `atelier_queue_in_flight` gauges.
    async fn concurrency(&self) -> Result<Concurrency, QueueError>;
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_up_to_max() {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
            jitter: 0.25,
        };
        let schedule: Vec<u64> = (1..=10)
            .map(|attempt| backoff.delay_with(attempt, 0.0).as_secs())
            .collect();
        assert_eq!(schedule, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff.delay_with(u32::MAX, 0.0), Duration::from_secs(300));
    }

    #[test]
    fn jitter_takes_off_at_most_its_share() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay_with(1, 1.0), Duration::from_millis(1500));
        for _ in 0..100 {
            let delay = backoff.delay(3);
            assert!(delay <= Duration::from_secs(8) && delay >= Duration::from_secs(6));
        }
    }

    #[test]
    fn the_bound_halves_and_grows_back_one_slot_per_bound_of_successes() {
        assert_eq!(throttled(40.0), 20.0);
        assert_eq!(throttled(3.0), 1.0);
        assert_eq!(throttled(1.0), 1.0, "never below one");
        let mut bound = 4.0;
        let mut successes = 0;
        while bound < 5.0 {
            bound = relieved(bound, 40.0);
            successes += 1;
        }
        assert_eq!(successes, 5);
        assert_eq!(relieved(39.99, 40.0), 40.0, "never above the max");
    }

    #[test]
    fn a_fair_share_is_the_bound_split_evenly_rounded_up() {
        assert_eq!(fair_share(10, 40, 4), 10);
        assert_eq!(fair_share(10, 40, 8), 5);
        assert_eq!(fair_share(10, 4, 3), 2);
        assert_eq!(fair_share(2, 40, 1), 2, "never above the user's own cap");
        assert_eq!(fair_share(5, 2, 100), 1, "never below one");
        assert_eq!(fair_share(5, 0, 100), 5, "no bound, no share");
        assert_eq!(fair_share(0, 0, 1), 1);
    }

    #[test]
    fn priorities_round_trip_through_their_index() {
        for priority in Priority::ALL {
            assert_eq!(Priority::from_index(priority.index()), Some(priority));
        }
        assert_eq!(Priority::from_index(3), None);
    }
}
