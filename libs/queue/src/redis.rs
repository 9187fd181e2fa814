//! The Redis queue: Redis Streams, shared by every worker process.
//!
//! Every key is under the platform's prefix and one Redis Cluster hash tag, `{queue}`, so
//! the Lua scripts, which touch several keys at once, work on a cluster too:
//!
//! | key | type | what |
//! |---|---|---|
//! | `{prefix}{queue}:high`, `:normal`, `:low` | stream, group `workers` | the lines, read in that order |
//! | `{prefix}{queue}:delayed` | sorted set | job ids by when they are due (ms): delayed enqueues, retries, deferrals |
//! | `{prefix}{queue}:jobs` | hash | job id → state (JSON): the dedupe marker, where the job is, its attempt |
//! | `{prefix}{queue}:running` | hash | user id → deliveries in flight |
//! | `{prefix}{queue}:inflight` | counter | deliveries in flight, every user: what the bound counts |
//! | `{prefix}{queue}:limit` | hash | the effective bound after a 429, and when it was last lowered |
//! | `{prefix}{queue}:users` | hash | user id → jobs in the queue: who shares the bound |
//! | `{prefix}{queue}:caps` | hash | user id → cap, as a worker last said it, and until when it holds |
//! | `{prefix}{queue}:parked:high`, `:normal`, `:low` | sorted sets | capped users' jobs, `user:seq:job` |
//! | `{prefix}{queue}:parkedn` | hash | user id → parked jobs |
//! | `{prefix}{queue}:dead` | stream | dead letters, trimmed to about `finished_retention` |
//! | `{prefix}{queue}:bucket` | hash | the shared token bucket (only with a rate limit) |
//! | `{prefix}{queue}:cursors` | hash | where each line's `XAUTOCLAIM` scan goes on from, and when the next scan is due |
//! | `{prefix}{queue}:seq` | counter | the order of parked jobs |
//! | `{prefix}{queue}:wake` | pub/sub channel | "look again", to idle workers of every replica |
//!
//! Every change is one Lua script (`src/lua/`), so workers racing each other never see
//! half a change; the scripts read Redis's clock (`TIME`), so every process agrees on
//! when a delay ends and how full the token bucket is. [`Queue::next_many`] runs the
//! `next` script: due delayed jobs go back into their lines, the token bucket is
//! refilled, then, line by line, stalled deliveries are reclaimed (`XAUTOCLAIM`, at most
//! every tenth of the visibility timeout) before new entries are read (`XREADGROUP`, as
//! many as wanted and as the bound allows, in one call). A new entry whose user's cap no
//! worker said within the last 10 s comes back as a *candidate*, with a rate-limit token
//! reserved for it; the queue asks [`UserLimit`] and runs the script again holding it,
//! and the script stores the cap, then delivers the entry or parks it.
//!
//! An idle `next` does not poll: it waits for a message on the `wake` channel, which the
//! scripts publish to when a job is added, a delay is set, or a settle frees a slot that
//! was holding jobs back (the bound was reached, or the user's parked jobs went back in
//! line). One subscriber connection per `RedisQueue` hears it and wakes that process's
//! waiting `next` calls; [`QueueConfig::poll_interval`] is only the fallback should a
//! message be lost. Enqueues and completions come in batches too
//! ([`Queue::enqueue_many`], [`Queue::complete_many`]): one script run each.
//!
//! If a `next` future is dropped between the two runs (the caller gave up waiting), the
//! candidate stays pending until the visibility timeout passes, when the next `next`
//! reclaims it; no attempt is counted, since it was never delivered.

use std::{collections::HashMap, pin::pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use atelier_common::redis::Redis;
use fred::{
    interfaces::{ClientLike, EventInterface, PubsubInterface, StreamsInterface},
    prelude::HashesInterface,
    types::scripts::Script,
};
use tokio::{sync::Notify, time::Instant};
use uuid::Uuid;

use crate::{
    Concurrency, DeadLetter, Delivery, Enqueue, Priority, Queue, QueueConfig, QueueDepth,
    QueueError, Retried, THROTTLE_COOLDOWN, THROTTLE_FACTOR, UserLimit, metric, millis,
};

/// The consumer group of every line.
const GROUP: &str = "workers";

/// The keys every script gets, in the order `src/lua/common.lua` expects.
const KEY_NAMES: [&str; 19] = [
    "high",
    "normal",
    "low",
    "delayed",
    "jobs",
    "running",
    "parked:high",
    "parked:normal",
    "parked:low",
    "dead",
    "bucket",
    "cursors",
    "seq",
    "inflight",
    "users",
    "caps",
    "limit",
    "parkedn",
    "wake",
];
const JOBS: usize = 4;
const DEAD: usize = 9;
const WAKE: usize = 18;

/// Jobs per run of the enqueue and complete scripts: long enough to save round trips,
/// short enough not to hold Redis up for long.
const BATCH: usize = 500;

macro_rules! script {
    ($name:literal) => {
        Script::from_lua(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $name, ".lua"))
        ))
    };
}

struct Scripts {
    enqueue: Script,
    next: Script,
    complete: Script,
    settle: Script,
    extend: Script,
    remove: Script,
    position: Script,
    depth: Script,
    limit: Script,
}

/// The Redis [`Queue`]; every process (and every `RedisQueue`) on the same Redis and
/// prefix shares one queue.
pub struct RedisQueue {
    redis: Redis,
    keys: Vec<String>,
    config: QueueConfig,
    user_limit: UserLimit,
    scripts: Scripts,
    /// Woken by a message on the `wake` channel.
    woken: Arc<Notify>,
    /// Forwards `wake` messages to `woken` until dropped.
    listener: tokio::task::JoinHandle<()>,
    /// When this queue's looks last scanned for stalled deliveries.
    scanned: std::sync::Mutex<Option<Instant>>,
    subscriber: fred::prelude::Client,
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        self.listener.abort();
        // The subscriber's connection outlives its handles unless told to close.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let subscriber = self.subscriber.clone();
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}

/// A candidate entry held between two runs of the `next` script.
struct Held {
    priority: usize,
    entry: String,
    job: String,
}

/// What one look found besides its deliveries.
enum Tail {
    /// As many as wanted.
    Full,
    /// A user's cap is needed to go on with the held entry.
    Candidate(Held, Uuid),
    /// Nothing more now; look again after this long (`None`: when woken).
    Wait(Option<Duration>),
    /// Stopped early to keep scripts short: look again at once.
    Again,
}

impl RedisQueue {
    /// A queue on `redis`, its keys under the client's prefix; creates the lines and
    /// their consumer groups when missing, and subscribes to the wake-up channel (on a
    /// connection of its own).
    pub async fn new(
        redis: Redis,
        config: QueueConfig,
        user_limit: UserLimit,
    ) -> Result<Self, QueueError> {
        let keys: Vec<String> = KEY_NAMES
            .iter()
            .map(|name| redis.key(&format!("{{queue}}:{name}")))
            .collect();
        let woken = Arc::new(Notify::new());
        let (subscriber, listener) = listen(&redis, keys[WAKE].clone(), woken.clone()).await?;
        let queue = Self {
            redis,
            keys,
            config,
            user_limit,
            scripts: Scripts {
                enqueue: script!("enqueue"),
                next: script!("next"),
                complete: script!("complete"),
                settle: script!("settle"),
                extend: script!("extend"),
                remove: script!("remove"),
                position: script!("position"),
                depth: script!("depth"),
                limit: script!("limit"),
            },
            woken,
            listener,
            subscriber,
            scanned: std::sync::Mutex::new(None),
        };
        queue.create_groups().await?;
        Ok(queue)
    }

    /// Creates each line and its consumer group, unless there already.
    async fn create_groups(&self) -> Result<(), QueueError> {
        for stream in &self.keys[..3] {
            let created: Result<(), _> = self
                .redis
                .client
                .xgroup_create(stream.as_str(), GROUP, "0", true)
                .await;
            match created {
                Err(err) if !err.details().starts_with("BUSYGROUP") => return Err(err.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs `script` with every key, the bound, then `args`. When the lines or groups are
    /// gone (Redis lost its data), recreates them and runs it again.
    async fn run(&self, script: &Script, args: Vec<String>) -> Result<Vec<String>, QueueError> {
        let client = &self.redis.client;
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(self.config.max_in_flight().to_string());
        all.extend(args);
        match script
            .evalsha_with_reload(client, self.keys.clone(), all.clone())
            .await
        {
            Err(err) if err.details().contains("NOGROUP") => {
                tracing::warn!("queue consumer groups missing, recreating them");
                self.create_groups().await?;
                Ok(script
                    .evalsha_with_reload(client, self.keys.clone(), all)
                    .await?)
            }
            reply => Ok(reply?),
        }
    }

    fn cap(&self, user: Uuid) -> usize {
        (self.user_limit)(user).max(1)
    }

    /// The arguments of the `next` script.
    fn next_args(
        &self,
        consumer: &str,
        want: usize,
        held: Option<&Held>,
        caps: &HashMap<Uuid, usize>,
    ) -> Vec<String> {
        let (rate_jobs, rate_per) = self
            .config
            .rate_limit
            .map_or((0, 1), |limit| (limit.jobs(), limit.per_ms()));
        let mut args = vec![
            consumer.to_owned(),
            self.config.visibility_ms().to_string(),
            self.config.max_attempts().to_string(),
            rate_jobs.to_string(),
            rate_per.to_string(),
            self.config.finished_retention.to_string(),
            want.max(1).to_string(),
            if self.scan_due() { "1" } else { "0" }.to_owned(),
        ];
        match held {
            Some(held) => args.extend([
                held.priority.to_string(),
                held.entry.clone(),
                held.job.clone(),
            ]),
            None => args.extend(["0".to_owned(), String::new(), String::new()]),
        }
        for (user, cap) in caps {
            args.extend([user.to_string(), cap.to_string()]);
        }
        args
    }

    /// Whether this look should scan for stalled deliveries: every tenth of the
    /// visibility timeout (between 10 ms and 1 s).
    fn scan_due(&self) -> bool {
        let every = (self.config.visibility_timeout / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut scanned = self
            .scanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if scanned.is_some_and(|at| now.duration_since(at) < every) {
            return false;
        }
        *scanned = Some(now);
        true
    }

    /// Looks for up to `want` deliveries until some come or there are none now; then
    /// says how long to wait before looking again.
    async fn look(
        &self,
        consumer: &str,
        want: usize,
    ) -> Result<(Vec<Delivery>, Option<Duration>), QueueError> {
        let mut found = Vec::new();
        let mut caps = HashMap::new();
        let mut held = None;
        loop {
            let args = self.next_args(consumer, want - found.len(), held.take().as_ref(), &caps);
            let tail = self.look_once(consumer, args, &mut found).await?;
            match tail {
                Tail::Candidate(candidate, user) => {
                    caps.insert(user, self.cap(user));
                    held = Some(candidate);
                }
                Tail::Again if found.len() < want => {}
                Tail::Full | Tail::Again => return Ok((found, None)),
                Tail::Wait(wait) => return Ok((found, wait)),
            }
            if found.len() >= want && held.is_none() {
                return Ok((found, None));
            }
        }
    }

    /// One run of the `next` script: its deliveries go to `found`.
    async fn look_once(
        &self,
        consumer: &str,
        args: Vec<String>,
        found: &mut Vec<Delivery>,
    ) -> Result<Tail, QueueError> {
        let reply = self.run(&self.scripts.next, args).await?;
        let [buried, tail, t1, t2, t3, t4, rest @ ..] = reply.as_slice() else {
            return Err(protocol("next", &reply));
        };
        let buried = number(buried)?;
        if buried > 0 {
            tracing::warn!(count = buried, "stalled jobs out of attempts dead-lettered");
            metric::dead_lettered(buried);
        }
        if rest.len() % 7 != 0 {
            return Err(protocol("next", &reply));
        }
        for item in rest.chunks_exact(7) {
            let [priority, entry, job, user, attempt, waited, reclaimed] = item else {
                return Err(protocol("next", &reply));
            };
            let priority = priority_at(priority)?;
            let delivery = Delivery {
                job_id: uuid(job)?,
                user_id: uuid(user)?,
                priority,
                attempt: u32::try_from(number(attempt)?).map_err(|_| protocol("next", &reply))?,
                token: format!("{}:{entry}", priority.as_str()),
            };
            if let Ok(waited) = waited.parse::<u64>() {
                metric::first_delivery(priority, Duration::from_millis(waited));
            }
            if reclaimed == "1" {
                metric::reclaimed();
                tracing::warn!(job_id = %delivery.job_id, to = consumer, attempt = delivery.attempt, "stalled delivery reclaimed");
            }
            found.push(delivery);
        }
        Ok(match tail.as_str() {
            "full" => Tail::Full,
            "candidate" => Tail::Candidate(
                Held {
                    priority: usize::try_from(number(t1)?).map_err(|_| protocol("next", &reply))?,
                    entry: t2.clone(),
                    job: t3.clone(),
                },
                uuid(t4)?,
            ),
            "idle" if t1 == "0" => Tail::Again,
            "limited" | "idle" => Tail::Wait(t1.parse::<u64>().ok().map(Duration::from_millis)),
            _ => return Err(protocol("next", &reply)),
        })
    }

    /// The entry id in `delivery`'s token, and the priority as the scripts number it.
    fn entry<'a>(&self, delivery: &'a Delivery) -> Result<(String, &'a str), QueueError> {
        match delivery.token.split_once(':') {
            Some((priority, entry)) if priority == delivery.priority.as_str() => {
                Ok(((delivery.priority.index() + 1).to_string(), entry))
            }
            _ => Err(QueueError::InvalidToken(delivery.token.clone())),
        }
    }

    /// Retries or defers `delivery`.
    async fn settle(
        &self,
        delivery: &Delivery,
        mode: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<String, QueueError> {
        let (priority, entry) = self.entry(delivery)?;
        let reply = self
            .run(
                &self.scripts.settle,
                vec![
                    priority,
                    entry.to_owned(),
                    delivery.job_id.to_string(),
                    delivery.attempt.to_string(),
                    self.cap(delivery.user_id).to_string(),
                    mode.to_owned(),
                    millis(delay).to_string(),
                    self.config.max_attempts().to_string(),
                    reason.to_owned(),
                    self.config.finished_retention.to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [outcome] if outcome == "lost" => Err(QueueError::Lost),
            [outcome] if outcome == "dead" || outcome == "delayed" => Ok(outcome.clone()),
            _ => Err(protocol("settle", &reply)),
        }
    }

    /// Runs the `limit` script in `mode`.
    async fn limit(&self, mode: &str) -> Result<Concurrency, QueueError> {
        let reply = self
            .run(
                &self.scripts.limit,
                vec![
                    mode.to_owned(),
                    THROTTLE_FACTOR.to_string(),
                    millis(THROTTLE_COOLDOWN).to_string(),
                ],
            )
            .await?;
        let [limit, in_flight] = reply.as_slice() else {
            return Err(protocol("limit", &reply));
        };
        let max = self.config.max_in_flight.map(|max| max.max(1));
        let concurrency = Concurrency {
            in_flight: number(in_flight)?,
            limit: match max {
                Some(_) => {
                    Some(u32::try_from(number(limit)?).map_err(|_| protocol("limit", &reply))?)
                }
                None => None,
            },
            max,
        };
        metric::concurrency(&concurrency);
        Ok(concurrency)
    }
}

/// Subscribes to `channel` on a connection of its own (re-subscribing after a
/// reconnection) and wakes `woken`'s waiters on each message.
async fn listen(
    redis: &Redis,
    channel: String,
    woken: Arc<Notify>,
) -> Result<(fred::prelude::Client, tokio::task::JoinHandle<()>), QueueError> {
    let subscriber = redis.client.clone_new();
    subscriber.init().await?;
    subscriber.subscribe(channel.clone()).await?;
    let mut messages = subscriber.message_rx();
    let mut reconnections = subscriber.reconnect_rx();
    let client = subscriber.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(_) => woken.notify_waiters(),
                    // Fell behind: wake anyway, something changed.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => woken.notify_waiters(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                reconnected = reconnections.recv() => {
                    if reconnected.is_err() {
                        break;
                    }
                    if let Err(err) = subscriber.subscribe(channel.clone()).await {
                        tracing::warn!(error = %err, "cannot subscribe to queue wake-ups again; polling until it works");
                    }
                    woken.notify_waiters();
                }
            }
        }
    });
    Ok((client, task))
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, job: Enqueue) -> Result<bool, QueueError> {
        let added = self.enqueue_many(std::slice::from_ref(&job)).await?;
        Ok(added.first().copied().unwrap_or(false))
    }

    async fn enqueue_many(&self, jobs: &[Enqueue]) -> Result<Vec<bool>, QueueError> {
        let mut added = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(BATCH) {
            let mut args = Vec::with_capacity(chunk.len() * 4);
            for job in chunk {
                args.extend([
                    job.job_id.to_string(),
                    job.user_id.to_string(),
                    (job.priority.index() + 1).to_string(),
                    job.delay.map_or(0, millis).to_string(),
                ]);
            }
            let reply = self.run(&self.scripts.enqueue, args).await?;
            if reply.len() != chunk.len() {
                return Err(protocol("enqueue", &reply));
            }
            added.extend(reply.iter().map(|one| one == "1"));
        }
        Ok(added)
    }

    async fn next_many(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            // Listening before looking, so a wake-up sent after the look is not missed.
            let mut woken = pin!(self.woken.notified());
            woken.as_mut().enable();
            let (found, hint) = self.look(consumer, max.max(1)).await?;
            if !found.is_empty() {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(found);
            }
            let pause = hint
                .unwrap_or(self.config.poll_interval)
                .min(self.config.poll_interval)
                .max(Duration::from_millis(1));
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(deadline.min(now + pause)) => {}
            }
        }
    }

    async fn complete_many(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        for chunk in deliveries.chunks(BATCH) {
            let mut args = Vec::with_capacity(chunk.len() * 3 + 8);
            args.push(chunk.len().to_string());
            let mut caps = HashMap::new();
            for delivery in chunk {
                let (priority, entry) = self.entry(delivery)?;
                args.extend([priority, entry.to_owned(), delivery.job_id.to_string()]);
                caps.entry(delivery.user_id)
                    .or_insert_with(|| self.cap(delivery.user_id));
            }
            for (user, cap) in caps {
                args.extend([user.to_string(), cap.to_string()]);
            }
            let reply = self.run(&self.scripts.complete, args).await?;
            match reply.as_slice() {
                [done] if number(done).is_ok() => {}
                _ => return Err(protocol("complete", &reply)),
            }
        }
        Ok(())
    }

    async fn retry(&self, delivery: &Delivery, reason: &str) -> Result<Retried, QueueError> {
        let delay = self.config.retry.delay(delivery.attempt);
        if self.settle(delivery, "retry", delay, reason).await? == "dead" {
            tracing::warn!(job_id = %delivery.job_id, attempts = delivery.attempt, reason, "job dead-lettered");
            metric::dead_lettered(1);
            return Ok(Retried::DeadLettered);
        }
        metric::retried();
        Ok(Retried::Scheduled { delay })
    }

    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError> {
        self.settle(delivery, "defer", delay, "").await.map(drop)
    }

    async fn extend(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (priority, entry) = self.entry(delivery)?;
        let reply = self
            .run(
                &self.scripts.extend,
                vec![
                    priority,
                    entry.to_owned(),
                    delivery.job_id.to_string(),
                    delivery.attempt.to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [outcome] if outcome == "ok" => Ok(()),
            [outcome] if outcome == "lost" => Err(QueueError::Lost),
            _ => Err(protocol("extend", &reply)),
        }
    }

    async fn remove(&self, job_id: Uuid) -> Result<bool, QueueError> {
        let reply = self
            .run(&self.scripts.remove, vec![job_id.to_string()])
            .await?;
        match reply.as_slice() {
            [removed] => Ok(removed == "1"),
            _ => Err(protocol("remove", &reply)),
        }
    }

    async fn contains(&self, job_id: Uuid) -> Result<bool, QueueError> {
        Ok(self
            .redis
            .client
            .hexists(self.keys[JOBS].as_str(), job_id.to_string())
            .await?)
    }

    async fn position(&self, job_id: Uuid) -> Result<Option<u64>, QueueError> {
        let reply = self
            .run(&self.scripts.position, vec![job_id.to_string()])
            .await?;
        match reply.as_slice() {
            [position] if position == "-1" => Ok(None),
            [position] => number(position).map(Some),
            _ => Err(protocol("position", &reply)),
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let reply = self.run(&self.scripts.depth, Vec::new()).await?;
        let [high, normal, low, delayed, in_flight, dead] = reply.as_slice() else {
            return Err(protocol("depth", &reply));
        };
        let depth = QueueDepth {
            high: number(high)?,
            normal: number(normal)?,
            low: number(low)?,
            delayed: number(delayed)?,
            in_flight: number(in_flight)?,
            dead: number(dead)?,
        };
        metric::depth(&depth);
        Ok(depth)
    }

    async fn throttle(&self) -> Result<Concurrency, QueueError> {
        self.limit("throttle").await
    }

    async fn relieve(&self) -> Result<Concurrency, QueueError> {
        self.limit("relieve").await
    }

    async fn concurrency(&self) -> Result<Concurrency, QueueError> {
        self.limit("read").await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let entries: Vec<(String, HashMap<String, String>)> = self
            .redis
            .client
            .xrevrange_values(self.keys[DEAD].as_str(), "+", "-", Some(limit as u64))
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| dead_letter(&id, &fields))
            .collect()
    }

    async fn dead_letter(&self, job_id: Uuid) -> Result<Option<DeadLetter>, QueueError> {
        Ok(self
            .letters_of(job_id)
            .await?
            .into_iter()
            .next()
            .map(|(_, letter)| letter))
    }

    async fn discard_dead_letter(&self, job_id: Uuid) -> Result<Option<DeadLetter>, QueueError> {
        let letters = self.letters_of(job_id).await?;
        let Some((_, newest)) = letters.first().cloned() else {
            return Ok(None);
        };
        let ids: Vec<String> = letters.into_iter().map(|(id, _)| id).collect();
        // XDEL counts what it removed: of two callers at once, one removes them.
        let removed: u64 = self
            .redis
            .client
            .xdel(self.keys[DEAD].as_str(), ids)
            .await?;
        Ok((removed > 0).then_some(newest))
    }
}

impl RedisQueue {
    /// Job `job_id`'s dead letters with their stream entry ids, newest first.
    /// The stream is trimmed to about `finished_retention` entries, so reading
    /// it whole stays bounded.
    async fn letters_of(&self, job_id: Uuid) -> Result<Vec<(String, DeadLetter)>, QueueError> {
        let entries: Vec<(String, HashMap<String, String>)> = self
            .redis
            .client
            .xrevrange_values(self.keys[DEAD].as_str(), "+", "-", None)
            .await?;
        let wanted = job_id.to_string();
        entries
            .into_iter()
            .filter(|(_, fields)| fields.get("job") == Some(&wanted))
            .map(|(id, fields)| Ok((id.clone(), dead_letter(&id, &fields)?)))
            .collect()
    }
}

/// Stream entry `id` of the dead letters, read.
fn dead_letter(id: &str, fields: &HashMap<String, String>) -> Result<DeadLetter, QueueError> {
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| QueueError::Protocol(format!("dead letter {id} has no {name}")))
    };
    Ok(DeadLetter {
        job_id: uuid(field("job")?)?,
        user_id: uuid(field("user")?)?,
        attempts: field("attempts")?
            .parse()
            .map_err(|_| QueueError::Protocol(format!("dead letter {id}: bad attempts")))?,
        reason: field("reason")?.clone(),
    })
}

fn protocol(script: &str, reply: &[String]) -> QueueError {
    QueueError::Protocol(format!("{script} script answered {reply:?}"))
}

fn number(text: &str) -> Result<u64, QueueError> {
    text.parse()
        .map_err(|_| QueueError::Protocol(format!("{text:?} is not a count")))
}

fn uuid(text: &str) -> Result<Uuid, QueueError> {
    Uuid::parse_str(text)
        .map_err(|_| QueueError::Protocol(format!("{text:?} is not a job or user id")))
}

/// The priority the scripts number `text` (1-3).
fn priority_at(text: &str) -> Result<Priority, QueueError> {
    let index = usize::try_from(number(text)?).unwrap_or(usize::MAX);
    index
        .checked_sub(1)
        .and_then(Priority::from_index)
        .ok_or_else(|| QueueError::Protocol(format!("{text:?} is not a priority")))
}
