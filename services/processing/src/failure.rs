//! What a failed job tells its owner: a sentence a person understands for each of
//! our failure codes, and whether running the job again may help. Technical causes
//! are logged where the failure is decided, never shown.

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

/// The result the model returned is not an image that can be stored; `why` is the
/// image service's reason, written for people.
pub fn result_invalid(why: &str) -> String {
    format!("The model returned a result that cannot be stored: {why}.")
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
            | "bad_request"
            | "content_policy_violation"
            | "validation_error"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "image_unavailable",
            "bad_request",
        ] {
            assert!(!retryable(code), "{code}");
        }
    }
}
