//! The S3 backend: AWS S3 or any S3-compatible store, through `aws-sdk-s3`. Its
//! settings are in `config`, its multipart uploads in `multipart`.

mod config;
mod multipart;

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
    time::Duration,
};

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        StalledStreamProtectionConfig, http::HttpResponse,
    },
    error::{DisplayErrorContext, SdkError},
    presigning::PresigningConfig,
    primitives::ByteStream as SdkByteStream,
    types::{BucketLocationConstraint, CreateBucketConfiguration, ServerSideEncryption},
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};

use self::multipart::PartReader;
pub use self::{
    config::{DEFAULT_PART_SIZE, DEFAULT_REGION, MAX_PART_SIZE, MIN_PART_SIZE, S3Config},
    multipart::MAX_PARTS,
};
use crate::{
    ByteRange, ByteStream, DEFAULT_CONTENT_TYPE, ObjectMeta, ObjectRead, ObjectStore, StorageError,
    exact_length, range, validate_key,
};

/// The largest object one PutObject may carry: 5 GiB.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// Objects in an S3 bucket. Puts stream through multipart uploads one part at a time;
/// URLs are presigned GETs.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
    part_size: usize,
    server_side_encryption: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
}

impl S3Store {
    /// Builds the client for `config` (static keys, or the default AWS credential chain
    /// when none are given). Makes no request: a missing bucket shows on first use.
    pub async fn new(config: S3Config) -> Result<Self, StorageError> {
        config.validate()?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(http_client);
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "atelier-static",
            ));
        }
        let shared = loader.load().await;
        // Flexible checksums only where an operation requires them. By default the SDK
        // adds a CRC32 to every PutObject and UploadPart, which a multipart upload must then
        // declare in CreateMultipartUpload and repeat in CompleteMultipartUpload, and which
        // several S3-compatible stores reject on multipart uploads. Responses are still
        // checked against the checksums a store sends.
        //
        // The SDK fails an upload whose body pauses for 5 s. A body here may pause longer
        // on purpose: its last chunk waits until the caller accepts it (the image service
        // checks an upload to its end first), and a client may pause too (the gateway
        // gives up on those itself). Downloads keep the protection.
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .upload_enabled(false)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(s3.build()),
            bucket: config.bucket,
            region: config.region,
            part_size: config.part_size,
            server_side_encryption: config
                .server_side_encryption
                .as_deref()
                .map(ServerSideEncryption::from),
            sse_kms_key_id: config.sse_kms_key_id,
        })
    }

    /// The SDK client, for what the trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket objects go into.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The multipart part size in bytes.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Creates the bucket unless it exists (for tests and the embedded default; in
    /// production the bucket is provisioned with its policies).
    pub async fn create_bucket_if_missing(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(sdk_error("checking the bucket", e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that must not be named.
        if self.region != DEFAULT_REGION {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created bucket");
                Ok(())
            }
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("creating the bucket", e)),
        }
    }

    /// GetObject, whole or a range of it; with `if_match`, `None` when the object's ETag
    /// no longer matches.
    async fn get_object(
        &self,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<Option<ObjectRead>, StorageError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(range::header))
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await;
        let output = match result {
            Err(e) if if_match.is_some() && status(&e) == Some(412) => return Ok(None),
            result => result,
        }
        .map_err(|e| match status(&e) {
            Some(404) => StorageError::NotFound,
            Some(416) => StorageError::InvalidRange,
            _ => sdk_error("getting the object", e),
        })?;
        let content_type = output
            .content_type()
            .unwrap_or(DEFAULT_CONTENT_TYPE)
            .to_owned();
        let (range, size) = match output.content_range() {
            Some(value) if range.is_some() => {
                range::parse_content_range(value).ok_or_else(|| {
                    StorageError::Backend(format!(
                        "getting the object: bad Content-Range {value:?}"
                    ))
                })?
            }
            // Whole, or a store that ignored the range and sent the whole object.
            _ => {
                let size = output
                    .content_length()
                    .and_then(|len| u64::try_from(len).ok())
                    .ok_or_else(|| {
                        StorageError::Backend("getting the object: no Content-Length".to_owned())
                    })?;
                (range::resolve(size, None)?, size)
            }
        };
        let body = futures::stream::unfold(output.body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(io::Error::other), body))
        })
        .boxed();
        Ok(Some(ObjectRead {
            meta: ObjectMeta { size, content_type },
            range,
            body,
        }))
    }

    /// GetObject without conditions.
    async fn get_range(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectRead, StorageError> {
        self.get_object(key, range, None).await?.ok_or_else(|| {
            StorageError::Backend("getting the object: unexpected precondition failure".to_owned())
        })
    }

    async fn put_single(
        &self,
        key: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_server_side_encryption(self.server_side_encryption.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .body(SdkByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk_error("putting the object", e))?;
        Ok(())
    }

    /// One PutObject whose body streams as it comes, `len` bytes long. A body that fails
    /// (or is not `len` bytes long) cuts the request short, and S3 stores nothing.
    async fn put_streamed(
        &self,
        key: &str,
        content_type: &str,
        len: u64,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        let failure = Arc::new(Mutex::new(None));
        let body = StreamedBody {
            stream: Mutex::new(exact_length(body, len)),
            failure: Arc::clone(&failure),
            remaining: len,
            last: None,
        };
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .set_server_side_encryption(self.server_side_encryption.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .body(SdkByteStream::from_body_1_x(body))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(len),
            Err(e) => {
                let body_failed = failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                Err(match body_failed {
                    Some(body_error) => StorageError::Body(body_error),
                    None => sdk_error("putting the object", e),
                })
            }
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(
        &self,
        key: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        validate_key(key)?;
        let mut parts = PartReader::new(body, self.part_size);
        let first = parts.fill().await.map_err(StorageError::Body)?;
        if !parts.has_more().await.map_err(StorageError::Body)? {
            let size = first.len() as u64;
            self.put_single(key, content_type, first).await?;
            return Ok(size);
        }
        self.put_multipart(key, content_type, first, &mut parts)
            .await
    }

    async fn put_exact(
        &self,
        key: &str,
        content_type: &str,
        len: u64,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        validate_key(key)?;
        // An empty body is read to its end before anything is sent (the client would
        // not wait for it); a huge one takes a multipart upload.
        if len == 0 || len > MAX_SINGLE_PUT {
            return self.put(key, content_type, exact_length(body, len)).await;
        }
        self.put_streamed(key, content_type, len, body).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectRead, StorageError> {
        validate_key(key)?;
        if let Some(range) = range {
            range::check(range)?;
        }
        let Some(ByteRange::Suffix(n)) = range else {
            return self.get_range(key, range).await;
        };
        // A suffix at least as long as the object is the whole object. S3 answers it so,
        // but s3s-fs (and so maybe other stores) fails with a 500 when the suffix is
        // longer than the object: ask for the whole object instead, guarded by its ETag
        // against a replacement in between.
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match status(&e) {
                Some(404) => StorageError::NotFound,
                _ => sdk_error("reading the object's metadata", e),
            })?;
        let size = head.content_length().unwrap_or(0);
        if size == 0 {
            return Err(StorageError::InvalidRange);
        }
        if u64::try_from(size).is_ok_and(|size| n < size) || head.e_tag().is_none() {
            return self.get_range(key, range).await;
        }
        match self.get_object(key, None, head.e_tag()).await? {
            Some(read) => Ok(read),
            // Replaced meanwhile: let the store resolve the suffix against the new object.
            None => self.get_range(key, range).await,
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        validate_key(key)?;
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match status(&e) {
                Some(404) => StorageError::NotFound,
                _ => sdk_error("reading the object's metadata", e),
            })?;
        Ok(ObjectMeta {
            size: output
                .content_length()
                .and_then(|len| u64::try_from(len).ok())
                .unwrap_or(0),
            content_type: output
                .content_type()
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned(),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some compatible stores answer 404.
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(sdk_error("deleting the object", e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("listing objects", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
        download_name: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        validate_key(key)?;
        let presigning = PresigningConfig::expires_in(ttl)
            .map_err(|e| StorageError::Backend(format!("presigning: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_response_content_disposition(
                download_name.map(|name| crate::content_disposition("inline", name)),
            )
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error("presigning", e))?;
        Ok(Some(request.uri().to_owned()))
    }
}

/// A body stream as the HTTP body of a request. The SDK wants it `Sync`: the stream is
/// only ever polled through `&mut self`, so it sits in a mutex that is never locked. The
/// stream's own error is kept aside, as the SDK reports it only as a failed dispatch.
///
/// The chunk that completes the declared length is held back until the stream ends:
/// the client stops reading once it has sent that many bytes, and the request must not
/// complete before the stream says the body is whole (or fail if it goes on).
struct StreamedBody {
    stream: Mutex<ByteStream>,
    failure: Arc<Mutex<Option<io::Error>>>,
    /// Bytes not handed to the client yet.
    remaining: u64,
    /// The last chunk, until the stream ends.
    last: Option<Bytes>,
}

impl StreamedBody {
    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let seen = io::Error::new(e.kind(), e.to_string());
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        Poll::Ready(Some(Err(seen)))
    }
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let stream = this
                .stream
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            let next = ready!(stream.poll_next_unpin(cx));
            match (next, this.last.take()) {
                (Some(Err(e)), _) => return this.fail(e),
                (Some(Ok(chunk)), _) if chunk.is_empty() => {}
                (Some(Ok(chunk)), None) => {
                    let len = chunk.len() as u64;
                    if len < this.remaining {
                        this.remaining -= len;
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    this.last = Some(chunk);
                }
                // `exact_length` fails a body that goes past its length first.
                (Some(Ok(_)), Some(_)) => {
                    return this.fail(io::Error::other("the body goes on past its length"));
                }
                (None, Some(last)) => {
                    this.remaining = 0;
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
                (None, None) => return Poll::Ready(None),
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The HTTP status of a failed request, when there was an answer.
fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|response| response.status().as_u16())
}

fn sdk_error<E>(context: &str, e: E) -> StorageError
where
    E: std::error::Error,
{
    StorageError::Backend(format!("{context}: {}", DisplayErrorContext(&e)))
}
