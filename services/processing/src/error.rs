use atelier_common::{ErrorCode, FieldViolation, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    #[error("the request has invalid fields")]
    InvalidInput(Vec<FieldViolation>),
    #[error("job not found")]
    NotFound,
    #[error("webhook endpoint not found")]
    EndpointNotFound,
    #[error("webhook delivery not found")]
    DeliveryNotFound,
    #[error("pipeline not found")]
    PipelineNotFound,
    #[error("pipeline run not found")]
    RunNotFound,
    #[error("the pipeline run has already finished ({0})")]
    RunFinished(&'static str),
    #[error("only failed or cancelled pipeline runs can be retried (this one is {0})")]
    RunNotRetryable(&'static str),
    #[error("image not found")]
    ImageNotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("workflow not found")]
    WorkflowNotFound,
    #[error("{0}")]
    WorkflowInactive(String),
    #[error("the idempotency key was already used for a different request")]
    IdempotencyConflict,
    #[error("the job has already finished ({0})")]
    AlreadyFinished(&'static str),
    #[error("only failed or cancelled jobs can be retried (this one is {0})")]
    NotRetryable(&'static str),
    #[error("{} limit of the {} plan reached", .0.limit.replace('_', " "), .0.tier)]
    QuotaExceeded(atelier_common::QuotaExceeded),
    #[error(
        "this start would take the {} {} spend past its budget of {} {}",
        .0.scope, .0.period.as_str(), .0.budget, .0.currency
    )]
    BudgetExceeded(Box<crate::domain::spend::BudgetExceeded>),
    #[error("high priority is not part of the {0} plan")]
    PriorityNotAllowed(String),
    #[error("a service is unavailable: {0}")]
    Unavailable(String),
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("queue error: {0}")]
    Queue(String),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl From<atelier_queue::QueueError> for ProcessingError {
    fn from(err: atelier_queue::QueueError) -> Self {
        Self::Queue(err.to_string())
    }
}

impl ServiceError for ProcessingError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidInput(_) => ErrorCode::InvalidArgument,
            Self::NotFound
            | Self::ImageNotFound
            | Self::UserNotFound
            | Self::WorkflowNotFound
            | Self::EndpointNotFound
            | Self::DeliveryNotFound
            | Self::PipelineNotFound
            | Self::RunNotFound => ErrorCode::NotFound,
            Self::WorkflowInactive(_) => ErrorCode::FailedPrecondition,
            Self::IdempotencyConflict
            | Self::AlreadyFinished(_)
            | Self::NotRetryable(_)
            | Self::RunFinished(_)
            | Self::RunNotRetryable(_) => ErrorCode::Aborted,
            Self::QuotaExceeded(_) => ErrorCode::ResourceExhausted,
            Self::BudgetExceeded(_) => ErrorCode::BudgetExceeded,
            Self::PriorityNotAllowed(_) => ErrorCode::PermissionDenied,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            // PostgreSQL away (restarting, failing over): try again, not a bug.
            Self::Database(err) if atelier_common::db::is_unavailable(err) => {
                ErrorCode::Unavailable
            }
            Self::Database(_) | Self::Queue(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            Self::InvalidInput(violations) => violations.clone(),
            Self::PriorityNotAllowed(_) => vec![FieldViolation::new("priority", self.to_string())],
            _ => Vec::new(),
        }
    }

    fn error_metadata(&self) -> Vec<(String, String)> {
        match self {
            Self::BudgetExceeded(refusal) => {
                let end = refusal
                    .period_end
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                vec![
                    ("scope".into(), refusal.scope.into()),
                    ("period".into(), refusal.period.as_str().into()),
                    ("budget".into(), refusal.budget.to_string()),
                    ("spent".into(), refusal.spent.to_string()),
                    ("estimate".into(), refusal.estimate.to_string()),
                    ("currency".into(), refusal.currency.clone()),
                    ("period_end".into(), end),
                ]
            }
            _ => Vec::new(),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::BudgetExceeded(refusal) => Some(refusal.retry_after),
            _ => None,
        }
    }

    fn quota(&self) -> Option<&atelier_common::QuotaExceeded> {
        match self {
            Self::QuotaExceeded(quota) => Some(quota),
            _ => None,
        }
    }
}

impl From<ProcessingError> for tonic::Status {
    #[track_caller]
    fn from(err: ProcessingError) -> Self {
        atelier_common::error::to_status(err)
    }
}
