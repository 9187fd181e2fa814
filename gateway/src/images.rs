//! `/api/images/*` and the signed file URLs `/files/*`, over the image service.

use atelier_proto::image::v1::{self as pb, image_service_client::ImageServiceClient};
use axum::{
    Extension, Json,
    body::Body,
    extract::{DefaultBodyLimit, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use utoipa::ToSchema;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Multipart, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    views::{ImageBody, ImageKind, named, page_size, page_token},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<ImageBody>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    pub q: Option<String>,
    pub kind: Option<String>,
}

fn client(state: &AppState) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(state.image.clone())
}

fn image_of(image: Option<pb::Image>) -> Result<ImageBody, Problem> {
    image
        .map(ImageBody::from)
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without image")))
}

/// The multipart form of an upload.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The image (JPEG, PNG, WebP, GIF or TIFF), at most `MAX_FILE_SIZE_MB`: the only field.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
}

/// Upload an image. The body streams through to storage; the type is found from
/// the content.
#[utoipa::path(
    post, path = "/api/images/upload", tag = "images", operation_id = "upload_image",
    security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = ImageBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Storage full: the plan's `storage_bytes` limit (with `limit`, `allowed`, `used`, `requested` and `tier`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the platform's size limit, or over the plan's `max_file_size_bytes` (then with `limit`, `allowed`, `used`, `requested` and `tier`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not an image of a supported type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Corrupt, truncated, or over the pixel limit; or malware was found in it (`type` `https://atelier.dev/problems/malware-detected`, the signature named in `detail`): nothing is kept", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The malware scanner is unavailable (`type` `https://atelier.dev/problems/scanner-unavailable`): nothing is kept; try again later", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Multipart(form): Multipart,
) -> Result<impl IntoResponse, Problem> {
    let (metadata, chunks) = read_form(form).await?;
    send_upload(&state, &headers, metadata, Box::pin(chunks)).await
}

/// The upload form's one field, `file`: its name and declared type, then its bytes
/// as they arrive. Any other field is refused, before the file or after it (the
/// upload then fails at its end, and nothing is kept). A task of its own reads the
/// form, as each field borrows it.
async fn read_form(
    mut form: axum::extract::Multipart,
) -> Result<(pb::UploadMetadata, ReceiverStream<Result<Bytes, Problem>>), Problem> {
    fn not_a_field(name: Option<&str>) -> atelier_common::FieldViolation {
        atelier_common::FieldViolation::new(
            name.unwrap_or_default(),
            "is not a field of an upload (only `file`)",
        )
    }
    let (found, metadata) = tokio::sync::oneshot::channel();
    let (sender, chunks) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut unknown = Vec::new();
        let mut field = loop {
            match form.next_field().await {
                Ok(Some(field)) if field.name() == Some("file") && unknown.is_empty() => {
                    break field;
                }
                Ok(Some(field)) if field.name() == Some("file") => {
                    return found.send(Err(Problem::invalid(unknown))).ok();
                }
                Ok(Some(field)) => unknown.push(not_a_field(field.name())),
                Ok(None) => {
                    let missing = atelier_common::FieldViolation::new("file", "is required");
                    unknown.insert(0, missing);
                    return found.send(Err(Problem::invalid(unknown))).ok();
                }
                Err(err) => return found.send(Err(multipart_problem(err))).ok(),
            }
        };
        found
            .send(Ok(pb::UploadMetadata {
                filename: field.file_name().unwrap_or_default().to_owned(),
                mime_type: field.content_type().unwrap_or_default().to_owned(),
                size_bytes: None,
            }))
            .ok()?;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => break,
                Err(err) => Err(multipart_problem(err)),
            };
            let failed = chunk.is_err();
            sender.send(chunk).await.ok()?;
            if failed {
                return None;
            }
        }
        drop(field);
        let rest = match form.next_field().await {
            Ok(None) => return Some(()),
            Ok(Some(field)) => Problem::invalid(vec![not_a_field(field.name())]),
            Err(err) => multipart_problem(err),
        };
        sender.send(Err(rest)).await.ok()
    });
    let metadata = metadata
        .await
        .map_err(|_| Problem::from(tonic::Status::internal("the upload form reader stopped")))??;
    Ok((metadata, ReceiverStream::new(chunks)))
}

/// The largest upload body, in bytes (`MAX_FILE_SIZE_MB`).
#[derive(Clone, Copy, Debug)]
pub struct UploadLimit(pub usize);

#[derive(Debug, Deserialize)]
pub struct RawUploadParams {
    /// The file's name, kept as display text only.
    pub filename: Option<String>,
}

/// Upload an image as the whole request body (`curl -T photo.jpg
/// '.../api/images/upload?filename=photo.jpg'`). With a `Content-Length`, an
/// upload over a limit is refused before its body is read, and the image is stored
/// as it streams in one piece; the type is found from the content.
#[utoipa::path(
    put, path = "/api/images/upload", tag = "images", operation_id = "upload_image_body",
    security(("bearer" = [])),
    params(
        ("filename" = Option<String>, Query, description = "The file's name, kept as display text only"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image (JPEG, PNG, WebP, GIF or TIFF), at most `MAX_FILE_SIZE_MB`"),
    responses(
        (status = 201, description = "Stored", body = ImageBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Storage full: the plan's `storage_bytes` limit (with `limit`, `allowed`, `used`, `requested` and `tier`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the platform's size limit, or over the plan's `max_file_size_bytes` (then with `limit`, `allowed`, `used`, `requested` and `tier`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not an image of a supported type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Corrupt, truncated, or over the pixel limit; or malware was found in it (`type` `https://atelier.dev/problems/malware-detected`, the signature named in `detail`): nothing is kept", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The malware scanner is unavailable (`type` `https://atelier.dev/problems/scanner-unavailable`): nothing is kept; try again later", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_body(
    State(state): State<AppState>,
    Extension(UploadLimit(limit)): Extension<UploadLimit>,
    headers: HeaderMap,
    Query(params): Query<RawUploadParams>,
    body: Body,
) -> Result<impl IntoResponse, Problem> {
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if size.is_some_and(|size| size > limit as u64) {
        return Err(too_large());
    }
    let metadata = pb::UploadMetadata {
        filename: params.filename.unwrap_or_default(),
        mime_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        size_bytes: size.map(|size| size as i64),
    };
    let chunks = http_body_util::Limited::new(body, limit)
        .into_data_stream()
        .map_err(|err| {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-body",
                    format!("reading the body failed: {err}"),
                )
            }
        });
    send_upload(&state, &headers, metadata, Box::pin(chunks)).await
}

/// The most bytes one UploadImage message carries, well under gRPC's message limit
/// whatever size the pieces of a body come in.
const MAX_UPLOAD_MESSAGE: usize = 1024 * 1024;

/// Streams an upload's `chunks` to the image service as one UploadImage call.
async fn send_upload(
    state: &AppState,
    headers: &HeaderMap,
    metadata: pb::UploadMetadata,
    mut chunks: Pin<Box<dyn Stream<Item = Result<Bytes, Problem>> + Send + '_>>,
) -> Result<(StatusCode, Json<ImageBody>), Problem> {
    let (sender, receiver) = mpsc::channel(4);
    // The request stream ends only when every sender is gone: the feed holds a
    // clone, and this one ends the stream once the whole body went through. When
    // the body fails, it sends a second metadata message instead, which the
    // service refuses, so it throws the partial upload away rather than storing
    // a short but seemingly complete one.
    let mut ending = Some(sender.clone());
    let mut images = client(state);
    let call = images.upload_image(grpc_request(ReceiverStream::new(receiver), headers));
    tokio::pin!(call);
    let feed = async move {
        use pb::upload_image_request::Data;
        let sent = sender
            .send(pb::UploadImageRequest {
                data: Some(Data::Metadata(metadata)),
            })
            .await;
        while sent.is_ok() {
            match chunks.try_next().await? {
                Some(mut chunk) => {
                    while !chunk.is_empty() {
                        let piece = chunk.split_to(chunk.len().min(MAX_UPLOAD_MESSAGE));
                        let message = pb::UploadImageRequest {
                            data: Some(Data::Chunk(piece)),
                        };
                        if sender.send(message).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                None => break,
            }
        }
        Ok::<_, Problem>(())
    };
    tokio::pin!(feed);
    let mut fed = false;
    // The body and the call run together.
    let reply = loop {
        tokio::select! {
            result = &mut feed, if !fed => {
                if let Err(problem) = result {
                    if let Some(sender) = ending.take() {
                        let abort = pb::UploadImageRequest {
                            data: Some(pb::upload_image_request::Data::Metadata(pb::UploadMetadata::default())),
                        };
                        let _ = sender.send(abort).await;
                    }
                    // The service must read the abort before the call goes: a call
                    // dropped now may end its stream cleanly after the chunks it
                    // had, and a prefix that is a whole image would be stored.
                    let _ = (&mut call).await;
                    return Err(problem);
                }
                fed = true;
                ending.take();
            }
            reply = &mut call => break reply?,
        }
    };
    let image = image_of(reply.into_inner().image)?;
    Ok((StatusCode::CREATED, Json(image)))
}

fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "the upload is larger than the size limit",
    )
}

fn multipart_problem(err: axum::extract::multipart::MultipartError) -> Problem {
    let status = err.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    Problem::new(status, "malformed-body", err.body_text())
}

/// List your images, newest first: every one of them page by page, optionally
/// only originals or only results, optionally searched by file name.
#[utoipa::path(
    get, path = "/api/images", tag = "images", operation_id = "list_images",
    security(("bearer" = [])),
    params(
        ("page_size" = Option<i32>, Query, minimum = 1, maximum = 100, description = "Images per page (default 20, at most 100)"),
        ("page_token" = Option<String>, Query, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "The `next_page_token` of the previous page (keep `q` and `kind` the same)"),
        ("q" = Option<String>, Query, max_length = 200, description = "Only images whose original file name contains this text, ignoring case (a plain substring, at most 200 characters)"),
        ("kind" = Option<ImageKind>, Query, description = "`original` (uploads) or `result` (job outputs); absent for both"),
    ),
    responses(
        (status = 200, description = "One page of images", body = ImageList),
        (status = 422, description = "Invalid page size, token, kind or query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<ImageList>, Problem> {
    let page_size = page_size(params.page_size).map_err(|v| Problem::invalid(vec![v]))?;
    let kind = match params.kind.as_deref() {
        None => pb::ImageKind::Unspecified,
        Some(name) => named::<ImageKind>("kind", name)
            .map_err(|violation| Problem::invalid(vec![violation]))?
            .to_proto(),
    };
    let reply = client(&state)
        .list_images(grpc_request(
            pb::ListImagesRequest {
                page_size,
                page_token: page_token(params.page_token)
                    .map_err(|violation| Problem::invalid(vec![violation]))?,
                kind: kind as i32,
                query: params.q.unwrap_or_default(),
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(ImageList {
        images: reply.images.into_iter().map(ImageBody::from).collect(),
        next_page_token: Some(reply.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// One of your images.
#[utoipa::path(
    get, path = "/api/images/{id}", tag = "images", operation_id = "get_image",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Image id")),
    responses(
        (status = 200, description = "The image", body = ImageBody),
        (status = 404, description = "No such image of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ImageBody>, Problem> {
    let reply = client(&state)
        .get_image(grpc_request(pb::GetImageRequest { image_id: id }, &headers))
        .await?;
    Ok(Json(image_of(reply.into_inner().image)?))
}

/// Delete one of your images and every stored object of it.
#[utoipa::path(
    delete, path = "/api/images/{id}", tag = "images", operation_id = "delete_image",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Image id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such image of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    client(&state)
        .delete_image(grpc_request(
            pb::DeleteImageRequest {
                image_id: id.clone(),
            },
            &headers,
        ))
        .await?;
    // Its signed URLs are no longer handed out, nor job views listing it (other
    // replicas stop within `status_cache::URL_REUSE_MAX`). Deletes are rare: the
    // status bodies are dropped whole rather than indexed by output.
    state.urls.forget(&id);
    state.statuses.forget_all();
    Ok(StatusCode::NO_CONTENT)
}

/// A `Range` header the gateway honours: one range, in bytes. Anything else is
/// ignored and the whole object served, as RFC 9110 allows.
fn parse_range(headers: &HeaderMap) -> (Option<i64>, Option<i64>) {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("bytes="))
    else {
        return (None, None);
    };
    if spec.contains(',') {
        return (None, None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return (None, None);
    };
    match (start.parse::<i64>().ok(), end.parse::<i64>().ok()) {
        (Some(start), Some(end)) if end >= start => (Some(start), Some(end)),
        (Some(start), None) if end.is_empty() => (Some(start), None),
        (None, Some(suffix)) if start.is_empty() && suffix > 0 => (None, Some(suffix)),
        _ => (None, None),
    }
}

/// Serves a signed file URL; the image service checks the signature.
pub async fn file(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (range_start, range_end) = parse_range(&headers);
    let ranged = range_start.is_some() || range_end.is_some();
    let mut stream = client(&state)
        .read_signed_object(grpc_request(
            pb::ReadSignedObjectRequest {
                path: format!("/files/{rest}"),
                query: query.unwrap_or_default(),
                range_start,
                range_end,
            },
            &headers,
        ))
        .await?
        .into_inner();
    use pb::read_signed_object_response::Data;
    let info = match stream.message().await? {
        Some(pb::ReadSignedObjectResponse {
            data: Some(Data::Info(info)),
        }) => info,
        _ => {
            return Err(Problem::from(tonic::Status::internal(
                "object stream without its description",
            )));
        }
    };
    let body = Body::from_stream(stream.filter_map(|message| async move {
        match message {
            Ok(pb::ReadSignedObjectResponse {
                data: Some(Data::Chunk(chunk)),
            }) => Some(Ok(chunk)),
            Ok(_) => None,
            Err(status) => Some(Err(std::io::Error::other(status.message().to_owned()))),
        }
    }));
    let length = info.range_end - info.range_start + 1;
    let mut response = Response::new(body);
    *response.status_mut() = if ranged {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, info.mime_type);
    set(header::CONTENT_LENGTH, length.to_string());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::CACHE_CONTROL, "private, max-age=300".into());
    set(
        header::CONTENT_DISPOSITION,
        atelier_storage::content_disposition("inline", &info.filename),
    );
    // Served bytes are data, never a document: no scripts even in a polyglot.
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox".into(),
    );
    if ranged {
        set(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                info.range_start, info.range_end, info.total_size
            ),
        );
    }
    Ok(response)
}

/// This module's routes, each declared once with its OpenAPI operation. Uploads
/// may be up to `max_upload_bytes`; every other body is JSON and small.
pub fn routes(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(upload, upload_body))
        .layer(DefaultBodyLimit::max(max_upload_bytes + 1024 * 1024))
        .layer(Extension(UploadLimit(max_upload_bytes)));
    OpenApiRouter::new()
        .merge(uploads)
        .routes(routes!(list))
        .routes(routes!(get, delete))
        .route("/files/{*rest}", axum::routing::get(file))
}
