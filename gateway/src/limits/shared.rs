//! Budgets kept in Redis, so every gateway replica draws on the same one.
//!
//! A busy key does not cost a Redis round trip per request: a check may take a
//! small lease of several requests' worth of the budget at once and spend it
//! locally for up to [`LEASE_FOR`]. Leased requests are counted in Redis when
//! they are taken, so the replicas together never exceed the budget; what a lease
//! leaves unspent when it lapses is lost, which only ever errs strict. A lease
//! grows (doubling) while the key spends each one before it lapses and shrinks
//! when it does not, and is at most a thousandth of the key's budget a minute, so
//! a key used now and then, and every small budget (under 2,000 a minute, such
//! as the credential limit), is checked in Redis request by request, exactly.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use atelier_common::redis::Redis;
use fred::{
    prelude::{ClientLike, LuaInterface},
    types::{config::Options, scripts::Script},
};

const GCRA: &str = include_str!("gcra.lua");

/// How long a check waits for Redis before the process's own budget decides.
const PATIENCE: Duration = Duration::from_millis(250);

/// How often "Redis is not answering" is logged while it is not.
const WARN_EVERY_SECS: i64 = 30;

/// How long a lease of a key's budget may be spent locally.
const LEASE_FOR: Duration = Duration::from_millis(100);
/// Keys whose leases are kept at most; lapsed ones are dropped first, then all.
const MAX_LEASES: usize = 100_000;

/// Requests of one key's budget taken from Redis and not yet spent.
struct Lease {
    left: u32,
    /// How many the last fetch asked for.
    size: u32,
    until: Instant,
}

pub struct SharedLimits {
    redis: Redis,
    script: Script,
    options: Options,
    last_warning: AtomicI64,
    leases: Mutex<HashMap<String, Lease>>,
    round_trips: AtomicU64,
}

impl SharedLimits {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: Script::from_lua(GCRA),
            options: Options {
                timeout: Some(PATIENCE),
                max_attempts: Some(1),
                fail_fast: true,
                ..Options::default()
            },
            last_warning: AtomicI64::new(i64::MIN),
            leases: Mutex::new(HashMap::new()),
            round_trips: AtomicU64::new(0),
        }
    }

    /// How many checks went to Redis so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Spends one request of a live lease of `key`; else says how many the next
    /// fetch should ask for (at most `max`).
    fn spend(&self, key: &str, max: u32) -> Result<(), u32> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let Some(lease) = leases.get_mut(key) else {
            return Err(1);
        };
        if lease.until > now && lease.left > 0 {
            lease.left -= 1;
            return Ok(());
        }
        // Spent in time: ask for twice as much; lapsed with some left: half.
        Err(if lease.left == 0 && lease.until > now {
            lease.size.saturating_mul(2).min(max)
        } else {
            (lease.size / 2).max(1)
        })
    }

    /// Keeps `granted` requests of `key`'s budget, one of which the caller spends now.
    fn keep(&self, key: String, asked: u32, granted: u32) {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if leases.len() >= MAX_LEASES {
            leases.retain(|_, lease| lease.until > now);
            if leases.len() >= MAX_LEASES {
                leases.clear();
            }
        }
        let lease = leases.entry(key).or_insert(Lease {
            left: 0,
            size: 1,
            until: now,
        });
        // Requests that fetched at the same time each add theirs.
        lease.left = if lease.until > now { lease.left } else { 0 } + granted.saturating_sub(1);
        lease.size = asked;
        lease.until = now + LEASE_FOR;
    }

    /// Counts one request against `key`'s budget of `per_minute` requests a
    /// minute (bursts up to as many): `Err` with the wait when over it. `None`
    /// when Redis did not answer in time; the caller decides alone then, so a
    /// Redis outage never takes the platform down.
    pub async fn check(
        &self,
        limit: &str,
        key: &str,
        per_minute: u32,
    ) -> Option<Result<(), Duration>> {
        if !self.redis.client.is_connected() {
            self.warn(&"not connected");
            return None;
        }
        let key = self.redis.key(&format!("ratelimit:{limit}:{key}"));
        let max_lease = (per_minute / 1000).max(1);
        let want = if max_lease > 1 {
            match self.spend(&key, max_lease) {
                Ok(()) => return Some(Ok(())),
                Err(want) => want,
            }
        } else {
            1
        };
        let interval_micros = 60_000_000 / u64::from(per_minute.max(1));
        let args = vec![
            interval_micros.to_string(),
            per_minute.to_string(),
            want.to_string(),
        ];
        let client = self.redis.client.with_options(&self.options);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let run = async {
            let reply: Result<(i64, i64), fred::error::Error> = match client
                .evalsha(self.script.sha1().clone(), key.clone(), args.clone())
                .await
            {
                // The first use after Redis started (or lost its scripts): EVAL loads it.
                Err(err) if err.details().starts_with("NOSCRIPT") => {
                    client.eval(GCRA, key.clone(), args).await
                }
                reply => reply,
            };
            reply
        };
        match tokio::time::timeout(PATIENCE, run).await {
            Ok(Ok((granted, _))) if granted > 0 => {
                if max_lease > 1 {
                    self.keep(key, want, u32::try_from(granted).unwrap_or(1));
                }
                Some(Ok(()))
            }
            Ok(Ok((_, wait))) => Some(Err(Duration::from_micros(wait.max(1) as u64))),
            Ok(Err(err)) => {
                self.warn(&err);
                None
            }
            Err(_) => {
                self.warn(&"timed out");
                None
            }
        }
    }

    fn warn(&self, err: &dyn std::fmt::Display) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %err, "redis does not answer rate-limit checks; each gateway limits on its own until it does");
        }
    }
}
