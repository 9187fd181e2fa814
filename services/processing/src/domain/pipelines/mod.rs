//! Pipelines: workflows chained one after another, each step's result image the
//! next step's input. A saved pipeline is a name and its steps; a run is one
//! pipeline on one image, each step an ordinary job started through
//! [`Jobs::start`] (so validation, quotas and limits apply), advanced as its
//! step's job finishes (see [`runs`]).

mod model;
pub mod runs;
mod stream;

use std::sync::Arc;

use atelier_common::{Clock, FieldViolation};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use model::{
    JobState, MAX_IMAGES, MAX_STEPS, Pipeline, Run, RunEvent, RunStatus, RunStep, StepSpec,
    StepStatus,
};

use super::Jobs;
use crate::{
    error::ProcessingError,
    events::Bus,
    peers::{ImageDirectory, WorkflowCatalogue},
    store::pipelines::PipelineStore,
};

/// The longest pipeline name.
const MAX_NAME: usize = 100;

/// A nominal input the validation estimates each step's outputs for (the real
/// sizes are checked when the step's job starts).
const NOMINAL_SIDE: u32 = 1024;

pub struct Pipelines {
    store: PipelineStore,
    jobs: Arc<Jobs>,
    workflows: Arc<dyn WorkflowCatalogue>,
    images: Arc<dyn ImageDirectory>,
    bus: Bus,
    clock: Arc<dyn Clock>,
}

/// What changes in a saved pipeline.
#[derive(Clone, Debug, Default)]
pub struct PipelineChange {
    pub name: Option<String>,
    pub steps: Option<Vec<StepSpec>>,
}

impl Pipelines {
    pub fn new(
        store: PipelineStore,
        jobs: Arc<Jobs>,
        workflows: Arc<dyn WorkflowCatalogue>,
        images: Arc<dyn ImageDirectory>,
        bus: Bus,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            jobs,
            workflows,
            images,
            bus,
            clock,
        })
    }

    /// Every violation of `steps`, each naming its step (`steps[1].parameters.scale`):
    /// 1 to [`MAX_STEPS`] steps, each an active workflow with parameters its
    /// schema accepts, and every step but the last producing an image.
    pub async fn validate(
        &self,
        steps: &[StepSpec],
    ) -> Result<Vec<FieldViolation>, ProcessingError> {
        let mut violations = Vec::new();
        if steps.is_empty() || steps.len() > MAX_STEPS {
            violations.push(FieldViolation::new(
                "steps",
                format!("must list between 1 and {MAX_STEPS} steps"),
            ));
            return Ok(violations);
        }
        for (index, step) in steps.iter().enumerate() {
            let at = format!("steps[{index}]");
            if step.workflow_id.trim().is_empty() {
                violations.push(FieldViolation::new(
                    format!("{at}.workflow_id"),
                    "is required",
                ));
                continue;
            }
            let validated = self
                .workflows
                .estimate(
                    &step.workflow_id,
                    &step.parameters,
                    &[(Uuid::nil(), NOMINAL_SIDE, NOMINAL_SIDE)],
                )
                .await;
            match validated {
                Ok(estimate) => {
                    let images = estimate.jobs.first().map_or(1, |job| job.image_outputs);
                    if images == 0 && index + 1 < steps.len() {
                        violations.push(FieldViolation::new(
                            format!("{at}.workflow_id"),
                            "produces no image, so no step can follow it",
                        ));
                    }
                }
                Err(ProcessingError::InvalidInput(found)) => {
                    violations.extend(found.into_iter().map(|violation| {
                        let field = if violation.field.is_empty() {
                            format!("{at}.parameters")
                        } else if violation.field.starts_with("parameters") {
                            format!("{at}.{}", violation.field)
                        } else {
                            format!("{at}.parameters.{}", violation.field)
                        };
                        FieldViolation::new(field, violation.description)
                    }));
                }
                Err(ProcessingError::WorkflowNotFound) => violations.push(FieldViolation::new(
                    format!("{at}.workflow_id"),
                    format!("there is no workflow {:?}", step.workflow_id),
                )),
                Err(ProcessingError::WorkflowInactive(reason)) => {
                    violations.push(FieldViolation::new(format!("{at}.workflow_id"), reason));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(violations)
    }

    /// `steps` when they are valid, else every violation as the error.
    async fn checked(&self, steps: Vec<StepSpec>) -> Result<Vec<StepSpec>, ProcessingError> {
        let violations = self.validate(&steps).await?;
        if violations.is_empty() {
            Ok(steps)
        } else {
            Err(ProcessingError::InvalidInput(violations))
        }
    }

    pub async fn create(
        &self,
        user_id: Uuid,
        name: &str,
        steps: Vec<StepSpec>,
    ) -> Result<Pipeline, ProcessingError> {
        let name = checked_name(name)?;
        let steps = self.checked(steps).await?;
        let now = self.clock.now();
        let pipeline = Pipeline {
            id: Uuid::now_v7(),
            user_id,
            name,
            steps,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_pipeline(&pipeline).await?;
        metrics::counter!("atelier_pipelines_created_total").increment(1);
        Ok(pipeline)
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<Pipeline, ProcessingError> {
        self.store
            .pipeline(user_id, id)
            .await?
            .ok_or(ProcessingError::PipelineNotFound)
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<Pipeline>, ProcessingError> {
        Ok(self.store.pipelines(user_id).await?)
    }

    pub async fn update(
        &self,
        user_id: Uuid,
        id: Uuid,
        change: PipelineChange,
    ) -> Result<Pipeline, ProcessingError> {
        let mut pipeline = self.get(user_id, id).await?;
        if let Some(name) = change.name {
            pipeline.name = checked_name(&name)?;
        }
        if let Some(steps) = change.steps {
            pipeline.steps = self.checked(steps).await?;
        }
        pipeline.updated_at = self.clock.now();
        if !self.store.update_pipeline(&pipeline).await? {
            return Err(ProcessingError::PipelineNotFound);
        }
        Ok(pipeline)
    }

    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), ProcessingError> {
        if self.store.delete_pipeline(user_id, id).await? {
            Ok(())
        } else {
            Err(ProcessingError::PipelineNotFound)
        }
    }

    /// Deletes every pipeline and run of `user_id` (account deletion; their jobs
    /// go with the user's other jobs).
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), ProcessingError> {
        Ok(self.store.delete_user(user_id).await?)
    }
}

/// A pipeline name: trimmed, 1 to [`MAX_NAME`] characters.
fn checked_name(name: &str) -> Result<String, ProcessingError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
            "name",
            format!("must be between 1 and {MAX_NAME} characters"),
        )]));
    }
    Ok(name.to_owned())
}

/// A step of a request, as the domain takes it.
pub fn step(workflow_id: String, parameters: Map<String, Value>) -> StepSpec {
    StepSpec {
        workflow_id,
        parameters,
    }
}
