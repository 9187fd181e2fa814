//! The S3 backend: AWS S3 or any S3-compatible store, through `aws-sdk-s3`.

use std::{
    fmt, io,
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
    operation::{
        create_multipart_upload::{CreateMultipartUploadError, CreateMultipartUploadOutput},
        upload_part::UploadPartOutput,
    },
    presigning::PresigningConfig,
    primitives::ByteStream as SdkByteStream,
    types::{
        BucketLocationConstraint, CompletedMultipartUpload, CompletedPart,
        CreateBucketConfiguration, ServerSideEncryption,
    },
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::{
    ByteRange, ByteStream, DEFAULT_CONTENT_TYPE, ObjectMeta, ObjectRead, ObjectStore, StorageError,
    exact_length, range, validate_key,
};

/// The region used when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The default multipart part size: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// The smallest part S3 accepts (but for the last one): 5 MiB.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest part S3 accepts: 5 GiB.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// The largest object one PutObject may carry: 5 GiB.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// The most parts one multipart upload may have, so objects are at most
/// `part_size * MAX_PARTS` bytes (80 GiB with the default part size).
pub const MAX_PARTS: i32 = 10_000;

/// Where and how objects are stored on S3.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket every object goes into.
    pub bucket: String,
    /// The bucket's region (`us-east-1` by default).
    pub region: String,
    /// The endpoint of an S3-compatible store (MinIO, Ceph, R2, ...); AWS when `None`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual-hosted
    /// (`bucket.endpoint/key`); most S3-compatible stores want it.
    pub force_path_style: bool,
    /// Static credentials; when either is `None` the default AWS credential chain is used
    /// (environment, profile, web identity, ECS and EC2 instance roles).
    pub access_key_id: Option<String>,
    /// The secret for `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Server-side encryption for new objects: `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
    /// The KMS key for `aws:kms` (the bucket's default key when `None`).
    pub sse_kms_key_id: Option<String>,
    /// The multipart part size, and so the memory one put holds: at least 5 MiB.
    pub part_size: usize,
}

impl S3Config {
    /// A config for `bucket` on AWS in `us-east-1`, with the default credential chain and
    /// 8 MiB parts.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: DEFAULT_REGION.to_owned(),
            endpoint: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            server_side_encryption: None,
            sse_kms_key_id: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Reads the config from the environment, `None` when `S3_BUCKET` is unset or empty:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `S3_BUCKET` | the bucket |
    /// | `S3_REGION` | its region, `us-east-1` by default |
    /// | `S3_ENDPOINT` | an S3-compatible store's endpoint |
    /// | `S3_FORCE_PATH_STYLE` | `true`/`false`; `true` by default when `S3_ENDPOINT` is set |
    /// | `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` | static credentials (both or neither) |
    /// | `S3_SSE` | `AES256` or `aws:kms` |
    /// | `S3_SSE_KMS_KEY_ID` | the KMS key for `aws:kms` |
    pub fn from_env() -> Result<Option<Self>, StorageError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`S3Config::from_env`] over any source of variables.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, StorageError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let Some(bucket) = var("S3_BUCKET") else {
            return Ok(None);
        };
        let endpoint = var("S3_ENDPOINT");
        let force_path_style = match var("S3_FORCE_PATH_STYLE") {
            None => endpoint.is_some(),
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(invalid_config(format!(
                        "S3_FORCE_PATH_STYLE must be true or false, not {value:?}"
                    )));
                }
            },
        };
        let config = Self {
            bucket,
            region: var("S3_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            endpoint,
            force_path_style,
            access_key_id: var("S3_ACCESS_KEY_ID"),
            secret_access_key: var("S3_SECRET_ACCESS_KEY"),
            server_side_encryption: var("S3_SSE"),
            sse_kms_key_id: var("S3_SSE_KMS_KEY_ID"),
            part_size: DEFAULT_PART_SIZE,
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the settings fit together; [`S3Store::new`] calls it.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.bucket.trim().is_empty() {
            return Err(invalid_config("the bucket is empty".to_owned()));
        }
        if self.region.trim().is_empty() {
            return Err(invalid_config("the region is empty".to_owned()));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(invalid_config(
                "set both the access key id and the secret access key, or neither".to_owned(),
            ));
        }
        match self.server_side_encryption.as_deref() {
            None | Some("AES256") => {
                if self.sse_kms_key_id.is_some() {
                    return Err(invalid_config(
                        "a KMS key id needs server-side encryption aws:kms".to_owned(),
                    ));
                }
            }
            Some("aws:kms") => {}
            Some(other) => {
                return Err(invalid_config(format!(
                    "server-side encryption must be AES256 or aws:kms, not {other:?}"
                )));
            }
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(invalid_config(format!(
                "the part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, not {}",
                self.part_size
            )));
        }
        Ok(())
    }
}

/// Like the derived one, but the secret stays out of logs.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("server_side_encryption", &self.server_side_encryption)
            .field("sse_kms_key_id", &self.sse_kms_key_id)
            .field("part_size", &self.part_size)
            .finish()
    }
}

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

    /// Uploads `first` and the rest of `parts` as parts of `upload_id`, one at a time.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        parts: &mut PartReader,
    ) -> Result<(Vec<CompletedPart>, u64), StorageError> {
        let mut completed = Vec::new();
        let mut size = 0u64;
        let mut part = first;
        for number in 1.. {
            if number > MAX_PARTS {
                return Err(StorageError::Backend(format!(
                    "object larger than {MAX_PARTS} parts of {} bytes",
                    self.part_size
                )));
            }
            size += part.len() as u64;
            let output = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(SdkByteStream::from(part))
                .send()
                .await
                .map_err(|e| sdk_error("uploading a part", e))?;
            completed.push(completed_part(number, &output));
            part = parts.fill().await.map_err(StorageError::Body)?;
            if part.is_empty() {
                break;
            }
        }
        Ok((completed, size))
    }

    async fn put_multipart(
        &self,
        key: &str,
        content_type: &str,
        first: Bytes,
        parts: &mut PartReader,
    ) -> Result<u64, StorageError> {
        // The request runs in a task of its own: when this future is dropped while the
        // upload is being created, the task still learns its id and aborts it.
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_server_side_encryption(self.server_side_encryption.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .send();
        let mut creating = CreatingUpload {
            task: Some(tokio::spawn(create)),
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        };
        let created = creating.finish().await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                StorageError::Backend("starting a multipart upload: no upload id".to_owned())
            })?
            .to_owned();
        // From here on the upload is aborted on every way out but success: awaited on an
        // error, spawned when this future is dropped.
        let guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        let result = async {
            let (completed, size) = self.upload_parts(key, &upload_id, first, parts).await?;
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("completing a multipart upload", e))?;
            Ok(size)
        }
        .await;
        match result {
            Ok(size) => {
                guard.disarm();
                Ok(size)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
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

/// Cuts a body into parts of `part_size` bytes, holding at most one part (and the one
/// body chunk read past it) in memory.
struct PartReader {
    body: ByteStream,
    part_size: usize,
    /// What was read from the body but is not in a part yet.
    pending: Option<Bytes>,
    done: bool,
    first: bool,
}

impl PartReader {
    fn new(body: ByteStream, part_size: usize) -> Self {
        Self {
            body,
            part_size,
            pending: None,
            done: false,
            first: true,
        }
    }

    /// The next part: `part_size` bytes, or fewer at the end of the body (empty once it
    /// is all read).
    async fn fill(&mut self) -> io::Result<Bytes> {
        // The first part grows as the body comes (most objects are small); the following
        // ones are full-size but for the last.
        let mut part = if std::mem::take(&mut self.first) {
            Vec::new()
        } else {
            Vec::with_capacity(self.part_size)
        };
        while part.len() < self.part_size {
            let Some(mut chunk) = self.next_chunk().await? else {
                break;
            };
            let room = self.part_size - part.len();
            if chunk.len() > room {
                self.pending = Some(chunk.split_off(room));
            }
            if part.capacity() - part.len() < chunk.len() {
                let wanted = (part.len() + chunk.len())
                    .max(part.capacity() * 2)
                    .max(64 * 1024)
                    .min(self.part_size);
                part.reserve_exact(wanted - part.len());
            }
            part.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(part))
    }

    /// Whether the body has more bytes, reading one chunk ahead to know.
    async fn has_more(&mut self) -> io::Result<bool> {
        if self.pending.is_none() {
            self.pending = self.next_chunk().await?;
        }
        Ok(self.pending.is_some())
    }

    /// The next non-empty chunk, `None` at the end of the body.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(chunk) = self.pending.take() {
            return Ok(Some(chunk));
        }
        while !self.done {
            match self.body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        Ok(None)
    }
}

type CreateResult =
    Result<CreateMultipartUploadOutput, SdkError<CreateMultipartUploadError, HttpResponse>>;

/// A CreateMultipartUpload request running in its own task. Dropped before it finished,
/// it leaves a task behind that waits for the upload's id and aborts the upload.
struct CreatingUpload {
    task: Option<JoinHandle<CreateResult>>,
    client: Client,
    bucket: String,
    key: String,
}

impl CreatingUpload {
    async fn finish(&mut self) -> Result<CreateMultipartUploadOutput, StorageError> {
        let Some(task) = self.task.as_mut() else {
            return Err(StorageError::Backend(
                "starting a multipart upload: already finished".to_owned(),
            ));
        };
        let joined = task.await;
        self.task = None;
        joined
            .map_err(|e| StorageError::Backend(format!("starting a multipart upload: {e}")))?
            .map_err(|e| sdk_error("starting a multipart upload", e))
    }
}

impl Drop for CreatingUpload {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        // The task runs on a runtime, so there is one to spawn on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            tracing::debug!(%bucket, %key, "put dropped while starting a multipart upload");
            runtime.spawn(async move {
                if let Ok(Ok(created)) = task.await
                    && let Some(upload_id) = created.upload_id()
                {
                    abort_upload(&client, &bucket, &key, upload_id).await;
                }
            });
        }
    }
}

/// Aborts a multipart upload unless disarmed: awaited with [`AbortGuard::abort`], or
/// spawned on the runtime when dropped (the put future was dropped midway).
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortGuard {
    fn disarm(mut self) {
        self.upload_id = None;
    }

    async fn abort(mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort_upload(&self.client, &self.bucket, &self.key, &upload_id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!(%bucket, %key, %upload_id, "put dropped, aborting multipart upload");
                runtime
                    .spawn(async move { abort_upload(&client, &bucket, &key, &upload_id).await });
            }
            Err(_) => {
                tracing::warn!(%bucket, %key, %upload_id, "no runtime to abort multipart upload, it is left to the bucket's lifecycle rules");
            }
        }
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let aborted = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    if let Err(e) = aborted {
        tracing::warn!(bucket, key, upload_id, error = %DisplayErrorContext(&e), "aborting multipart upload failed");
    }
}

/// A part as CompleteMultipartUpload lists it: number and ETag. Parts are uploaded without
/// flexible checksums (see [`S3Store::new`]), so there are none to list.
fn completed_part(number: i32, output: &UploadPartOutput) -> CompletedPart {
    CompletedPart::builder()
        .part_number(number)
        .set_e_tag(output.e_tag().map(str::to_owned))
        .build()
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

fn invalid_config(message: String) -> StorageError {
    StorageError::Backend(format!("invalid S3 config: {message}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn from_env_without_bucket_is_none() {
        assert!(matches!(S3Config::from_lookup(lookup(&[])), Ok(None)));
        assert!(matches!(
            S3Config::from_lookup(lookup(&[("S3_BUCKET", ""), ("S3_REGION", "eu-west-1")])),
            Ok(None)
        ));
    }

    #[test]
    fn from_env_defaults() {
        let config = S3Config::from_lookup(lookup(&[("S3_BUCKET", "images")]))
            .ok()
            .flatten();
        assert_eq!(config, Some(S3Config::new("images")));
    }

    #[test]
    fn from_env_reads_everything() {
        let config = S3Config::from_lookup(lookup(&[
            ("S3_BUCKET", "images"),
            ("S3_REGION", "eu-west-3"),
            ("S3_ENDPOINT", "http://minio:9000"),
            ("S3_ACCESS_KEY_ID", "id"),
            ("S3_SECRET_ACCESS_KEY", "secret"),
            ("S3_SSE", "aws:kms"),
            ("S3_SSE_KMS_KEY_ID", "alias/atelier"),
        ]))
        .ok()
        .flatten();
        assert_eq!(
            config,
            Some(S3Config {
                bucket: "images".to_owned(),
                region: "eu-west-3".to_owned(),
                endpoint: Some("http://minio:9000".to_owned()),
                force_path_style: true,
                access_key_id: Some("id".to_owned()),
                secret_access_key: Some("secret".to_owned()),
                server_side_encryption: Some("aws:kms".to_owned()),
                sse_kms_key_id: Some("alias/atelier".to_owned()),
                part_size: DEFAULT_PART_SIZE,
            })
        );
        let virtual_hosted = S3Config::from_lookup(lookup(&[
            ("S3_BUCKET", "images"),
            ("S3_ENDPOINT", "https://r2.example"),
            ("S3_FORCE_PATH_STYLE", "false"),
        ]))
        .ok()
        .flatten();
        assert_eq!(virtual_hosted.map(|c| c.force_path_style), Some(false));
    }

    #[test]
    fn from_env_rejects_bad_values() {
        for vars in [
            &[("S3_BUCKET", "b"), ("S3_FORCE_PATH_STYLE", "maybe")][..],
            &[("S3_BUCKET", "b"), ("S3_SSE", "aes")],
            &[("S3_BUCKET", "b"), ("S3_SSE_KMS_KEY_ID", "k")],
            &[
                ("S3_BUCKET", "b"),
                ("S3_SSE", "AES256"),
                ("S3_SSE_KMS_KEY_ID", "k"),
            ],
            &[("S3_BUCKET", "b"), ("S3_ACCESS_KEY_ID", "id")],
            &[("S3_BUCKET", "b"), ("S3_SECRET_ACCESS_KEY", "secret")],
        ] {
            assert!(
                matches!(
                    S3Config::from_lookup(lookup(vars)),
                    Err(StorageError::Backend(_))
                ),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn part_size_is_bounded() {
        let mut config = S3Config::new("b");
        config.part_size = MIN_PART_SIZE - 1;
        assert!(config.validate().is_err());
        config.part_size = MIN_PART_SIZE;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn debug_hides_the_secret() {
        let mut config = S3Config::new("b");
        config.access_key_id = Some("id".to_owned());
        config.secret_access_key = Some("hunter2".to_owned());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    fn body(chunks: &[usize]) -> ByteStream {
        let chunks: Vec<io::Result<Bytes>> = chunks
            .iter()
            .enumerate()
            .map(|(i, &len)| Ok(Bytes::from(vec![i as u8; len])))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn parts_are_cut_at_part_size() {
        let mut parts = PartReader::new(body(&[3, 0, 4, 10, 1]), 5);
        let mut lens = Vec::new();
        let mut all = Vec::new();
        loop {
            let part = parts.fill().await.ok().unwrap_or_default();
            if part.is_empty() {
                break;
            }
            lens.push(part.len());
            all.extend_from_slice(&part);
        }
        assert_eq!(lens, [5, 5, 5, 3]);
        assert_eq!(all, [0, 0, 0, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]);
    }

    #[tokio::test]
    async fn a_body_of_exactly_one_part_has_no_more() {
        let mut parts = PartReader::new(body(&[2, 3, 0]), 5);
        assert_eq!(parts.fill().await.ok().map(|p| p.len()), Some(5));
        assert!(matches!(parts.has_more().await, Ok(false)));
        let mut parts = PartReader::new(body(&[2, 4]), 5);
        assert_eq!(parts.fill().await.ok().map(|p| p.len()), Some(5));
        assert!(matches!(parts.has_more().await, Ok(true)));
        assert_eq!(parts.fill().await.ok().map(|p| p.len()), Some(1));
    }
}
