//! Starting jobs: the caller's image, parameters the workflow accepts, results
//! that fit the platform's limits, and room in the caller's quota; then the row,
//! then the queue.

use atelier_common::FieldViolation;
use atelier_queue::Enqueue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Jobs;
use crate::{
    domain::{
        Quota,
        job::{Job, Priority, Status, search_text},
    },
    error::ProcessingError,
    peers::{InputImage, Validated},
    store::NotInserted,
};

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

/// A job's estimated cost at fal's price, when known.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Priced {
    pub cost: f64,
    pub currency: String,
    /// fal's price the cost was reckoned at: so much per `unit`.
    pub unit_price: Option<f64>,
    pub unit: Option<String>,
}

/// Each image's estimated cost, when known.
pub(super) type Costs = Vec<Option<Priced>>;

impl Jobs {
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
    ) -> Result<(Option<Validated>, Costs), ProcessingError> {
        let known: Vec<(Uuid, u32, u32)> = images
            .iter()
            .filter(|(_, width, height)| *width > 0 && *height > 0)
            .copied()
            .collect();
        if known.is_empty() {
            return Ok((None, vec![None; images.len()]));
        }
        let estimate = self
            .workflows
            .estimate(workflow_id, parameters, &known)
            .await?;
        let currency = estimate.currency;
        let (unit_price, unit) = match estimate.price {
            Some((price, unit)) => (Some(price), Some(unit)),
            None => (None, None),
        };
        let mut refusals = Vec::new();
        let mut costs = Vec::with_capacity(images.len());
        for (index, (id, _, _)) in images.iter().enumerate() {
            let job = estimate.jobs.iter().find(|job| job.image_id == *id);
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
                    .map(|cost| Priced {
                        cost,
                        currency: currency.clone(),
                        unit_price,
                        unit: unit.clone(),
                    }),
            );
        }
        if !refusals.is_empty() {
            return Err(ProcessingError::InvalidInput(refusals));
        }
        Ok((Some(estimate.validated), costs))
    }

    /// `parameters` checked against `workflow_id`'s schema (defaults filled in),
    /// and each image's estimated cost: one call to the workflow service when
    /// every image's size is known (the estimate checks the parameters too), two
    /// otherwise.
    pub(super) async fn check(
        &self,
        workflow_id: &str,
        parameters: &Map<String, Value>,
        images: &[(Uuid, u32, u32)],
        image_field: &str,
    ) -> Result<(Validated, Costs), ProcessingError> {
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
        let validated = self.workflows.validate(workflow_id, parameters).await?;
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
                let input_filename = self
                    .images
                    .owned(row.user_id, row.image_id)
                    .await?
                    .map(|image| image.original_filename)
                    .unwrap_or_default();
                let search_text = search_text(
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
    pub async fn start(&self, request: StartRequest) -> Result<(Job, bool), ProcessingError> {
        if let Some(key) = &request.idempotency_key {
            if key.len() > 255 {
                return Err(ProcessingError::InvalidInput(vec![FieldViolation::new(
                    "idempotency_key",
                    "must be at most 255 characters",
                )]));
            }
            if let Some(existing) = self.store.by_idempotency_key(request.user_id, key).await? {
                return replay(existing, &request);
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
        let estimate = cost.as_ref().map(|priced| priced.cost).unwrap_or_default();
        self.spend.admit(request.user_id, &quota, estimate).await?;
        let row = self.new_row(&request, &validated, &image.original_filename, cost);
        if !self.insert(&quota, std::slice::from_ref(&row)).await? {
            // Two requests with one key raced: the other one made the job.
            let key = request.idempotency_key.as_deref().unwrap_or_default();
            let existing = self
                .store
                .by_idempotency_key(request.user_id, key)
                .await?
                .ok_or(ProcessingError::IdempotencyConflict)?;
            return replay(existing, &request);
        }
        self.line_up(std::slice::from_ref(&row)).await?;
        self.raise_alerts(request.user_id, &quota).await;
        Ok((row, false))
    }

    /// Puts newly inserted jobs in the queue, in one round trip.
    pub(super) async fn line_up(&self, rows: &[Job]) -> Result<(), ProcessingError> {
        let jobs: Vec<Enqueue> = rows
            .iter()
            .map(|row| Enqueue {
                job_id: row.id,
                user_id: row.user_id,
                priority: row.priority,
                delay: None,
            })
            .collect();
        self.queue.enqueue_many(&jobs).await?;
        Ok(())
    }

    /// Inserts new jobs of one user within their quota, all or none, already
    /// `queued` (created, then queued: both events in the same transaction), and
    /// publishes their events. [`Self::line_up`] puts them in the queue next; should
    /// that fail, the reconciler does it. False, and nothing inserted, when an
    /// idempotency key is taken already.
    pub(super) async fn insert(
        &self,
        quota: &Quota,
        rows: &[Job],
    ) -> Result<bool, ProcessingError> {
        let events = [
            ("created", json!({"status": Status::Pending.as_str()})),
            (
                "status_changed",
                json!({"status": Status::Queued.as_str(), "queue_position": null}),
            ),
        ];
        let events = match self.store.insert_admitted(rows, &events, quota).await? {
            Ok(events) => events,
            Err(NotInserted::Quota(refused)) => {
                return Err(ProcessingError::QuotaExceeded(refused));
            }
            Err(NotInserted::KeyTaken) => return Ok(false),
        };
        for event in &events {
            self.bus.publish(event.job_id, event.seq).await;
        }
        for row in rows {
            metrics::counter!("atelier_jobs_started_total", "workflow" => row.workflow_id.clone())
                .increment(1);
            tracing::info!(job_id = %row.id, workflow = row.workflow_id, "job created");
        }
        Ok(true)
    }

    /// The caller's image `image_id`, or not found.
    pub(super) async fn owned_image(
        &self,
        user_id: Uuid,
        image_id: Uuid,
    ) -> Result<InputImage, ProcessingError> {
        self.images
            .owned(user_id, image_id)
            .await?
            .ok_or(ProcessingError::ImageNotFound)
    }

    /// A new job as `request` asks for it, `queued` (see [`Self::insert`]).
    pub(super) fn new_row(
        &self,
        request: &StartRequest,
        validated: &Validated,
        input_filename: &str,
        cost: Option<Priced>,
    ) -> Job {
        let now = self.clock.now();
        let parameters = Value::Object(validated.parameters.clone());
        let search_text = search_text(
            &validated.workflow_name,
            &request.workflow_id,
            input_filename,
            &parameters,
        );
        Job {
            id: Uuid::now_v7(),
            user_id: request.user_id,
            image_id: request.image_id,
            workflow_id: request.workflow_id.clone(),
            workflow_name: validated.workflow_name.clone(),
            workflow_version: validated.workflow_version,
            fal_endpoint: validated.fal_endpoint.clone(),
            search_text,
            input_filename: Some(input_filename.to_owned()),
            estimated_cost: cost.as_ref().map(|priced| priced.cost),
            cost_currency: cost.as_ref().map(|priced| priced.currency.clone()),
            unit_price: cost.as_ref().and_then(|priced| priced.unit_price),
            price_unit: cost.and_then(|priced| priced.unit),
            actual_cost: None,
            parameters,
            priority: request.priority,
            status: Status::Queued,
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
}

/// The job an idempotency key already made, when `request` asks for the same.
pub(super) fn replay(
    existing: Job,
    request: &StartRequest,
) -> Result<(Job, bool), ProcessingError> {
    let same = existing.image_id == request.image_id && existing.workflow_id == request.workflow_id;
    if same {
        Ok((existing, true))
    } else {
        Err(ProcessingError::IdempotencyConflict)
    }
}
