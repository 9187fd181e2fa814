//! What happened to a job a worker ran, and what fal's errors mean for it.

use std::time::Duration;

use atelier_fal::FalError;
use serde_json::json;

use super::failure::{self, Failure};
use crate::error::ProcessingError;

/// Why a job stopped short of finishing.
pub(super) enum Outcome {
    Done,
    /// Back into the queue without spending an attempt.
    Wait(Duration),
    /// Back into the queue as a new attempt.
    Retry(String),
    /// Finished as failed.
    Fail(Failure),
}

impl Outcome {
    pub(super) fn fail(code: &str, message: impl Into<String>) -> Self {
        Self::Fail(Failure {
            code: code.to_owned(),
            message: message.into(),
            details: None,
            cause: None,
        })
    }

    pub(super) fn because(self, why: impl std::fmt::Display) -> Self {
        match self {
            Self::Fail(failure) => Self::Fail(Failure {
                cause: Some(why.to_string()),
                ..failure
            }),
            other => other,
        }
    }
}

/// The job could not be read or changed: it is tried again.
pub(super) fn database(err: &ProcessingError) -> Outcome {
    match err {
        ProcessingError::Database(cause) => Outcome::Retry(format!("database: {cause}")),
        other => Outcome::Retry(format!("database: {other}")),
    }
}

/// What a failed result download means for the job.
pub(super) fn download_outcome(err: FalError) -> Outcome {
    match err {
        FalError::TooLarge => Outcome::fail("result_too_large", failure::TOO_LARGE).because(err),
        FalError::ForbiddenUrl(_) => {
            Outcome::fail("result_refused", failure::REFUSED_HOST).because(err)
        }
        err => fal_outcome(err),
    }
}

/// A request fal ran and failed, under fal's error type; fal's own text is logged.
pub(super) fn fal_failed(error: String, error_type: Option<String>) -> Outcome {
    Outcome::Fail(Failure {
        message: failure::fal_failed(error_type.as_deref(), &error),
        code: error_type.unwrap_or_else(|| "fal_request_failed".into()),
        details: None,
        cause: Some(error),
    })
}

/// What a fal error means for the job.
pub(super) fn fal_outcome(err: FalError) -> Outcome {
    match err {
        FalError::Unavailable { retry_after } => {
            Outcome::Wait(retry_after.max(Duration::from_secs(1)))
        }
        FalError::Validation(issues) => Outcome::Fail(Failure {
            code: "invalid_parameters".into(),
            message: failure::INVALID_PARAMETERS.into(),
            details: Some(json!(
                issues
                    .iter()
                    .map(|issue| json!({"field": issue.field, "message": issue.message}))
                    .collect::<Vec<_>>()
            )),
            cause: None,
        }),
        // fal may be running it: submitting again could run and bill it twice. The
        // job stops with a clear reason; the user can retry it knowingly.
        FalError::MaybeSent { message } => {
            Outcome::fail("submission_unknown", failure::SUBMISSION_UNKNOWN).because(message)
        }
        FalError::RequestFailed { error, error_type } => fal_failed(error, error_type),
        err if err.is_transient() => Outcome::Retry(err.to_string()),
        err => Outcome::fail("fal_error", failure::FAL_ERROR).because(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_and_off_list_results_fail_for_good_with_a_plain_reason() {
        for (err, code) in [
            (FalError::TooLarge, "result_too_large"),
            (FalError::ForbiddenUrl("x".into()), "result_refused"),
        ] {
            let Outcome::Fail(Failure {
                code: got,
                message,
                cause,
                ..
            }) = download_outcome(err)
            else {
                panic!("{code} must fail the job");
            };
            assert_eq!(got, code);
            assert!(!failure::retryable(&got));
            assert!(message.ends_with('.') && !message.contains("fal result"));
            assert!(cause.is_some(), "the technical cause is logged");
        }
        assert!(matches!(
            download_outcome(FalError::Transient {
                status: None,
                error_type: None,
                message: "connection reset".into(),
            }),
            Outcome::Retry(_)
        ));
    }
}
