//! `GET /api/processing/{job_id}/download` and
//! `GET /api/processing/batch/{batch_id}/download`: every output of a job, or of a
//! batch's completed jobs, as one ZIP streamed while each image is read from the
//! image service (DownloadImage). Entries are stored, not compressed (images are
//! compressed already), and written with data descriptors, so nothing is held
//! but a chunk in flight and the pipe between the writer and the response:
//! memory stays bounded whatever the sizes.

use std::{collections::HashSet, io};

use async_zip::{Compression, ZipEntryBuilder, base::write::ZipFileWriter};
use atelier_proto::{
    image::v1::{
        self as image_pb, BatchGetImagesRequest, DownloadImageRequest,
        image_service_client::ImageServiceClient,
    },
    processing::v1::{self as pb, processing_service_client::ProcessingServiceClient},
};
use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{AsyncWriteExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio_util::io::ReaderStream;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    problem::Problem,
    state::{AppState, grpc_request},
    views::FileBytes,
};

/// The bytes in flight between the ZIP writer and the response.
const PIPE_BYTES: usize = 256 * 1024;

/// One file of the archive.
struct Entry {
    image_id: String,
    name: String,
}

/// Download every output of one of your completed jobs as a ZIP.
#[utoipa::path(
    get, path = "/api/processing/{job_id}/download", tag = "processing", operation_id = "download_job",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "A ZIP of the job's outputs, named by their `filename` (made unique), streamed", content_type = "application/zip", body = inline(FileBytes)),
        (status = 404, description = "No such job of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has no outputs (not completed)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Response, Problem> {
    let job = processing(&state)
        .get_job(grpc_request(
            pb::GetJobRequest {
                job_id,
                ..Default::default()
            },
            &headers,
        ))
        .await?
        .into_inner()
        .job
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without job")))?;
    let name = format!("atelier-job-{}.zip", short(&job.id));
    let entries = entries(&state, &headers, &[job]).await?;
    Ok(archive(&state, &headers, entries, &name))
}

/// Download every output of a batch's completed jobs as one ZIP.
#[utoipa::path(
    get, path = "/api/processing/batch/{batch_id}/download", tag = "processing", operation_id = "download_batch",
    security(("bearer" = [])),
    params(("batch_id" = Uuid, Path, description = "Batch id")),
    responses(
        (status = 200, description = "A ZIP of the outputs of every completed job of the batch, named by their `filename` (made unique), streamed", content_type = "application/zip", body = inline(FileBytes)),
        (status = 404, description = "No such batch of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No job of the batch has completed yet", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
) -> Result<Response, Problem> {
    // Not found (another user's batch too) before anything else.
    processing(&state)
        .get_batch(grpc_request(
            pb::GetBatchRequest {
                batch_id: batch_id.clone(),
            },
            &headers,
        ))
        .await?;
    let mut jobs = processing(&state)
        .list_jobs(grpc_request(
            pb::ListJobsRequest {
                page_size: 100,
                batch_id: batch_id.clone(),
                ..Default::default()
            },
            &headers,
        ))
        .await?
        .into_inner()
        .jobs;
    // In the order the batch was started (the listing is newest first).
    jobs.reverse();
    let name = format!("atelier-batch-{}.zip", short(&batch_id));
    let entries = entries(&state, &headers, &jobs).await?;
    Ok(archive(&state, &headers, entries, &name))
}

fn processing(state: &AppState) -> ProcessingServiceClient<tonic::transport::Channel> {
    ProcessingServiceClient::new(state.processing.clone())
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The archive's files: the completed jobs' outputs in order, each under its
/// `filename` made safe and unique.
async fn entries(
    state: &AppState,
    headers: &HeaderMap,
    jobs: &[pb::Job],
) -> Result<Vec<Entry>, Problem> {
    let ids: Vec<String> = jobs
        .iter()
        .filter(|job| job.status == pb::JobStatus::Completed as i32)
        .flat_map(|job| {
            if job.outputs.is_empty() {
                job.result_image_ids.clone()
            } else {
                job.outputs
                    .iter()
                    .map(|output| output.image_id.clone())
                    .collect()
            }
        })
        .collect();
    if ids.is_empty() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-outputs",
            "there is nothing to download yet: no job has completed with outputs",
        ));
    }
    let mut images: Vec<image_pb::Image> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(100) {
        images.extend(
            ImageServiceClient::new(state.image.clone())
                .batch_get_images(grpc_request(
                    BatchGetImagesRequest {
                        image_ids: chunk.to_vec(),
                    },
                    headers,
                ))
                .await?
                .into_inner()
                .images,
        );
    }
    let mut taken = HashSet::new();
    Ok(ids
        .iter()
        .filter_map(|id| images.iter().find(|image| &image.id == id))
        .map(|image| Entry {
            image_id: image.id.clone(),
            name: unique(&mut taken, &safe_name(image)),
        })
        .collect())
}

/// A file name fit for an archive entry: no directories, no leading dots, no
/// control characters; the image's id when nothing is left.
fn safe_name(image: &image_pb::Image) -> String {
    let base = image
        .original_filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_owned();
    if cleaned.is_empty() {
        let extension = match image.mime_type.as_str() {
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "image/gif" => "gif",
            "image/tiff" => "tiff",
            _ => "png",
        };
        format!("{}.{extension}", image.id)
    } else {
        cleaned
    }
}

/// `name`, or `stem (2).ext`, `stem (3).ext`... when it is taken (case aside).
fn unique(taken: &mut HashSet<String>, name: &str) -> String {
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    let mut candidate = name.to_owned();
    let mut n = 2;
    while !taken.insert(candidate.to_lowercase()) {
        candidate = format!("{stem} ({n}){extension}");
        n += 1;
    }
    candidate
}

/// The streamed response: a task writes the ZIP into a bounded pipe while the
/// body reads from it. A failure part-way ends the body with an error, so the
/// client sees a broken download rather than a short archive that looks whole.
fn archive(state: &AppState, headers: &HeaderMap, entries: Vec<Entry>, name: &str) -> Response {
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let images = ImageServiceClient::new(state.image.clone());
    let headers = headers.clone();
    let writing = tokio::spawn(async move {
        let result = write_zip(images, &headers, entries, writer).await;
        if let Err(err) = &result {
            tracing::warn!(error = %err, "zip download ended early");
        }
        result
    });
    let tail = futures::stream::once(async move {
        match writing.await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(Err(err)),
            Err(err) => Some(Err(io::Error::other(err))),
        }
    })
    .filter_map(|end| async move { end });
    let body = Body::from_stream(ReaderStream::new(reader).chain(tail));
    let mut response = (StatusCode::OK, body).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(value) =
        HeaderValue::from_str(&atelier_storage::content_disposition("attachment", name))
    {
        response_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn write_zip(
    mut images: ImageServiceClient<tonic::transport::Channel>,
    headers: &HeaderMap,
    entries: Vec<Entry>,
    writer: tokio::io::DuplexStream,
) -> io::Result<()> {
    let mut zip = ZipFileWriter::with_tokio(writer);
    for entry in entries {
        let mut stream = images
            .download_image(grpc_request(
                DownloadImageRequest {
                    image_id: entry.image_id.clone(),
                    variant: image_pb::ImageVariant::Original as i32,
                },
                headers,
            ))
            .await
            .map_err(|status| {
                io::Error::other(format!("{}: {}", entry.image_id, status.message()))
            })?
            .into_inner();
        let mut file = zip
            .write_entry_stream(ZipEntryBuilder::new(entry.name.into(), Compression::Stored))
            .await
            .map_err(io::Error::other)?;
        while let Some(message) = stream.next().await {
            let message =
                message.map_err(|status| io::Error::other(status.message().to_owned()))?;
            if let Some(image_pb::download_image_response::Data::Chunk(chunk)) = message.data {
                file.write_all(&chunk).await?;
            }
        }
        file.close().await.map_err(io::Error::other)?;
    }
    let mut pipe = zip.close().await.map_err(io::Error::other)?.into_inner();
    pipe.shutdown().await
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job))
        .routes(routes!(batch))
}
