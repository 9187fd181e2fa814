//! Atelier's client for fal.ai's queue API: submit a request, follow its status
//! (polled, or over the server-sent event stream), read its result, cancel it,
//! download the result files, verify fal's webhook deliveries, and read prices and
//! model schemas from the platform API.
//!
//! Every call goes through a circuit breaker kept per fal host (failsafe, with
//! half-open probes bounded by a semaphore) and is retried with exponential backoff
//! and jitter (tokio-retry) when the failure is transient: 408, 429, 502, 503, 504,
//! timeouts, connection errors, or fal's retry hint header. Validation errors (422)
//! and other client errors are never retried. While a breaker is open, calls fail at
//! once with [`FalError::Unavailable`] without touching the network: a job should
//! wait, not fail.
//!
//! Metrics: `atelier_fal_breaker_state{host}` (0 closed, 1 half-open, 2 open) and
//! `atelier_fal_requests_total{host,operation,outcome}` (one per HTTP attempt, and
//! one per call the breaker rejected, with outcome `rejected`).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FAL_KEY` | unset: no fal | API key, `Authorization: Key <FAL_KEY>` |
//! | `FAL_QUEUE_URL` | `https://queue.fal.run` | queue API base URL (the simulator's in local mode) |
//! | `FAL_API_URL` | `https://api.fal.ai/v1` | platform API base URL, for prices and model schemas (the simulator's in local mode) |
//! | `FAL_REQUEST_TIMEOUT_SECS` | unset | `X-Fal-Request-Timeout` sent with each submission |
//! | `FAL_HTTP_TIMEOUT_SECS` | 30 | deadline of one HTTP call |
//! | `FAL_MAX_RETRIES` | 3 | retries of a transient failure |
//! | `FAL_RETRY_BASE_MS` | 1000 | first retry delay (then ×2 each time, ±25 %) |
//! | `FAL_RETRY_MAX_DELAY_SECS` | 30 | longest retry delay |
//! | `FAL_BREAKER_FAILURE_RATE` | 0.5 | failure rate that opens a breaker |
//! | `FAL_BREAKER_MIN_CALLS` | 10 | calls in the window before the rate counts |
//! | `FAL_BREAKER_WINDOW_SECS` | 30 | window of the failure rate |
//! | `FAL_BREAKER_CONSECUTIVE_FAILURES` | 5 | failures in a row that open a breaker |
//! | `FAL_BREAKER_SLOW_CALL_MS` | 10000 | calls slower than this count as failures |
//! | `FAL_BREAKER_OPEN_SECS` | 30 | how long an open breaker rejects calls |
//! | `FAL_BREAKER_HALF_OPEN_PROBES` | 2 | calls let through at once while half-open |
//! | `FAL_RESULT_HOSTS` | `v3.fal.media,v3b.fal.media,fal.media,storage.googleapis.com/falserverless/` | where results may be downloaded from |
//! | `FAL_MAX_RESULT_BYTES` | 104857600 | largest result |
//! | `FAL_RESULT_TIMEOUT_SECS` | 60 | deadline of one result download |
//! | `FAL_POLL_INTERVAL_MS` | 500 | first status poll interval |
//! | `FAL_POLL_INTERVAL_MAX_MS` | 5000 | longest status poll interval |
//! | `FAL_STREAM_IDLE_SECS` | 15 | silence after which the status stream is given up |

mod breaker;
mod client;
mod config;
mod download;
mod endpoint;
mod error;
pub mod retry;
mod sse;
mod types;
pub mod webhook;

pub use breaker::BreakerState;
pub use client::FalClient;
pub use config::{
    BreakerConfig, DEFAULT_API_URL, DEFAULT_QUEUE_URL, DEFAULT_RESULT_HOSTS, FalConfig, RetryConfig,
};
pub use download::{MAX_REDIRECTS, RESULT_CHUNK_BYTES, ResultBody, is_forbidden_address};
pub use endpoint::{EndpointId, EndpointIdError};
pub use error::{FalError, FieldIssue, classify};
pub use types::{
    CancelOutcome, Downloaded, LogEntry, Price, Priority, QueueStatus, RequestStatus,
    SubmitOptions, Submitted,
};
