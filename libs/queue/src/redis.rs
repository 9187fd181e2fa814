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
//! | `{prefix}{queue}:parked:high`, `:normal`, `:low` | sorted sets | capped users' jobs, `user:seq:job` |
//! | `{prefix}{queue}:dead` | stream | dead letters, trimmed to about `finished_retention` |
//! | `{prefix}{queue}:bucket` | hash | the shared token bucket |
//! | `{prefix}{queue}:cursors` | hash | where each line's `XAUTOCLAIM` scan goes on from |
//! | `{prefix}{queue}:seq` | counter | the order of parked jobs |
//!
//! Every change is one Lua script (`src/lua/`), so workers racing each other never see
//! half a change; the scripts read Redis's clock (`TIME`), so every process agrees on
//! when a delay ends and how full the token bucket is. [`Queue::next`] runs the `next`
//! script: due delayed jobs go back into their lines, the token bucket is refilled,
//! then, line by line, stalled deliveries are reclaimed (`XAUTOCLAIM`) before new entries
//! are read (`XREADGROUP`). A new entry whose user's cap the script does not know yet comes
//! back as a *candidate*, with a rate-limit token reserved for it; the queue asks
//! [`UserLimit`] and runs the script again holding it, and the script delivers it or
//! parks it (and gives the token back).
//!
//! An idle `next` polls every [`QueueConfig::poll_interval`] rather than blocking in
//! `XREADGROUP`: a blocking command would hold up the client's shared connection, and the
//! token bucket and user caps must be honoured before an entry is taken.
//!
//! If a `next` future is dropped between the two runs (the caller gave up waiting), the
//! candidate stays pending until the visibility timeout passes, when the next `next`
//! reclaims it; no attempt is counted, since it was never delivered.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use atelier_common::redis::Redis;
use fred::{interfaces::StreamsInterface, prelude::HashesInterface, types::scripts::Script};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    DeadLetter, Delivery, Enqueue, Priority, Queue, QueueConfig, QueueDepth, QueueError, Retried,
    UserLimit, metric, millis,
};

/// The consumer group of every line.
const GROUP: &str = "workers";

/// The keys every script gets, in the order `src/lua/common.lua` expects.
const KEY_NAMES: [&str; 13] = [
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
];
const JOBS: usize = 4;
const DEAD: usize = 9;

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
}

/// The Redis [`Queue`]; every process (and every `RedisQueue`) on the same Redis and
/// prefix shares one queue.
pub struct RedisQueue {
    redis: Redis,
    keys: Vec<String>,
    config: QueueConfig,
    user_limit: UserLimit,
    scripts: Scripts,
}

/// A candidate entry held between two runs of the `next` script.
struct Held {
    priority: usize,
    entry: String,
    job: String,
}

impl RedisQueue {
    /// A queue on `redis`, its keys under the client's prefix; creates the lines and
    /// their consumer groups when missing.
    pub async fn new(
        redis: Redis,
        config: QueueConfig,
        user_limit: UserLimit,
    ) -> Result<Self, QueueError> {
        let keys = KEY_NAMES
            .iter()
            .map(|name| redis.key(&format!("{{queue}}:{name}")))
            .collect();
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
            },
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

    /// Runs `script` with every key and `args`. When the lines or groups are gone (Redis
    /// lost its data), recreates them and runs it again.
    async fn run(&self, script: &Script, args: Vec<String>) -> Result<Vec<String>, QueueError> {
        let client = &self.redis.client;
        match script
            .evalsha_with_reload(client, self.keys.clone(), args.clone())
            .await
        {
            Err(err) if err.details().contains("NOGROUP") => {
                tracing::warn!("queue consumer groups missing, recreating them");
                self.create_groups().await?;
                Ok(script
                    .evalsha_with_reload(client, self.keys.clone(), args)
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

    /// Looks for a delivery until one comes, or says how long to wait before looking again.
    async fn look(&self, consumer: &str) -> Result<Result<Delivery, Option<Duration>>, QueueError> {
        let mut caps = HashMap::new();
        let mut held = None;
        loop {
            let reply = self
                .run(
                    &self.scripts.next,
                    self.next_args(consumer, held.take().as_ref(), &caps),
                )
                .await?;
            let [kind, buried, rest @ ..] = reply.as_slice() else {
                return Err(protocol("next", &reply));
            };
            let buried = number(buried)?;
            if buried > 0 {
                tracing::warn!(count = buried, "stalled jobs out of attempts dead-lettered");
                metric::dead_lettered(buried);
            }
            match (kind.as_str(), rest) {
                ("delivery", [priority, entry, job, user, attempt, waited, reclaimed]) => {
                    let priority = priority_at(priority)?;
                    let delivery = Delivery {
                        job_id: uuid(job)?,
                        user_id: uuid(user)?,
                        priority,
                        attempt: u32::try_from(number(attempt)?)
                            .map_err(|_| protocol("next", &reply))?,
                        token: format!("{}:{entry}", priority.as_str()),
                    };
                    if let Ok(waited) = waited.parse::<u64>() {
                        metric::first_delivery(priority, Duration::from_millis(waited));
                    }
                    if reclaimed == "1" {
                        metric::reclaimed();
                        tracing::warn!(job_id = %delivery.job_id, to = consumer, attempt = delivery.attempt, "stalled delivery reclaimed");
                    }
                    return Ok(Ok(delivery));
                }
                ("candidate", [priority, entry, job, user]) => {
                    let user = uuid(user)?;
                    caps.insert(user, self.cap(user));
                    held = Some(Held {
                        priority: usize::try_from(number(priority)?)
                            .map_err(|_| protocol("next", &reply))?,
                        entry: entry.clone(),
                        job: job.clone(),
                    });
                }
                // This look stopped early (it parked many entries, or many delayed jobs
                // fell due at once): look again at once.
                ("idle", [wait]) if wait == "0" => {}
                ("limited" | "idle", [wait]) => {
                    let wait = wait.parse::<u64>().ok().map(Duration::from_millis);
                    return Ok(Err(wait));
                }
                _ => return Err(protocol("next", &reply)),
            }
        }
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
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, job: Enqueue) -> Result<bool, QueueError> {
        let delay = job.delay.map_or(0, millis);
        let reply = self
            .run(
                &self.scripts.enqueue,
                vec![
                    job.job_id.to_string(),
                    job.user_id.to_string(),
                    (job.priority.index() + 1).to_string(),
                    delay.to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [added] => Ok(added == "1"),
            _ => Err(protocol("enqueue", &reply)),
        }
    }

    async fn next(&self, consumer: &str, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let hint = match self.look(consumer).await? {
                Ok(delivery) => return Ok(Some(delivery)),
                Err(hint) => hint,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = hint
                .unwrap_or(self.config.poll_interval)
                .min(self.config.poll_interval)
                .max(Duration::from_millis(1));
            tokio::time::sleep_until(deadline.min(now + pause)).await;
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (priority, entry) = self.entry(delivery)?;
        let reply = self
            .run(
                &self.scripts.complete,
                vec![
                    priority,
                    entry.to_owned(),
                    delivery.job_id.to_string(),
                    self.cap(delivery.user_id).to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [outcome] if outcome == "done" || outcome == "noop" => Ok(()),
            _ => Err(protocol("complete", &reply)),
        }
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
            .map(|(id, fields)| {
                let field = |name: &str| {
                    fields.get(name).ok_or_else(|| {
                        QueueError::Protocol(format!("dead letter {id} has no {name}"))
                    })
                };
                Ok(DeadLetter {
                    job_id: uuid(field("job")?)?,
                    user_id: uuid(field("user")?)?,
                    attempts: field("attempts")?.parse().map_err(|_| {
                        QueueError::Protocol(format!("dead letter {id}: bad attempts"))
                    })?,
                    reason: field("reason")?.clone(),
                })
            })
            .collect()
    }
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
