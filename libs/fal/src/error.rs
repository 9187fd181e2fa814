//! What can go wrong talking to fal, and how an HTTP answer is classified.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// Header naming fal's error type (`request_timeout`, `runner_disconnected`, ...).
pub const ERROR_TYPE_HEADER: &str = "x-fal-error-type";
/// fal's retry hint; [`NEEDS_RETRY_HEADER`] is the same signal.
pub const RETRYABLE_HEADER: &str = "x-fal-retryable";
/// fal's other spelling of the retry hint.
pub const NEEDS_RETRY_HEADER: &str = "x-fal-needs-retry";
/// `user` on a 504 when the caller's `X-Fal-Request-Timeout` expired.
pub const REQUEST_TIMEOUT_TYPE_HEADER: &str = "x-fal-request-timeout-type";

/// How much of an unexpected body is kept in an error message.
const MAX_MESSAGE_LEN: usize = 512;

/// What can go wrong talking to fal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FalError {
    /// fal refused the input (422). Never retried.
    #[error("fal rejected the input: {}", describe_issues(.0))]
    Validation(Vec<FieldIssue>),
    /// Worth trying again later: 408, 429, 502, 503, 504, timeouts, connection
    /// errors, or a retry hint from fal. Retried by the client before it is returned.
    #[error("fal is temporarily unavailable ({}): {message}", status_text(*.status))]
    Transient {
        /// The HTTP status, when fal answered at all.
        status: Option<u16>,
        /// fal's error type (`X-Fal-Error-Type` or the body's `error_type`).
        error_type: Option<String>,
        message: String,
    },
    /// A call that is not safe to repeat (a submission) failed after it may have
    /// reached fal: fal may be running it. Repeating it could run, and bill, the
    /// request twice, so the client does not, and neither should the caller.
    #[error("fal may have accepted the request, but its answer was lost: {message}")]
    MaybeSent { message: String },
    /// fal refused the call and will again (400, 401, 403, 404, 500 without a retry
    /// hint, ...). Never retried.
    #[error("fal refused the call (HTTP {status}): {message}")]
    Permanent {
        status: u16,
        error_type: Option<String>,
        message: String,
    },
    /// The circuit breaker for the host is open: no call was made. Callers should
    /// wait `retry_after` and try again; a job waiting on this must not fail.
    #[error("fal is unavailable, retry later (in {retry_after:?})")]
    Unavailable { retry_after: Duration },
    /// The request ran and failed (`COMPLETED` with an `error`).
    #[error("the fal request failed: {error}")]
    RequestFailed {
        error: String,
        error_type: Option<String>,
    },
    /// The result is not there yet (the request is still queued or running).
    #[error("the fal result is not ready yet")]
    NotReady,
    /// The URL is not one results may be downloaded from (scheme, host, port, path or
    /// resolved address not allowed, or a redirect to such a URL).
    #[error("result url not allowed: {0}")]
    ForbiddenUrl(String),
    /// The result is larger than `max_result_bytes`.
    #[error("the fal result is too large")]
    TooLarge,
    /// The request id is empty, `.` or `..`.
    #[error("invalid fal request id {0:?}")]
    InvalidRequestId(String),
    /// fal's answer does not follow its protocol (unknown status value, missing
    /// field, unparsable JSON, too many redirects).
    #[error("unexpected answer from fal: {0}")]
    Protocol(String),
}

impl FalError {
    /// Whether the caller should try again later rather than fail: [`Transient`] and
    /// [`Unavailable`] (for the latter, after `retry_after`).
    ///
    /// [`Transient`]: FalError::Transient
    /// [`Unavailable`]: FalError::Unavailable
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Unavailable { .. })
    }

    /// Whether fal refused the call for the account's limits: a 429, or error type
    /// `concurrent_requests_limit`. The caller should lower how many requests it runs at
    /// once and try later, not count a failure.
    pub fn is_throttled(&self) -> bool {
        match self {
            Self::Transient {
                status, error_type, ..
            } => *status == Some(429) || error_type.as_deref() == Some("concurrent_requests_limit"),
            Self::Permanent { error_type, .. } => {
                error_type.as_deref() == Some("concurrent_requests_limit")
            }
            _ => false,
        }
    }

    /// Whether fal refused the input (422).
    pub fn is_validation(&self) -> bool {
        matches!(self, Self::Validation(_))
    }

    /// How long to wait before calling again, when the breaker is open.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the client retries the call itself (only [`FalError::Transient`]).
    pub(crate) fn is_retried(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// A short label for metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::Unavailable { .. } => "rejected",
            Self::RequestFailed { .. } => "request_failed",
            Self::NotReady => "not_ready",
            Self::ForbiddenUrl(_) => "forbidden",
            Self::TooLarge => "too_large",
            Self::InvalidRequestId(_) => "invalid",
            Self::Protocol(_) => "protocol",
            Self::MaybeSent { .. } => "maybe_sent",
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            status: None,
            error_type: None,
            message: message.into(),
        }
    }
}

/// One problem fal found with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    /// The field, dotted (`image_url`, `loras.0.scale`), from `loc` without its leading
    /// `body`; empty when fal named none.
    pub field: String,
    /// fal's message (`msg`).
    pub message: String,
    /// fal's kind of problem (`type`, e.g. `missing`, `value_error`); empty when none.
    pub kind: String,
}

fn describe_issues(issues: &[FieldIssue]) -> String {
    issues
        .iter()
        .map(|i| {
            if i.field.is_empty() {
                i.message.clone()
            } else {
                format!("{}: {}", i.field, i.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"))
}

/// The retry hint, if fal gave one: `Some(true)` for `1`/`true`/`yes`, `Some(false)`
/// for `0`/`false`/`no`.
pub(crate) fn retry_hint(headers: &HeaderMap) -> Option<bool> {
    [RETRYABLE_HEADER, NEEDS_RETRY_HEADER]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .find_map(|value| match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(true),
            "0" | "false" | "no" => Some(false),
            _ => None,
        })
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    detail: Option<serde_json::Value>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Issue {
    #[serde(default)]
    loc: Vec<serde_json::Value>,
    #[serde(default)]
    msg: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// Classifies an answer fal gave with a status that is not the call's success.
///
/// - a retry hint header decides first: a true hint makes any status transient, a
///   false one makes it final;
/// - 422 is a validation error (`detail` as a list of issues, or a plain string);
/// - 408, 429, 502, 503 and 504 are transient, except a 504 caused by the caller's
///   own `X-Fal-Request-Timeout` (`X-Fal-Request-Timeout-Type: user`);
/// - everything else is permanent.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> FalError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let error_type = headers
        .get(ERROR_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parsed.as_ref().and_then(|b| b.error_type.clone()));
    let hint = retry_hint(headers);

    if status == StatusCode::UNPROCESSABLE_ENTITY && hint != Some(true) {
        if let Some(issues) = parsed
            .as_ref()
            .and_then(|b| b.detail.as_ref())
            .and_then(validation_issues)
        {
            return FalError::Validation(issues);
        }
        return FalError::Validation(vec![FieldIssue {
            field: String::new(),
            message: message_of(parsed.as_ref(), body),
            kind: String::new(),
        }]);
    }

    let user_timeout = status == StatusCode::GATEWAY_TIMEOUT
        && headers
            .get(REQUEST_TIMEOUT_TYPE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("user"));
    let transient =
        hint.unwrap_or(matches!(status.as_u16(), 408 | 429 | 502 | 503 | 504) && !user_timeout);
    let message = message_of(parsed.as_ref(), body);
    if transient {
        FalError::Transient {
            status: Some(status.as_u16()),
            error_type,
            message,
        }
    } else {
        FalError::Permanent {
            status: status.as_u16(),
            error_type,
            message,
        }
    }
}

fn validation_issues(detail: &serde_json::Value) -> Option<Vec<FieldIssue>> {
    match detail {
        serde_json::Value::String(message) => Some(vec![FieldIssue {
            field: String::new(),
            message: message.clone(),
            kind: String::new(),
        }]),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .map(|item| match serde_json::from_value::<Issue>(item.clone()) {
                    Ok(issue) => FieldIssue {
                        field: field_of(&issue.loc),
                        message: issue.msg,
                        kind: issue.kind,
                    },
                    Err(_) => FieldIssue {
                        field: String::new(),
                        message: item.to_string(),
                        kind: String::new(),
                    },
                })
                .collect(),
        ),
        _ => None,
    }
}

/// `["body", "loras", 0, "scale"]` → `loras.0.scale`.
fn field_of(loc: &[serde_json::Value]) -> String {
    let mut parts = loc.iter().map(|part| match part {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let mut field: Vec<String> = Vec::with_capacity(loc.len());
    if let Some(first) = parts.next()
        && first != "body"
    {
        field.push(first);
    }
    field.extend(parts);
    field.join(".")
}

fn message_of(parsed: Option<&ErrorBody>, body: &[u8]) -> String {
    let from_json = parsed.and_then(|b| match &b.detail {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
        None => b.message.clone().or_else(|| b.error.clone()),
    });
    let message = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    truncate(message)
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn code(status: u16) -> StatusCode {
        StatusCode::from_u16(status).expect("valid status")
    }

    #[test]
    fn throttled_is_a_429_or_the_concurrency_limit() {
        let throttled = FalError::Transient {
            status: Some(429),
            error_type: None,
            message: String::new(),
        };
        assert!(throttled.is_throttled());
        let limit = FalError::Permanent {
            status: 400,
            error_type: Some("concurrent_requests_limit".into()),
            message: String::new(),
        };
        assert!(limit.is_throttled());
        let unavailable = FalError::Transient {
            status: Some(503),
            error_type: Some("runner_scheduling_failure".into()),
            message: String::new(),
        };
        assert!(!unavailable.is_throttled());
        assert!(!FalError::TooLarge.is_throttled());
    }

    #[test]
    fn validation_list_drops_body_from_loc() {
        let body = br#"{"detail":[
            {"loc":["body","image_url"],"msg":"field required","type":"missing"},
            {"loc":["body","loras",0,"scale"],"msg":"must be <= 4","type":"less_than_equal","ctx":{"le":4}},
            {"loc":["query","x"],"msg":"bad","type":"value_error"}
        ]}"#;
        let err = classify(code(422), &HeaderMap::new(), body);
        assert!(err.is_validation());
        assert!(!err.is_transient());
        let FalError::Validation(issues) = err else {
            panic!("not a validation error");
        };
        assert_eq!(
            issues,
            vec![
                FieldIssue {
                    field: "image_url".into(),
                    message: "field required".into(),
                    kind: "missing".into(),
                },
                FieldIssue {
                    field: "loras.0.scale".into(),
                    message: "must be <= 4".into(),
                    kind: "less_than_equal".into(),
                },
                FieldIssue {
                    field: "query.x".into(),
                    message: "bad".into(),
                    kind: "value_error".into(),
                },
            ]
        );
    }

    #[test]
    fn validation_string_detail() {
        let err = classify(
            code(422),
            &HeaderMap::new(),
            br#"{"detail":"image too small"}"#,
        );
        assert_eq!(
            err,
            FalError::Validation(vec![FieldIssue {
                field: String::new(),
                message: "image too small".into(),
                kind: String::new(),
            }])
        );
    }

    #[test]
    fn validation_without_json_body() {
        let err = classify(code(422), &HeaderMap::new(), b"nope");
        assert!(err.is_validation());
    }

    #[test]
    fn rate_limits_and_gateway_errors_are_transient() {
        for status in [408, 429, 502, 503, 504] {
            let err = classify(
                code(status),
                &headers(&[("x-fal-error-type", "runner_disconnected")]),
                br#"{"detail":"runner went away"}"#,
            );
            assert_eq!(
                err,
                FalError::Transient {
                    status: Some(status),
                    error_type: Some("runner_disconnected".into()),
                    message: "runner went away".into(),
                },
                "{status}"
            );
            assert!(err.is_transient() && err.is_retried());
        }
    }

    #[test]
    fn user_request_timeout_is_not_retried() {
        let err = classify(
            code(504),
            &headers(&[("x-fal-request-timeout-type", "user")]),
            br#"{"detail":"Request timed out","error_type":"request_timeout"}"#,
        );
        assert_eq!(
            err,
            FalError::Permanent {
                status: 504,
                error_type: Some("request_timeout".into()),
                message: "Request timed out".into(),
            }
        );
    }

    #[test]
    fn retry_hint_headers_decide() {
        for name in ["x-fal-retryable", "x-fal-needs-retry"] {
            for value in ["1", "true", "TRUE"] {
                let err = classify(code(500), &headers(&[(name, value)]), b"{}");
                assert!(err.is_retried(), "{name}: {value}");
                let err = classify(code(400), &headers(&[(name, value)]), b"{}");
                assert!(err.is_retried(), "{name}: {value} on 400");
            }
            let err = classify(code(503), &headers(&[(name, "0")]), b"{}");
            assert!(!err.is_retried(), "{name}: 0");
            assert!(matches!(err, FalError::Permanent { status: 503, .. }));
        }
        let err = classify(
            code(429),
            &headers(&[
                ("x-fal-needs-retry", "1"),
                ("x-fal-error-type", "concurrent_requests_limit"),
            ]),
            b"",
        );
        assert!(matches!(
            err,
            FalError::Transient { status: Some(429), error_type: Some(ref t), .. }
                if t == "concurrent_requests_limit"
        ));
    }

    #[test]
    fn client_errors_are_permanent() {
        for status in [400, 401, 403, 404, 500] {
            let err = classify(
                code(status),
                &HeaderMap::new(),
                br#"{"detail":"no","error_type":"bad_request"}"#,
            );
            assert_eq!(
                err,
                FalError::Permanent {
                    status,
                    error_type: Some("bad_request".into()),
                    message: "no".into(),
                },
                "{status}"
            );
            assert!(!err.is_transient() && !err.is_validation());
        }
    }

    #[test]
    fn unavailable_is_transient_for_callers_but_not_retried() {
        let err = FalError::Unavailable {
            retry_after: Duration::from_secs(3),
        };
        assert!(err.is_transient());
        assert!(!err.is_retried());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn long_bodies_are_truncated() {
        let body = "x".repeat(10_000);
        let FalError::Permanent { message, .. } =
            classify(code(400), &HeaderMap::new(), body.as_bytes())
        else {
            panic!("not permanent");
        };
        assert!(message.len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
    }
}
