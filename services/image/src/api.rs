//! gRPC handlers: decode, authorize, call the domain, encode.

use std::{pin::Pin, sync::Arc, time::Duration};

use atelier_common::{
    audit::AuditRecord,
    grpc::{RequestOrigin, caller},
    instant,
    json::{from_struct, to_struct},
    page, timestamp,
};
use atelier_proto::image::v1::{
    self as pb, image_service_server::ImageService, store_result_request, upload_image_request,
};
use atelier_storage::ByteRange;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::{
    domain::{
        Image, ImageKind, Images, Intake, NewImage, Origin, ScanStatus, Served, ShareLinkRecord,
        Shares,
        shares::{Before, Expiry, NewShare, SharedImage},
        signing::Variant,
    },
    error::ImageError,
    peers::AuditLog,
};

type ByteReplies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct ImageApi {
    images: Arc<Images>,
    intake: Intake,
    shares: Shares,
    audit: Arc<dyn AuditLog>,
}

impl ImageApi {
    pub fn new(
        images: Arc<Images>,
        intake: Intake,
        shares: Shares,
        audit: Arc<dyn AuditLog>,
    ) -> Self {
        Self {
            images,
            intake,
            shares,
            audit,
        }
    }
}

/// A share link as its owner sees it.
fn encode_share(link: ShareLinkRecord) -> pb::ShareLink {
    pb::ShareLink {
        id: link.id.to_string(),
        image_id: link.image_id.to_string(),
        before_image_id: link
            .before_image_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        created_at: Some(timestamp(link.created_at)),
        expires_at: Some(timestamp(link.expires_at)),
        revoked_at: link.revoked_at.map(timestamp),
        view_count: link.view_count,
        last_viewed_at: link.last_viewed_at.map(timestamp),
    }
}

fn encode_shared(image: SharedImage) -> pb::SharedImage {
    pb::SharedImage {
        mime_type: image.mime_type,
        width: image.width,
        height: image.height,
        file_size: image.file_size,
        url: image.url,
    }
}

/// The expiry a creation asks for: a lifetime or an instant, not both.
fn expiry(request: &pb::CreateShareLinkRequest) -> Result<Expiry, ImageError> {
    match (request.expires_in_seconds, request.expires_at) {
        (0, None) => Ok(Expiry::Default),
        (seconds, None) => u64::try_from(seconds)
            .map(|seconds| Expiry::In(Duration::from_secs(seconds)))
            .map_err(|_| ImageError::field("expires_in_seconds", "must not be negative")),
        (0, Some(at)) => instant(at)
            .map(Expiry::At)
            .ok_or_else(|| ImageError::field("expires_at", "is not a valid time")),
        (_, Some(_)) => Err(ImageError::field(
            "expires_at",
            "give either expires_in_seconds or expires_at, not both",
        )),
    }
}

/// A declared upload size.
fn declared_size(raw: Option<i64>) -> Result<Option<u64>, ImageError> {
    raw.map(|size| {
        u64::try_from(size).map_err(|_| ImageError::field("size_bytes", "must not be negative"))
    })
    .transpose()
}

/// A caller-supplied image id; a malformed one names no image.
fn image_id(raw: &str) -> Result<Uuid, ImageError> {
    Uuid::parse_str(raw).map_err(|_| ImageError::NotFound)
}

/// A user id from another service.
fn user_id(raw: &str) -> Result<Uuid, ImageError> {
    Uuid::parse_str(raw).map_err(|_| ImageError::field("user_id", "is not a valid id"))
}

fn variant(raw: i32) -> Variant {
    match pb::ImageVariant::try_from(raw) {
        Ok(pb::ImageVariant::Thumbnail) => Variant::Thumbnail,
        _ => Variant::Original,
    }
}

fn kind(kind: ImageKind) -> i32 {
    (match kind {
        ImageKind::Original => pb::ImageKind::Original,
        ImageKind::Result => pb::ImageKind::Result,
    }) as i32
}

pub fn encode(image: Image) -> pb::Image {
    let row = image.row;
    pb::Image {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        filename: row.filename,
        original_filename: row.original_filename,
        mime_type: row.mime_type,
        file_size: row.file_size,
        width: row.width as u32,
        height: row.height as u32,
        sha256: row.sha256,
        kind: kind(row.kind),
        url: image.url,
        thumbnail_url: image.thumbnail_url.unwrap_or_default(),
        url_expires_at: Some(timestamp(image.url_expires_at)),
        metadata: to_struct(&row.metadata),
        created_at: Some(timestamp(row.created_at)),
        expires_at: row.expires_at.map(timestamp),
        job_id: row.job_id.map(|id| id.to_string()).unwrap_or_default(),
        source_image_id: row
            .source_image_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        scan_status: (match row.scan_status {
            ScanStatus::Clean => pb::ScanStatus::Clean,
            ScanStatus::NotScanned => pb::ScanStatus::NotScanned,
        }) as i32,
        scanned_at: row.scanned_at.map(timestamp),
        scanner: row.scanner.unwrap_or_default(),
    }
}

fn range(start: Option<i64>, end: Option<i64>) -> Result<Option<ByteRange>, ImageError> {
    match (start, end) {
        (None, None) => Ok(None),
        (Some(start), end) if start >= 0 && end.is_none_or(|end| end >= start) => {
            Ok(Some(ByteRange::From {
                start: start as u64,
                end: end.map(|end| end as u64),
            }))
        }
        (None, Some(suffix)) if suffix > 0 => Ok(Some(ByteRange::Suffix(suffix as u64))),
        _ => Err(ImageError::InvalidRange),
    }
}

/// Streams an object: its description first, then its bytes.
fn serve<T, F, G>(served: Served, info: F, chunk: G) -> ByteReplies<T>
where
    T: Send + 'static,
    F: FnOnce(pb::ObjectInfo) -> T,
    G: Fn(bytes::Bytes) -> T + Send + 'static,
{
    let row = &served.row;
    let first = info(pb::ObjectInfo {
        mime_type: served.meta.content_type.clone(),
        total_size: served.meta.size as i64,
        range_start: *served.range.start() as i64,
        range_end: *served.range.end() as i64,
        sha256: row.sha256.clone(),
        filename: row.original_filename.clone(),
        created_at: Some(timestamp(row.created_at)),
    });
    let body = served.body.map(move |bytes| {
        bytes
            .map(&chunk)
            .map_err(|err| Status::unavailable(format!("reading the object failed: {err}")))
    });
    Box::pin(futures::stream::once(async move { Ok(first) }).chain(body))
}

/// A message of a client-streamed upload: its metadata first, then chunks.
enum Part<M> {
    Metadata(M),
    Chunk(bytes::Bytes),
}

trait UploadMessage: Send + 'static {
    type Metadata;
    fn into_part(self) -> Option<Part<Self::Metadata>>;
}

impl UploadMessage for pb::UploadImageRequest {
    type Metadata = pb::UploadMetadata;
    fn into_part(self) -> Option<Part<Self::Metadata>> {
        match self.data? {
            upload_image_request::Data::Metadata(metadata) => Some(Part::Metadata(metadata)),
            upload_image_request::Data::Chunk(chunk) => Some(Part::Chunk(chunk)),
        }
    }
}

impl UploadMessage for pb::StoreResultRequest {
    type Metadata = pb::StoreResultMetadata;
    fn into_part(self) -> Option<Part<Self::Metadata>> {
        match self.data? {
            store_result_request::Data::Metadata(metadata) => Some(Part::Metadata(metadata)),
            store_result_request::Data::Chunk(chunk) => Some(Part::Chunk(chunk)),
        }
    }
}

/// Splits an upload into its metadata and the stream of its chunks.
async fn open_upload<M: UploadMessage>(
    mut stream: Streaming<M>,
) -> Result<
    (
        M::Metadata,
        impl Stream<Item = Result<bytes::Bytes, ImageError>> + Unpin + Send,
    ),
    Status,
> {
    let Some(Part::Metadata(metadata)) = stream.message().await?.and_then(M::into_part) else {
        return Err(
            ImageError::field("metadata", "the first message must carry the metadata").into(),
        );
    };
    let chunks = stream.map(|message| match message.map(M::into_part) {
        Ok(Some(Part::Chunk(chunk))) => Ok(chunk),
        Ok(_) => Err(ImageError::field("chunk", "metadata may only come first")),
        Err(status) => Err(ImageError::Interrupted(status.message().to_owned())),
    });
    Ok((metadata, chunks))
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn upload_image(
        &self,
        request: Request<Streaming<pb::UploadImageRequest>>,
    ) -> Result<Response<pb::UploadImageResponse>, Status> {
        let caller = caller(&request)?;
        let quota = self.intake.upload_quota(caller.user_id).await?;
        // Already full: refused before a byte is read.
        quota.check(0)?;
        let (metadata, body) = open_upload(request.into_inner()).await?;
        let new = NewImage {
            user_id: caller.user_id,
            filename: metadata.filename,
            origin: Origin::Upload,
            metadata: serde_json::Map::new(),
            retention_days: quota.retention_days,
            size: declared_size(metadata.size_bytes)?,
        };
        let (image, _) = self.images.upload(new, Some(quota), body).await?;
        Ok(Response::new(pb::UploadImageResponse {
            image: Some(encode(image)),
        }))
    }

    async fn get_image(
        &self,
        request: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let caller = caller(&request)?;
        let id = image_id(&request.get_ref().image_id)?;
        let image = self.images.get(caller.user_id, id).await?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(encode(image)),
        }))
    }

    async fn batch_get_images(
        &self,
        request: Request<pb::BatchGetImagesRequest>,
    ) -> Result<Response<pb::BatchGetImagesResponse>, Status> {
        let caller = caller(&request)?;
        let ids: Vec<Uuid> = request
            .get_ref()
            .image_ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .take(100)
            .collect();
        let images = self.images.get_many(caller.user_id, &ids).await?;
        Ok(Response::new(pb::BatchGetImagesResponse {
            images: images.into_iter().map(encode).collect(),
        }))
    }

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let (size, after) = page::request::<Uuid>(request.page_size, &request.page_token)
            .map_err(ImageError::InvalidInput)?;
        let kind = match pb::ImageKind::try_from(request.kind) {
            Ok(pb::ImageKind::Original) => Some(ImageKind::Original),
            Ok(pb::ImageKind::Result) => Some(ImageKind::Result),
            _ => None,
        };
        let query = request.query.trim();
        if query.chars().count() > 200 {
            return Err(ImageError::field("query", "must be at most 200 characters").into());
        }
        let name = Some(query).filter(|query| !query.is_empty());
        let (images, next) = self
            .images
            .list(caller.user_id, kind, name, after, size)
            .await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images.into_iter().map(encode).collect(),
            next_page_token: next.map(|id| page::encode(&id)).unwrap_or_default(),
        }))
    }

    async fn delete_image(
        &self,
        request: Request<pb::DeleteImageRequest>,
    ) -> Result<Response<pb::DeleteImageResponse>, Status> {
        let caller = caller(&request)?;
        let id = image_id(&request.get_ref().image_id)?;
        let record = AuditRecord::new("image.deleted", RequestOrigin::of(&request))
            .actor(Some(caller.user_id));
        self.images
            .delete(caller.user_id, id, self.audit.as_ref(), record)
            .await?;
        Ok(Response::new(pb::DeleteImageResponse {}))
    }

    type DownloadImageStream = ByteReplies<pb::DownloadImageResponse>;

    async fn download_image(
        &self,
        request: Request<pb::DownloadImageRequest>,
    ) -> Result<Response<Self::DownloadImageStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = image_id(&request.image_id)?;
        let served = self
            .images
            .read_owned(caller.user_id, id, variant(request.variant), None)
            .await?;
        use pb::download_image_response::Data;
        Ok(Response::new(serve(
            served,
            |info| pb::DownloadImageResponse {
                data: Some(Data::Info(info)),
            },
            |chunk| pb::DownloadImageResponse {
                data: Some(Data::Chunk(chunk)),
            },
        )))
    }

    async fn create_share_link(
        &self,
        request: Request<pb::CreateShareLinkRequest>,
    ) -> Result<Response<pb::CreateShareLinkResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let expiry = expiry(&request)?;
        let before = match (request.before_after, request.before_image_id.as_str()) {
            (_, "") if request.before_after => Before::Source,
            (_, "") => Before::None,
            (_, id) => Before::Image(image_id(id)?),
        };
        let created = self
            .shares
            .create(NewShare {
                user_id: caller.user_id,
                image_id: image_id(&request.image_id)?,
                expiry,
                before,
            })
            .await?;
        Ok(Response::new(pb::CreateShareLinkResponse {
            link: Some(encode_share(created.link)),
            token: created.token,
        }))
    }

    async fn list_share_links(
        &self,
        request: Request<pb::ListShareLinksRequest>,
    ) -> Result<Response<pb::ListShareLinksResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let (size, after) = page::request::<Uuid>(request.page_size, &request.page_token)
            .map_err(ImageError::InvalidInput)?;
        let (links, next) = self.shares.list(caller.user_id, after, size).await?;
        Ok(Response::new(pb::ListShareLinksResponse {
            links: links.into_iter().map(encode_share).collect(),
            next_page_token: next.map(|id| page::encode(&id)).unwrap_or_default(),
        }))
    }

    async fn revoke_share_link(
        &self,
        request: Request<pb::RevokeShareLinkRequest>,
    ) -> Result<Response<pb::RevokeShareLinkResponse>, Status> {
        let caller = caller(&request)?;
        let id =
            Uuid::parse_str(&request.get_ref().share_id).map_err(|_| ImageError::ShareNotFound)?;
        let link = self.shares.revoke(caller.user_id, id).await?;
        Ok(Response::new(pb::RevokeShareLinkResponse {
            link: Some(encode_share(link)),
        }))
    }

    async fn get_shared_image(
        &self,
        request: Request<pb::GetSharedImageRequest>,
    ) -> Result<Response<pb::GetSharedImageResponse>, Status> {
        let view = self.shares.view(&request.get_ref().token).await?;
        Ok(Response::new(pb::GetSharedImageResponse {
            image: Some(encode_shared(view.image)),
            before: view.before.map(encode_shared),
            expires_at: Some(timestamp(view.expires_at)),
            url_expires_at: Some(timestamp(view.url_expires_at)),
        }))
    }

    async fn store_result(
        &self,
        request: Request<Streaming<pb::StoreResultRequest>>,
    ) -> Result<Response<pb::StoreResultResponse>, Status> {
        let (metadata, body) = open_upload(request.into_inner()).await?;
        let job_id = Uuid::parse_str(&metadata.job_id)
            .map_err(|_| ImageError::field("job_id", "is not a valid id"))?;
        let source_image_id = if metadata.source_image_id.is_empty() {
            None
        } else {
            Some(
                Uuid::parse_str(&metadata.source_image_id)
                    .map_err(|_| ImageError::field("source_image_id", "is not a valid id"))?,
            )
        };
        let owner = user_id(&metadata.user_id)?;
        // Kept as long as the user asked.
        let retention_days = self.intake.retention(owner).await?;
        let new = NewImage {
            user_id: owner,
            filename: metadata.filename,
            origin: Origin::Result {
                job_id,
                output_index: metadata.output_index,
                source_image_id,
            },
            size: declared_size(metadata.size_bytes)?,
            metadata: from_struct(metadata.metadata),
            retention_days,
        };
        let (image, already_stored) = self.intake.store_result(new, job_id, body).await?;
        Ok(Response::new(pb::StoreResultResponse {
            image: Some(encode(image)),
            already_stored,
        }))
    }

    async fn get_download_url(
        &self,
        request: Request<pb::GetDownloadUrlRequest>,
    ) -> Result<Response<pb::GetDownloadUrlResponse>, Status> {
        let request = request.into_inner();
        let ttl =
            (request.ttl_seconds > 0).then(|| Duration::from_secs(request.ttl_seconds as u64));
        let (url, expires, mime_type) = self
            .images
            .download_url(
                user_id(&request.user_id)?,
                image_id(&request.image_id)?,
                variant(request.variant),
                ttl,
                u64::try_from(request.inline_max_bytes).unwrap_or(0),
            )
            .await?;
        Ok(Response::new(pb::GetDownloadUrlResponse {
            url,
            expires_at: Some(timestamp(expires)),
            mime_type,
        }))
    }

    async fn check_ownership(
        &self,
        request: Request<pb::CheckOwnershipRequest>,
    ) -> Result<Response<pb::CheckOwnershipResponse>, Status> {
        let request = request.into_inner();
        let user = user_id(&request.user_id)?;
        let image = match Uuid::parse_str(&request.image_id) {
            Ok(id) => self.images.owned(user, id).await?,
            Err(_) => None,
        };
        Ok(Response::new(pb::CheckOwnershipResponse {
            owned: image.is_some(),
            image: image.map(encode),
        }))
    }

    async fn get_storage_usage(
        &self,
        request: Request<pb::GetStorageUsageRequest>,
    ) -> Result<Response<pb::GetStorageUsageResponse>, Status> {
        let (storage_bytes, image_count) = self
            .images
            .usage(user_id(&request.get_ref().user_id)?)
            .await?;
        Ok(Response::new(pb::GetStorageUsageResponse {
            storage_bytes,
            image_count,
        }))
    }

    async fn get_platform_storage_usage(
        &self,
        _request: Request<pb::GetPlatformStorageUsageRequest>,
    ) -> Result<Response<pb::GetPlatformStorageUsageResponse>, Status> {
        let (storage_bytes, image_count) = self.images.platform_usage().await?;
        Ok(Response::new(pb::GetPlatformStorageUsageResponse {
            storage_bytes,
            image_count,
        }))
    }

    async fn delete_user_images(
        &self,
        request: Request<pb::DeleteUserImagesRequest>,
    ) -> Result<Response<pb::DeleteUserImagesResponse>, Status> {
        let deleted = self
            .images
            .delete_all_of(user_id(&request.get_ref().user_id)?)
            .await?;
        Ok(Response::new(pb::DeleteUserImagesResponse {
            deleted_count: deleted as i64,
        }))
    }

    async fn update_retention(
        &self,
        request: Request<pb::UpdateRetentionRequest>,
    ) -> Result<Response<pb::UpdateRetentionResponse>, Status> {
        let request = request.into_inner();
        let days = match u32::try_from(request.retention_days) {
            Ok(0) => None,
            Ok(days @ 1..=3650) => Some(days),
            _ => {
                return Err(
                    ImageError::field("retention_days", "must be between 0 and 3650").into(),
                );
            }
        };
        let updated = self
            .images
            .set_retention(user_id(&request.user_id)?, days)
            .await?;
        Ok(Response::new(pb::UpdateRetentionResponse {
            updated_count: updated as i64,
        }))
    }

    type ReadSignedObjectStream = ByteReplies<pb::ReadSignedObjectResponse>;

    async fn read_signed_object(
        &self,
        request: Request<pb::ReadSignedObjectRequest>,
    ) -> Result<Response<Self::ReadSignedObjectStream>, Status> {
        let request = request.into_inner();
        let range = range(request.range_start, request.range_end)?;
        let served = self
            .images
            .read_signed(&request.path, &request.query, range)
            .await?;
        use pb::read_signed_object_response::Data;
        Ok(Response::new(serve(
            served,
            |info| pb::ReadSignedObjectResponse {
                data: Some(Data::Info(info)),
            },
            |chunk| pb::ReadSignedObjectResponse {
                data: Some(Data::Chunk(chunk)),
            },
        )))
    }
}
