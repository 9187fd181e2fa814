//! What goes to and comes back from fal's queue API.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::FalError;

/// How to submit a request.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    /// Where fal POSTs the outcome (`fal_webhook` query parameter).
    pub webhook_url: Option<String>,
    /// `X-Fal-Queue-Priority`.
    pub priority: Option<Priority>,
    /// Ask fal not to retry the request itself on runner failures (`X-Fal-No-Retry: 1`).
    /// The client still retries the submission when fal refused it transiently.
    pub no_retry: bool,
}

/// fal's queue priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Normal,
    Low,
}

impl Priority {
    /// The header value: `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// A request fal accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub request_id: String,
    /// Where the result is read.
    pub response_url: String,
    pub status_url: String,
    pub cancel_url: String,
    pub queue_position: Option<u32>,
    /// fal's id for the request at its gateway, when it sent one.
    pub gateway_request_id: Option<String>,
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueStatus {
    /// `IN_QUEUE`: waiting for a runner.
    InQueue,
    /// `IN_PROGRESS`: running.
    InProgress,
    /// `COMPLETED`: done, successfully or not (see [`RequestStatus::error`]).
    Completed,
}

impl QueueStatus {
    /// Parses fal's value; anything but the three is a protocol error.
    pub fn parse(value: &str) -> Result<Self, FalError> {
        match value {
            "IN_QUEUE" => Ok(Self::InQueue),
            "IN_PROGRESS" => Ok(Self::InProgress),
            "COMPLETED" => Ok(Self::Completed),
            other => Err(FalError::Protocol(format!(
                "unknown request status {other:?}"
            ))),
        }
    }

    /// fal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InQueue => "IN_QUEUE",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
        }
    }
}

/// A line the request logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub message: String,
    /// `STDERR`, `STDOUT`, `ERROR`, `INFO`, `WARN` or `DEBUG`.
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// As fal sent it (ISO 8601).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// A request's status, as `GET .../status` (or one status-stream event) tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestStatus {
    pub status: QueueStatus,
    pub request_id: Option<String>,
    pub queue_position: Option<u32>,
    /// The request's logs (all of them when polled with logs, the new ones in a
    /// status-stream event); empty when fal sent `null` or none.
    pub logs: Vec<LogEntry>,
    /// Why a `COMPLETED` request failed.
    pub error: Option<String>,
    pub error_type: Option<String>,
    /// Seconds the model ran (`metrics.inference_time`).
    pub inference_time: Option<f64>,
    pub response_url: Option<String>,
}

impl RequestStatus {
    /// Whether the request is done (successfully or not).
    pub fn is_completed(&self) -> bool {
        self.status == QueueStatus::Completed
    }

    /// Parses a status object.
    pub fn from_json(body: &[u8]) -> Result<Self, FalError> {
        let wire: WireStatus = serde_json::from_slice(body)
            .map_err(|err| FalError::Protocol(format!("status is not valid json: {err}")))?;
        Ok(Self {
            status: QueueStatus::parse(&wire.status)?,
            request_id: wire.request_id,
            queue_position: wire.queue_position,
            logs: wire.logs.unwrap_or_default(),
            error: wire.error.and_then(error_text),
            error_type: wire.error_type,
            inference_time: wire.metrics.and_then(|m| m.inference_time),
            response_url: wire.response_url,
        })
    }
}

/// fal sends `error` as a string; accept any JSON and keep its text.
fn error_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[derive(Deserialize)]
struct WireStatus {
    status: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    queue_position: Option<u32>,
    #[serde(default)]
    logs: Option<Vec<LogEntry>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    metrics: Option<WireMetrics>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Deserialize)]
struct WireMetrics {
    #[serde(default)]
    inference_time: Option<f64>,
}

/// The submit reply as sent.
#[derive(Deserialize)]
pub(crate) struct WireSubmitted {
    pub request_id: Option<String>,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub status_url: Option<String>,
    #[serde(default)]
    pub cancel_url: Option<String>,
    #[serde(default)]
    pub queue_position: Option<u32>,
    #[serde(default)]
    pub gateway_request_id: Option<String>,
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// fal will drop the queued request or signal the running one (202).
    Requested,
    /// Too late: the request had finished (400 `ALREADY_COMPLETED`).
    AlreadyCompleted,
    /// fal knows no such request (404).
    NotFound,
}

/// A downloaded result.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub bytes: Bytes,
    /// The `Content-Type` the host declared (or the `data:` URI's media type). Not
    /// to be trusted: sniff the bytes.
    pub content_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_status_shape() {
        let queued = RequestStatus::from_json(
            br#"{"status":"IN_QUEUE","request_id":"r","queue_position":3,"response_url":"u","logs":null}"#,
        )
        .expect("queued");
        assert_eq!(queued.status, QueueStatus::InQueue);
        assert_eq!(queued.queue_position, Some(3));
        assert!(queued.logs.is_empty());

        let done = RequestStatus::from_json(
            br#"{"status":"COMPLETED","request_id":"r","response_url":"u",
                 "logs":[{"message":"hi","level":"INFO","source":"USER","timestamp":"2025-01-01T00:00:00Z"}],
                 "metrics":{"inference_time":1.5},"error":"boom","error_type":"runner_server_error"}"#,
        )
        .expect("completed");
        assert!(done.is_completed());
        assert_eq!(done.inference_time, Some(1.5));
        assert_eq!(done.logs.len(), 1);
        assert_eq!(done.error.as_deref(), Some("boom"));
        assert_eq!(done.error_type.as_deref(), Some("runner_server_error"));
    }

    #[test]
    fn unknown_status_values_are_protocol_errors() {
        for body in [
            br#"{"status":"FAILED"}"#.as_slice(),
            br#"{"status":"in_queue"}"#.as_slice(),
            br#"{"nope":1}"#.as_slice(),
            b"not json".as_slice(),
        ] {
            assert!(matches!(
                RequestStatus::from_json(body),
                Err(FalError::Protocol(_))
            ));
        }
    }
}

/// The unit price of one endpoint, from fal's platform API
/// (`GET /v1/models/pricing`). Account discounts may apply on the bill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Price {
    pub endpoint_id: String,
    /// Price of one unit, in `currency`.
    pub unit_price: f64,
    /// What is billed: `image` (per output image), `megapixels` (per output
    /// megapixel), `second` (of GPU time) and others, as fal names them.
    pub unit: String,
    /// ISO 4217, e.g. `USD`.
    pub currency: String,
}

/// The model API's reply: `{"models": [...], "next_cursor", "has_more"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WireModels {
    pub models: Vec<WireModel>,
}

/// One model of the model API's reply; `openapi` only when the call asked for it
/// (`expand=openapi-3.0`).
#[derive(Debug, Deserialize)]
pub(crate) struct WireModel {
    pub endpoint_id: String,
    #[serde(default)]
    pub openapi: Option<serde_json::Value>,
}

/// One entry of the pricing reply as it comes over the wire: the price may be a
/// number or a decimal string.
#[derive(Debug, Deserialize)]
pub(crate) struct WirePrice {
    pub endpoint_id: String,
    pub unit_price: serde_json::Value,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub currency: String,
}

/// The pricing reply: `{"prices": [...], "next_cursor", "has_more"}`; a bare
/// array of prices is accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum WirePrices {
    Wrapped { prices: Vec<WirePrice> },
    Bare(Vec<WirePrice>),
}

impl WirePrices {
    pub(crate) fn into_prices(self) -> Result<Vec<Price>, FalError> {
        let prices = match self {
            Self::Wrapped { prices } | Self::Bare(prices) => prices,
        };
        prices
            .into_iter()
            .map(|wire| {
                let unit_price = match &wire.unit_price {
                    serde_json::Value::Number(number) => number.as_f64(),
                    serde_json::Value::String(text) => text.trim().parse().ok(),
                    _ => None,
                }
                .filter(|price: &f64| price.is_finite() && *price >= 0.0)
                .ok_or_else(|| {
                    FalError::Protocol(format!(
                        "the price of {} is not a number: {}",
                        wire.endpoint_id, wire.unit_price
                    ))
                })?;
                Ok(Price {
                    endpoint_id: wire.endpoint_id,
                    unit_price,
                    unit: wire.unit,
                    currency: if wire.currency.is_empty() {
                        "USD".to_owned()
                    } else {
                        wire.currency
                    },
                })
            })
            .collect()
    }
}
