use atelier_common::{ErrorCode, FieldViolation, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the request has invalid fields")]
    InvalidInput(Vec<FieldViolation>),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token has expired")]
    RefreshTokenExpired,
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error(
        "too many failed sign-ins for this address; retry in {} s",
        atelier_common::error::whole_seconds(*retry_after).as_secs()
    )]
    TooManyAttempts { retry_after: std::time::Duration },
    #[error("account not found")]
    UserNotFound,
    #[error("api key not found")]
    ApiKeyNotFound,
    #[error("an API key can grant only scopes it has; this one lacks {0}")]
    ScopeNotHeld(String),
    #[error("an account may hold at most {0} API keys; revoke some first")]
    TooManyApiKeys(u64),
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl ServiceError for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidInput(_) => ErrorCode::InvalidArgument,
            Self::EmailTaken => ErrorCode::AlreadyExists,
            Self::WrongPassword => ErrorCode::PermissionDenied,
            Self::InvalidCredentials
            | Self::InvalidRefreshToken
            | Self::RefreshTokenExpired
            | Self::RefreshTokenReused => ErrorCode::Unauthenticated,
            Self::TooManyAttempts { .. } => ErrorCode::ResourceExhausted,
            Self::UserNotFound | Self::ApiKeyNotFound => ErrorCode::NotFound,
            Self::ScopeNotHeld(_) => ErrorCode::InsufficientScope,
            Self::TooManyApiKeys(_) => ErrorCode::FailedPrecondition,
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
            _ => Vec::new(),
        }
    }

    fn error_metadata(&self) -> Vec<(String, String)> {
        match self {
            Self::ScopeNotHeld(scope) => vec![("scope".to_owned(), scope.clone())],
            _ => Vec::new(),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::TooManyAttempts { retry_after } => {
                Some(atelier_common::error::whole_seconds(*retry_after))
            }
            _ => None,
        }
    }
}

impl From<AuthError> for tonic::Status {
    #[track_caller]
    fn from(err: AuthError) -> Self {
        atelier_common::error::to_status(err)
    }
}
