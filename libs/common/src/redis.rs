//! Redis, when `REDIS_URL` is set: one client per process (fred), connected with
//! a bounded wait, every key under the platform's prefix (`REDIS_KEY_PREFIX`).

use std::time::Duration;

use anyhow::Context;
use fred::prelude::{Builder, Client, ClientLike, Config, ReconnectPolicy};

/// A connected client and the prefix its keys live under.
#[derive(Clone)]
pub struct Redis {
    pub client: Client,
    prefix: String,
}

impl Redis {
    /// Connects to `url` (redis://, rediss://, redis-cluster://, redis-sentinel://),
    /// waiting at most 30 s for the server.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> anyhow::Result<Self> {
        let config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(5);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .context("building the Redis client")?;
        tokio::time::timeout(Duration::from_secs(30), client.init())
            .await
            .context("Redis did not answer within 30 s")?
            .context("connecting to Redis")?;
        Ok(Self {
            client,
            prefix: prefix.into(),
        })
    }

    /// A client that connects in the background and reconnects whenever the
    /// connection drops, for callers that must not fail while Redis is away (they
    /// fall back to something of their own). Waits at most `patience` for the
    /// first connection.
    pub async fn connect_in_background(
        url: &str,
        prefix: impl Into<String>,
        patience: Duration,
    ) -> anyhow::Result<Self> {
        let mut config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
        // The reconnection policy applies to the first connection too.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(5);
            })
            // Commands never wait for a reconnection longer than this.
            .with_performance_config(|performance| {
                performance.default_command_timeout = Duration::from_secs(1);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .context("building the Redis client")?;
        // Detached: the client keeps its connection task running itself.
        drop(client.connect());
        if tokio::time::timeout(patience, client.wait_for_connect())
            .await
            .is_err()
        {
            tracing::warn!(
                ?patience,
                "redis is not reachable yet; carrying on without it until it is"
            );
        }
        Ok(Self {
            client,
            prefix: prefix.into(),
        })
    }

    /// `name` under this platform's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}
