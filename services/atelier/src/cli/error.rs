//! What a client command can fail with, and the exit code each failure gives.

use std::fmt;

use serde::Deserialize;

/// The exit codes of the client commands, each distinct so scripts can tell them
/// apart (2 is clap's, for a command line it cannot parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 1: anything else (a bug, a server error, a file that cannot be written).
    Unexpected = 1,
    /// 2: the command line is wrong.
    Usage = 2,
    /// 3: not signed in, the credentials were refused, or they do not allow this
    /// (an API key's scopes, the plan's features).
    Unauthorized = 3,
    /// 4: no such job, image, workflow or local file.
    NotFound = 4,
    /// 5: a job failed or was cancelled (or has no result to download).
    JobFailed = 5,
    /// 6: the server cannot be reached (or answers that it is unavailable).
    Unreachable = 6,
    /// 7: the server refused the input (invalid parameters, not an image, too large).
    Rejected = 7,
    /// 8: over a rate limit or a quota of the plan.
    Limited = 8,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code an HTTP error status stands for.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Unauthorized,
            404 | 410 => Self::NotFound,
            400 | 409 | 412 | 413 | 415 | 422 => Self::Rejected,
            429 => Self::Limited,
            502..=504 => Self::Unreachable,
            _ => Self::Unexpected,
        }
    }
}

/// One invalid field of an RFC 9457 problem.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct ProblemField {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub pointer: String,
    #[serde(default)]
    pub detail: String,
}

/// The gateway's `application/problem+json` answer, as far as the CLI shows it.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub errors: Vec<ProblemField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

/// A failed command: what to tell the person, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    /// Boxed: most errors have none, and results stay small.
    pub problem: Option<Box<Problem>>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            problem: None,
        }
    }

    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(Exit::Unexpected, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub fn not_signed_in(url: &str) -> Self {
        Self::new(
            Exit::Unauthorized,
            format!("not signed in to {url}: run `atelier login` (or set ATELIER_API_KEY)"),
        )
    }

    /// The error an HTTP answer other than a success stands for; `body` is the
    /// answer's text (a problem document when the gateway wrote it).
    pub fn from_response(status: u16, body: &str) -> Self {
        let problem = serde_json::from_str::<Problem>(body)
            .ok()
            .filter(|problem| !problem.detail.is_empty() || !problem.title.is_empty());
        let message = match &problem {
            Some(problem) if !problem.detail.is_empty() => problem.detail.clone(),
            Some(problem) => problem.title.clone(),
            None => format!("the server answered {status}"),
        };
        // A 403 that names a limit is the plan's (storage full, priority), not a
        // refusal of the credentials.
        let exit = match &problem {
            Some(problem) if status == 403 && problem.limit.is_some() => Exit::Limited,
            _ => Exit::of_status(status),
        };
        Self {
            exit,
            message,
            problem: problem.map(Box::new),
        }
    }

    /// A transport error: the server cannot be reached, or the answer broke off.
    pub fn from_transport(url: &str, err: &reqwest::Error) -> Self {
        if err.is_connect() || err.is_timeout() {
            Self::new(
                Exit::Unreachable,
                format!("cannot reach the server at {url}: {}", root_cause(err)),
            )
        } else if err.is_body() || err.is_builder() {
            Self::unexpected(format!("sending to {url} failed: {}", root_cause(err)))
        } else {
            Self::new(
                Exit::Unreachable,
                format!("talking to {url} failed: {}", root_cause(err)),
            )
        }
    }

    pub fn with_context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The error as one JSON document (the `error` of `--json` output).
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "exit_code": self.exit.code(),
            "message": self.message,
        });
        if let Some(problem) = &self.problem
            && let Ok(problem) = serde_json::to_value(problem)
        {
            value["problem"] = problem;
        }
        value
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(problem) = &self.problem {
            for field in &problem.errors {
                if field.detail == self.message {
                    continue;
                }
                let name = if field.field.is_empty() {
                    field.pointer.trim_start_matches('#')
                } else {
                    &field.field
                };
                write!(f, "\n  {name}: {}", field.detail)?;
            }
            if let Some(resets_at) = &problem.resets_at {
                write!(f, "\n  the limit resets at {resets_at}")?;
            }
            if let Some(request_id) = &problem.request_id
                && self.exit == Exit::Unexpected
            {
                write!(f, "\n  request id: {request_id}")?;
            }
        }
        Ok(())
    }
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        Self::unexpected(err.to_string())
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_distinct_exit_codes() {
        assert_eq!(Exit::of_status(401), Exit::Unauthorized);
        assert_eq!(Exit::of_status(404), Exit::NotFound);
        assert_eq!(Exit::of_status(422), Exit::Rejected);
        assert_eq!(Exit::of_status(415), Exit::Rejected);
        assert_eq!(Exit::of_status(429), Exit::Limited);
        assert_eq!(Exit::of_status(503), Exit::Unreachable);
        assert_eq!(Exit::of_status(500), Exit::Unexpected);
        let codes = [
            Exit::Unexpected,
            Exit::Usage,
            Exit::Unauthorized,
            Exit::NotFound,
            Exit::JobFailed,
            Exit::Unreachable,
            Exit::Rejected,
            Exit::Limited,
        ]
        .map(Exit::code);
        let mut unique = codes.to_vec();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
    }

    #[test]
    fn a_problem_shows_its_detail_and_each_field() {
        let body = r##"{"type":"https://atelier.dev/problems/invalid-request","title":"Invalid request",
            "status":422,"detail":"the parameters are invalid",
            "errors":[{"field":"parameters.scale","pointer":"#/parameters/scale","detail":"must be at most 8"}]}"##;
        let error = CliError::from_response(422, body);
        assert_eq!(error.exit, Exit::Rejected);
        assert_eq!(
            error.to_string(),
            "the parameters are invalid\n  parameters.scale: must be at most 8"
        );
        let plain = CliError::from_response(502, "<html>bad gateway</html>");
        assert_eq!(plain.exit, Exit::Unreachable);
        assert_eq!(plain.to_string(), "the server answered 502");
    }
}
