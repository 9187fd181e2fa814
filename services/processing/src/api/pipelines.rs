//! gRPC handlers of `atelier.pipeline.v1.PipelineService`: decode, authorize
//! (every call acts on the caller's own pipelines and runs), call the domain,
//! encode.

use std::{pin::Pin, sync::Arc};

use atelier_common::{
    FieldViolation,
    grpc::caller,
    json::{from_struct, map_to_struct},
    page, timestamp,
};
use atelier_proto::pipeline::v1::{self as pb, pipeline_service_server::PipelineService};
use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::pipelines::{
        Pipeline, PipelineChange, Pipelines, Run, RunEvent, RunStatus, RunStep, StepSpec,
        StepStatus, runs::Source, step,
    },
    error::ProcessingError,
};

pub struct PipelineApi {
    pipelines: Arc<Pipelines>,
}

impl PipelineApi {
    pub fn new(pipelines: Arc<Pipelines>) -> Self {
        Self { pipelines }
    }
}

fn pipeline_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| ProcessingError::PipelineNotFound)
}

fn run_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| ProcessingError::RunNotFound)
}

fn steps_of(steps: Vec<pb::PipelineStep>) -> Vec<StepSpec> {
    steps
        .into_iter()
        .map(|s| step(s.workflow_id, from_struct(s.parameters)))
        .collect()
}

fn encode_step(spec: &StepSpec) -> pb::PipelineStep {
    pb::PipelineStep {
        workflow_id: spec.workflow_id.clone(),
        parameters: Some(map_to_struct(&spec.parameters)),
    }
}

pub fn encode_pipeline(pipeline: &Pipeline) -> pb::Pipeline {
    pb::Pipeline {
        id: pipeline.id.to_string(),
        name: pipeline.name.clone(),
        steps: pipeline.steps.iter().map(encode_step).collect(),
        created_at: Some(timestamp(pipeline.created_at)),
        updated_at: Some(timestamp(pipeline.updated_at)),
    }
}

fn run_status(status: RunStatus) -> i32 {
    (match status {
        RunStatus::Running => pb::PipelineRunStatus::Running,
        RunStatus::Completed => pb::PipelineRunStatus::Completed,
        RunStatus::Failed => pb::PipelineRunStatus::Failed,
        RunStatus::Cancelled => pb::PipelineRunStatus::Cancelled,
    }) as i32
}

fn step_status(status: StepStatus) -> i32 {
    (match status {
        StepStatus::Pending => pb::StepStatus::Pending,
        StepStatus::Running => pb::StepStatus::Running,
        StepStatus::Completed => pb::StepStatus::Completed,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Cancelled => pb::StepStatus::Cancelled,
    }) as i32
}

fn id_or_empty(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

fn encode_run_step(index: usize, step: &RunStep) -> pb::PipelineRunStep {
    pb::PipelineRunStep {
        index: index as i32,
        workflow_id: step.workflow_id.clone(),
        parameters: Some(map_to_struct(&step.parameters)),
        status: step_status(step.status),
        job_id: id_or_empty(step.job_id),
        attempts: step.attempts,
        input_image_id: id_or_empty(step.input_image_id),
        result_image_id: id_or_empty(step.result_image_id),
        error: step.error.clone().unwrap_or_default(),
        job_status: step
            .job
            .as_ref()
            .map(|job| job.status.to_owned())
            .unwrap_or_default(),
        progress: step.job.as_ref().and_then(|job| job.progress),
        started_at: step.started_at.map(timestamp),
        completed_at: step.completed_at.map(timestamp),
    }
}

pub fn encode_run(run: &Run) -> pb::PipelineRun {
    pb::PipelineRun {
        id: run.id.to_string(),
        pipeline_id: id_or_empty(run.pipeline_id),
        pipeline_name: run.pipeline_name.clone(),
        image_id: run.image_id.to_string(),
        status: run_status(run.status),
        current_step: run.current_step as i32,
        steps: run
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| encode_run_step(index, step))
            .collect(),
        result_image_id: id_or_empty(run.result_image_id()),
        error: run.error.clone().unwrap_or_default(),
        batch_id: run.batch_id.to_string(),
        created_at: Some(timestamp(run.created_at)),
        updated_at: Some(timestamp(run.updated_at)),
        completed_at: run.completed_at.map(timestamp),
    }
}

pub fn encode_run_event(event: &RunEvent) -> pb::PipelineRunEvent {
    pb::PipelineRunEvent {
        seq: event.seq,
        at: Some(timestamp(event.at)),
        kind: event.kind.clone(),
        step: event.step.map_or(-1, |step| step as i32),
        run: Some(encode_run(&event.run)),
    }
}

type Events =
    Pin<Box<dyn Stream<Item = Result<pb::StreamPipelineRunEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PipelineService for PipelineApi {
    async fn create_pipeline(
        &self,
        request: Request<pb::CreatePipelineRequest>,
    ) -> Result<Response<pb::CreatePipelineResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let pipeline = self
            .pipelines
            .create(caller.user_id, &request.name, steps_of(request.steps))
            .await?;
        Ok(Response::new(pb::CreatePipelineResponse {
            pipeline: Some(encode_pipeline(&pipeline)),
        }))
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let caller = caller(&request)?;
        let pipelines = self.pipelines.list(caller.user_id).await?;
        Ok(Response::new(pb::ListPipelinesResponse {
            pipelines: pipelines.iter().map(encode_pipeline).collect(),
        }))
    }

    async fn get_pipeline(
        &self,
        request: Request<pb::GetPipelineRequest>,
    ) -> Result<Response<pb::GetPipelineResponse>, Status> {
        let caller = caller(&request)?;
        let id = pipeline_id(&request.get_ref().pipeline_id)?;
        let pipeline = self.pipelines.get(caller.user_id, id).await?;
        Ok(Response::new(pb::GetPipelineResponse {
            pipeline: Some(encode_pipeline(&pipeline)),
        }))
    }

    async fn update_pipeline(
        &self,
        request: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::UpdatePipelineResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = pipeline_id(&request.pipeline_id)?;
        let change = PipelineChange {
            name: request.name,
            steps: request.steps.map(|steps| steps_of(steps.steps)),
        };
        let pipeline = self.pipelines.update(caller.user_id, id, change).await?;
        Ok(Response::new(pb::UpdatePipelineResponse {
            pipeline: Some(encode_pipeline(&pipeline)),
        }))
    }

    async fn delete_pipeline(
        &self,
        request: Request<pb::DeletePipelineRequest>,
    ) -> Result<Response<pb::DeletePipelineResponse>, Status> {
        let caller = caller(&request)?;
        let id = pipeline_id(&request.get_ref().pipeline_id)?;
        self.pipelines.delete(caller.user_id, id).await?;
        Ok(Response::new(pb::DeletePipelineResponse {}))
    }

    async fn validate_pipeline(
        &self,
        request: Request<pb::ValidatePipelineRequest>,
    ) -> Result<Response<pb::ValidatePipelineResponse>, Status> {
        caller(&request)?;
        let violations = self
            .pipelines
            .validate(&steps_of(request.into_inner().steps))
            .await?;
        Ok(Response::new(pb::ValidatePipelineResponse {
            valid: violations.is_empty(),
            violations: violations
                .into_iter()
                .map(|violation| pb::FieldViolation {
                    field: violation.field,
                    description: violation.description,
                })
                .collect(),
        }))
    }

    async fn start_pipeline_run(
        &self,
        request: Request<pb::StartPipelineRunRequest>,
    ) -> Result<Response<pb::StartPipelineRunResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let source = match (request.pipeline_id.is_empty(), request.steps.is_empty()) {
            (false, true) => Source::Saved(pipeline_id(&request.pipeline_id)?),
            (true, false) => Source::Steps(steps_of(request.steps)),
            _ => {
                return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                    "pipeline_id",
                    "give either a saved pipeline's id or the steps, not both",
                )])
                .into());
            }
        };
        let image_ids = request
            .image_ids
            .iter()
            .enumerate()
            .map(|(index, id)| {
                Uuid::parse_str(id).map_err(|_| {
                    ProcessingError::InvalidInput(vec![FieldViolation::new(
                        format!("image_ids[{index}]"),
                        "is not an image id",
                    )])
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (runs, replayed) = self
            .pipelines
            .start(
                caller.user_id,
                source,
                &image_ids,
                Some(request.idempotency_key).filter(|key| !key.is_empty()),
            )
            .await?;
        Ok(Response::new(pb::StartPipelineRunResponse {
            runs: runs.iter().map(encode_run).collect(),
            replayed,
        }))
    }

    async fn get_pipeline_run(
        &self,
        request: Request<pb::GetPipelineRunRequest>,
    ) -> Result<Response<pb::GetPipelineRunResponse>, Status> {
        let caller = caller(&request)?;
        let id = run_id(&request.get_ref().run_id)?;
        let run = self.pipelines.run(caller.user_id, id).await?;
        Ok(Response::new(pb::GetPipelineRunResponse {
            run: Some(encode_run(&run)),
        }))
    }

    async fn list_pipeline_runs(
        &self,
        request: Request<pb::ListPipelineRunsRequest>,
    ) -> Result<Response<pb::ListPipelineRunsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let (limit, after) = page::request::<Uuid>(request.page_size, &request.page_token)
            .map_err(ProcessingError::InvalidInput)?;
        let pipeline = if request.pipeline_id.is_empty() {
            None
        } else {
            Some(pipeline_id(&request.pipeline_id)?)
        };
        let (runs, next) = self
            .pipelines
            .runs(caller.user_id, pipeline, after, limit)
            .await?;
        Ok(Response::new(pb::ListPipelineRunsResponse {
            runs: runs.iter().map(encode_run).collect(),
            next_page_token: next.map(|id| page::encode(&id)).unwrap_or_default(),
        }))
    }

    async fn cancel_pipeline_run(
        &self,
        request: Request<pb::CancelPipelineRunRequest>,
    ) -> Result<Response<pb::CancelPipelineRunResponse>, Status> {
        let caller = caller(&request)?;
        let id = run_id(&request.get_ref().run_id)?;
        let run = self.pipelines.cancel(caller.user_id, id).await?;
        Ok(Response::new(pb::CancelPipelineRunResponse {
            run: Some(encode_run(&run)),
        }))
    }

    async fn retry_pipeline_run(
        &self,
        request: Request<pb::RetryPipelineRunRequest>,
    ) -> Result<Response<pb::RetryPipelineRunResponse>, Status> {
        let caller = caller(&request)?;
        let id = run_id(&request.get_ref().run_id)?;
        let run = self.pipelines.retry(caller.user_id, id).await?;
        Ok(Response::new(pb::RetryPipelineRunResponse {
            run: Some(encode_run(&run)),
        }))
    }

    type StreamPipelineRunEventsStream = Events;

    async fn stream_pipeline_run_events(
        &self,
        request: Request<pb::StreamPipelineRunEventsRequest>,
    ) -> Result<Response<Self::StreamPipelineRunEventsStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let receiver = self
            .pipelines
            .events(
                caller.user_id,
                run_id(&request.run_id)?,
                request.after_seq.max(0),
            )
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let stream = futures::StreamExt::map(stream, |event| {
            Ok(pb::StreamPipelineRunEventsResponse {
                event: Some(encode_run_event(&event)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
