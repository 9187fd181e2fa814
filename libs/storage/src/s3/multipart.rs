//! Multipart uploads: a body cut into parts held in memory one at a time, and an
//! upload aborted on every way out but success (an error, or the put dropped midway).

use std::io;

use aws_sdk_s3::{
    Client,
    config::http::HttpResponse,
    error::{DisplayErrorContext, SdkError},
    operation::{
        create_multipart_upload::{CreateMultipartUploadError, CreateMultipartUploadOutput},
        upload_part::UploadPartOutput,
    },
    primitives::ByteStream as SdkByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{S3Store, sdk_error};
use crate::{ByteStream, StorageError};

/// The most parts one multipart upload may have, so objects are at most
/// `part_size * MAX_PARTS` bytes (80 GiB with the default part size).
pub const MAX_PARTS: i32 = 10_000;

impl S3Store {
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

    pub(super) async fn put_multipart(
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

/// Cuts a body into parts of `part_size` bytes, holding at most one part (and the one
/// body chunk read past it) in memory.
pub(super) struct PartReader {
    body: ByteStream,
    part_size: usize,
    /// What was read from the body but is not in a part yet.
    pending: Option<Bytes>,
    done: bool,
    first: bool,
}

impl PartReader {
    pub(super) fn new(body: ByteStream, part_size: usize) -> Self {
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
    pub(super) async fn fill(&mut self) -> io::Result<Bytes> {
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
    pub(super) async fn has_more(&mut self) -> io::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
