//! RFC 9457 problem details: the one shape of every error the REST API returns.

use atelier_common::{ErrorCode, FieldViolation, QuotaExceeded, error::field_violations};
use axum::{
    extract::rejection::JsonRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

tokio::task_local! {
    /// The id of the request being handled, for the problems it may answer with.
    pub static REQUEST_ID: String;
}

/// Makes the request id available to every problem built while handling it.
pub async fn scope_request_id(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request
        .headers()
        .get(atelier_common::grpc::REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    REQUEST_ID.scope(id, next.run(request)).await
}

/// An error response (`application/problem+json`). A refusal by a limit of the
/// caller's subscription tier also names the limit (`limit`, `allowed`, `used`,
/// `requested`, `tier`, `resets_at`).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`https://atelier.dev/problems/<kind>`).
    #[serde(rename = "type", serialize_with = "kind_uri")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// A short summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request's invalid fields, if any.
    pub errors: Vec<ProblemField>,
    /// The id of the request (also in the `x-request-id` header), to quote in reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub request_id: Option<Box<str>>,
    /// A refusal by a limit of the caller's tier also names the limit.
    #[serde(flatten)]
    pub quota: Box<ProblemQuota>,
    #[serde(skip)]
    #[schema(ignore)]
    retry_after: Option<u32>,
}

fn kind_uri<S: serde::Serializer>(kind: &&'static str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("https://atelier.dev/problems/{kind}"))
}

/// The tier limit that refused a request; every field is absent on other problems.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ProblemQuota {
    /// `jobs_per_day`, `concurrent_jobs`, `storage_bytes` or `max_file_size_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The limit's value for the caller's tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<i64>,
    /// Usage before this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<i64>,
    /// What this request needed (jobs, bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<i64>,
    /// The caller's subscription tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// When the limit resets (RFC 3339); absent when it does not reset by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
    /// A start refused over a spend budget names the budget (in the same box,
    /// so a problem stays small).
    #[serde(flatten)]
    pub budget: ProblemBudget,
}

/// The spend budget a start would have overrun (`budget-exceeded`); every field
/// is absent on other problems.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ProblemBudget {
    /// `user` (the caller's budget) or `platform` (the platform's monthly budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_scope: Option<String>,
    /// `day` or `month` (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// The budget, in `currency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// Spent (and reserved by running jobs) in the period before this start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent: Option<f64>,
    /// What this start was estimated to cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// When the period ends and the budget is available again (RFC 3339);
    /// `Retry-After` counts the seconds until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_end: Option<String>,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    /// The field's name, e.g. `email`.
    pub field: String,
    /// A JSON Pointer to the field in the request body, e.g. `#/email`.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

impl From<FieldViolation> for ProblemField {
    fn from(violation: FieldViolation) -> Self {
        Self {
            pointer: format!("#/{}", violation.field.replace('.', "/")),
            field: violation.field,
            detail: violation.description,
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            ..Self::default()
        }
    }

    pub fn code(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(code.http(), code.slug(), detail)
    }

    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let mut problem = Self::code(ErrorCode::InvalidArgument, "the request has invalid fields");
        problem.errors = violations.into_iter().map(ProblemField::from).collect();
        problem
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many requests; retry in {retry_after_secs} s"),
        );
        problem.retry_after = Some(u32::try_from(retry_after_secs).unwrap_or(u32::MAX));
        problem
    }

    /// Says when to try again (`Retry-After`, in seconds).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A request the gateway cannot read (`400`), of the kind `slug` names.
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    pub fn not_found() -> Self {
        Self::code(ErrorCode::NotFound, "no such resource")
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        self.request_id = REQUEST_ID
            .try_with(|id| (!id.is_empty()).then(|| Box::from(id.as_str())))
            .ok()
            .flatten();
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A service's `Status`, mapped to HTTP once, here.
impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        let code = ErrorCode::of(&status);
        match code {
            ErrorCode::Internal => {
                tracing::error!(message = status.message(), "internal error from a service");
                Self::code(
                    code,
                    "internal error; quote the request id when reporting it",
                )
            }
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => {
                tracing::warn!(code = ?status.code(), message = status.message(), "service unavailable");
                Self::code(code, "a service is unavailable; try again shortly")
            }
            _ => {
                let mut problem = Self::code(code, status.message());
                problem.errors = field_violations(&status)
                    .into_iter()
                    .map(ProblemField::from)
                    .collect();
                if let Some(quota) = QuotaExceeded::of(&status) {
                    problem.retry_after = quota.resets_at.map(|at| {
                        let seconds = (at - time::OffsetDateTime::now_utc()).whole_seconds();
                        u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
                    });
                    problem.quota = Box::new(ProblemQuota {
                        resets_at: quota.resets_at.and_then(|at| {
                            at.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        }),
                        limit: Some(quota.limit),
                        allowed: Some(quota.allowed),
                        used: Some(quota.used),
                        requested: Some(quota.requested),
                        tier: Some(quota.tier),
                        budget: ProblemBudget::default(),
                    });
                }
                if code == ErrorCode::BudgetExceeded {
                    let mut info = atelier_common::error::error_metadata(&status);
                    let number = |value: Option<String>| value.and_then(|v| v.parse().ok());
                    problem.quota.budget = ProblemBudget {
                        budget_scope: info.remove("scope"),
                        period: info.remove("period"),
                        budget: number(info.remove("budget")),
                        spent: number(info.remove("spent")),
                        estimate: number(info.remove("estimate")),
                        currency: info.remove("currency"),
                        period_end: info.remove("period_end"),
                    };
                }
                if problem.retry_after.is_none()
                    && let Some(wait) = atelier_common::error::retry_after(&status)
                {
                    let seconds = atelier_common::error::whole_seconds(wait).as_secs();
                    problem.retry_after = Some(u32::try_from(seconds).unwrap_or(u32::MAX));
                }
                problem
            }
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                err.body_text(),
            ),
            JsonRejection::JsonSyntaxError(err) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed-body", err.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "expected a body with content-type application/json",
            ),
            other => Self::new(other.status(), "bad-request", other.body_text()),
        }
    }
}

/// Every route that matches no handler.
pub async fn fallback() -> Problem {
    Problem::not_found()
}
