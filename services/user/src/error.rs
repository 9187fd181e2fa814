use atelier_common::{ErrorCode, FieldViolation, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("the request has invalid fields")]
    InvalidInput(Vec<FieldViolation>),
    #[error("the settings changed since they were read (stale ETag); read them again")]
    StaleSettings,
    #[error("account not found")]
    AccountNotFound,
    #[error("{0}")]
    Upstream(tonic::Status),
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl ServiceError for UserError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidInput(_) => ErrorCode::InvalidArgument,
            Self::StaleSettings => ErrorCode::FailedPrecondition,
            Self::AccountNotFound => ErrorCode::NotFound,
            Self::Upstream(status) => ErrorCode::of(status),
            // PostgreSQL away (restarting, failing over): try again, not a bug.
            Self::Database(err) if atelier_common::db::is_unavailable(err) => {
                ErrorCode::Unavailable
            }
            Self::Database(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::InvalidInput(violations) => violations.clone(),
            Self::Upstream(status) => atelier_common::error::field_violations(status),
            _ => Vec::new(),
        }
    }
}

impl From<tonic::Status> for UserError {
    fn from(status: tonic::Status) -> Self {
        Self::Upstream(status)
    }
}

impl From<UserError> for tonic::Status {
    #[track_caller]
    fn from(err: UserError) -> Self {
        match err {
            // Another service's answer passes through as it came (not found stays
            // not found, its details intact); only its internal errors are hidden.
            UserError::Upstream(status) if ErrorCode::of(&status) != ErrorCode::Internal => status,
            other => atelier_common::error::to_status(other),
        }
    }
}
