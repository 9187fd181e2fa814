//! The client's settings, with defaults and the environment variables that override
//! them (see the table in the crate documentation).

use std::{fmt, str::FromStr, time::Duration};

use anyhow::bail;

/// fal's queue host.
pub const DEFAULT_QUEUE_URL: &str = "https://queue.fal.run";

/// fal's platform API (model metadata and pricing).
pub const DEFAULT_API_URL: &str = "https://api.fal.ai/v1";

/// The hosts fal serves results from. `storage.googleapis.com` only under
/// `/falserverless/`.
pub const DEFAULT_RESULT_HOSTS: [&str; 4] = [
    "v3.fal.media",
    "v3b.fal.media",
    "fal.media",
    "storage.googleapis.com/falserverless/",
];

/// How the client talks to fal's queue API. The key never shows in `Debug` output.
#[derive(Clone)]
pub struct FalConfig {
    /// Base URL of the queue API (`FAL_QUEUE_URL`, default `https://queue.fal.run`).
    pub queue_url: String,
    /// Base URL of the platform API, where prices and model schemas are read (`FAL_API_URL`,
    /// default `https://api.fal.ai/v1`).
    pub api_url: String,
    /// The API key (`FAL_KEY`), sent as `Authorization: Key <key>`; may be
    /// `KEY_ID:KEY_SECRET`.
    pub key: String,
    /// Seconds fal may keep a request queued before giving up on it (sent as
    /// `X-Fal-Request-Timeout`; `FAL_REQUEST_TIMEOUT_SECS`, unset by default).
    pub request_timeout: Option<Duration>,
    /// Deadline for one HTTP call to the queue API (`FAL_HTTP_TIMEOUT_SECS`, 30 s).
    pub http_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// The circuit breaker kept for each fal host.
    pub breaker: BreakerConfig,
    /// Where results may be downloaded from (`FAL_RESULT_HOSTS`, comma-separated,
    /// replaces the default list). Each entry is `[http://|https://]host[:port][/path-prefix]`:
    /// without a scheme only `https` is allowed; `http` only for an entry that says
    /// `http://`. An entry with an explicit port (e.g. the simulator's
    /// `http://127.0.0.1:4010`) may resolve to a loopback or private address; every
    /// other entry must resolve to a public one.
    pub allowed_result_hosts: Vec<String>,
    /// Largest result accepted, in bytes (`FAL_MAX_RESULT_BYTES`, 512 MiB). Results
    /// stream through in bounded chunks, so this bounds storage, not memory.
    pub max_result_bytes: u64,
    /// Deadline for reaching a result's body (connection, redirects, headers), and
    /// the longest wait for each next piece of it (`FAL_RESULT_TIMEOUT_SECS`, 60 s).
    pub result_timeout: Duration,
    /// First pause between two status polls in [`FalClient::wait`](crate::FalClient::wait)
    /// (`FAL_POLL_INTERVAL_MS`, 500 ms); it grows by half while nothing changes.
    pub poll_interval: Duration,
    /// Longest pause between two status polls (`FAL_POLL_INTERVAL_MAX_MS`, 5 s).
    pub poll_interval_max: Duration,
    /// How long the status stream may stay silent (not even a keep-alive comment)
    /// before the client gives up on it (`FAL_STREAM_IDLE_SECS`, 15 s).
    pub stream_idle_timeout: Duration,
}

impl FalConfig {
    /// Defaults for everything but the key.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            queue_url: DEFAULT_QUEUE_URL.to_owned(),
            api_url: DEFAULT_API_URL.to_owned(),
            key: key.into(),
            request_timeout: None,
            http_timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            allowed_result_hosts: DEFAULT_RESULT_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            max_result_bytes: 512 * 1024 * 1024,
            result_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            poll_interval_max: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(15),
        }
    }

    /// Reads the settings from the environment; `None` when `FAL_KEY` is unset or
    /// empty (the caller then runs without fal, or with the simulator).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`FalConfig::from_env`] reading variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let env = Env(&lookup);
        let Some(key) = env.opt::<String>("FAL_KEY")? else {
            return Ok(None);
        };
        let mut config = Self::new(key);
        if let Some(url) = env.opt("FAL_QUEUE_URL")? {
            config.queue_url = url;
        }
        if let Some(url) = env.opt("FAL_API_URL")? {
            config.api_url = url;
        }
        config.request_timeout = env
            .opt::<u64>("FAL_REQUEST_TIMEOUT_SECS")?
            .map(Duration::from_secs);
        config.http_timeout = env.secs("FAL_HTTP_TIMEOUT_SECS", config.http_timeout)?;
        config.retry.max_retries = env.or("FAL_MAX_RETRIES", config.retry.max_retries)?;
        config.retry.base = env.millis("FAL_RETRY_BASE_MS", config.retry.base)?;
        config.retry.max_delay = env.secs("FAL_RETRY_MAX_DELAY_SECS", config.retry.max_delay)?;
        let breaker = &mut config.breaker;
        breaker.failure_rate = env.or("FAL_BREAKER_FAILURE_RATE", breaker.failure_rate)?;
        breaker.min_calls = env.or("FAL_BREAKER_MIN_CALLS", breaker.min_calls)?;
        breaker.window = env.secs("FAL_BREAKER_WINDOW_SECS", breaker.window)?;
        breaker.consecutive_failures = env.or(
            "FAL_BREAKER_CONSECUTIVE_FAILURES",
            breaker.consecutive_failures,
        )?;
        breaker.slow_call = env.millis("FAL_BREAKER_SLOW_CALL_MS", breaker.slow_call)?;
        breaker.open_duration = env.secs("FAL_BREAKER_OPEN_SECS", breaker.open_duration)?;
        breaker.half_open_max_probes =
            env.or("FAL_BREAKER_HALF_OPEN_PROBES", breaker.half_open_max_probes)?;
        if let Some(hosts) = env.opt::<String>("FAL_RESULT_HOSTS")? {
            config.allowed_result_hosts = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
        }
        config.max_result_bytes = env.or("FAL_MAX_RESULT_BYTES", config.max_result_bytes)?;
        config.result_timeout = env.secs("FAL_RESULT_TIMEOUT_SECS", config.result_timeout)?;
        config.poll_interval = env.millis("FAL_POLL_INTERVAL_MS", config.poll_interval)?;
        config.poll_interval_max =
            env.millis("FAL_POLL_INTERVAL_MAX_MS", config.poll_interval_max)?;
        config.stream_idle_timeout =
            env.secs("FAL_STREAM_IDLE_SECS", config.stream_idle_timeout)?;
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the values make sense together; [`FalClient::new`](crate::FalClient::new)
    /// calls it.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.key.trim().is_empty() {
            bail!("the fal key is empty");
        }
        if !(0.0..=1.0).contains(&self.breaker.failure_rate) {
            bail!("the breaker failure rate must lie in [0, 1]");
        }
        if self.breaker.half_open_max_probes == 0 {
            bail!("the breaker must admit at least one half-open probe");
        }
        if self.breaker.window < Duration::from_secs(1) {
            bail!("the breaker window must be at least 1 s");
        }
        if self.breaker.consecutive_failures == 0 {
            bail!("the breaker's consecutive failure count must be at least 1");
        }
        if !(0.0..1.0).contains(&self.retry.jitter) {
            bail!("the retry jitter must lie in [0, 1)");
        }
        if self.http_timeout.is_zero() || self.result_timeout.is_zero() {
            bail!("timeouts must not be zero");
        }
        Ok(())
    }
}

impl fmt::Debug for FalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FalConfig")
            .field("queue_url", &self.queue_url)
            .field("api_url", &self.api_url)
            .field("key", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("http_timeout", &self.http_timeout)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("allowed_result_hosts", &self.allowed_result_hosts)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("result_timeout", &self.result_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("poll_interval_max", &self.poll_interval_max)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .finish()
    }
}

/// Exponential backoff with jitter for transient failures: the n-th retry (from 0)
/// waits `base × 2^n`, moved by up to `±jitter` of itself, and never more than
/// `max_delay`.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Retries after the first attempt (`FAL_MAX_RETRIES`, 3).
    pub max_retries: u32,
    /// The first delay (`FAL_RETRY_BASE_MS`, 1 s).
    pub base: Duration,
    /// The longest delay (`FAL_RETRY_MAX_DELAY_SECS`, 30 s).
    pub max_delay: Duration,
    /// The fraction each delay is moved by at random, in `[0, 1)` (0.25).
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: 0.25,
        }
    }
}

/// When a host's circuit breaker opens, and how it recovers.
///
/// It opens when the failure rate over `window` exceeds `failure_rate` (once at least
/// `min_calls` calls were seen in the window), or after `consecutive_failures`
/// failures in a row. Only transient failures and slow calls count as failures. Open,
/// it rejects calls for `open_duration`; then it lets at most `half_open_max_probes`
/// calls through at once, and the first that succeeds closes it again (one that fails
/// opens it again).
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Failure rate above which the breaker opens, in `[0, 1]`
    /// (`FAL_BREAKER_FAILURE_RATE`, 0.5). failsafe weighs recent calls more (an
    /// exponential moving average over `window`).
    pub failure_rate: f64,
    /// Calls the window must hold before the failure rate counts
    /// (`FAL_BREAKER_MIN_CALLS`, 10).
    pub min_calls: u32,
    /// The window of the failure rate, in whole seconds (`FAL_BREAKER_WINDOW_SECS`,
    /// 30 s). failsafe only judges the rate once a whole window has passed since the
    /// breaker was created or last closed.
    pub window: Duration,
    /// Failures in a row that open the breaker (`FAL_BREAKER_CONSECUTIVE_FAILURES`, 5).
    pub consecutive_failures: u32,
    /// A call slower than this counts as a failure even when it succeeds
    /// (`FAL_BREAKER_SLOW_CALL_MS`, 10 s).
    pub slow_call: Duration,
    /// How long the breaker stays open (`FAL_BREAKER_OPEN_SECS`, 30 s).
    pub open_duration: Duration,
    /// Calls let through at once while half-open (`FAL_BREAKER_HALF_OPEN_PROBES`, 2).
    pub half_open_max_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            consecutive_failures: 5,
            slow_call: Duration::from_secs(10),
            open_duration: Duration::from_secs(30),
            half_open_max_probes: 2,
        }
    }
}

/// Environment variables read through a lookup function.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// `name`, parsed, if it is set and not blank. The value never shows in the
    /// error (`FAL_KEY` is read the same way).
    fn opt<T>(&self, name: &str) -> anyhow::Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match (self.0)(name) {
            Some(raw) if !raw.trim().is_empty() => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|err| anyhow::anyhow!("{name} is not valid: {err}")),
            _ => Ok(None),
        }
    }

    fn or<T>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    fn secs(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        Ok(self.opt::<u64>(name)?.map_or(default, Duration::from_secs))
    }

    fn millis(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        Ok(self
            .opt::<u64>(name)?
            .map_or(default, Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Option<FalConfig>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        FalConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_key_means_no_fal() {
        assert!(from(&[]).expect("read").is_none());
        assert!(from(&[("FAL_KEY", "  ")]).expect("read").is_none());
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = from(&[("FAL_KEY", "id:secret")])
            .expect("read")
            .expect("some");
        assert_eq!(config.queue_url, "https://queue.fal.run");
        assert_eq!(config.request_timeout, None);
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.retry.base, Duration::from_secs(1));
        assert_eq!(config.retry.max_delay, Duration::from_secs(30));
        assert_eq!(config.max_result_bytes, 512 * 1024 * 1024);
        assert_eq!(config.result_timeout, Duration::from_secs(60));
        assert_eq!(config.poll_interval, Duration::from_millis(500));
        assert_eq!(config.stream_idle_timeout, Duration::from_secs(15));
        assert_eq!(config.allowed_result_hosts.len(), 4);
    }

    #[test]
    fn variables_override_defaults() {
        let config = from(&[
            ("FAL_KEY", "id:secret"),
            ("FAL_QUEUE_URL", "http://127.0.0.1:4010"),
            ("FAL_REQUEST_TIMEOUT_SECS", "90"),
            ("FAL_MAX_RETRIES", "5"),
            ("FAL_BREAKER_FAILURE_RATE", "0.25"),
            ("FAL_BREAKER_HALF_OPEN_PROBES", "1"),
            ("FAL_RESULT_HOSTS", "http://127.0.0.1:4010, v3.fal.media"),
        ])
        .expect("read")
        .expect("some");
        assert_eq!(config.queue_url, "http://127.0.0.1:4010");
        assert_eq!(config.request_timeout, Some(Duration::from_secs(90)));
        assert_eq!(config.retry.max_retries, 5);
        assert_eq!(config.breaker.failure_rate, 0.25);
        assert_eq!(config.breaker.half_open_max_probes, 1);
        assert_eq!(
            config.allowed_result_hosts,
            ["http://127.0.0.1:4010", "v3.fal.media"]
        );
    }

    #[test]
    fn bad_values_name_the_variable_but_not_the_value() {
        let err =
            from(&[("FAL_KEY", "id:secret"), ("FAL_MAX_RETRIES", "lots")]).expect_err("invalid");
        assert!(err.to_string().contains("FAL_MAX_RETRIES"));
        assert!(!err.to_string().contains("lots"));
        assert!(from(&[("FAL_KEY", "k"), ("FAL_BREAKER_FAILURE_RATE", "2")]).is_err());
        assert!(from(&[("FAL_KEY", "k"), ("FAL_BREAKER_HALF_OPEN_PROBES", "0")]).is_err());
        assert!(from(&[("FAL_KEY", "k"), ("FAL_BREAKER_WINDOW_SECS", "0")]).is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let config = FalConfig::new("id:very-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
