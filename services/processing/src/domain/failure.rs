//! What a failed job tells its owner: a sentence a person understands for each of
//! our failure codes, and whether running the job again may help. Technical causes
//! are logged where the failure is decided, never shown.

/// A job's failure: its code, a message for its owner with optional details
/// (e.g. the fields fal refused), and the technical cause, which only the log
/// shows.
#[derive(Clone, Debug)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub cause: Option<String>,
}

pub const GAVE_UP: &str = "The job failed on every attempt because fal or the network kept \
     failing. Retrying later may work.";
pub const MISCONFIGURED: &str =
    "This workflow is misconfigured on the platform, so the job could not run.";
pub const NO_OUTPUT: &str = "The model finished without returning an image.";
pub const TOO_LARGE: &str = "The result is larger than the largest result this platform \
     stores. Try a smaller scale factor or a compressed output format such as JPEG.";
pub const REFUSED_HOST: &str =
    "fal offered the result from an address this platform does not download from.";
pub const INVALID_PARAMETERS: &str =
    "fal rejected the parameters; change the fields named below and start again.";
pub const SUBMISSION_UNKNOWN: &str = "fal did not confirm that it received the job. It was \
     not sent again, so that it cannot run or be billed twice; retry it if you still want it.";
pub const FAL_ERROR: &str = "fal answered in a way this platform does not understand. \
     Retrying may work.";

/// What a request fal ran and failed means for the user, from fal's error type;
/// fal's own text where it speaks of the model's work (e.g. a content policy) or
/// fal gave no type.
pub fn fal_failed(error_type: Option<&str>, text: &str) -> String {
    match error_type.unwrap_or_default() {
        "request_timeout" | "startup_timeout" => {
            "fal took too long to start or finish the job. Retrying may work.".to_owned()
        }
        "internal_error"
        | "runner_server_error"
        | "runner_scheduling_failure"
        | "runner_connection_timeout"
        | "runner_disconnected"
        | "runner_connection_refused"
        | "runner_connection_error"
        | "runner_incomplete_response" => {
            "The model failed while running at fal. Retrying may work.".to_owned()
        }
        "client_disconnected" | "client_cancelled" => "The job was cancelled at fal.".to_owned(),
        "bad_request" => format!(
            "fal refused the request as invalid ({}).",
            text.trim_end_matches('.')
        ),
        _ if text.trim().is_empty() => "The model failed at fal.".to_owned(),
        _ => text.to_owned(),
    }
}

/// The result the model returned is not an image that can be stored; `why` is the
/// image service's reason, written for people.
pub fn result_invalid(why: &str) -> String {
    format!("The model returned a result that cannot be stored: {why}.")
}

/// The malware scanner found `signature` in the result the model returned: it
/// was not stored.
pub fn result_malware(signature: &str) -> String {
    format!(
        "The model returned a result in which the malware scanner found {signature}; it was not stored."
    )
}

/// Whether running a job that failed with `code` again may succeed. Codes not
/// known here are fal's error types: only its validation and content-policy
/// refusals are final.
pub fn retryable(code: &str) -> bool {
    !matches!(
        code,
        "invalid_parameters"
            | "invalid_endpoint"
            | "image_unavailable"
            | "result_too_large"
            | "result_refused"
            | "result_invalid"
            | "result_malware"
            | "bad_request"
            | "content_policy_violation"
            | "validation_error"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fal_failures_read_as_sentences() {
        assert_eq!(
            fal_failed(Some("runner_server_error"), "Internal Server Error"),
            "The model failed while running at fal. Retrying may work."
        );
        assert_eq!(
            fal_failed(Some("bad_request"), "Bad request."),
            "fal refused the request as invalid (Bad request)."
        );
        assert_eq!(
            fal_failed(
                Some("content_policy_violation"),
                "The image was flagged as unsafe."
            ),
            "The image was flagged as unsafe."
        );
        assert_eq!(fal_failed(None, " "), "The model failed at fal.");
    }

    #[test]
    fn only_failures_a_retry_can_mend_are_retryable() {
        for code in [
            "attempts_exhausted",
            "submission_unknown",
            "no_output",
            "fal_error",
            "runner_server_error",
            "request_timeout",
        ] {
            assert!(retryable(code), "{code}");
        }
        for code in [
            "invalid_parameters",
            "result_too_large",
            "result_invalid",
            "result_malware",
            "image_unavailable",
            "bad_request",
        ] {
            assert!(!retryable(code), "{code}");
        }
    }
}
