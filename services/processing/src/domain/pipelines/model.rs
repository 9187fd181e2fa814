//! Pipelines and their runs as the rules see them; the store maps them to rows
//! and the API to the proto, each once.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// The most steps a pipeline may have.
pub const MAX_STEPS: usize = 8;
/// The most images one start may run a pipeline on.
pub const MAX_IMAGES: usize = 100;

/// One step: a workflow and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    pub workflow_id: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// A saved pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub steps: Vec<StepSpec>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        self != Self::Running
    }
}

/// Where a step of a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    pub workflow_id: String,
    pub parameters: Map<String, Value>,
    pub status: StepStatus,
    /// The job of the latest attempt.
    pub job_id: Option<Uuid>,
    pub attempts: i32,
    pub input_image_id: Option<Uuid>,
    pub result_image_id: Option<Uuid>,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub completed_at: Option<OffsetDateTime>,
    /// The job's status and progress, read when the run is shown (not stored).
    #[serde(skip)]
    pub job: Option<JobState>,
}

/// A step's job as it is now.
#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    pub status: &'static str,
    pub progress: Option<f64>,
}

impl RunStep {
    pub fn new(spec: StepSpec) -> Self {
        Self {
            workflow_id: spec.workflow_id,
            parameters: spec.parameters,
            status: StepStatus::Pending,
            job_id: None,
            attempts: 0,
            input_image_id: None,
            result_image_id: None,
            error: None,
            started_at: None,
            completed_at: None,
            job: None,
        }
    }
}

/// A pipeline run on one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: Uuid,
    pub user_id: Uuid,
    pub pipeline_id: Option<Uuid>,
    pub pipeline_name: String,
    pub image_id: Uuid,
    pub batch_id: Uuid,
    pub status: RunStatus,
    /// The step running (or failed, or cancelled); `steps.len()` once completed.
    pub current_step: usize,
    pub steps: Vec<RunStep>,
    pub error: Option<String>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// Bumped by every change; a change applies only to the version it read.
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub completed_at: Option<OffsetDateTime>,
}

impl Run {
    /// The last step's result, once the run completed.
    pub fn result_image_id(&self) -> Option<Uuid> {
        if self.status == RunStatus::Completed {
            self.steps.last().and_then(|step| step.result_image_id)
        } else {
            None
        }
    }

    /// The job of the step running now, if it started.
    pub fn current_job(&self) -> Option<Uuid> {
        self.steps
            .get(self.current_step)
            .and_then(|step| step.job_id)
    }
}

/// Something that happened to a run, with the run after it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEvent {
    pub seq: i64,
    pub at: OffsetDateTime,
    pub kind: String,
    /// The step it is about; `None` for the whole run.
    pub step: Option<usize>,
    pub run: Run,
}
