//! Budgets kept in Redis, so every gateway replica draws on the same one.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
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

pub struct SharedLimits {
    redis: Redis,
    script: Script,
    options: Options,
    last_warning: AtomicI64,
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
        }
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
        let interval_micros = 60_000_000 / u64::from(per_minute.max(1));
        let args = vec![interval_micros.to_string(), per_minute.to_string()];
        let client = self.redis.client.with_options(&self.options);
        let run = async {
            let reply: Result<i64, fred::error::Error> = match client
                .evalsha(self.script.sha1().clone(), key.clone(), args.clone())
                .await
            {
                // The first use after Redis started (or lost its scripts): EVAL loads it.
                Err(err) if err.details().starts_with("NOSCRIPT") => {
                    client.eval(GCRA, key, args).await
                }
                reply => reply,
            };
            reply
        };
        match tokio::time::timeout(PATIENCE, run).await {
            Ok(Ok(wait)) if wait <= 0 => Some(Ok(())),
            Ok(Ok(wait)) => Some(Err(Duration::from_micros(wait as u64))),
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
