use atelier_common::{ErrorCode, FieldViolation, ServiceError};
use atelier_storage::StorageError;

use crate::domain::inspect::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the request has invalid fields")]
    InvalidInput(Vec<FieldViolation>),
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("the file is larger than the limit of {limit_mb} MB")]
    TooLarge { limit_mb: u64 },
    #[error("{} limit of the {} plan reached", .0.limit.replace('_', " "), .0.tier)]
    QuotaExceeded(atelier_common::QuotaExceeded),
    #[error("the file is larger than the {} plan allows ({} bytes)", .0.tier, .0.allowed)]
    TooLargeForPlan(atelier_common::QuotaExceeded),
    #[error("the file contains malware ({signature}) and was not stored")]
    MalwareDetected { signature: String },
    /// The scanner could not be reached, or could not scan the file: it is not
    /// kept unscanned.
    #[error("{}", scan_refusal(.0))]
    NotScanned(atelier_scan::ScanError),
    #[error("image not found")]
    NotFound,
    #[error("job not found")]
    JobNotFound,
    #[error("share link not found")]
    ShareNotFound,
    /// A share token that is unknown, revoked or expired, or whose image is gone:
    /// one answer for all, so a token tells nothing of why.
    #[error("this link does not exist, has expired or was revoked")]
    ShareUnavailable,
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("requested range is not satisfiable")]
    InvalidRange,
    /// Another service's refusal, passed on as it came.
    #[error("{0}")]
    Upstream(tonic::Status),
    #[error("storage error")]
    Storage(#[source] StorageError),
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl From<StorageError> for ImageError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound => Self::NotFound,
            StorageError::InvalidRange => Self::InvalidRange,
            StorageError::Body(err) => Self::Interrupted(err.to_string()),
            other => Self::Storage(other),
        }
    }
}

impl From<atelier_scan::ScanError> for ImageError {
    fn from(err: atelier_scan::ScanError) -> Self {
        Self::NotScanned(err)
    }
}

/// What a client is told of a file that could not be scanned: why, without the
/// scanner's address.
fn scan_refusal(err: &atelier_scan::ScanError) -> String {
    match err {
        atelier_scan::ScanError::Unavailable(_) => {
            "the malware scanner is unavailable, so the file was not stored; try again shortly"
                .to_owned()
        }
        atelier_scan::ScanError::Failed(why) => {
            format!("the file could not be scanned for malware ({why}), so it was not stored")
        }
    }
}

impl ImageError {
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidInput(vec![FieldViolation::new(field, description)])
    }
}

impl ServiceError for ImageError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidInput(_) => ErrorCode::InvalidArgument,
            Self::Rejected(Rejection::NotAnImage | Rejection::Unsupported(_)) => {
                ErrorCode::UnsupportedMediaType
            }
            Self::Rejected(_) => ErrorCode::InvalidArgument,
            Self::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::MalwareDetected { .. } => ErrorCode::MalwareDetected,
            Self::NotScanned(_) => ErrorCode::ScannerUnavailable,
            Self::QuotaExceeded(_) => ErrorCode::PermissionDenied,
            Self::TooLargeForPlan(_) => ErrorCode::TooLargeForPlan,
            Self::NotFound | Self::JobNotFound | Self::ShareNotFound | Self::ShareUnavailable => {
                ErrorCode::NotFound
            }
            Self::Interrupted(_) => ErrorCode::Cancelled,
            Self::InvalidRange => ErrorCode::RangeNotSatisfiable,
            Self::Upstream(status) => ErrorCode::of(status),
            // PostgreSQL away (restarting, failing over): try again, not a bug.
            Self::Database(err) if atelier_common::db::is_unavailable(err) => {
                ErrorCode::Unavailable
            }
            Self::Storage(_) | Self::Database(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::InvalidInput(violations) => violations.clone(),
            Self::Rejected(rejection) => vec![FieldViolation::new("file", rejection.to_string())],
            Self::TooLarge { .. } | Self::TooLargeForPlan(_) | Self::MalwareDetected { .. } => {
                vec![FieldViolation::new("file", self.to_string())]
            }
            _ => Vec::new(),
        }
    }

    fn error_metadata(&self) -> Vec<(String, String)> {
        match self {
            Self::MalwareDetected { signature } => {
                vec![("signature".to_owned(), signature.clone())]
            }
            _ => Vec::new(),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::NotScanned(atelier_scan::ScanError::Unavailable(_)) => {
                Some(std::time::Duration::from_secs(5))
            }
            _ => None,
        }
    }

    fn quota(&self) -> Option<&atelier_common::QuotaExceeded> {
        match self {
            Self::QuotaExceeded(quota) | Self::TooLargeForPlan(quota) => Some(quota),
            _ => None,
        }
    }
}

impl From<ImageError> for tonic::Status {
    #[track_caller]
    fn from(err: ImageError) -> Self {
        match err {
            ImageError::Upstream(status) => status,
            other => atelier_common::error::to_status(other),
        }
    }
}
