use atelier_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow not found")]
    NotFound,
    #[error("workflow is not active")]
    Inactive,
    #[error("a workflow with this id exists")]
    AlreadyExists,
    #[error("the workflow changed since version {0}: read it again")]
    Conflict(i32),
    #[error("{0}")]
    Unavailable(String),
    #[error("the request has invalid fields")]
    InvalidInput(Vec<atelier_common::FieldViolation>),
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl ServiceError for WorkflowError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::NotFound,
            Self::Inactive => ErrorCode::FailedPrecondition,
            Self::InvalidInput(_) => ErrorCode::InvalidArgument,
            Self::AlreadyExists => ErrorCode::AlreadyExists,
            Self::Conflict(_) => ErrorCode::Aborted,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            // PostgreSQL away (restarting, failing over): try again, not a bug.
            Self::Database(err) if atelier_common::db::is_unavailable(err) => {
                ErrorCode::Unavailable
            }
            Self::Database(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<atelier_common::FieldViolation> {
        match self {
            Self::InvalidInput(violations) => violations.clone(),
            _ => Vec::new(),
        }
    }
}

impl From<WorkflowError> for tonic::Status {
    #[track_caller]
    fn from(err: WorkflowError) -> Self {
        atelier_common::error::to_status(err)
    }
}
