//! The in-process queue: the embedded default, for one process. The same semantics as
//! the Redis queue over structures behind one lock: a line per priority, a heap of
//! delayed jobs, jobs in flight with their visibility deadlines (reclaimed by
//! [`Queue::next`]), each user's parked jobs, running count and jobs in the queue (for
//! the fair share), the effective bound on deliveries in flight, a token bucket, and the
//! last dead letters. Waiting workers are woken when something changes.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    pin::pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use tokio::{
    sync::{Mutex, Notify},
    time::Instant,
};
use uuid::Uuid;

use crate::{
    Concurrency, DeadLetter, Delivery, Enqueue, Priority, Queue, QueueConfig, QueueDepth,
    QueueError, Retried, THROTTLE_COOLDOWN, UserLimit, fair_share, metric, millis, relieved,
    throttled,
};

/// Why a reclaimed delivery that was the last attempt is dead-lettered.
pub(crate) const STALLED: &str = "not settled within the visibility timeout";

/// Where the in-process queue reads the time: milliseconds from a fixed origin.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the clock's origin; never decreasing.
    fn now_ms(&self) -> u64;
}

/// The system clock: milliseconds since the UNIX epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }
}

/// The in-process [`Queue`].
pub struct MemoryQueue {
    config: QueueConfig,
    user_limit: UserLimit,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Woken when a job may have become deliverable.
    changed: Notify,
}

/// A job in the queue.
struct Job {
    user: Uuid,
    priority: Priority,
    /// The attempt its next (or current) delivery is.
    attempt: u32,
    enqueued_ms: u64,
    /// Whether it was delivered before (for the wait metric).
    delivered: bool,
    place: Place,
}

enum Place {
    Waiting,
    /// Its user was at their cap when its turn came.
    Parked,
    Delayed,
    InFlight {
        token: String,
        consumer: String,
        deadline: u64,
    },
}

#[derive(Default)]
struct State {
    jobs: HashMap<Uuid, Job>,
    /// The line of each priority (by [`Priority::index`]).
    waiting: [VecDeque<Uuid>; 3],
    /// Each capped user's parked jobs, by priority, oldest first.
    parked: HashMap<Uuid, [VecDeque<Uuid>; 3]>,
    parked_len: [u64; 3],
    /// Delayed jobs by (due, order of arrival).
    delayed: BinaryHeap<Reverse<(u64, u64, Uuid)>>,
    in_flight: HashSet<Uuid>,
    /// Jobs in flight per user.
    running: HashMap<Uuid, usize>,
    /// Jobs in the queue (anywhere) per user: who shares the bound.
    users: HashMap<Uuid, usize>,
    /// The effective bound after [`Queue::throttle`] (`None`: the configured max), and
    /// when it was last lowered.
    limit: Option<f64>,
    throttled_at: Option<u64>,
    /// The token bucket: tokens left and when they were counted.
    bucket: Option<(f64, u64)>,
    dead: VecDeque<DeadLetter>,
    seq: u64,
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Removes job `id` from the queue for good.
    fn forget(&mut self, id: Uuid) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        if let Some(count) = self.users.get_mut(&job.user) {
            *count -= 1;
            if *count == 0 {
                self.users.remove(&job.user);
            }
        }
        Some(job)
    }
}

/// What one look at the queue found.
enum Step {
    Deliver(Delivery),
    /// Nothing to deliver; something may change by `wake_at` (clock milliseconds) on its
    /// own (a delay ends, a token comes, a delivery times out).
    Idle {
        wake_at: Option<u64>,
    },
}

impl MemoryQueue {
    /// A queue on the system clock.
    pub fn new(config: QueueConfig, user_limit: UserLimit) -> Self {
        Self::with_clock(config, user_limit, Arc::new(SystemClock))
    }

    /// A queue on `clock` (tests control time with it).
    pub fn with_clock(config: QueueConfig, user_limit: UserLimit, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            user_limit,
            clock,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// The effective bound on deliveries in flight; 0 for none.
    fn bound(&self, state: &State) -> u64 {
        match self.config.max_in_flight() {
            0 => 0,
            max => {
                let max = f64::from(max);
                state.limit.unwrap_or(max).min(max).floor().max(1.0) as u64
            }
        }
    }

    /// The user's cap: their own, at most a fair share of the bound.
    fn cap(&self, state: &State, user: Uuid) -> usize {
        fair_share(
            (self.user_limit)(user),
            self.bound(state),
            state.users.len() as u64,
        )
    }

    fn concurrency_of(&self, state: &State) -> Concurrency {
        let concurrency = Concurrency {
            in_flight: state.in_flight.len() as u64,
            limit: self.config.max_in_flight.map(|_| self.bound(state) as u32),
            max: self.config.max_in_flight.map(|max| max.max(1)),
        };
        metric::concurrency(&concurrency);
        concurrency
    }

    /// Looks once for a delivery for `consumer`.
    fn step(&self, state: &mut State, consumer: &str, now: u64) -> Step {
        promote(state, now);
        if let Some(wait) = self.refill(state, now) {
            return Step::Idle {
                wake_at: Some(now + wait),
            };
        }
        for priority in Priority::ALL {
            while let Some(id) = stalled(state, priority, now) {
                let Some(job) = state.jobs.get_mut(&id) else {
                    state.in_flight.remove(&id);
                    continue;
                };
                if job.attempt >= self.config.max_attempts() {
                    let attempts = job.attempt;
                    self.take_in_flight(state, id);
                    self.bury(state, id, attempts, STALLED);
                    continue;
                }
                job.attempt += 1;
                let Place::InFlight {
                    token,
                    consumer: previous,
                    deadline,
                } = &mut job.place
                else {
                    continue;
                };
                tracing::warn!(job_id = %id, from = %previous, to = consumer, attempt = job.attempt, "stalled delivery reclaimed");
                *previous = consumer.to_owned();
                *deadline = now + self.config.visibility_ms();
                let delivery = Delivery {
                    job_id: id,
                    user_id: job.user,
                    priority,
                    attempt: job.attempt,
                    token: token.clone(),
                };
                take_token(state);
                metric::reclaimed();
                return Step::Deliver(delivery);
            }
            let bound = self.bound(state);
            if bound > 0 && state.in_flight.len() as u64 >= bound {
                // At the bound: a settle wakes the waiting workers.
                continue;
            }
            while let Some(id) = state.waiting[priority.index()].pop_front() {
                let Some(user) = state.jobs.get(&id).map(|job| job.user) else {
                    continue;
                };
                let cap = self.cap(state, user);
                let Some(job) = state.jobs.get_mut(&id) else {
                    continue;
                };
                let running = state.running.entry(job.user).or_default();
                if *running >= cap {
                    job.place = Place::Parked;
                    state.parked.entry(job.user).or_default()[priority.index()].push_back(id);
                    state.parked_len[priority.index()] += 1;
                    continue;
                }
                *running += 1;
                state.seq += 1;
                let token = format!("memory:{}", state.seq);
                job.place = Place::InFlight {
                    token: token.clone(),
                    consumer: consumer.to_owned(),
                    deadline: now + self.config.visibility_ms(),
                };
                if !job.delivered {
                    job.delivered = true;
                    let waited = Duration::from_millis(now.saturating_sub(job.enqueued_ms));
                    metric::first_delivery(priority, waited);
                }
                let delivery = Delivery {
                    job_id: id,
                    user_id: job.user,
                    priority,
                    attempt: job.attempt,
                    token,
                };
                state.in_flight.insert(id);
                take_token(state);
                return Step::Deliver(delivery);
            }
        }
        let due = state.delayed.peek().map(|Reverse((due, _, _))| *due);
        let deadline = state
            .in_flight
            .iter()
            .filter_map(|id| match state.jobs.get(id).map(|job| &job.place) {
                Some(Place::InFlight { deadline, .. }) => Some(*deadline),
                _ => None,
            })
            .min();
        Step::Idle {
            wake_at: due.into_iter().chain(deadline).min(),
        }
    }

    /// Refills the token bucket; `None` when a token is there, otherwise the milliseconds
    /// until one is.
    fn refill(&self, state: &mut State, now: u64) -> Option<u64> {
        let limit = self.config.rate_limit?;
        let capacity = f64::from(limit.jobs());
        let per = limit.per_ms() as f64;
        let tokens = state.bucket.map_or(capacity, |(tokens, at)| {
            (tokens + now.saturating_sub(at) as f64 * capacity / per).min(capacity)
        });
        state.bucket = Some((tokens, now));
        if tokens >= 1.0 {
            None
        } else {
            Some((((1.0 - tokens) * per / capacity).ceil() as u64).max(1))
        }
    }

    /// Takes the delivery `id` out of flight and frees its user's slot, putting back as
    /// many of the user's parked jobs as the cap now allows (at least one).
    fn take_in_flight(&self, state: &mut State, id: Uuid) {
        state.in_flight.remove(&id);
        let Some(user) = state.jobs.get(&id).map(|job| job.user) else {
            return;
        };
        let running = match state.running.get_mut(&user) {
            Some(running) if *running > 1 => {
                *running -= 1;
                *running
            }
            _ => {
                state.running.remove(&user);
                0
            }
        };
        let mut room = self.cap(state, user).saturating_sub(running).max(1);
        if let Some(parked) = state.parked.get_mut(&user) {
            for priority in Priority::ALL {
                while room > 0 {
                    let Some(job_id) = parked[priority.index()].pop_front() else {
                        break;
                    };
                    state.parked_len[priority.index()] -= 1;
                    if let Some(job) = state.jobs.get_mut(&job_id) {
                        job.place = Place::Waiting;
                        state.waiting[priority.index()].push_back(job_id);
                        room -= 1;
                    }
                }
            }
            if parked.iter().all(VecDeque::is_empty) {
                state.parked.remove(&user);
            }
        }
        self.changed.notify_waiters();
    }

    /// Moves job `id` (out of flight) to the dead letters.
    fn bury(&self, state: &mut State, id: Uuid, attempts: u32, reason: &str) {
        let Some(job) = state.forget(id) else {
            return;
        };
        tracing::warn!(job_id = %id, attempts, reason, "job dead-lettered");
        state.dead.push_back(DeadLetter {
            job_id: id,
            user_id: job.user,
            attempts,
            reason: reason.to_owned(),
        });
        while state.dead.len() > self.config.finished_retention {
            state.dead.pop_front();
        }
        metric::dead_lettered(1);
    }

    /// The job `delivery` is about, when `delivery` still holds it (and, with `attempt`,
    /// is that attempt).
    fn held<'a>(state: &'a mut State, delivery: &Delivery, attempt: bool) -> Option<&'a mut Job> {
        let job = state.jobs.get_mut(&delivery.job_id)?;
        match &job.place {
            Place::InFlight { token, .. }
                if *token == delivery.token && (!attempt || job.attempt == delivery.attempt) =>
            {
                Some(job)
            }
            _ => None,
        }
    }

    /// Puts the held job `id` in the delayed heap, due in `delay`.
    fn delay(&self, state: &mut State, id: Uuid, delay: Duration) {
        let due = self.clock.now_ms().saturating_add(millis(delay));
        let seq = state.next_seq();
        if let Some(job) = state.jobs.get_mut(&id) {
            job.place = Place::Delayed;
            state.delayed.push(Reverse((due, seq, id)));
        }
        self.changed.notify_waiters();
    }
}

/// Moves the delayed jobs that are due to the end of their priority's line.
fn promote(state: &mut State, now: u64) {
    while let Some(Reverse((due, _, id))) = state.delayed.peek().copied() {
        if due > now {
            break;
        }
        state.delayed.pop();
        if let Some(job) = state.jobs.get_mut(&id) {
            job.place = Place::Waiting;
            state.waiting[job.priority.index()].push_back(id);
        }
    }
}

/// The delivery of `priority` whose visibility deadline passed longest ago, if any.
fn stalled(state: &State, priority: Priority, now: u64) -> Option<Uuid> {
    state
        .in_flight
        .iter()
        .filter_map(|id| {
            let job = state.jobs.get(id)?;
            match job.place {
                Place::InFlight { deadline, .. } if job.priority == priority && deadline <= now => {
                    Some((deadline, *id))
                }
                _ => None,
            }
        })
        .min()
        .map(|(_, id)| id)
}

fn take_token(state: &mut State) {
    if let Some((tokens, _)) = &mut state.bucket {
        *tokens -= 1.0;
    }
}

impl MemoryQueue {
    /// Adds `job` unless it is in the queue already.
    fn add(&self, state: &mut State, job: Enqueue) -> bool {
        if state.jobs.contains_key(&job.job_id) {
            return false;
        }
        *state.users.entry(job.user_id).or_default() += 1;
        let now = self.clock.now_ms();
        state.jobs.insert(
            job.job_id,
            Job {
                user: job.user_id,
                priority: job.priority,
                attempt: 1,
                enqueued_ms: now,
                delivered: false,
                place: Place::Waiting,
            },
        );
        match job.delay.filter(|delay| !delay.is_zero()) {
            Some(delay) => self.delay(state, job.job_id, delay),
            None => {
                state.waiting[job.priority.index()].push_back(job.job_id);
                self.changed.notify_waiters();
            }
        }
        true
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, job: Enqueue) -> Result<bool, QueueError> {
        let mut state = self.state.lock().await;
        Ok(self.add(&mut state, job))
    }

    async fn enqueue_many(&self, jobs: &[Enqueue]) -> Result<Vec<bool>, QueueError> {
        let mut state = self.state.lock().await;
        Ok(jobs
            .iter()
            .map(|job| self.add(&mut state, job.clone()))
            .collect())
    }

    async fn next_many(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a change made after the look still wakes us.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            let mut deliveries = Vec::new();
            let wake_at = {
                let mut state = self.state.lock().await;
                let now = self.clock.now_ms();
                loop {
                    match self.step(&mut state, consumer, now) {
                        Step::Deliver(delivery) => {
                            deliveries.push(delivery);
                            if deliveries.len() >= max.max(1) {
                                break None;
                            }
                        }
                        Step::Idle { wake_at } => break wake_at,
                    }
                }
            };
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(deliveries);
            }
            let until = wake_at.map_or(deadline, |at| {
                let wait = at.saturating_sub(self.clock.now_ms()).max(1);
                deadline.min(now + Duration::from_millis(wait))
            });
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn complete_many(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        for delivery in deliveries {
            if Self::held(&mut state, delivery, false).is_some() {
                self.take_in_flight(&mut state, delivery.job_id);
                state.forget(delivery.job_id);
            }
        }
        Ok(())
    }

    async fn throttle(&self) -> Result<Concurrency, QueueError> {
        let mut state = self.state.lock().await;
        if self.config.max_in_flight.is_some() {
            let now = self.clock.now_ms();
            let cooled = state
                .throttled_at
                .is_none_or(|at| now.saturating_sub(at) >= millis(THROTTLE_COOLDOWN));
            if cooled {
                let current = self.bound(&state) as f64;
                state.limit = Some(throttled(current));
                state.throttled_at = Some(now);
            }
        }
        Ok(self.concurrency_of(&state))
    }

    async fn relieve(&self) -> Result<Concurrency, QueueError> {
        let mut state = self.state.lock().await;
        if let (Some(max), Some(limit)) = (self.config.max_in_flight, state.limit) {
            let max = f64::from(max.max(1));
            let raised = relieved(limit, max);
            state.limit = (raised < max).then_some(raised);
            if raised.floor() > limit.floor() {
                self.changed.notify_waiters();
            }
        }
        Ok(self.concurrency_of(&state))
    }

    async fn concurrency(&self) -> Result<Concurrency, QueueError> {
        let state = self.state.lock().await;
        Ok(self.concurrency_of(&state))
    }

    async fn retry(&self, delivery: &Delivery, reason: &str) -> Result<Retried, QueueError> {
        let mut state = self.state.lock().await;
        let job = Self::held(&mut state, delivery, true).ok_or(QueueError::Lost)?;
        if delivery.attempt >= self.config.max_attempts() {
            self.take_in_flight(&mut state, delivery.job_id);
            self.bury(&mut state, delivery.job_id, delivery.attempt, reason);
            return Ok(Retried::DeadLettered);
        }
        job.attempt += 1;
        let delay = self.config.retry.delay(delivery.attempt);
        self.take_in_flight(&mut state, delivery.job_id);
        self.delay(&mut state, delivery.job_id, delay);
        metric::retried();
        Ok(Retried::Scheduled { delay })
    }

    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        Self::held(&mut state, delivery, true).ok_or(QueueError::Lost)?;
        self.take_in_flight(&mut state, delivery.job_id);
        self.delay(&mut state, delivery.job_id, delay);
        Ok(())
    }

    async fn extend(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        let job = Self::held(&mut state, delivery, true).ok_or(QueueError::Lost)?;
        if let Place::InFlight { deadline, .. } = &mut job.place {
            *deadline = self.clock.now_ms() + self.config.visibility_ms();
        }
        Ok(())
    }

    async fn remove(&self, job_id: Uuid) -> Result<bool, QueueError> {
        let mut state = self.state.lock().await;
        let Some(job) = state.jobs.get(&job_id) else {
            return Ok(false);
        };
        let (user, index) = (job.user, job.priority.index());
        match job.place {
            Place::InFlight { .. } => return Ok(false),
            Place::Waiting => state.waiting[index].retain(|id| *id != job_id),
            Place::Delayed => state.delayed.retain(|Reverse((_, _, id))| *id != job_id),
            Place::Parked => {
                if let Some(parked) = state.parked.get_mut(&user) {
                    parked[index].retain(|id| *id != job_id);
                    if parked.iter().all(VecDeque::is_empty) {
                        state.parked.remove(&user);
                    }
                }
                state.parked_len[index] = state.parked_len[index].saturating_sub(1);
            }
        }
        state.forget(job_id);
        Ok(true)
    }

    async fn contains(&self, job_id: Uuid) -> Result<bool, QueueError> {
        Ok(self.state.lock().await.jobs.contains_key(&job_id))
    }

    async fn position(&self, job_id: Uuid) -> Result<Option<u64>, QueueError> {
        let state = self.state.lock().await;
        let Some(job) = state.jobs.get(&job_id) else {
            return Ok(None);
        };
        let index = job.priority.index();
        let waiting_before =
            |last: usize| -> usize { state.waiting[..last].iter().map(VecDeque::len).sum() };
        let position = match job.place {
            Place::Waiting => state.waiting[index]
                .iter()
                .position(|id| *id == job_id)
                .map(|at| waiting_before(index) + at),
            Place::Parked => state.parked.get(&job.user).and_then(|parked| {
                let own: usize = parked[..index].iter().map(VecDeque::len).sum();
                parked[index]
                    .iter()
                    .position(|id| *id == job_id)
                    .map(|at| waiting_before(index + 1) + own + at)
            }),
            Place::Delayed | Place::InFlight { .. } => None,
        };
        Ok(position.map(|at| at as u64))
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let state = self.state.lock().await;
        let waiting = |priority: Priority| {
            state.waiting[priority.index()].len() as u64 + state.parked_len[priority.index()]
        };
        let depth = QueueDepth {
            high: waiting(Priority::High),
            normal: waiting(Priority::Normal),
            low: waiting(Priority::Low),
            delayed: state.delayed.len() as u64,
            in_flight: state.in_flight.len() as u64,
            dead: state.dead.len() as u64,
        };
        metric::depth(&depth);
        Ok(depth)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let state = self.state.lock().await;
        Ok(state.dead.iter().rev().take(limit).cloned().collect())
    }

    async fn dead_letter(&self, job_id: Uuid) -> Result<Option<DeadLetter>, QueueError> {
        let state = self.state.lock().await;
        Ok(state
            .dead
            .iter()
            .rev()
            .find(|letter| letter.job_id == job_id)
            .cloned())
    }

    async fn discard_dead_letter(&self, job_id: Uuid) -> Result<Option<DeadLetter>, QueueError> {
        let mut state = self.state.lock().await;
        let newest = state
            .dead
            .iter()
            .rev()
            .find(|letter| letter.job_id == job_id)
            .cloned();
        state.dead.retain(|letter| letter.job_id != job_id);
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock that moves only when told.
    #[derive(Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            self.0.fetch_add(millis(by), Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn queue(config: QueueConfig) -> (MemoryQueue, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let queue = MemoryQueue::with_clock(config, Arc::new(|_| 1), clock.clone());
        (queue, clock)
    }

    fn job() -> Enqueue {
        Enqueue {
            job_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            priority: Priority::Normal,
            delay: None,
        }
    }

    #[tokio::test]
    async fn retries_come_back_exactly_when_due() {
        let mut config = QueueConfig::default();
        config.retry.jitter = 0.0;
        let (queue, clock) = queue(config);
        queue.enqueue(job()).await.expect("enqueue");
        let first = queue
            .next("w", Duration::ZERO)
            .await
            .expect("next")
            .expect("a delivery");
        let retried = queue.retry(&first, "boom").await.expect("retry");
        assert_eq!(
            retried,
            Retried::Scheduled {
                delay: Duration::from_secs(2)
            }
        );
        clock.advance(Duration::from_millis(1999));
        assert_eq!(queue.next("w", Duration::ZERO).await.expect("next"), None);
        clock.advance(Duration::from_millis(1));
        let second = queue
            .next("w", Duration::ZERO)
            .await
            .expect("next")
            .expect("due now");
        assert_eq!(second.attempt, 2);
        let retried = queue.retry(&second, "boom").await.expect("retry");
        assert_eq!(
            retried,
            Retried::Scheduled {
                delay: Duration::from_secs(4)
            }
        );
    }

    #[tokio::test]
    async fn a_stalled_last_attempt_is_dead_lettered() {
        let config = QueueConfig {
            max_attempts: 2,
            visibility_timeout: Duration::from_secs(10),
            ..QueueConfig::default()
        };
        let (queue, clock) = queue(config);
        let job = job();
        queue.enqueue(job.clone()).await.expect("enqueue");
        queue
            .next("a", Duration::ZERO)
            .await
            .expect("next")
            .expect("first");
        clock.advance(Duration::from_secs(10));
        let second = queue
            .next("b", Duration::ZERO)
            .await
            .expect("next")
            .expect("reclaimed");
        assert_eq!(second.attempt, 2);
        clock.advance(Duration::from_secs(10));
        assert_eq!(queue.next("c", Duration::ZERO).await.expect("next"), None);
        assert!(!queue.contains(job.job_id).await.expect("contains"));
        let dead = queue.dead_letters(10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].job_id, dead[0].attempts), (job.job_id, 2));
        assert_eq!(dead[0].reason, STALLED);
    }

    #[tokio::test]
    async fn the_token_bucket_refills_with_time() {
        let config = QueueConfig {
            rate_limit: Some(crate::RateLimit {
                jobs: 2,
                per: Duration::from_secs(10),
            }),
            ..QueueConfig::default()
        };
        let (queue, clock) = queue(config);
        for _ in 0..4 {
            queue.enqueue(job()).await.expect("enqueue");
        }
        for _ in 0..2 {
            queue
                .next("w", Duration::ZERO)
                .await
                .expect("next")
                .expect("within the burst");
        }
        assert_eq!(queue.next("w", Duration::ZERO).await.expect("next"), None);
        clock.advance(Duration::from_millis(4999));
        assert_eq!(queue.next("w", Duration::ZERO).await.expect("next"), None);
        clock.advance(Duration::from_millis(1));
        assert!(
            queue
                .next("w", Duration::ZERO)
                .await
                .expect("next")
                .is_some()
        );
        assert_eq!(queue.next("w", Duration::ZERO).await.expect("next"), None);
    }
}
