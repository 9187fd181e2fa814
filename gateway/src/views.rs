//! How resources look over REST: their JSON bodies, each converted from the
//! services' messages once, here. Handler modules share these and nothing else.

use std::{collections::HashMap, time::Instant};

use atelier_common::{FieldViolation, json::from_struct};
use atelier_proto::{
    image::v1::{
        self as image_pb, BatchGetImagesRequest, image_service_client::ImageServiceClient,
    },
    processing::v1 as pb,
};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::state::{AppState, grpc_request};

pub fn rfc3339(at: Option<prost_types::Timestamp>) -> Option<String> {
    atelier_common::instant(at?)?.format(&Rfc3339).ok()
}

/// A file's bytes, as a response body (`type: string, format: binary`).
pub struct FileBytes;

impl utoipa::PartialSchema for FileBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for FileBytes {}

/// What an image is: one you uploaded, or one a job made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Original,
    Result,
}

impl ImageKind {
    pub fn to_proto(self) -> image_pb::ImageKind {
        match self {
            Self::Original => image_pb::ImageKind::Original,
            Self::Result => image_pb::ImageKind::Result,
        }
    }
}

/// What the malware scan said of an image (read-only): infected files are never
/// stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    /// Scanned, nothing found.
    Clean,
    /// Stored while no scanner was configured.
    NotScanned,
}

/// An image as the REST API shows it. `url` and `thumbnail_url` are signed and
/// expire (`SIGNED_URL_TTL`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ImageBody {
    pub id: String,
    /// The stored name (`<id>.<ext>`).
    pub filename: String,
    /// The name it was uploaded with, as display text only.
    pub original_filename: String,
    /// The type found from the content, not the one declared.
    pub mime_type: String,
    pub file_size: i64,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
    pub kind: ImageKind,
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    /// What the malware scan said of the file as it was received (read-only).
    pub scan_status: ScanStatus,
    /// When it was scanned (RFC 3339); absent when it was not.
    pub scanned_at: Option<String>,
    /// The scanner that scanned it (`clamd`); absent when it was not scanned.
    pub scanner: Option<String>,
}

impl From<image_pb::Image> for ImageBody {
    fn from(image: image_pb::Image) -> Self {
        let kind = match image.kind() {
            image_pb::ImageKind::Result => ImageKind::Result,
            // Thumbnails are never listed; an unspecified kind is an upload.
            image_pb::ImageKind::Original
            | image_pb::ImageKind::Thumbnail
            | image_pb::ImageKind::Unspecified => ImageKind::Original,
        };
        let scan_status = match image.scan_status() {
            image_pb::ScanStatus::Clean => ScanStatus::Clean,
            image_pb::ScanStatus::NotScanned | image_pb::ScanStatus::Unspecified => {
                ScanStatus::NotScanned
            }
        };
        Self {
            id: image.id,
            filename: image.filename,
            original_filename: image.original_filename,
            mime_type: image.mime_type,
            file_size: image.file_size,
            width: image.width,
            height: image.height,
            sha256: image.sha256,
            kind,
            url: image.url,
            thumbnail_url: Some(image.thumbnail_url).filter(|url| !url.is_empty()),
            created_at: rfc3339(image.created_at),
            expires_at: rfc3339(image.expires_at),
            scan_status,
            scanned_at: rfc3339(image.scanned_at),
            scanner: Some(image.scanner).filter(|scanner| !scanner.is_empty()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub job_id: String,
    pub status: JobStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobError {
    /// A stable code: fal's error type, or one of the platform's
    /// (`result_too_large`, `attempts_exhausted`, ...).
    pub code: String,
    /// What went wrong, written for the person who started the job.
    pub message: String,
    /// Whether running the job again may succeed.
    pub retryable: bool,
}

/// One output of a completed job: a result image with signed URLs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobOutputBody {
    pub image_id: String,
    /// A signed URL of the image; it expires (`SIGNED_URL_TTL`).
    pub url: String,
    /// A signed URL of its 512 px preview, when there is one.
    pub thumbnail_url: Option<String>,
    /// A download name: `<original stem>_<workflow id>[_<n>].<ext>`.
    pub filename: String,
    pub mime_type: String,
    pub width: u32,
    pub height: u32,
    /// Size in bytes.
    pub file_size: i64,
    /// `image`, or `mask` for a segmentation mask.
    pub role: String,
}

/// An amount of money.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostBody {
    pub amount: f64,
    /// ISO 4217, e.g. `USD`.
    pub currency: String,
}

pub fn cost_body(cost: Option<pb::Cost>) -> Option<CostBody> {
    cost.map(|cost| CostBody {
        amount: cost.amount,
        currency: cost.currency,
    })
}

/// A job as the REST API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBody {
    pub job_id: String,
    pub status: JobStatus,
    pub workflow_id: String,
    pub image_id: String,
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub queue_position: Option<i32>,
    pub progress: Option<f64>,
    pub logs: Vec<String>,
    /// The first output's image (kept for older clients; see `outputs`).
    pub result_image_id: Option<String>,
    /// A signed URL of the first output, when there is one (see `outputs`).
    pub result_url: Option<String>,
    /// Every output of a completed job, in fal's output order (images, then a
    /// mask where the workflow adds one); empty until the job completes, and
    /// without the outputs deleted since.
    pub outputs: Vec<JobOutputBody>,
    /// The cost estimated at fal's price when the job started; `null` when the
    /// workflow had no price, or one (per GPU second) not known before the run.
    pub estimated_cost: Option<CostBody>,
    /// What fal billed once the job was final: its successful outputs at the
    /// price when it started; 0 when it failed or was cancelled; `null` while it
    /// runs or when the workflow had no price.
    pub actual_cost: Option<CostBody>,
    pub error: Option<JobError>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub processing_time_ms: Option<i64>,
}

/// A job's state. `pending` until it is queued, `submitted` once fal has it,
/// `processing` while it runs; `completed`, `failed` and `cancelled` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Queued,
    Submitted,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl From<pb::JobStatus> for JobStatus {
    fn from(status: pb::JobStatus) -> Self {
        match status {
            // A job is written as pending before anything else happens to it.
            pb::JobStatus::Pending | pb::JobStatus::Unspecified => Self::Pending,
            pb::JobStatus::Queued => Self::Queued,
            pb::JobStatus::Submitted => Self::Submitted,
            pb::JobStatus::Processing => Self::Processing,
            pb::JobStatus::Completed => Self::Completed,
            pb::JobStatus::Failed => Self::Failed,
            pb::JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl JobStatus {
    pub fn to_proto(self) -> pb::JobStatus {
        match self {
            Self::Pending => pb::JobStatus::Pending,
            Self::Queued => pb::JobStatus::Queued,
            Self::Submitted => pb::JobStatus::Submitted,
            Self::Processing => pb::JobStatus::Processing,
            Self::Completed => pb::JobStatus::Completed,
            Self::Failed => pb::JobStatus::Failed,
            Self::Cancelled => pb::JobStatus::Cancelled,
        }
    }
}

/// A comma-separated list of job states (`completed,failed`) as status codes.
pub fn parse_statuses(raw: Option<&str>) -> Result<Vec<i32>, FieldViolation> {
    let statuses: Vec<JobStatus> = comma_list("status", raw)?;
    Ok(statuses
        .into_iter()
        .map(|status| status.to_proto() as i32)
        .collect())
}

/// A query parameter's comma-separated values (`completed,failed`), each one of
/// `T`'s names.
pub fn comma_list<T: serde::de::DeserializeOwned>(
    field: &str,
    raw: Option<&str>,
) -> Result<Vec<T>, FieldViolation> {
    match raw {
        None => Ok(Vec::new()),
        Some(raw) => raw.split(',').map(|name| named(field, name)).collect(),
    }
}

/// An optional id parameter: absent, or a UUID.
pub fn optional_id(field: &str, id: Option<String>) -> Result<String, FieldViolation> {
    match id {
        Some(id) if uuid::Uuid::try_parse(&id).is_err() => {
            Err(FieldViolation::new(field, "is not an id (a UUID)"))
        }
        id => Ok(id.unwrap_or_default()),
    }
}

/// A page token asked for over REST: absent or empty for the first page, else the
/// `next_page_token` of the page before, the id that page ended at (the pattern the
/// list operations declare).
pub fn page_token(token: Option<String>) -> Result<String, FieldViolation> {
    let token = token.unwrap_or_default();
    if token.is_empty() || (token.len() == 36 && uuid::Uuid::try_parse(&token).is_ok()) {
        Ok(token)
    } else {
        Err(FieldViolation::new(
            "page_token",
            "is not a token this API issued",
        ))
    }
}

/// A page size asked for over REST: 1 to 100, or the service's default when absent.
pub fn page_size(requested: Option<i32>) -> Result<i32, FieldViolation> {
    match requested {
        None => Ok(0),
        Some(size @ 1..=100) => Ok(size),
        Some(_) => Err(FieldViolation::new("page_size", "must be 1 to 100")),
    }
}

/// The value of `T` (an enum of names) that `name` names.
pub fn named<T: serde::de::DeserializeOwned>(field: &str, name: &str) -> Result<T, FieldViolation> {
    serde_json::from_value(Value::String(name.to_owned()))
        .map_err(|err| FieldViolation::new(field, format!("{name:?}: {err}")))
}

/// The result images of some jobs with signed URLs, by id, fetched with as few
/// BatchGetImages calls as there are hundreds of them. Images that are gone are
/// missing from the map; a failure leaves every output out rather than failing
/// the job's view.
pub async fn result_images(
    state: &AppState,
    headers: &HeaderMap,
    jobs: &[pb::Job],
) -> HashMap<String, image_pb::Image> {
    outputs_of(state, headers, jobs).await.images
}

/// What [`outputs_of`] found.
pub struct Outputs {
    pub images: HashMap<String, image_pb::Image>,
    /// Whether every lookup was answered (a view missing outputs for want of an
    /// answer is not worth keeping).
    pub complete: bool,
    /// When the first of the signed URLs is due for renewal.
    pub renew_at: Option<Instant>,
}

/// The result images of `jobs`, their signed URLs reused from [`UrlCache`] while
/// they are fresh enough, the rest asked of the image service on the caller's
/// behalf (it answers only the caller's own). An image is reused only for the
/// user the image service said owns it, who is also the jobs' owner.
pub async fn outputs_of(state: &AppState, headers: &HeaderMap, jobs: &[pb::Job]) -> Outputs {
    let mut found = HashMap::new();
    let mut renew_at: Option<Instant> = None;
    let mut missing = std::collections::BTreeSet::new();
    // An API key's result images are asked of the image service, which checks the
    // key's scopes; the URLs kept here were handed out to the user, not the key.
    let with_key = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .is_some_and(|(_, token)| {
            token
                .trim()
                .starts_with(atelier_common::token::API_KEY_PREFIX)
        });
    for job in jobs {
        for (id, _) in job_output_ids(job) {
            let reused = if with_key {
                None
            } else {
                state.urls.get(&job.user_id, id)
            };
            match reused {
                Some((image, until)) => {
                    renew_at = Some(renew_at.map_or(until, |at| at.min(until)));
                    found.insert(id.to_owned(), image);
                }
                None => {
                    missing.insert(id);
                }
            }
        }
    }
    let missing: Vec<String> = missing.into_iter().map(str::to_owned).collect();
    let calls = missing.chunks(100).map(|chunk| {
        let mut images = ImageServiceClient::new(state.image.clone());
        let request = grpc_request(
            BatchGetImagesRequest {
                image_ids: chunk.to_vec(),
            },
            headers,
        );
        async move { images.batch_get_images(request).await }
    });
    let mut complete = true;
    for reply in futures::future::join_all(calls).await {
        match reply {
            Ok(reply) => {
                for image in reply.into_inner().images {
                    if let Some(until) = state.urls.put(&image) {
                        renew_at = Some(renew_at.map_or(until, |at| at.min(until)));
                    }
                    found.insert(image.id.clone(), image);
                }
            }
            Err(status) => {
                complete = false;
                tracing::warn!(code = ?status.code(), message = status.message(), "result images unavailable");
            }
        }
    }
    Outputs {
        images: found,
        complete,
        renew_at,
    }
}

/// A job's output ids with the role the processing service recorded, in order.
fn job_output_ids(job: &pb::Job) -> impl Iterator<Item = (&str, &str)> {
    job.outputs
        .iter()
        .map(|output| (output.image_id.as_str(), output.role.as_str()))
}

/// The output as shown: the role is the result image's `output_role` metadata
/// (set when it was stored), else the one the job recorded, else `image`.
fn output_body(image: &image_pb::Image, recorded_role: &str) -> JobOutputBody {
    let role = image
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.fields.get("output_role"))
        .and_then(|value| match &value.kind {
            Some(prost_types::value::Kind::StringValue(role)) => Some(role.as_str()),
            _ => None,
        })
        .filter(|role| !role.is_empty())
        .unwrap_or(if recorded_role.is_empty() {
            "image"
        } else {
            recorded_role
        });
    JobOutputBody {
        image_id: image.id.clone(),
        url: image.url.clone(),
        thumbnail_url: Some(image.thumbnail_url.clone()).filter(|url| !url.is_empty()),
        filename: image.original_filename.clone(),
        mime_type: image.mime_type.clone(),
        width: image.width,
        height: image.height,
        file_size: image.file_size,
        role: role.to_owned(),
    }
}

/// A job for REST, its outputs taken from `images` (see [`result_images`]).
pub fn encode_job(job: pb::Job, images: &HashMap<String, image_pb::Image>) -> JobBody {
    let outputs: Vec<JobOutputBody> = job_output_ids(&job)
        .filter_map(|(id, role)| images.get(id).map(|image| output_body(image, role)))
        .collect();
    let result_url = images
        .get(&job.result_image_id)
        .map(|image| image.url.clone());
    JobBody {
        status: job.status().into(),
        job_id: job.id,
        workflow_id: job.workflow_id,
        image_id: job.image_id,
        parameters: Value::Object(from_struct(job.parameters)),
        queue_position: job.queue_position,
        progress: job.progress,
        logs: job.logs.into_iter().map(|log| log.message).collect(),
        result_image_id: Some(job.result_image_id).filter(|id| !id.is_empty()),
        result_url,
        outputs,
        estimated_cost: cost_body(job.estimated_cost),
        actual_cost: cost_body(job.actual_cost),
        error: job.error.map(|error| JobError {
            code: error.code,
            message: error.message,
            retryable: error.retryable,
        }),
        created_at: rfc3339(job.created_at),
        started_at: rfc3339(job.started_at),
        completed_at: rfc3339(job.completed_at),
        processing_time_ms: job.processing_time_ms,
    }
}

/// Jobs for REST, with their outputs fetched in one go.
pub async fn encode_jobs(
    state: &AppState,
    headers: &HeaderMap,
    jobs: Vec<pb::Job>,
) -> Vec<JobBody> {
    let images = result_images(state, headers, &jobs).await;
    jobs.into_iter()
        .map(|job| encode_job(job, &images))
        .collect()
}

/// The event of a job as an SSE data object.
pub fn event_json(event: &pb::JobEvent) -> Value {
    let mut data = Value::Object(from_struct(event.data.clone()));
    if let Value::Object(object) = &mut data {
        object.insert("job_id".into(), event.job_id.clone().into());
        object.insert("seq".into(), event.seq.into());
        object.insert("at".into(), rfc3339(event.at).into());
    }
    data
}

pub fn event_kind(kind: i32) -> &'static str {
    match pb::JobEventKind::try_from(kind) {
        Ok(pb::JobEventKind::Created) => "created",
        Ok(pb::JobEventKind::StatusChanged) => "status",
        Ok(pb::JobEventKind::QueuePosition) => "queue_position",
        Ok(pb::JobEventKind::Progress) => "progress",
        Ok(pb::JobEventKind::Log) => "log",
        Ok(pb::JobEventKind::RetryScheduled) => "retry",
        _ => "event",
    }
}

#[cfg(test)]
mod tests {
    use atelier_common::json::map_to_struct;
    use serde_json::Map;

    use super::*;

    fn image(id: &str, role: Option<&str>) -> image_pb::Image {
        let mut metadata = Map::new();
        metadata.insert("format".into(), "png".into());
        if let Some(role) = role {
            metadata.insert("output_role".into(), role.into());
        }
        image_pb::Image {
            id: id.into(),
            original_filename: format!("{id}.png"),
            mime_type: "image/png".into(),
            width: 4,
            height: 3,
            file_size: 99,
            url: format!("https://files.example/{id}"),
            metadata: Some(map_to_struct(&metadata)),
            ..Default::default()
        }
    }

    #[test]
    fn outputs_follow_the_job_order_take_their_role_from_the_image_and_skip_deleted_ones() {
        let job = pb::Job {
            id: "job".into(),
            status: pb::JobStatus::Completed as i32,
            result_image_id: "a".into(),
            result_image_ids: vec!["a".into(), "gone".into(), "m".into()],
            outputs: ["a", "gone", "m"]
                .iter()
                .enumerate()
                .map(|(index, id)| pb::JobOutput {
                    image_id: (*id).into(),
                    index: index as i32,
                    role: "image".into(),
                })
                .collect(),
            ..Default::default()
        };
        let images: HashMap<String, image_pb::Image> = [image("a", None), image("m", Some("mask"))]
            .into_iter()
            .map(|image| (image.id.clone(), image))
            .collect();
        let body = encode_job(job, &images);
        let outputs: Vec<(&str, &str, &str)> = body
            .outputs
            .iter()
            .map(|output| {
                (
                    output.image_id.as_str(),
                    output.role.as_str(),
                    output.filename.as_str(),
                )
            })
            .collect();
        assert_eq!(outputs, [("a", "image", "a.png"), ("m", "mask", "m.png")]);
        assert_eq!(body.result_url.as_deref(), Some("https://files.example/a"));
        assert_eq!(body.outputs[1].width, 4);
        assert_eq!(body.outputs[1].file_size, 99);
        assert_eq!(body.estimated_cost.map(|cost| cost.amount), None);
    }
}
