//! The platform's error codes. Each service has its own error enum that says its
//! [`ErrorCode`] through [`ServiceError`]; [`to_status`] maps it to a `tonic::Status`
//! once, with field violations as a google.rpc `BadRequest` detail, and the gateway
//! maps a `Status` back to an HTTP status once.

use std::{collections::HashMap, panic::Location, time::Duration};

use time::format_description::well_known::Rfc3339;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Aborted,
    Cancelled,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    Internal,
    /// A body over its size limit (gRPC `InvalidArgument`, HTTP 413).
    PayloadTooLarge,
    /// Content of a type that is not accepted (gRPC `InvalidArgument`, HTTP 415).
    UnsupportedMediaType,
    /// A byte range past the end (gRPC `OutOfRange`, HTTP 416).
    RangeNotSatisfiable,
    /// Content larger than the caller's plan allows, e.g. one uploaded file (gRPC
    /// `FailedPrecondition`: a larger plan would take it; HTTP 413).
    TooLargeForPlan,
    /// A file a malware scanner found a signature in (gRPC `InvalidArgument`,
    /// HTTP 422); its `ErrorInfo` names the signature in its `signature` metadata.
    MalwareDetected,
    /// The malware scanner cannot be reached, or could not scan a file: the file
    /// is refused rather than kept unscanned (gRPC `Unavailable`, HTTP 503).
    ScannerUnavailable,
    /// An API key without the scope the method needs (gRPC `PermissionDenied`,
    /// HTTP 403); its `ErrorInfo` names the scope in its `scope` metadata.
    InsufficientScope,
    /// A start that would take spend past a budget (gRPC `ResourceExhausted`,
    /// HTTP 429 with `Retry-After` at the budget period's end); its `ErrorInfo`
    /// metadata names the `scope`, `period`, `budget`, `spent`, `estimate`,
    /// `currency` and `period_end`.
    BudgetExceeded,
}

/// The `ErrorInfo` domain of the platform's errors.
const DOMAIN: &str = "atelier";

const ALL: [ErrorCode; 21] = [
    ErrorCode::RangeNotSatisfiable,
    ErrorCode::InvalidArgument,
    ErrorCode::Unauthenticated,
    ErrorCode::PermissionDenied,
    ErrorCode::NotFound,
    ErrorCode::AlreadyExists,
    ErrorCode::FailedPrecondition,
    ErrorCode::ResourceExhausted,
    ErrorCode::Aborted,
    ErrorCode::Cancelled,
    ErrorCode::DeadlineExceeded,
    ErrorCode::Unavailable,
    ErrorCode::Unimplemented,
    ErrorCode::Internal,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::TooLargeForPlan,
    ErrorCode::MalwareDetected,
    ErrorCode::ScannerUnavailable,
    ErrorCode::InsufficientScope,
    ErrorCode::BudgetExceeded,
];

impl ErrorCode {
    pub fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied | Self::InsufficientScope => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition | Self::TooLargeForPlan => Code::FailedPrecondition,
            Self::ResourceExhausted | Self::BudgetExceeded => Code::ResourceExhausted,
            Self::Aborted => Code::Aborted,
            Self::Cancelled => Code::Cancelled,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unavailable | Self::ScannerUnavailable => Code::Unavailable,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
            Self::PayloadTooLarge | Self::UnsupportedMediaType | Self::MalwareDetected => {
                Code::InvalidArgument
            }
            Self::RangeNotSatisfiable => Code::OutOfRange,
        }
    }

    /// The code a `Status` carries: the platform's own when its `ErrorInfo`
    /// names one (a quota refusal names it in its `code` metadata), otherwise the
    /// closest to its gRPC code.
    pub fn of(status: &Status) -> Self {
        status
            .get_details_error_info()
            .filter(|info| info.domain == DOMAIN)
            .and_then(|info| {
                let slug = match info.reason.as_str() {
                    QUOTA_REASON => info.metadata.get("code")?,
                    reason => reason,
                };
                ALL.into_iter().find(|code| code.slug() == slug)
            })
            .unwrap_or_else(|| Self::from_grpc(status.code()))
    }

    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument => Self::InvalidArgument,
            Code::OutOfRange => Self::RangeNotSatisfiable,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Aborted => Self::Aborted,
            Code::Cancelled => Self::Cancelled,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Unavailable => Self::Unavailable,
            Code::Unimplemented => Self::Unimplemented,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => Self::Internal,
        }
    }

    pub fn http(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::InvalidArgument | Self::MalwareDetected => S::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::PermissionDenied | Self::InsufficientScope => S::FORBIDDEN,
            Self::NotFound => S::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => S::CONFLICT,
            Self::FailedPrecondition => S::PRECONDITION_FAILED,
            Self::ResourceExhausted | Self::BudgetExceeded => S::TOO_MANY_REQUESTS,
            Self::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
            Self::DeadlineExceeded => S::GATEWAY_TIMEOUT,
            Self::Unavailable | Self::ScannerUnavailable => S::SERVICE_UNAVAILABLE,
            Self::Unimplemented => S::NOT_IMPLEMENTED,
            Self::Internal => S::INTERNAL_SERVER_ERROR,
            Self::PayloadTooLarge | Self::TooLargeForPlan => S::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            Self::RangeNotSatisfiable => S::RANGE_NOT_SATISFIABLE,
        }
    }

    /// A short stable slug, used as the last segment of problem `type` URIs.
    pub fn slug(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid-argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission-denied",
            Self::NotFound => "not-found",
            Self::AlreadyExists => "already-exists",
            Self::FailedPrecondition => "failed-precondition",
            Self::ResourceExhausted => "resource-exhausted",
            Self::Aborted => "conflict",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Unavailable => "unavailable",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::RangeNotSatisfiable => "range-not-satisfiable",
            Self::TooLargeForPlan => "too-large-for-plan",
            Self::MalwareDetected => "malware-detected",
            Self::ScannerUnavailable => "scanner-unavailable",
            Self::InsufficientScope => "insufficient-scope",
            Self::BudgetExceeded => "budget-exceeded",
        }
    }
}

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// What a service's error enum tells the platform about itself.
pub trait ServiceError: std::error::Error {
    fn code(&self) -> ErrorCode;

    /// The invalid fields, for `InvalidArgument` errors.
    fn field_violations(&self) -> Vec<FieldViolation> {
        Vec::new()
    }

    /// The tier limit that refused the request, for quota refusals.
    fn quota(&self) -> Option<&QuotaExceeded> {
        None
    }

    /// Facts about the refusal for programs, sent as the metadata of its
    /// google.rpc `ErrorInfo` (e.g. the `signature` of malware found).
    fn error_metadata(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// How long until the request may succeed, for refusals that pass by
    /// themselves (rate limits, back-off); sent as a google.rpc `RetryInfo`.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// A subscription-tier limit that refused work (a job start, an upload). It travels as
/// a google.rpc `ErrorInfo` whose reason is `quota-exceeded` and whose metadata holds
/// these fields, and becomes problem+json members (and `Retry-After`) at the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// Which limit: `jobs_per_day`, `concurrent_jobs`, `storage_bytes` or
    /// `max_file_size_bytes`.
    pub limit: String,
    /// The limit's value for the user's tier.
    pub allowed: i64,
    /// Usage before the refused request.
    pub used: i64,
    /// What the refused request needed (jobs, bytes).
    pub requested: i64,
    /// The user's subscription tier.
    pub tier: String,
    /// When the limit resets by itself (jobs per day); `None` when it does not.
    pub resets_at: Option<time::OffsetDateTime>,
}

const QUOTA_REASON: &str = "quota-exceeded";

impl QuotaExceeded {
    fn error_info(&self) -> (String, String, HashMap<String, String>) {
        let mut metadata = HashMap::from([
            ("limit".to_owned(), self.limit.clone()),
            ("allowed".to_owned(), self.allowed.to_string()),
            ("used".to_owned(), self.used.to_string()),
            ("requested".to_owned(), self.requested.to_string()),
            ("tier".to_owned(), self.tier.clone()),
        ]);
        if let Some(at) = self.resets_at.and_then(|at| at.format(&Rfc3339).ok()) {
            metadata.insert("resets_at".to_owned(), at);
        }
        (QUOTA_REASON.to_owned(), DOMAIN.to_owned(), metadata)
    }

    /// The quota refusal a `Status` carries, if any.
    pub fn of(status: &Status) -> Option<Self> {
        let info = status
            .get_details_error_info()
            .filter(|info| info.domain == DOMAIN && info.reason == QUOTA_REASON)?;
        let field = |name: &str| info.metadata.get(name).cloned().unwrap_or_default();
        let number = |name: &str| field(name).parse().unwrap_or_default();
        Some(Self {
            limit: field("limit"),
            allowed: number("allowed"),
            used: number("used"),
            requested: number("requested"),
            tier: field("tier"),
            resets_at: info
                .metadata
                .get("resets_at")
                .and_then(|at| time::OffsetDateTime::parse(at, &Rfc3339).ok()),
        })
    }
}

/// Maps a service error to the `Status` sent to clients. Internal errors are logged
/// with their cause and the caller's location, and reach the client as an opaque
/// "internal error".
#[track_caller]
pub fn to_status<E: ServiceError>(err: E) -> Status {
    let code = err.code();
    if code == ErrorCode::Internal {
        let location = Location::caller();
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), %location, "internal error");
        return Status::internal("internal error");
    }
    let mut details = match err.quota() {
        Some(quota) => {
            let (reason, domain, mut metadata) = quota.error_info();
            metadata.insert("code".to_owned(), code.slug().to_owned());
            let mut details = ErrorDetails::with_error_info(reason, domain, metadata);
            details.add_quota_failure_violation(
                format!("tier:{}", quota.tier),
                format!("{}: {} allowed", quota.limit, quota.allowed),
            );
            details
        }
        None => ErrorDetails::with_error_info(
            code.slug(),
            DOMAIN,
            err.error_metadata().into_iter().collect::<HashMap<_, _>>(),
        ),
    };
    for violation in err.field_violations() {
        details.add_bad_request_violation(violation.field, violation.description);
    }
    if let Some(wait) = err.retry_after() {
        details.set_retry_info(Some(wait));
    }
    Status::with_error_details(code.grpc(), err.to_string(), details)
}

/// The metadata of the platform's `ErrorInfo` a `Status` carries, if any.
pub fn error_metadata(status: &Status) -> HashMap<String, String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == DOMAIN)
        .map(|info| info.metadata)
        .unwrap_or_default()
}

/// The refusal of an API key caller: `PERMISSION_DENIED` with an `ErrorInfo`
/// whose reason is `insufficient-scope` and whose `scope` metadata names the
/// scope the method needs (empty when no API key may call it).
pub fn insufficient_scope(method: &str, scope: &str) -> Status {
    let message = if scope.is_empty() {
        format!("{method} cannot be called with an API key; sign in instead")
    } else {
        format!("this API key lacks the scope {scope}, which {method} needs")
    };
    let details = ErrorDetails::with_error_info(
        ErrorCode::InsufficientScope.slug(),
        DOMAIN,
        [("scope".to_owned(), scope.to_owned())],
    );
    Status::with_error_details(Code::PermissionDenied, message, details)
}

/// A rate-limit refusal: `RESOURCE_EXHAUSTED` with a google.rpc `RetryInfo`
/// saying when to try again (whole seconds, at least one).
pub fn rate_limited(message: impl Into<String>, wait: Duration) -> Status {
    let mut details =
        ErrorDetails::with_error_info(ErrorCode::ResourceExhausted.slug(), DOMAIN, []);
    details.set_retry_info(Some(whole_seconds(wait)));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// When a refused request may be tried again, if its `Status` says
/// (google.rpc `RetryInfo`).
pub fn retry_after(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// `wait` rounded up to whole seconds, at least one: what `Retry-After` can say.
pub fn whole_seconds(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// The field violations carried by a `Status`, if any.
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Sample {
        #[error("bad email")]
        Invalid,
        #[error("disk on fire")]
        Broken,
    }

    impl ServiceError for Sample {
        fn code(&self) -> ErrorCode {
            match self {
                Self::Invalid => ErrorCode::InvalidArgument,
                Self::Broken => ErrorCode::Internal,
            }
        }
        fn field_violations(&self) -> Vec<FieldViolation> {
            match self {
                Self::Invalid => vec![FieldViolation::new("email", "not an email address")],
                Self::Broken => vec![],
            }
        }
    }

    #[test]
    fn field_violations_survive_the_round_trip() {
        let status = to_status(Sample::Invalid);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            field_violations(&status),
            vec![FieldViolation::new("email", "not an email address")]
        );
    }

    #[test]
    fn quota_refusals_survive_the_round_trip() {
        #[derive(Debug, thiserror::Error)]
        #[error("daily job limit reached")]
        struct OverQuota(QuotaExceeded);
        impl ServiceError for OverQuota {
            fn code(&self) -> ErrorCode {
                ErrorCode::ResourceExhausted
            }
            fn quota(&self) -> Option<&QuotaExceeded> {
                Some(&self.0)
            }
        }
        let quota = QuotaExceeded {
            limit: "jobs_per_day".to_owned(),
            allowed: 50,
            used: 50,
            requested: 1,
            tier: "free".to_owned(),
            resets_at: Some(time::macros::datetime!(2026-01-02 00:00 UTC)),
        };
        let status = to_status(OverQuota(quota.clone()));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(ErrorCode::of(&status), ErrorCode::ResourceExhausted);
        assert_eq!(QuotaExceeded::of(&status), Some(quota));
        assert_eq!(
            status
                .get_details_quota_failure()
                .map(|failure| failure.violations[0].subject.clone()),
            Some("tier:free".to_owned())
        );
        assert_eq!(QuotaExceeded::of(&to_status(Sample::Invalid)), None);
    }

    #[test]
    fn a_quota_refusal_keeps_its_own_code() {
        #[derive(Debug, thiserror::Error)]
        #[error("the file is larger than the plan allows")]
        struct TooLarge(QuotaExceeded);
        impl ServiceError for TooLarge {
            fn code(&self) -> ErrorCode {
                ErrorCode::TooLargeForPlan
            }
            fn quota(&self) -> Option<&QuotaExceeded> {
                Some(&self.0)
            }
        }
        let status = to_status(TooLarge(QuotaExceeded {
            limit: "max_file_size_bytes".to_owned(),
            allowed: 1000,
            used: 0,
            requested: 1001,
            tier: "free".to_owned(),
            resets_at: None,
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(ErrorCode::of(&status), ErrorCode::TooLargeForPlan);
        assert_eq!(
            ErrorCode::of(&status).http(),
            http::StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(QuotaExceeded::of(&status).map(|q| q.allowed), Some(1000));
    }

    #[test]
    fn retry_hints_survive_the_round_trip() {
        #[derive(Debug, thiserror::Error)]
        #[error("slow down")]
        struct SlowDown;
        impl ServiceError for SlowDown {
            fn code(&self) -> ErrorCode {
                ErrorCode::ResourceExhausted
            }
            fn retry_after(&self) -> Option<Duration> {
                Some(Duration::from_secs(8))
            }
        }
        let status = to_status(SlowDown);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(retry_after(&status), Some(Duration::from_secs(8)));
        let limited = rate_limited("too many", Duration::from_millis(1200));
        assert_eq!(ErrorCode::of(&limited), ErrorCode::ResourceExhausted);
        assert_eq!(retry_after(&limited), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&to_status(Sample::Invalid)), None);
    }

    #[test]
    fn internal_errors_are_opaque() {
        let status = to_status(Sample::Broken);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn codes_without_a_grpc_twin_survive_the_round_trip() {
        #[derive(Debug, thiserror::Error)]
        #[error("too big")]
        struct TooBig;
        impl ServiceError for TooBig {
            fn code(&self) -> ErrorCode {
                ErrorCode::PayloadTooLarge
            }
        }
        let status = to_status(TooBig);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(ErrorCode::of(&status), ErrorCode::PayloadTooLarge);
        assert_eq!(ErrorCode::of(&Status::not_found("x")), ErrorCode::NotFound);
    }

    #[test]
    fn every_code_round_trips_through_grpc() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::ResourceExhausted,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc()), code);
        }
    }
}
