//! The job lifecycle: `pending → queued → submitted → processing → completed |
//! failed | cancelled`. The row is the truth; every change appends an event (with
//! the next sequence number) in the same transaction and is then published.

use std::{sync::Arc, time::Duration};

use atelier_common::{Clock, FieldViolation, json::map_to_struct};
use atelier_proto::{
    image::v1::{CheckOwnershipRequest, image_service_client::ImageServiceClient},
    workflow::v1::{
        EstimateInput, EstimateRequest, ValidateParametersRequest,
        workflow_service_client::WorkflowServiceClient,
    },
};
use atelier_queue::{Enqueue, Priority, Queue};
use serde_json::{Map, Value, json};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    error::{ProcessingError, upstream},
    events::Bus,
    quota::{Quota, Quotas},
    store::{EventRow, JobFilter, JobRow, Store},
};

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
    pub const UNFINISHED: [&'static str; 4] = ["pending", "queued", "submitted", "processing"];

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
        [
            Self::Pending,
            Self::Queued,
            Self::Submitted,
            Self::Processing,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

pub fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

pub fn priority_of(name: &str) -> Priority {
    match name {
        "high" => Priority::High,
        "low" => Priority::Low,
        _ => Priority::Normal,
    }
}

/// What a caller asks to run.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub user_id: Uuid,
    pub image_id: Uuid,
    pub workflow_id: String,
    pub parameters: Map<String, Value>,
    pub priority: Priority,
    pub idempotency_key: Option<String>,
    pub batch_id: Option<Uuid>,
}

/// Parameters the workflow service accepted, with the workflow they run on.
struct Validated {
    parameters: Map<String, Value>,
    workflow_name: String,
    workflow_version: i32,
    fal_endpoint: String,
}

/// A batch: one workflow over many images, as its jobs add up.
#[derive(Clone, Debug)]
pub struct BatchView {
    pub id: Uuid,
    pub jobs: Vec<JobRow>,
}

impl BatchView {
    pub fn count(&self, statuses: &[Status]) -> usize {
        self.jobs
            .iter()
            .filter(|job| {
                Status::parse(&job.status).is_some_and(|status| statuses.contains(&status))
            })
            .count()
    }

    /// The share of jobs that finished, whatever the outcome.
    pub fn progress(&self) -> f64 {
        if self.jobs.is_empty() {
            return 1.0;
        }
        self.count(&[Status::Completed, Status::Failed, Status::Cancelled]) as f64
            / self.jobs.len() as f64
    }
}

pub struct Jobs {
    pub(crate) store: Store,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) bus: Bus,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) images: ImageServiceClient<Channel>,
    pub(crate) workflows: WorkflowServiceClient<Channel>,
    pub(crate) quotas: Arc<Quotas>,
}

impl Jobs {
    pub fn new(
        store: Store,
        queue: Arc<dyn Queue>,
        bus: Bus,
        clock: Arc<dyn Clock>,
        images: Channel,
        workflows: Channel,
        quotas: Arc<Quotas>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue,
            bus,
            clock,
            images: ImageServiceClient::new(images),
            workflows: WorkflowServiceClient::new(workflows),
            quotas,
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// What the workflow service estimates for running `workflow_id` with
    /// `parameters` on `images` (id, width, height): each job's cost and its
    /// currency, when known. A result that would not fit the platform's limits
    /// is refused with the reason, on the parameter to change, else on
    /// `image_field` (`image_id`, or `image_ids[i]` for a batch). Images without
    /// known dimensions are not estimated.
    async fn estimate(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
        images: &[(Uuid, u32, u32)],
        image_field: &str,
    ) -> Result<(Option<Validated>, Vec<Option<(f64, String)>>), ProcessingError> {
        let known: Vec<EstimateInput> = images
            .iter()
            .filter(|(_, width, height)| *width > 0 && *height > 0)
            .map(|(id, width, height)| EstimateInput {
                image_id: id.to_string(),
                width: *width,
                height: *height,
            })
            .collect();
        if known.is_empty() {
            return Ok((None, vec![None; images.len()]));
        }
        let reply = match self
            .workflows
            .clone()
            .estimate(EstimateRequest {
                workflow_id: workflow_id.to_owned(),
                parameters: Some(map_to_struct(parameters)),
                inputs: known,
            })
            .await
        {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                return Err(ProcessingError::WorkflowNotFound);
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                return Err(ProcessingError::WorkflowInactive(
                    status.message().to_owned(),
                ));
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(ProcessingError::InvalidInput(
                    atelier_common::error::field_violations(&status),
                ));
            }
            Err(status) => return Err(upstream(status)),
        };
        let validated = Validated {
            parameters: atelier_common::json::from_struct(reply.parameters),
            workflow_name: reply.workflow_name,
            workflow_version: reply.workflow_version,
            fal_endpoint: reply.fal_endpoint,
        };
        let currency = reply
            .pricing
            .map(|pricing| pricing.currency)
            .unwrap_or_default();
        let mut refusals = Vec::new();
        let mut costs = Vec::with_capacity(images.len());
        for (index, (id, _, _)) in images.iter().enumerate() {
            let job = reply.jobs.iter().find(|job| job.image_id == id.to_string());
            if let Some(job) = job
                && !job.allowed
            {
                let field = if job.field.is_empty() {
                    if images.len() > 1 {
                        format!("{image_field}[{index}]")
                    } else {
                        image_field.to_owned()
                    }
                } else {
                    job.field.clone()
                };
                if !refusals
                    .iter()
                    .any(|refusal: &FieldViolation| refusal.field == field)
                {
                    refusals.push(FieldViolation::new(field, job.reason.clone()));
                }
            }
            costs.push(
                job.and_then(|job| job.cost)
                    .filter(|_| !currency.is_empty())
                    .map(|cost| (cost, currency.clone())),
            );
        }
        if !refusals.is_empty() {
            return Err(ProcessingError::InvalidInput(refusals));
        }
        Ok((Some(validated), costs))
    }

    /// `parameters` checked against `workflow_id`'s schema (defaults filled in),
    /// and each image's estimated cost: one call to the workflow service when
    /// every image's size is known (the estimate checks the parameters too), two
    /// otherwise.
    async fn check(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
        images: &[(Uuid, u32, u32)],
        image_field: &str,
    ) -> Result<(Validated, Vec<Option<(f64, String)>>), ProcessingError> {
        let all_known = images
            .iter()
            .all(|(_, width, height)| *width > 0 && *height > 0);
        if all_known
            && let (Some(validated), costs) = self
                .estimate(workflow_id, parameters, images, image_field)
                .await?
        {
            return Ok((validated, costs));
        }
        let validated = self.validate(workflow_id, parameters).await?;
        let (_, costs) = self
            .estimate(workflow_id, &validated.parameters, images, image_field)
            .await?;
        Ok((validated, costs))
    }

    /// Gives jobs recorded before input file names were kept their input's name
    /// and a search text that holds it, a page at a time, asking the image
    /// service for the names. A deleted input leaves an empty name. Returns how
    /// many jobs it updated; an unreachable image service stops it with an error
    /// (the caller tries again later), having kept what it did.
    pub async fn backfill_search(&self) -> Result<u64, ProcessingError> {
        let mut updated = 0;
        loop {
            let rows = self.store.without_input_filename(100).await?;
            if rows.is_empty() {
                return Ok(updated);
            }
            for row in rows {
                let owned = self
                    .images
                    .clone()
                    .check_ownership(CheckOwnershipRequest {
                        user_id: row.user_id.to_string(),
                        image_id: row.image_id.to_string(),
                    })
                    .await
                    .map_err(upstream)?
                    .into_inner();
                let input_filename = owned
                    .image
                    .filter(|_| owned.owned)
                    .map(|image| image.original_filename)
                    .unwrap_or_default();
                let search_text = crate::store::search_text(
                    &row.workflow_name,
                    &row.workflow_id,
                    &input_filename,
                    &row.parameters,
                );
                self.store
                    .set_input_filename(row.id, &input_filename, &search_text)
                    .await?;
                updated += 1;
            }
        }
    }

    /// Creates a job (or returns the one its idempotency key already made) and
    /// queues it.
    pub async fn start(&self, request: StartRequest) -> Result<(JobRow, bool), ProcessingError> {
        if let Some(key) = &request.idempotency_key {
            if key.len() > 255 {
                return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                    "idempotency_key",
                    "must be at most 255 characters",
                )]));
            }
            if let Some(existing) = self.store.by_idempotency_key(request.user_id, key).await? {
                return self.replay(existing, &request);
            }
        }
        let quota = self
            .quotas
            .admit(
                &self.store,
                request.user_id,
                1,
                request.priority,
                self.clock.now(),
            )
            .await?;
        let image = self.owned_image(request.user_id, request.image_id).await?;
        let (validated, mut costs) = self
            .check(
                &request.workflow_id,
                &request.parameters,
                &[(request.image_id, image.width, image.height)],
                "image_id",
            )
            .await?;
        let cost = costs.pop().flatten();
        let row = self.new_row(&request, &validated, &image.original_filename, cost);
        match self.insert(&quota, std::slice::from_ref(&row)).await {
            Ok(()) => {}
            Err(ProcessingError::Database(err))
                if atelier_common::db::is_unique_violation(&err) =>
            {
                // Two requests with one key raced: the other one made the job.
                let key = request.idempotency_key.as_deref().unwrap_or_default();
                let existing = self
                    .store
                    .by_idempotency_key(request.user_id, key)
                    .await?
                    .ok_or(ProcessingError::IdempotencyConflict)?;
                return self.replay(existing, &request);
            }
            Err(err) => return Err(err),
        }
        self.line_up(std::slice::from_ref(&row)).await?;
        Ok((row, false))
    }

    /// Puts newly inserted jobs in the queue, in one round trip.
    async fn line_up(&self, rows: &[JobRow]) -> Result<(), ProcessingError> {
        let jobs: Vec<Enqueue> = rows
            .iter()
            .map(|row| Enqueue {
                job_id: row.id,
                user_id: row.user_id,
                priority: priority_of(&row.priority),
                delay: None,
            })
            .collect();
        self.queue.enqueue_many(&jobs).await?;
        Ok(())
    }

    /// Inserts new jobs of one user within their quota, all or none, already
    /// `queued` (created, then queued: both events in the same transaction), and
    /// publishes their events. [`Self::line_up`] puts them in the queue next; should
    /// that fail, the reconciler does it.
    async fn insert(&self, quota: &Quota, rows: &[JobRow]) -> Result<(), ProcessingError> {
        let events = [
            ("created", json!({"status": Status::Pending.as_str()})),
            (
                "status_changed",
                json!({"status": Status::Queued.as_str(), "queue_position": null}),
            ),
        ];
        let events = self
            .store
            .insert_admitted(rows, &events, quota)
            .await?
            .map_err(ProcessingError::QuotaExceeded)?;
        for event in &events {
            self.bus.publish(event).await;
        }
        for row in rows {
            metrics::counter!("atelier_jobs_started_total", "workflow" => row.workflow_id.clone())
                .increment(1);
            tracing::info!(job_id = %row.id, workflow = row.workflow_id, "job created");
        }
        Ok(())
    }

    /// The caller's image `image_id`, or not found.
    async fn owned_image(
        &self,
        user_id: Uuid,
        image_id: Uuid,
    ) -> Result<atelier_proto::image::v1::Image, ProcessingError> {
        let owned = self
            .images
            .clone()
            .check_ownership(CheckOwnershipRequest {
                user_id: user_id.to_string(),
                image_id: image_id.to_string(),
            })
            .await
            .map_err(upstream)?
            .into_inner();
        owned
            .image
            .filter(|_| owned.owned)
            .ok_or(ProcessingError::ImageNotFound)
    }

    /// `parameters` checked against `workflow_id`'s schema, with its defaults filled in.
    async fn validate(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
    ) -> Result<Validated, ProcessingError> {
        let validated = match self
            .workflows
            .clone()
            .validate_parameters(ValidateParametersRequest {
                workflow_id: workflow_id.to_owned(),
                parameters: Some(map_to_struct(parameters)),
            })
            .await
        {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                return Err(ProcessingError::WorkflowNotFound);
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                return Err(ProcessingError::WorkflowInactive(
                    status.message().to_owned(),
                ));
            }
            Err(status) => return Err(upstream(status)),
        };
        if !validated.valid {
            let violations = validated
                .violations
                .into_iter()
                .map(|violation| {
                    FieldViolation::new(
                        format!("parameters{}", violation.field.replace('/', ".")),
                        violation.description,
                    )
                })
                .collect();
            return Err(ProcessingError::InvalidInput(violations));
        }
        Ok(Validated {
            parameters: atelier_common::json::from_struct(validated.parameters),
            workflow_name: validated.workflow_name,
            workflow_version: validated.workflow_version,
            fal_endpoint: validated.fal_endpoint,
        })
    }

    /// A new job as `request` asks for it, `queued` (see [`Self::insert`]).
    fn new_row(
        &self,
        request: &StartRequest,
        validated: &Validated,
        input_filename: &str,
        cost: Option<(f64, String)>,
    ) -> JobRow {
        let now = self.clock.now();
        let parameters = Value::Object(validated.parameters.clone());
        let search_text = crate::store::search_text(
            &validated.workflow_name,
            &request.workflow_id,
            input_filename,
            &parameters,
        );
        JobRow {
            id: Uuid::now_v7(),
            user_id: request.user_id,
            image_id: request.image_id,
            workflow_id: request.workflow_id.clone(),
            workflow_name: validated.workflow_name.clone(),
            workflow_version: validated.workflow_version,
            fal_endpoint: validated.fal_endpoint.clone(),
            search_text,
            input_filename: Some(input_filename.to_owned()),
            estimated_cost: cost.as_ref().map(|(amount, _)| *amount),
            cost_currency: cost.map(|(_, currency)| currency),
            parameters,
            priority: priority_name(request.priority).to_owned(),
            status: Status::Queued.as_str().to_owned(),
            fal_request_id: None,
            result_image_id: None,
            result_image_ids: json!([]),
            error_code: None,
            error_message: None,
            error_details: None,
            attempts: 0,
            queue_position: None,
            progress: None,
            processing_time_ms: None,
            idempotency_key: request.idempotency_key.clone(),
            batch_id: request.batch_id,
            created_at: now,
            started_at: None,
            completed_at: None,
            updated_at: now,
        }
    }

    fn replay(
        &self,
        existing: JobRow,
        request: &StartRequest,
    ) -> Result<(JobRow, bool), ProcessingError> {
        let same =
            existing.image_id == request.image_id && existing.workflow_id == request.workflow_id;
        if same {
            Ok((existing, true))
        } else {
            Err(ProcessingError::IdempotencyConflict)
        }
    }

    /// Puts a job in the queue and, if it was pending, marks it queued. A job
    /// already in the queue is left where it is; returns whether it was added.
    pub(crate) async fn enqueue(&self, row: JobRow) -> Result<(JobRow, bool), ProcessingError> {
        let added = self
            .queue
            .enqueue(Enqueue {
                job_id: row.id,
                user_id: row.user_id,
                priority: priority_of(&row.priority),
                delay: None,
            })
            .await?;
        let position = self.queue.position(row.id).await.ok().flatten();
        let queued = self
            .transition(
                row.id,
                &["pending"],
                |job| {
                    job.status = Status::Queued.as_str().to_owned();
                    job.queue_position = position.map(|p| p as i32);
                },
                (
                    "status_changed",
                    json!({"status": "queued", "queue_position": position}),
                ),
            )
            .await?;
        Ok((queued.unwrap_or(row), added))
    }

    /// Finishes an unfinished job as failed, with why.
    pub(crate) async fn fail(&self, id: Uuid, code: &str, message: &str, details: Option<Value>) {
        let now = self.clock.now();
        let failed = self
            .transition(
                id,
                &Status::UNFINISHED,
                |job| {
                    job.status = Status::Failed.as_str().to_owned();
                    job.error_code = Some(code.to_owned());
                    job.error_message = Some(message.to_owned());
                    job.error_details = details.clone();
                    job.completed_at = Some(now);
                    job.queue_position = None;
                },
                (
                    "status_changed",
                    json!({"status": "failed", "error": {
                        "code": code,
                        "message": message,
                        "details": details,
                        "retryable": crate::failure::retryable(code),
                    }}),
                ),
            )
            .await;
        match failed {
            Ok(Some(_)) => {
                tracing::info!(job_id = %id, code, message, "job failed");
                metrics::counter!("atelier_jobs_finished_total", "status" => "failed").increment(1);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(job_id = %id, error = %err, "cannot record a job's failure"),
        }
    }

    /// Applies a state change and publishes its event.
    pub(crate) async fn transition(
        &self,
        job: impl Into<crate::store::Job<'_>>,
        from: &[&str],
        change: impl Fn(&mut JobRow),
        event: (&str, Value),
    ) -> Result<Option<JobRow>, ProcessingError> {
        let changed = self
            .store
            .transition(job, from, change, Some(event), self.clock.now())
            .await?;
        Ok(match changed {
            Some((row, event)) => {
                if let Some(event) = event {
                    self.bus.publish(&event).await;
                }
                Some(row)
            }
            None => None,
        })
    }

    /// Appends an event that is not a state change, and publishes it.
    pub(crate) async fn note(
        &self,
        id: Uuid,
        kind: &str,
        data: Value,
    ) -> Result<(), ProcessingError> {
        let event = self
            .store
            .append_event(id, self.clock.now(), kind, data)
            .await?;
        self.bus.publish(&event).await;
        Ok(())
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<JobRow, ProcessingError> {
        self.store
            .owned(user_id, id)
            .await?
            .ok_or(ProcessingError::NotFound)
    }

    pub async fn list(
        &self,
        user_id: Uuid,
        filter: &JobFilter,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<JobRow>, Option<Uuid>), ProcessingError> {
        let mut rows = self
            .store
            .page(user_id, filter, after, page_size + 1)
            .await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|row| row.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Cancels a job in any unfinished state: out of the queue, or at fal.
    pub async fn cancel(
        &self,
        user_id: Uuid,
        id: Uuid,
        fal: Option<&atelier_fal::FalClient>,
    ) -> Result<JobRow, ProcessingError> {
        let row = self.get(user_id, id).await?;
        let status = Status::parse(&row.status).unwrap_or(Status::Failed);
        if status.is_final() {
            return Err(ProcessingError::AlreadyFinished(row.status));
        }
        self.queue.remove(id).await?;
        // The row is cancelled before fal is told: a worker watching the request
        // then sees the job final and stops, rather than taking fal's "cancelled by
        // the client" answer for a failure.
        let now = self.clock.now();
        let cancelled = self
            .transition(
                id,
                &Status::UNFINISHED,
                |job| {
                    job.status = Status::Cancelled.as_str().to_owned();
                    job.completed_at = Some(now);
                    job.queue_position = None;
                },
                ("status_changed", json!({"status": "cancelled"})),
            )
            .await?;
        let Some(row) = cancelled else {
            // It finished while we were cancelling.
            let row = self.get(user_id, id).await?;
            return Err(ProcessingError::AlreadyFinished(row.status));
        };
        tracing::info!(job_id = %id, "job cancelled");
        if let (Some(fal), Some(request_id)) = (fal, &row.fal_request_id)
            && let Ok(endpoint) = atelier_fal::EndpointId::parse(&row.fal_endpoint)
            && let Err(err) = fal.cancel(&endpoint, request_id).await
        {
            tracing::warn!(job_id = %id, error = %err, "cannot cancel at fal; the job is cancelled here all the same");
        }
        Ok(row)
    }

    /// Runs a failed or cancelled job again, as the same job: its events go on.
    pub async fn retry(&self, user_id: Uuid, id: Uuid) -> Result<JobRow, ProcessingError> {
        let row = self.get(user_id, id).await?;
        if !matches!(
            Status::parse(&row.status),
            Some(Status::Failed | Status::Cancelled)
        ) {
            return Err(ProcessingError::NotRetryable(row.status));
        }
        self.retry_many(user_id, &[id])
            .await?
            .pop()
            .ok_or(ProcessingError::NotRetryable(row.status))
    }

    /// Runs the caller's failed or cancelled jobs among `ids` again, all or none:
    /// a retry is a new run, so it counts against the daily quota and the limit of
    /// unfinished jobs as a start does. Jobs in other states are left alone.
    pub async fn retry_many(
        &self,
        user_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<JobRow>, ProcessingError> {
        let quota = self.quotas.limits(user_id).await?;
        let retried = self
            .store
            .retry_admitted(
                user_id,
                ids,
                |job| {
                    job.status = Status::Pending.as_str().to_owned();
                    job.priority = quota.retry_priority(&job.priority).to_owned();
                    job.fal_request_id = None;
                    job.error_code = None;
                    job.error_message = None;
                    job.error_details = None;
                    job.completed_at = None;
                    job.started_at = None;
                    job.progress = None;
                    job.processing_time_ms = None;
                },
                (
                    "status_changed",
                    json!({"status": "pending", "retry": true}),
                ),
                self.clock.now(),
                &quota,
            )
            .await?
            .map_err(ProcessingError::QuotaExceeded)?;
        let mut rows = Vec::with_capacity(retried.len());
        for (row, event) in retried {
            self.bus.publish(&event).await;
            rows.push(self.enqueue(row).await?.0);
        }
        Ok(rows)
    }

    /// Starts `workflow_id` on each image as one batch, all or none: every image
    /// must be the caller's, every result must fit the platform's limits, and the
    /// whole batch must fit the caller's quota, or no job starts.
    pub async fn start_batch(
        &self,
        request: StartRequest,
        image_ids: &[Uuid],
    ) -> Result<(BatchView, bool), ProcessingError> {
        if image_ids.is_empty() || image_ids.len() > 100 {
            return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                "image_ids",
                "must list between 1 and 100 images",
            )]));
        }
        let key = |index: usize| {
            request
                .idempotency_key
                .as_ref()
                .map(|key| format!("{key}#{index}"))
        };
        if let Some(first) = key(0)
            && self
                .store
                .by_idempotency_key(request.user_id, &first)
                .await?
                .is_some()
        {
            return self.replay_batch(&request, image_ids).await;
        }
        let quota = self
            .quotas
            .admit(
                &self.store,
                request.user_id,
                image_ids.len() as i64,
                request.priority,
                self.clock.now(),
            )
            .await?;
        let mut images = Vec::with_capacity(image_ids.len());
        for image_id in image_ids {
            images.push(self.owned_image(request.user_id, *image_id).await?);
        }
        let dimensions: Vec<_> = image_ids
            .iter()
            .zip(&images)
            .map(|(id, image)| (*id, image.width, image.height))
            .collect();
        let (validated, costs) = self
            .check(
                &request.workflow_id,
                &request.parameters,
                &dimensions,
                "image_ids",
            )
            .await?;
        let batch_id = Uuid::now_v7();
        let rows: Vec<JobRow> = image_ids
            .iter()
            .zip(images)
            .zip(costs)
            .enumerate()
            .map(|(index, ((image_id, image), cost))| {
                let job = StartRequest {
                    image_id: *image_id,
                    batch_id: Some(batch_id),
                    idempotency_key: key(index),
                    ..request.clone()
                };
                self.new_row(&job, &validated, &image.original_filename, cost)
            })
            .collect();
        match self.insert(&quota, &rows).await {
            Ok(()) => {}
            // Two requests with one key raced: the other one made the batch.
            Err(ProcessingError::Database(err))
                if request.idempotency_key.is_some()
                    && atelier_common::db::is_unique_violation(&err) =>
            {
                return self.replay_batch(&request, image_ids).await;
            }
            Err(err) => return Err(err),
        }
        self.line_up(&rows).await?;
        Ok((
            BatchView {
                id: batch_id,
                jobs: rows,
            },
            false,
        ))
    }

    /// The batch an idempotency key already started (it was counted then).
    async fn replay_batch(
        &self,
        request: &StartRequest,
        image_ids: &[Uuid],
    ) -> Result<(BatchView, bool), ProcessingError> {
        let key = request.idempotency_key.as_deref().unwrap_or_default();
        let mut jobs = Vec::with_capacity(image_ids.len());
        for (index, image_id) in image_ids.iter().enumerate() {
            let existing = self
                .store
                .by_idempotency_key(request.user_id, &format!("{key}#{index}"))
                .await?
                .ok_or(ProcessingError::IdempotencyConflict)?;
            let job = StartRequest {
                image_id: *image_id,
                ..request.clone()
            };
            jobs.push(self.replay(existing, &job)?.0);
        }
        let id = jobs
            .first()
            .and_then(|job| job.batch_id)
            .ok_or(ProcessingError::IdempotencyConflict)?;
        Ok((BatchView { id, jobs }, true))
    }

    pub async fn batch(&self, user_id: Uuid, batch_id: Uuid) -> Result<BatchView, ProcessingError> {
        let jobs = self.store.of_batch(user_id, batch_id).await?;
        if jobs.is_empty() {
            return Err(ProcessingError::NotFound);
        }
        Ok(BatchView { id: batch_id, jobs })
    }

    /// The caller's job's logs, oldest first.
    pub async fn logs(&self, id: Uuid) -> Result<Vec<Value>, ProcessingError> {
        Ok(self
            .store
            .events_after(id, 0)
            .await?
            .into_iter()
            .filter(|event| event.kind == "log")
            .flat_map(|event| event.data["logs"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// How many log lines were recorded for fal request `request_id` of job `id`:
    /// those after the event that stored the request id.
    pub(crate) async fn logs_recorded_for(
        &self,
        id: Uuid,
        request_id: &str,
    ) -> Result<usize, ProcessingError> {
        let events = self.store.events_after(id, 0).await?;
        let since = events
            .iter()
            .rposition(|event| event.data["fal_request_id"].as_str() == Some(request_id))
            .map_or(0, |at| at + 1);
        Ok(events[since..]
            .iter()
            .filter(|event| event.kind == "log")
            .map(|event| event.data["logs"].as_array().map_or(0, Vec::len))
            .sum())
    }

    /// The caller's job's events after `after_seq`, then live ones until the job
    /// is finished. Subscribes before reading the table, so nothing falls between.
    pub async fn events(
        self: &Arc<Self>,
        user_id: Uuid,
        id: Uuid,
        after_seq: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<EventRow>, ProcessingError> {
        self.get(user_id, id).await?;
        let mut live = self.bus.subscribe();
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = after_seq;
            loop {
                let Ok(events) = this.store.events_after(id, last).await else {
                    break;
                };
                // Whether the job is finished is its latest status, not any status
                // in the batch: a retried job's history holds an earlier failure.
                let mut finished = false;
                for event in events {
                    last = event.seq;
                    if event.kind == "status_changed" {
                        finished = event_is_final(&event);
                    }
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                if finished {
                    return;
                }
                // Wait for news of this job (or a periodic re-read, should a
                // notification be lost).
                let wait = async {
                    loop {
                        match live.recv().await {
                            Ok(published) if published.job_id == id && published.seq > last => {
                                return true;
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                return true;
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                        }
                    }
                };
                tokio::select! {
                    open = wait => if !open { return },
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = sender.closed() => return,
                }
            }
        });
        Ok(receiver)
    }
}

pub fn event_is_final(event: &EventRow) -> bool {
    event.kind == "status_changed"
        && event.data["status"]
            .as_str()
            .and_then(Status::parse)
            .is_some_and(Status::is_final)
}
