//! fal's error shapes: request errors (`{"detail": "...", "error_type": "..."}` with
//! `X-Fal-Error-Type`), model errors (422 with a `detail` list) and the simulator's own
//! HTTP answers built from them.

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

pub(crate) const ERROR_TYPE_HEADER: HeaderName = HeaderName::from_static("x-fal-error-type");
pub(crate) const NEEDS_RETRY_HEADER: HeaderName = HeaderName::from_static("x-fal-needs-retry");
pub(crate) const TIMEOUT_TYPE_HEADER: HeaderName =
    HeaderName::from_static("x-fal-request-timeout-type");
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-fal-request-id");

/// Where fal documents its error types.
const ERRORS_DOC: &str = "https://docs.fal.ai/errors";

/// The HTTP status fal answers with for a request error type; unknown types are 500s.
pub(crate) fn status_of(error_type: &str) -> StatusCode {
    let code = match error_type {
        "request_timeout" | "startup_timeout" => 504,
        "runner_scheduling_failure"
        | "runner_connection_timeout"
        | "runner_disconnected"
        | "runner_connection_refused"
        | "runner_connection_error" => 503,
        "runner_incomplete_response" => 502,
        "client_disconnected" | "client_cancelled" => 499,
        "concurrent_requests_limit" => 429,
        "bad_request" => 400,
        _ => 500,
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The error type fal gives a failure with this HTTP status, when none was asked for.
pub(crate) fn error_type_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        429 => "concurrent_requests_limit",
        499 => "client_cancelled",
        502 => "runner_incomplete_response",
        503 => "runner_scheduling_failure",
        504 => "request_timeout",
        _ => "internal_error",
    }
}

/// What fal says for a request error type.
pub(crate) fn detail_of(error_type: &str) -> &'static str {
    match error_type {
        "request_timeout" => "Request timed out",
        "startup_timeout" => "The runner did not start in time",
        "runner_scheduling_failure" => "No runner could be allocated to handle the request",
        "runner_connection_timeout" => "The connection to the runner timed out",
        "runner_disconnected" => "The runner disconnected unexpectedly",
        "runner_connection_refused" => "The runner refused the connection",
        "runner_connection_error" => "Error connecting to the runner",
        "runner_incomplete_response" => "The runner sent an incomplete response",
        "runner_server_error" => "The runner encountered an internal server error",
        "client_disconnected" => "The client closed the connection",
        "client_cancelled" => "Request cancelled by the client",
        "concurrent_requests_limit" => "Too many concurrent requests",
        "bad_request" => "Bad request",
        _ => "Internal server error",
    }
}

/// Whether a request that failed so may succeed when tried again (fal sets
/// `X-Fal-Needs-Retry` and retries queued requests itself).
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// One entry of a 422 `detail` list, as pydantic and fal's model errors write it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    /// Where: `["body", "field"]`, or `["body"]` for the body as a whole.
    pub loc: Vec<Value>,
    pub msg: String,
    pub kind: &'static str,
    pub ctx: Option<Box<Value>>,
    pub input: Option<Box<Value>>,
}

impl FieldError {
    /// An error about the body field `field`.
    pub(crate) fn field(field: &str, kind: &'static str, msg: impl Into<String>) -> Self {
        Self {
            loc: vec![json!("body"), json!(field)],
            msg: msg.into(),
            kind,
            ctx: None,
            input: None,
        }
    }

    /// An error about the body as a whole.
    pub(crate) fn body(kind: &'static str, msg: impl Into<String>) -> Self {
        Self {
            loc: vec![json!("body")],
            msg: msg.into(),
            kind,
            ctx: None,
            input: None,
        }
    }

    pub(crate) fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(Box::new(ctx));
        self
    }

    pub(crate) fn with_input(mut self, input: &Value) -> Self {
        self.input = Some(Box::new(input.clone()));
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut entry = json!({
            "loc": self.loc,
            "msg": self.msg,
            "type": self.kind,
            "url": format!("{ERRORS_DOC}#{}", self.kind),
        });
        if let Some(ctx) = &self.ctx {
            entry["ctx"] = (**ctx).clone();
        }
        if let Some(input) = &self.input {
            entry["input"] = (**input).clone();
        }
        entry
    }
}

/// The body of a 422 answer.
pub(crate) fn validation_body(errors: &[FieldError]) -> Value {
    json!({ "detail": errors.iter().map(FieldError::to_json).collect::<Vec<_>>() })
}

/// Why a request failed: what its status, result and webhook say.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    /// A request error: the runner or the platform failed.
    Request {
        error_type: String,
        detail: String,
        /// The caller's `X-Fal-Request-Timeout` ran out before the request started.
        user_timeout: bool,
    },
    /// A model error: the model refused the input (422).
    Model(Vec<FieldError>),
}

impl Failure {
    pub(crate) fn request(error_type: &str) -> Self {
        Self::Request {
            error_type: error_type.to_owned(),
            detail: detail_of(error_type).to_owned(),
            user_timeout: false,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Request { error_type, .. } => status_of(error_type),
            Self::Model(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The `error_type` shown in the status (model errors have none: their types are in
    /// the `detail` list).
    pub(crate) fn error_type(&self) -> Option<&str> {
        match self {
            Self::Request { error_type, .. } => Some(error_type),
            Self::Model(_) => None,
        }
    }

    /// The `error` message of the status and the webhook, as fal words it.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Request { detail, .. } => detail.clone(),
            Self::Model(_) => format!("Invalid status code: {}", self.status().as_u16()),
        }
    }

    /// The body the result URL answers with (and the webhook's `payload`).
    pub(crate) fn body(&self) -> Value {
        match self {
            Self::Request {
                error_type, detail, ..
            } => json!({ "detail": detail, "error_type": error_type }),
            Self::Model(errors) => validation_body(errors),
        }
    }

    /// Whether fal would try the request again by itself.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Request { user_timeout, .. } => !user_timeout && is_retryable(self.status()),
            Self::Model(_) => false,
        }
    }

    /// The answer of the result URL.
    pub(crate) fn into_response(self, request_id: &str) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        if let Self::Request {
            error_type,
            user_timeout,
            ..
        } = &self
        {
            if let Ok(value) = HeaderValue::from_str(error_type) {
                headers.insert(ERROR_TYPE_HEADER, value);
            }
            if *user_timeout {
                headers.insert(TIMEOUT_TYPE_HEADER, HeaderValue::from_static("user"));
            }
        }
        response
    }
}

/// An answer other than success from one of the simulator's routes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// `{"detail": "..."}` with this status.
    #[error("{status}: {detail}")]
    Detail { status: StatusCode, detail: String },
    /// A request error as fal's gateway answers it, with `X-Fal-Error-Type` (and
    /// `X-Fal-Needs-Retry: 1` when retryable).
    #[error("{status}: {error_type}")]
    Request {
        status: StatusCode,
        error_type: String,
        detail: String,
    },
    /// 422 with a `detail` list.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// 503 from the ingress, as during an outage: an HTML page, no fal headers.
    #[error("service unavailable")]
    Outage,
}

impl ApiError {
    pub(crate) fn detail(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::Detail {
            status,
            detail: detail.into(),
        }
    }

    pub(crate) fn request(status: StatusCode, error_type: &str, detail: impl Into<String>) -> Self {
        Self::Request {
            status,
            error_type: error_type.to_owned(),
            detail: detail.into(),
        }
    }
}

const OUTAGE_PAGE: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n\
<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n\
<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Detail { status, detail } => {
                (status, Json(json!({ "detail": detail }))).into_response()
            }
            Self::Request {
                status,
                error_type,
                detail,
            } => {
                let mut response = (
                    status,
                    Json(json!({ "detail": detail, "error_type": error_type })),
                )
                    .into_response();
                let headers = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&error_type) {
                    headers.insert(ERROR_TYPE_HEADER, value);
                }
                if is_retryable(status) {
                    headers.insert(NEEDS_RETRY_HEADER, HeaderValue::from_static("1"));
                }
                response
            }
            Self::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(validation_body(&errors)),
            )
                .into_response(),
            Self::Outage => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html"),
                )],
                OUTAGE_PAGE,
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_map_to_fal_statuses() {
        assert_eq!(status_of("runner_scheduling_failure").as_u16(), 503);
        assert_eq!(status_of("request_timeout").as_u16(), 504);
        assert_eq!(status_of("internal_error").as_u16(), 500);
        assert_eq!(status_of("bad_request").as_u16(), 400);
        assert_eq!(status_of("client_cancelled").as_u16(), 499);
        assert_eq!(status_of("something_new").as_u16(), 500);
        for code in [400u16, 429, 499, 502, 503, 504, 500] {
            let status = StatusCode::from_u16(code).expect("a valid status");
            assert_eq!(status_of(error_type_of(status)), status, "{code}");
        }
    }

    #[test]
    fn model_errors_read_like_fal() {
        let failure = Failure::Model(vec![FieldError::field(
            "image_url",
            "missing",
            "Field required",
        )]);
        assert_eq!(failure.status().as_u16(), 422);
        assert_eq!(failure.message(), "Invalid status code: 422");
        assert_eq!(failure.error_type(), None);
        let body = failure.body();
        assert_eq!(body["detail"][0]["loc"], json!(["body", "image_url"]));
        assert_eq!(body["detail"][0]["type"], "missing");
        assert!(!failure.is_retryable());
    }
}
