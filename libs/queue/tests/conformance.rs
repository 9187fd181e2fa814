//! One conformance suite, run against both backends: in-process and Redis.
//!
//! Each suite test is a generic async fn over a [`Backend`]; `conformance_suite!` makes a
//! `#[tokio::test]` of it per backend (`memory::name`, `redis::name`). Every Redis test gets
//! a key prefix of its own (its keys are deleted when it passes). Redis is never optional:
//! when it does not answer, the Redis tests fail and say how to start it.
//!
//! | variable | default |
//! |---|---|
//! | `TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//!
//! Delays are short and every timing assertion leaves a wide margin, so the suite stays
//! fast and does not flake on a busy machine.

use std::{collections::HashSet, sync::Arc, time::Duration};

use atelier_common::redis::Redis;
use atelier_queue::{
    Backoff, Concurrency, DeadLetter, Delivery, Enqueue, MemoryQueue, Priority, Queue, QueueConfig,
    QueueDepth, QueueError, RateLimit, RedisQueue, Retried, UserLimit,
};
use fred::interfaces::{LuaInterface, StreamsInterface};
use tokio::time::Instant;
use uuid::Uuid;

/// How long to wait for something that should come (soon).
const SOON: Duration = Duration::from_secs(3);
/// How long to wait to be fairly sure something does not come.
const A_WHILE: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------------------
// Backends under test

#[derive(Clone)]
enum Backend {
    Memory,
    /// A client whose prefix is this test's own.
    Redis(Redis),
}

impl Backend {
    async fn redis() -> Self {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("atelier-test-{}:", Uuid::new_v4().simple());
        let connected =
            tokio::time::timeout(Duration::from_secs(10), Redis::connect(&url, prefix)).await;
        match connected {
            Ok(Ok(redis)) => Self::Redis(redis),
            Ok(Err(e)) => panic!(
                "Redis does not answer at {url} ({e:#}): run `make test`, which starts it \
                 through .ci/deps.sh, or set TEST_REDIS_URL"
            ),
            Err(_) => panic!(
                "Redis did not answer at {url} within 10 s: run `make test`, which starts it \
                 through .ci/deps.sh, or set TEST_REDIS_URL"
            ),
        }
    }

    /// Deletes the test's keys.
    async fn clean(&self) {
        if let Self::Redis(redis) = self {
            let pattern = format!("{}*", redis.key(""));
            let script = "for _, key in ipairs(redis.call('KEYS', ARGV[1])) do \
                          redis.call('DEL', key) end";
            let cleaned: Result<(), _> = redis
                .client
                .eval(script, Vec::<String>::new(), vec![pattern])
                .await;
            cleaned.expect("deleting the test's keys");
        }
    }

    /// A queue, and a second handle on the same queue: on Redis another `RedisQueue`
    /// sharing the prefix, as a second worker process would have.
    async fn queue(
        &self,
        config: QueueConfig,
        user_limit: UserLimit,
    ) -> (Arc<dyn Queue>, Arc<dyn Queue>) {
        match self {
            Self::Memory => {
                let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(config, user_limit));
                (queue.clone(), queue)
            }
            Self::Redis(redis) => {
                let first = RedisQueue::new(redis.clone(), config.clone(), user_limit.clone())
                    .await
                    .expect("creating the Redis queue");
                let second = RedisQueue::new(redis.clone(), config, user_limit)
                    .await
                    .expect("creating a second Redis queue");
                (Arc::new(first), Arc::new(second))
            }
        }
    }
}

macro_rules! conformance_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::redis().await;
                    super::$name(backend.clone()).await;
                    backend.clean().await;
                }
            )*
        }
    };
}

conformance_suite!(
    enqueue_next_complete,
    dedupe,
    priority_order,
    delayed_enqueue,
    retry_backoff,
    dead_letter_after_max_attempts,
    dead_letters_inspected_retried_and_discarded,
    defer_does_not_count_an_attempt,
    visibility_timeout_reclaims,
    stalled_last_attempt_is_dead_lettered,
    extend_prevents_reclaim,
    remove_from_waiting_and_delayed,
    contains_and_position,
    per_user_cap,
    capped_backlog_does_not_hold_up_others,
    rate_limit,
    parked_jobs_use_no_rate_limit_token,
    racing_consumers_never_share_a_delivery,
    rate_limit_is_off_by_default,
    batches_keep_order_and_dedupe,
    an_idle_worker_is_woken_at_once,
    the_bound_holds_across_workers,
    every_way_out_of_flight_frees_a_slot,
    fair_share_under_the_bound,
    throttle_halves_and_relieve_restores,
);

// ---------------------------------------------------------------------------------------
// Helpers

/// Quick retries, no jitter, a long visibility timeout, no rate limit.
fn config() -> QueueConfig {
    QueueConfig {
        max_attempts: 3,
        retry: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_secs(1),
            jitter: 0.0,
        },
        visibility_timeout: Duration::from_secs(60),
        max_in_flight: None,
        rate_limit: None,
        finished_retention: 100,
        poll_interval: Duration::from_millis(10),
    }
}

fn unlimited() -> UserLimit {
    Arc::new(|_| 100)
}

fn job(priority: Priority) -> Enqueue {
    Enqueue {
        job_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        priority,
        delay: None,
    }
}

fn job_of(user_id: Uuid) -> Enqueue {
    Enqueue {
        user_id,
        ..job(Priority::Normal)
    }
}

async fn enqueue(queue: &dyn Queue, job: &Enqueue) {
    assert!(
        queue.enqueue(job.clone()).await.expect("enqueue"),
        "{job:?} is new"
    );
}

/// The next delivery, which must come soon.
async fn next(queue: &dyn Queue, consumer: &str) -> Delivery {
    queue
        .next(consumer, SOON)
        .await
        .expect("next")
        .unwrap_or_else(|| panic!("{consumer} got nothing within {SOON:?}"))
}

/// Nothing is delivered within `wait`.
async fn nothing(queue: &dyn Queue, wait: Duration) {
    let delivery = queue.next("idle", wait).await.expect("next");
    assert_eq!(delivery, None, "nothing should be delivered yet");
}

async fn depth(queue: &dyn Queue) -> QueueDepth {
    queue.depth().await.expect("depth")
}

// ---------------------------------------------------------------------------------------
// The suite

async fn enqueue_next_complete(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let job = job(Priority::Normal);
    enqueue(&*queue, &job).await;
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            normal: 1,
            ..QueueDepth::default()
        }
    );

    let delivery = next(&*queue, "w1").await;
    assert_eq!(
        (
            delivery.job_id,
            delivery.user_id,
            delivery.priority,
            delivery.attempt
        ),
        (job.job_id, job.user_id, Priority::Normal, 1)
    );
    assert!(queue.contains(job.job_id).await.expect("contains"));
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            in_flight: 1,
            ..QueueDepth::default()
        }
    );
    nothing(&*queue, A_WHILE).await;

    queue.complete(&delivery).await.expect("complete");
    assert!(!queue.contains(job.job_id).await.expect("contains"));
    assert_eq!(depth(&*queue).await, QueueDepth::default());
    queue
        .complete(&delivery)
        .await
        .expect("completing twice is a no-op");
    nothing(&*queue, Duration::ZERO).await;
}

async fn dedupe(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let job = job(Priority::Normal);
    assert!(queue.enqueue(job.clone()).await.expect("enqueue"));
    let again = Enqueue {
        priority: Priority::High,
        ..job.clone()
    };
    assert!(!queue.enqueue(again.clone()).await.expect("waiting: no-op"));
    assert_eq!(depth(&*queue).await.waiting(), 1);

    let delivery = next(&*queue, "w1").await;
    assert_eq!(
        delivery.priority,
        Priority::Normal,
        "the first enqueue stands"
    );
    assert!(
        !queue
            .enqueue(again.clone())
            .await
            .expect("in flight: no-op")
    );

    assert!(matches!(
        queue.retry(&delivery, "flaky").await.expect("retry"),
        Retried::Scheduled { .. }
    ));
    assert!(!queue.enqueue(again.clone()).await.expect("delayed: no-op"));

    let delivery = next(&*queue, "w1").await;
    assert_eq!(delivery.attempt, 2);
    queue.complete(&delivery).await.expect("complete");
    assert!(queue.enqueue(again).await.expect("gone: enqueued anew"));
    let delivery = next(&*queue, "w1").await;
    assert_eq!((delivery.priority, delivery.attempt), (Priority::High, 1));
}

async fn priority_order(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let low = job(Priority::Low);
    let normal = job(Priority::Normal);
    let high = job(Priority::High);
    for job in [&low, &normal, &high] {
        enqueue(&*queue, job).await;
    }
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            high: 1,
            normal: 1,
            low: 1,
            ..QueueDepth::default()
        }
    );
    let mut order = Vec::new();
    for _ in 0..3 {
        let delivery = next(&*queue, "w1").await;
        order.push(delivery.job_id);
        queue.complete(&delivery).await.expect("complete");
    }
    assert_eq!(order, [high.job_id, normal.job_id, low.job_id]);

    // Within a priority: first in, first out.
    let jobs: Vec<Enqueue> = (0..3).map(|_| job(Priority::Normal)).collect();
    for job in &jobs {
        enqueue(&*queue, job).await;
    }
    for job in &jobs {
        assert_eq!(next(&*queue, "w1").await.job_id, job.job_id);
    }
}

async fn delayed_enqueue(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let delay = Duration::from_millis(500);
    let job = Enqueue {
        delay: Some(delay),
        ..job(Priority::Normal)
    };
    let enqueued = Instant::now();
    enqueue(&*queue, &job).await;
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            delayed: 1,
            ..QueueDepth::default()
        }
    );
    assert!(queue.contains(job.job_id).await.expect("contains"));
    assert_eq!(queue.position(job.job_id).await.expect("position"), None);
    nothing(&*queue, A_WHILE).await;

    let delivery = next(&*queue, "w1").await;
    assert!(enqueued.elapsed() >= delay - Duration::from_millis(10));
    assert_eq!((delivery.job_id, delivery.attempt), (job.job_id, 1));
}

async fn retry_backoff(backend: Backend) {
    let mut config = config();
    config.retry.base = Duration::from_millis(600);
    let (queue, _) = backend.queue(config, unlimited()).await;
    let job = job(Priority::Normal);
    enqueue(&*queue, &job).await;
    let first = next(&*queue, "w1").await;
    let retried_at = Instant::now();
    let retried = queue.retry(&first, "fal timed out").await.expect("retry");
    assert_eq!(
        retried,
        Retried::Scheduled {
            delay: Duration::from_millis(600)
        }
    );
    assert_eq!(depth(&*queue).await.delayed, 1);
    assert!(queue.contains(job.job_id).await.expect("contains"));
    nothing(&*queue, Duration::from_millis(200)).await;

    let second = next(&*queue, "w2").await;
    assert!(
        retried_at.elapsed() >= Duration::from_millis(590),
        "delivered after {:?}, before its delay",
        retried_at.elapsed()
    );
    assert_eq!((second.job_id, second.attempt), (job.job_id, 2));
    assert!(
        matches!(queue.retry(&first, "stale").await, Err(QueueError::Lost)),
        "the first delivery is settled: retrying it again is refused"
    );
    queue.complete(&second).await.expect("complete");
}

async fn dead_letter_after_max_attempts(backend: Backend) {
    let config = QueueConfig {
        max_attempts: 2,
        ..config()
    };
    let (queue, _) = backend.queue(config, unlimited()).await;
    let job = job(Priority::Low);
    enqueue(&*queue, &job).await;

    let first = next(&*queue, "w1").await;
    assert!(matches!(
        queue.retry(&first, "boom").await.expect("retry"),
        Retried::Scheduled { .. }
    ));
    let second = next(&*queue, "w1").await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        queue.retry(&second, "boom again").await.expect("retry"),
        Retried::DeadLettered
    );

    assert!(!queue.contains(job.job_id).await.expect("contains"));
    assert_eq!(
        queue.dead_letters(10).await.expect("dead letters"),
        [DeadLetter {
            job_id: job.job_id,
            user_id: job.user_id,
            attempts: 2,
            reason: "boom again".into(),
        }]
    );
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            dead: 1,
            ..QueueDepth::default()
        }
    );
    nothing(&*queue, A_WHILE).await;
    assert!(matches!(
        queue.retry(&second, "boom").await,
        Err(QueueError::Lost)
    ));

    // Newest first, at most `limit`.
    let other = self::job(Priority::High);
    enqueue(&*queue, &other).await;
    let first = next(&*queue, "w1").await;
    queue.retry(&first, "one").await.expect("retry");
    let second = next(&*queue, "w1").await;
    queue.retry(&second, "two").await.expect("retry");
    let dead = queue.dead_letters(1).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].job_id, dead[0].reason.as_str()),
        (other.job_id, "two")
    );
    assert_eq!(queue.dead_letters(10).await.expect("dead letters").len(), 2);

    // A dead job is out of the queue: the reconciler may put it back.
    assert!(queue.enqueue(job).await.expect("enqueue"));
}

/// Makes `job` a dead letter with `reason` (on its only attempt).
async fn bury(queue: &dyn Queue, job: &Enqueue, reason: &str) {
    enqueue(queue, job).await;
    let delivery = next(queue, "w1").await;
    assert_eq!(delivery.job_id, job.job_id);
    assert_eq!(
        queue.retry(&delivery, reason).await.expect("retry"),
        Retried::DeadLettered
    );
}

async fn dead_letters_inspected_retried_and_discarded(backend: Backend) {
    let config = QueueConfig {
        max_attempts: 1,
        ..config()
    };
    let (queue, other) = backend.queue(config, unlimited()).await;
    let (kept, retried, discarded) = (
        job(Priority::Normal),
        job(Priority::High),
        job(Priority::Low),
    );
    for (job, reason) in [
        (&kept, "kept"),
        (&retried, "timeout"),
        (&discarded, "bad input"),
    ] {
        bury(&*queue, job, reason).await;
    }
    assert_eq!(depth(&*queue).await.dead, 3);

    // Inspected one by one, from any handle on the queue.
    let letter = other
        .dead_letter(retried.job_id)
        .await
        .expect("dead letter")
        .expect("a letter");
    assert_eq!(
        (
            letter.job_id,
            letter.user_id,
            letter.attempts,
            letter.reason.as_str()
        ),
        (retried.job_id, retried.user_id, 1, "timeout")
    );
    assert_eq!(
        queue
            .dead_letter(Uuid::new_v4())
            .await
            .expect("dead letter"),
        None
    );

    // Retried: out of the dead letters, delivered again from attempt 1.
    assert!(
        queue
            .retry_dead_letter(retried.clone())
            .await
            .expect("retry dead letter")
    );
    assert!(
        !other
            .retry_dead_letter(retried.clone())
            .await
            .expect("retry dead letter"),
        "a letter is retried once"
    );
    assert_eq!(
        queue
            .dead_letter(retried.job_id)
            .await
            .expect("dead letter"),
        None
    );
    let again = next(&*queue, "w2").await;
    assert_eq!((again.job_id, again.attempt), (retried.job_id, 1));
    queue.complete(&again).await.expect("complete");

    // Discarded: gone, once; the others stay.
    let gone = queue
        .discard_dead_letter(discarded.job_id)
        .await
        .expect("discard")
        .expect("the letter");
    assert_eq!(gone.reason, "bad input");
    assert_eq!(
        other
            .discard_dead_letter(discarded.job_id)
            .await
            .expect("discard"),
        None,
        "a letter is discarded once"
    );
    let left: Vec<Uuid> = queue
        .dead_letters(10)
        .await
        .expect("dead letters")
        .iter()
        .map(|letter| letter.job_id)
        .collect();
    assert_eq!(left, [kept.job_id]);
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            dead: 1,
            ..QueueDepth::default()
        }
    );
    nothing(&*queue, A_WHILE).await;
}

async fn defer_does_not_count_an_attempt(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let job = job(Priority::Normal);
    enqueue(&*queue, &job).await;
    let first = next(&*queue, "w1").await;
    let deferred_at = Instant::now();
    queue
        .defer(&first, Duration::from_millis(500))
        .await
        .expect("defer");
    assert_eq!(depth(&*queue).await.delayed, 1);
    nothing(&*queue, A_WHILE).await;
    assert!(matches!(queue.extend(&first).await, Err(QueueError::Lost)));
    assert!(matches!(
        queue.defer(&first, Duration::ZERO).await,
        Err(QueueError::Lost)
    ));

    let again = next(&*queue, "w2").await;
    assert!(deferred_at.elapsed() >= Duration::from_millis(490));
    assert_eq!((again.job_id, again.attempt), (job.job_id, 1));

    // Deferring over and over never dead-letters.
    let config_attempts = config().max_attempts;
    let mut delivery = again;
    for _ in 0..config_attempts + 1 {
        queue.defer(&delivery, Duration::ZERO).await.expect("defer");
        delivery = next(&*queue, "w2").await;
        assert_eq!(delivery.attempt, 1);
    }
    queue.complete(&delivery).await.expect("complete");
}

async fn visibility_timeout_reclaims(backend: Backend) {
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(400),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let job = job(Priority::Normal);
    enqueue(&*queue, &job).await;
    let stalled = next(&*queue, "w1").await;
    let delivered_at = Instant::now();
    assert_eq!(stalled.attempt, 1);

    // w1 never settles it: once the timeout passes it goes to another worker.
    let reclaimed = next(&*peer, "w2").await;
    assert!(delivered_at.elapsed() >= Duration::from_millis(390));
    assert_eq!((reclaimed.job_id, reclaimed.attempt), (job.job_id, 2));
    assert_eq!(depth(&*queue).await.in_flight, 1);
    assert!(matches!(
        queue.extend(&stalled).await,
        Err(QueueError::Lost)
    ));
    assert!(matches!(
        queue.retry(&stalled, "late").await,
        Err(QueueError::Lost)
    ));
    peer.extend(&reclaimed)
        .await
        .expect("the new holder extends");
    peer.complete(&reclaimed).await.expect("complete");
    assert!(!queue.contains(job.job_id).await.expect("contains"));
    assert_eq!(depth(&*queue).await, QueueDepth::default());
}

async fn extend_prevents_reclaim(backend: Backend) {
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(600),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let job = job(Priority::Normal);
    enqueue(&*queue, &job).await;
    let held = next(&*queue, "w1").await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        queue.extend(&held).await.expect("extend");
        let stolen = peer.next("w2", Duration::ZERO).await.expect("next");
        assert_eq!(stolen, None, "an extended delivery is not reclaimed");
    }

    // The heartbeat stops: the job goes to another worker.
    let reclaimed = next(&*peer, "w2").await;
    assert_eq!((reclaimed.job_id, reclaimed.attempt), (job.job_id, 2));
}

async fn remove_from_waiting_and_delayed(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let running = job(Priority::High);
    enqueue(&*queue, &running).await;
    let in_flight = next(&*queue, "w1").await;

    let waiting = job(Priority::Normal);
    let delayed = Enqueue {
        delay: Some(Duration::from_secs(60)),
        ..job(Priority::Low)
    };
    enqueue(&*queue, &waiting).await;
    enqueue(&*queue, &delayed).await;

    assert!(queue.remove(waiting.job_id).await.expect("remove waiting"));
    assert!(queue.remove(delayed.job_id).await.expect("remove delayed"));
    assert!(
        !queue
            .remove(running.job_id)
            .await
            .expect("remove in flight")
    );
    assert!(!queue.remove(Uuid::new_v4()).await.expect("remove unknown"));
    assert!(!queue.remove(waiting.job_id).await.expect("remove again"));

    for job in [&waiting, &delayed] {
        assert!(!queue.contains(job.job_id).await.expect("contains"));
    }
    assert!(queue.contains(running.job_id).await.expect("contains"));
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            in_flight: 1,
            ..QueueDepth::default()
        }
    );
    nothing(&*queue, A_WHILE).await;
    queue.complete(&in_flight).await.expect("complete");
    // A removed job can come back.
    enqueue(&*queue, &waiting).await;
    assert_eq!(next(&*queue, "w1").await.job_id, waiting.job_id);
}

async fn contains_and_position(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let normal: Vec<Enqueue> = (0..3).map(|_| job(Priority::Normal)).collect();
    let low = job(Priority::Low);
    let high = job(Priority::High);
    for job in normal.iter().chain([&low, &high]) {
        enqueue(&*queue, job).await;
    }
    let delayed = Enqueue {
        delay: Some(Duration::from_secs(60)),
        ..job(Priority::High)
    };
    enqueue(&*queue, &delayed).await;

    let position = async |job: &Enqueue| queue.position(job.job_id).await.expect("position");
    assert_eq!(position(&high).await, Some(0));
    for (at, job) in normal.iter().enumerate() {
        assert_eq!(position(job).await, Some(at as u64 + 1));
    }
    assert_eq!(position(&low).await, Some(4));
    assert_eq!(position(&delayed).await, None, "delayed is not waiting");
    assert_eq!(
        queue.position(Uuid::new_v4()).await.expect("position"),
        None
    );

    let delivery = next(&*queue, "w1").await;
    assert_eq!(delivery.job_id, high.job_id);
    assert_eq!(position(&high).await, None, "in flight is not waiting");
    assert!(queue.contains(high.job_id).await.expect("contains"));
    assert_eq!(position(&normal[0]).await, Some(0));
    assert_eq!(position(&low).await, Some(3));
    for job in normal.iter().chain([&low, &delayed]) {
        assert!(queue.contains(job.job_id).await.expect("contains"));
    }
    assert!(!queue.contains(Uuid::new_v4()).await.expect("contains"));
    queue.complete(&delivery).await.expect("complete");
    assert!(!queue.contains(high.job_id).await.expect("contains"));
}

async fn per_user_cap(backend: Backend) {
    let capped = Uuid::new_v4();
    let limit: UserLimit = Arc::new(move |user| if user == capped { 1 } else { 10 });
    let (queue, _) = backend.queue(config(), limit).await;
    let a: Vec<Enqueue> = (0..4).map(|_| job_of(capped)).collect();
    let b = job(Priority::Normal);
    for job in a.iter().chain([&b]) {
        enqueue(&*queue, job).await;
    }

    let a1 = next(&*queue, "w1").await;
    assert_eq!(a1.job_id, a[0].job_id);
    // A is at their cap: their next jobs are passed over, B's is delivered.
    let b1 = next(&*queue, "w2").await;
    assert_eq!(b1.job_id, b.job_id);
    nothing(&*queue, A_WHILE).await;
    for job in &a[1..] {
        assert!(
            queue.contains(job.job_id).await.expect("contains"),
            "not lost"
        );
        assert!(
            queue
                .position(job.job_id)
                .await
                .expect("position")
                .is_some(),
            "still waiting"
        );
    }
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            normal: 3,
            in_flight: 2,
            ..QueueDepth::default()
        }
    );
    assert!(
        queue
            .remove(a[3].job_id)
            .await
            .expect("remove a waiting capped job")
    );
    assert!(!queue.contains(a[3].job_id).await.expect("contains"));

    queue.complete(&b1).await.expect("complete");
    nothing(&*queue, A_WHILE).await;

    // A's slot frees: their next job comes; completing twice frees nothing more.
    queue.complete(&a1).await.expect("complete");
    queue.complete(&a1).await.expect("complete again");
    let a2 = next(&*queue, "w1").await;
    assert_eq!((a2.job_id, a2.attempt), (a[1].job_id, 1));
    nothing(&*queue, A_WHILE).await;

    // Any settling frees the slot: a retry too.
    queue.retry(&a2, "flaky").await.expect("retry");
    let a3 = next(&*queue, "w1").await;
    assert_eq!((a3.job_id, a3.attempt), (a[2].job_id, 1));
    queue.complete(&a3).await.expect("complete");
    let a2 = next(&*queue, "w1").await;
    assert_eq!((a2.job_id, a2.attempt), (a[1].job_id, 2));
    queue.complete(&a2).await.expect("complete");
    assert_eq!(depth(&*queue).await, QueueDepth::default());
}

async fn rate_limit(backend: Backend) {
    // A burst of 5, then one a second.
    let config = QueueConfig {
        rate_limit: Some(RateLimit {
            jobs: 5,
            per: Duration::from_secs(5),
        }),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    for _ in 0..7 {
        enqueue(&*queue, &job(Priority::Normal)).await;
    }
    // Two workers (on Redis, two processes) share the limit.
    for (i, queue) in [&queue, &peer].into_iter().cycle().take(5).enumerate() {
        let delivery = queue
            .next(&format!("w{}", i % 2), Duration::ZERO)
            .await
            .expect("next");
        assert!(delivery.is_some(), "delivery {i} is within the burst");
    }
    let started = Instant::now();
    for queue in [&queue, &peer] {
        let delivery = queue
            .next("w3", Duration::from_millis(200))
            .await
            .expect("next");
        assert_eq!(delivery, None, "the burst is spent");
    }
    let sixth = peer.next("w3", SOON).await.expect("next");
    assert!(sixth.is_some(), "a token comes back within a second");
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert_eq!(depth(&*queue).await.normal, 1);
}

async fn racing_consumers_never_share_a_delivery(backend: Backend) {
    let (queue, peer) = backend.queue(config(), unlimited()).await;
    let jobs: HashSet<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    for job_id in &jobs {
        let job = Enqueue {
            job_id: *job_id,
            ..job(Priority::ALL[job_id.as_bytes()[0] as usize % 3])
        };
        enqueue(&*queue, &job).await;
    }
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let queue = if i % 2 == 0 {
                queue.clone()
            } else {
                peer.clone()
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(delivery) = queue
                    .next(&format!("w{i}"), Duration::from_millis(300))
                    .await
                    .expect("next")
                {
                    got.push(delivery.job_id);
                    queue.complete(&delivery).await.expect("complete");
                }
                got
            })
        })
        .collect();
    let mut delivered = Vec::new();
    for worker in futures::future::join_all(workers).await {
        delivered.extend(worker.expect("worker"));
    }
    let unique: HashSet<Uuid> = delivered.iter().copied().collect();
    assert_eq!(unique.len(), delivered.len(), "a job was delivered twice");
    assert_eq!(unique, jobs, "every job was delivered");
    assert_eq!(depth(&*queue).await, QueueDepth::default());
}

async fn stalled_last_attempt_is_dead_lettered(backend: Backend) {
    let config = QueueConfig {
        max_attempts: 2,
        visibility_timeout: Duration::from_millis(300),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let job = job(Priority::High);
    enqueue(&*queue, &job).await;
    assert_eq!(next(&*queue, "w1").await.attempt, 1);
    assert_eq!(next(&*peer, "w2").await.attempt, 2);
    // The second worker stalls too, on the last attempt: no third delivery.
    tokio::time::sleep(Duration::from_millis(400)).await;
    nothing(&*queue, A_WHILE).await;
    assert!(!queue.contains(job.job_id).await.expect("contains"));
    let dead = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].job_id, dead[0].attempts), (job.job_id, 2));
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            dead: 1,
            ..QueueDepth::default()
        }
    );
}

async fn capped_backlog_does_not_hold_up_others(backend: Backend) {
    let capped = Uuid::new_v4();
    let limit: UserLimit = Arc::new(move |user| if user == capped { 1 } else { 10 });
    let (queue, _) = backend.queue(config(), limit).await;
    let backlog: Vec<Enqueue> = (0..450).map(|_| job_of(capped)).collect();
    for job in &backlog {
        enqueue(&*queue, job).await;
    }
    let other = job(Priority::Normal);
    enqueue(&*queue, &other).await;

    let first = next(&*queue, "w1").await;
    assert_eq!(first.job_id, backlog[0].job_id);
    let started = Instant::now();
    let second = queue.next("w2", Duration::ZERO).await.expect("next");
    assert_eq!(
        second.map(|delivery| delivery.job_id),
        Some(other.job_id),
        "found at once, past the whole backlog"
    );
    assert!(started.elapsed() < SOON);
    assert_eq!(depth(&*queue).await.normal, 449);

    // The backlog then runs one at a time, in order.
    for job in &backlog[1..4] {
        queue.complete(&first).await.expect("complete");
        let delivery = next(&*queue, "w1").await;
        assert_eq!(delivery.job_id, job.job_id);
        nothing(&*queue, Duration::ZERO).await;
        queue.complete(&delivery).await.expect("complete");
    }
}

async fn parked_jobs_use_no_rate_limit_token(backend: Backend) {
    let capped = Uuid::new_v4();
    let limit: UserLimit = Arc::new(move |user| if user == capped { 1 } else { 10 });
    let config = QueueConfig {
        rate_limit: Some(RateLimit {
            jobs: 2,
            per: Duration::from_secs(60),
        }),
        ..config()
    };
    let (queue, _) = backend.queue(config, limit).await;
    let a: Vec<Enqueue> = (0..3).map(|_| job_of(capped)).collect();
    let b = job(Priority::Normal);
    for job in a.iter().chain([&b]) {
        enqueue(&*queue, job).await;
    }
    assert_eq!(next(&*queue, "w1").await.job_id, a[0].job_id);
    // a[1] and a[2] are passed over on the way to b: the second token goes to b.
    let delivery = queue.next("w1", Duration::ZERO).await.expect("next");
    assert_eq!(delivery.map(|delivery| delivery.job_id), Some(b.job_id));
    nothing(&*queue, Duration::ZERO).await;
}

async fn rate_limit_is_off_by_default(backend: Backend) {
    let defaults = QueueConfig::default();
    assert_eq!(
        defaults.rate_limit, None,
        "fal limits concurrency, not rate"
    );
    assert_eq!(defaults.max_in_flight, None);
    let (queue, _) = backend.queue(defaults, unlimited()).await;
    // More than the old hard-coded 100 a minute, all delivered at once.
    let jobs: Vec<Enqueue> = (0..250).map(|_| job(Priority::Normal)).collect();
    let added = queue.enqueue_many(&jobs).await.expect("enqueue many");
    assert!(added.iter().all(|added| *added));
    let started = Instant::now();
    let mut delivered = HashSet::new();
    while delivered.len() < jobs.len() {
        let batch = queue.next_many("w1", 100, SOON).await.expect("next many");
        assert!(
            !batch.is_empty(),
            "stalled after {} deliveries",
            delivered.len()
        );
        delivered.extend(batch.iter().map(|delivery| delivery.job_id));
        queue.complete_many(&batch).await.expect("complete many");
    }
    assert!(started.elapsed() < SOON, "took {:?}", started.elapsed());
    assert_eq!(delivered.len(), 250);
    assert_eq!(depth(&*queue).await, QueueDepth::default());
}

async fn batches_keep_order_and_dedupe(backend: Backend) {
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let jobs: Vec<Enqueue> = (0..30).map(|_| job(Priority::Normal)).collect();
    let mut with_repeat = jobs.clone();
    with_repeat.push(jobs[3].clone());
    let added = queue
        .enqueue_many(&with_repeat)
        .await
        .expect("enqueue many");
    assert_eq!(added.len(), 31);
    assert!(added[..30].iter().all(|added| *added));
    assert!(!added[30], "a job id already waiting is not added twice");
    assert_eq!(depth(&*queue).await.normal, 30);

    let first = queue.next_many("w1", 20, SOON).await.expect("next many");
    let second = queue.next_many("w2", 20, SOON).await.expect("next many");
    assert_eq!(first.len(), 20);
    assert_eq!(second.len(), 10);
    let order: Vec<Uuid> = first.iter().chain(&second).map(|d| d.job_id).collect();
    let expected: Vec<Uuid> = jobs.iter().map(|job| job.job_id).collect();
    assert_eq!(order, expected, "first in, first out");
    assert!(first.iter().chain(&second).all(|d| d.attempt == 1));
    assert_eq!(depth(&*queue).await.in_flight, 30);

    queue.complete_many(&first).await.expect("complete many");
    queue
        .complete_many(&first)
        .await
        .expect("completing twice is a no-op");
    assert_eq!(depth(&*queue).await.in_flight, 10);
    for delivery in &first {
        assert!(!queue.contains(delivery.job_id).await.expect("contains"));
    }
    queue.complete_many(&second).await.expect("complete many");
    assert_eq!(depth(&*queue).await, QueueDepth::default());
    nothing(&*queue, Duration::ZERO).await;
}

async fn an_idle_worker_is_woken_at_once(backend: Backend) {
    // Polling so rarely that only a wake-up can deliver within the test's wait.
    let config = QueueConfig {
        poll_interval: Duration::from_secs(30),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let waiting = {
        let peer = peer.clone();
        tokio::spawn(async move { peer.next("w2", Duration::from_secs(20)).await })
    };
    tokio::time::sleep(A_WHILE).await;
    let job = job(Priority::Normal);
    let enqueued = Instant::now();
    enqueue(&*queue, &job).await;
    let delivery = waiting
        .await
        .expect("worker")
        .expect("next")
        .expect("a delivery");
    assert_eq!(delivery.job_id, job.job_id);
    assert!(
        enqueued.elapsed() < Duration::from_secs(2),
        "woken after {:?}",
        enqueued.elapsed()
    );
    queue.complete(&delivery).await.expect("complete");
}

/// Takes every delivery available now, from `queues` in turn.
async fn drain(queues: &[&Arc<dyn Queue>]) -> Vec<Delivery> {
    let mut all = Vec::new();
    loop {
        let mut got = false;
        for (i, queue) in queues.iter().enumerate() {
            let batch = queue
                .next_many(&format!("w{i}"), 3, Duration::ZERO)
                .await
                .expect("next many");
            got |= !batch.is_empty();
            all.extend(batch);
        }
        if !got {
            return all;
        }
    }
}

async fn the_bound_holds_across_workers(backend: Backend) {
    let config = QueueConfig {
        max_in_flight: Some(3),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let jobs: Vec<Enqueue> = (0..8).map(|_| job(Priority::Normal)).collect();
    queue.enqueue_many(&jobs).await.expect("enqueue many");
    // Two workers (on Redis, two processes) share the bound.
    let held = drain(&[&queue, &peer]).await;
    assert_eq!(held.len(), 3, "three in flight at most");
    assert_eq!(
        peer.concurrency().await.expect("concurrency"),
        Concurrency {
            in_flight: 3,
            limit: Some(3),
            max: Some(3),
        }
    );
    assert_eq!(depth(&*queue).await.normal, 5, "the rest wait, none lost");

    // A worker waiting at the bound is woken when a slot frees.
    let waiting = {
        let peer = peer.clone();
        tokio::spawn(async move { peer.next("w9", SOON).await })
    };
    tokio::time::sleep(A_WHILE).await;
    assert!(!waiting.is_finished(), "nothing delivered past the bound");
    queue.complete(&held[0]).await.expect("complete");
    let fourth = waiting
        .await
        .expect("worker")
        .expect("next")
        .expect("delivered once a slot freed");
    assert_eq!(fourth.job_id, jobs[3].job_id);
    nothing(&*queue, Duration::ZERO).await;
    assert_eq!(queue.concurrency().await.expect("concurrency").in_flight, 3);
}

async fn every_way_out_of_flight_frees_a_slot(backend: Backend) {
    let config = QueueConfig {
        max_in_flight: Some(2),
        max_attempts: 2,
        visibility_timeout: Duration::from_millis(300),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let jobs: Vec<Enqueue> = (0..6).map(|_| job(Priority::Normal)).collect();
    queue.enqueue_many(&jobs).await.expect("enqueue many");
    let in_flight = async || queue.concurrency().await.expect("concurrency").in_flight;
    let a = next(&*queue, "w1").await;
    let b = next(&*queue, "w1").await;
    nothing(&*queue, Duration::ZERO).await;
    assert_eq!(in_flight().await, 2);

    // A defer frees a slot and spends no attempt.
    queue
        .defer(&a, Duration::from_secs(60))
        .await
        .expect("defer");
    assert_eq!(in_flight().await, 1);
    let c = next(&*queue, "w1").await;
    nothing(&*queue, Duration::ZERO).await;
    // So does a retry.
    queue.retry(&c, "flaky").await.expect("retry");
    assert_eq!(in_flight().await, 1);
    let d = next(&*queue, "w1").await;
    assert_eq!(in_flight().await, 2);

    // A reclaim after the visibility timeout hands the slot on, it takes no second one.
    let reclaimed = next(&*peer, "w2").await;
    assert!(reclaimed.job_id == b.job_id || reclaimed.job_id == d.job_id);
    assert_eq!(reclaimed.attempt, 2);
    assert_eq!(in_flight().await, 2);
    // The other stalled one is reclaimed too; then both stall on their last attempt and
    // are dead-lettered, which frees their slots.
    let other = next(&*peer, "w2").await;
    assert_eq!(other.attempt, 2);
    assert_eq!(in_flight().await, 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = next(&*peer, "w2").await;
    assert_eq!(fresh.attempt, 1, "a waiting job takes a freed slot");
    assert_eq!(queue.dead_letters(10).await.expect("dead letters").len(), 2);
    assert_eq!(in_flight().await, 1);

    // Removing a waiting job frees nothing; completing does.
    let waiting = jobs
        .iter()
        .find(|job| ![a.job_id, b.job_id, c.job_id, d.job_id, fresh.job_id].contains(&job.job_id))
        .expect("one job still waits");
    assert!(queue.remove(waiting.job_id).await.expect("remove"));
    assert_eq!(in_flight().await, 1);
    peer.complete(&fresh).await.expect("complete");
    assert_eq!(in_flight().await, 0);
    assert_eq!(
        depth(&*queue).await,
        QueueDepth {
            normal: 1,
            delayed: 1,
            dead: 2,
            ..QueueDepth::default()
        },
        "the retried job waits, the deferred one is delayed"
    );
}

async fn fair_share_under_the_bound(backend: Backend) {
    let (heavy, light) = (Uuid::new_v4(), Uuid::new_v4());
    let config = QueueConfig {
        max_in_flight: Some(4),
        ..config()
    };
    let (queue, _) = backend.queue(config, unlimited()).await;
    // One user's backlog first, another's few jobs behind it.
    let backlog: Vec<Enqueue> = (0..300).map(|_| job_of(heavy)).collect();
    let few: Vec<Enqueue> = (0..3).map(|_| job_of(light)).collect();
    queue.enqueue_many(&backlog).await.expect("enqueue many");
    queue.enqueue_many(&few).await.expect("enqueue many");

    let held = drain(&[&queue]).await;
    let of = |user: Uuid, held: &[Delivery]| held.iter().filter(|d| d.user_id == user).count();
    assert_eq!(held.len(), 4);
    assert_eq!(
        (of(heavy, &held), of(light, &held)),
        (2, 2),
        "two users share the bound of four evenly, whoever came first"
    );
    // The light user's jobs run as theirs finish, past the heavy backlog.
    let light_held: Vec<Delivery> = held
        .iter()
        .filter(|d| d.user_id == light)
        .cloned()
        .collect();
    queue.complete(&light_held[0]).await.expect("complete");
    let third = next(&*queue, "w1").await;
    assert_eq!(third.job_id, few[2].job_id);
    queue.complete(&light_held[1]).await.expect("complete");
    queue.complete(&third).await.expect("complete");
    // Alone again, the heavy user grows back to the whole bound as theirs settle.
    let mut heavy_held: Vec<Delivery> = held.into_iter().filter(|d| d.user_id == heavy).collect();
    heavy_held.extend(drain(&[&queue]).await);
    let done = heavy_held.remove(0);
    queue.complete(&done).await.expect("complete");
    heavy_held.extend(drain(&[&queue]).await);
    assert_eq!(heavy_held.len(), 4, "the whole bound, once alone");
    let order: Vec<Uuid> = heavy_held.iter().map(|d| d.job_id).collect();
    assert!(
        order
            .iter()
            .all(|id| backlog.iter().any(|job| job.job_id == *id))
    );
    assert_eq!(depth(&*queue).await.normal, 300 - 5);
}

async fn throttle_halves_and_relieve_restores(backend: Backend) {
    let config = QueueConfig {
        max_in_flight: Some(8),
        ..config()
    };
    let (queue, peer) = backend.queue(config, unlimited()).await;
    let limit =
        async |queue: &Arc<dyn Queue>| queue.concurrency().await.expect("concurrency").limit;
    assert_eq!(limit(&queue).await, Some(8));
    assert_eq!(queue.throttle().await.expect("throttle").limit, Some(4));
    // A burst of 429s counts once.
    assert_eq!(peer.throttle().await.expect("throttle").limit, Some(4));
    assert_eq!(limit(&peer).await, Some(4), "every worker sees it");

    let jobs: Vec<Enqueue> = (0..10).map(|_| job(Priority::Normal)).collect();
    queue.enqueue_many(&jobs).await.expect("enqueue many");
    assert_eq!(drain(&[&queue, &peer]).await.len(), 4);

    // One slot more per bound's worth of successes: 4 → 5 after five.
    for _ in 0..4 {
        assert_eq!(peer.relieve().await.expect("relieve").limit, Some(4));
    }
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.next("w9", SOON).await })
    };
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(peer.relieve().await.expect("relieve").limit, Some(5));
    let fifth = waiting.await.expect("worker").expect("next");
    assert!(fifth.is_some(), "the raised bound lets one more through");
    nothing(&*queue, Duration::ZERO).await;

    // Never above the max.
    for _ in 0..60 {
        queue.relieve().await.expect("relieve");
    }
    assert_eq!(limit(&peer).await, Some(8));
    assert_eq!(drain(&[&queue, &peer]).await.len(), 3);

    // After the cooldown a new 429 halves again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(queue.throttle().await.expect("throttle").limit, Some(4));
    assert_eq!(peer.throttle().await.expect("throttle").limit, Some(4));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(queue.throttle().await.expect("throttle").limit, Some(2));

    // Without a bound there is nothing to lower.
    let (unbounded, _) = backend.queue(self::config(), unlimited()).await;
    let concurrency = unbounded.throttle().await.expect("throttle");
    assert_eq!((concurrency.limit, concurrency.max), (None, None));
}

// ---------------------------------------------------------------------------------------
// Redis only: what only a shared, external queue can go through

/// A worker read an entry and went away before delivering it (its `next` was dropped
/// between the two runs of the script): once the visibility timeout passes the entry is
/// delivered to another worker, as a first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entry_read_by_a_vanished_worker_is_delivered() {
    let backend = Backend::redis().await;
    let Backend::Redis(redis) = &backend else {
        unreachable!("a Redis backend")
    };
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(300),
        ..config()
    };
    let (queue, _) = backend.queue(config, unlimited()).await;
    let job = job(Priority::Normal);
    enqueue(&*queue, &job).await;
    let read: fred::types::Value = redis
        .client
        .xreadgroup(
            "workers",
            "vanished",
            Some(1),
            None,
            false,
            redis.key("{queue}:normal"),
            ">",
        )
        .await
        .expect("reading as a worker that then vanishes");
    assert!(!read.is_null(), "the entry was read");
    nothing(&*queue, A_WHILE).await;
    let delivery = next(&*queue, "w1").await;
    assert_eq!((delivery.job_id, delivery.attempt), (job.job_id, 1));
    queue.complete(&delivery).await.expect("complete");
    assert_eq!(depth(&*queue).await, QueueDepth::default());
    backend.clean().await;
}

/// Redis lost everything (a restart without persistence): the queue recreates its lines
/// and groups, and the reconciler's enqueues work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_recovers_from_lost_data() {
    let backend = Backend::redis().await;
    let (queue, _) = backend.queue(config(), unlimited()).await;
    let job = job(Priority::Low);
    enqueue(&*queue, &job).await;
    backend.clean().await;
    assert!(!queue.contains(job.job_id).await.expect("contains"));
    nothing(&*queue, Duration::ZERO).await;
    enqueue(&*queue, &job).await;
    let delivery = next(&*queue, "w1").await;
    assert_eq!(delivery.job_id, job.job_id);
    queue.complete(&delivery).await.expect("complete");
    backend.clean().await;
}
