//! A job and its events as the rules see them. The store maps them to columns
//! and the API to the proto, each once.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use atelier_queue::Priority;

/// Where a job is in its lifecycle: `pending → queued → submitted → processing →
/// completed | failed | cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Queued,
    Submitted,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Queued,
        Self::Submitted,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
    pub const UNFINISHED: [Self; 4] = [
        Self::Pending,
        Self::Queued,
        Self::Submitted,
        Self::Processing,
    ];
    /// Waiting for a worker: a worker may claim the job for submission.
    pub const WAITING: [Self; 2] = [Self::Pending, Self::Queued];
    /// The states a job can be retried from.
    pub const RETRYABLE: [Self; 2] = [Self::Failed, Self::Cancelled];

    /// The status as job events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Submitted => "submitted",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// A job: what was asked, where it is, and what came of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub user_id: Uuid,
    pub image_id: Uuid,
    pub workflow_id: String,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub fal_endpoint: String,
    pub parameters: Value,
    pub priority: Priority,
    pub status: Status,
    pub fal_request_id: Option<String>,
    pub result_image_id: Option<Uuid>,
    /// The outputs in output order: each a result image's id, or an object
    /// `{"image_id", "role"}`.
    pub result_image_ids: Value,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_details: Option<Value>,
    pub attempts: i32,
    pub queue_position: Option<i32>,
    pub progress: Option<f64>,
    pub processing_time_ms: Option<i64>,
    pub idempotency_key: Option<String>,
    pub batch_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    /// What history search matches (see [`search_text`]).
    pub search_text: String,
    /// The input image's file name when the job started; `None` for jobs from
    /// before it was kept, until the search backfill reaches them.
    pub input_filename: Option<String>,
    /// The cost estimated at fal's price when the job started, in
    /// `cost_currency`; `None` when there was no estimate.
    pub estimated_cost: Option<f64>,
    pub cost_currency: Option<String>,
    /// fal's price when the job started: `unit_price` `cost_currency` per
    /// `price_unit` (`image`, `megapixels`).
    pub unit_price: Option<f64>,
    pub price_unit: Option<String>,
    /// What fal billed once the job was final (see [`crate::domain::spend::actual_cost`]):
    /// its successful outputs at the price; 0 when it failed or was cancelled;
    /// `None` while it runs or when there was no price.
    pub actual_cost: Option<f64>,
}

/// One entry of a job's history, numbered from 1 without gaps.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub job_id: Uuid,
    pub seq: i64,
    pub at: OffsetDateTime,
    pub kind: String,
    pub data: Value,
}

impl Event {
    /// Whether this event moved its job to a final status.
    pub fn is_final(&self) -> bool {
        self.kind == "status_changed"
            && self.data["status"]
                .as_str()
                .and_then(Status::parse)
                .is_some_and(Status::is_final)
    }
}

/// Filters of a job listing.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub statuses: Vec<Status>,
    pub workflow_id: Option<String>,
    pub image_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    /// Words to find in the workflow's name or the prompts.
    pub query: Option<String>,
}

/// The text history search matches for a job: its workflow's name and id, its
/// input image's file name, and every prompt among its parameters.
///
/// The file name is there twice: as given, and with every run of other
/// characters than letters and digits turned into a space. PostgreSQL's parser
/// reads `IMG_2041.jpg` as one `file` token, while the query `IMG_2041` becomes
/// the phrase `img <-> 2041`: the first form finds whole names, the second
/// their parts (`IMG_2041`, `2041`, `jpg`). SQLite's substring match finds
/// both through the first.
pub fn search_text(
    workflow_name: &str,
    workflow_id: &str,
    input_filename: &str,
    parameters: &Value,
) -> String {
    let mut text = format!("{workflow_name} {workflow_id}");
    let input_filename = input_filename.trim();
    if !input_filename.is_empty() {
        let words = input_filename
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        text.push(' ');
        text.push_str(input_filename);
        if words != input_filename {
            text.push(' ');
            text.push_str(&words);
        }
    }
    if let Some(parameters) = parameters.as_object() {
        for (key, value) in parameters {
            if key.contains("prompt")
                && let Some(prompt) = value.as_str()
            {
                text.push(' ');
                text.push_str(prompt);
            }
        }
    }
    text
}
