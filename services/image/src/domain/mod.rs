//! The rules of stored images: uploads are streamed to a temporary file while
//! their size and hash are checked, inspected, and only then stored, objects
//! first and the row last, so a failure at any step leaves nothing behind.

pub mod gate;
pub mod inspect;
pub mod signing;

use std::{path::PathBuf, sync::Arc, time::Duration};

use atelier_common::{Clock, QuotaExceeded};
use atelier_storage::{ByteRange, ByteStream, ObjectMeta, ObjectStore};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::{
    error::ImageError,
    store::{ImageRow, Store},
};
use gate::DecodeGate;
use inspect::{DecodeLimits, Inspected};
use signing::{UrlSigner, Variant};

/// The longest display name kept.
const MAX_FILENAME_CHARS: usize = 255;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Largest upload.
    pub max_file_bytes: u64,
    /// Largest job result (results are not the user's uploads: a 4x upscale of an
    /// upload is far larger than the upload).
    pub max_result_bytes: u64,
    pub max_pixels: u64,
    /// The most memory one decode may allocate (`MAX_DECODE_BYTES`).
    pub max_decode_bytes: u64,
    /// Decodes run at once at most (`MAX_PARALLEL_DECODES`); the others wait.
    pub max_parallel_decodes: usize,
    pub strip_location: bool,
    pub retention: Duration,
    pub url_ttl: Duration,
    /// Prefix of the gateway-served signed URLs, e.g. `https://atelier.example.com`.
    pub public_base: String,
    pub tmp_dir: PathBuf,
}

/// Where a new image comes from.
#[derive(Clone, Debug)]
pub enum Origin {
    Upload,
    Result {
        job_id: Uuid,
        output_index: i32,
        source_image_id: Option<Uuid>,
    },
}

#[derive(Clone, Debug)]
pub struct NewImage {
    pub user_id: Uuid,
    pub filename: String,
    pub origin: Origin,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Days to keep it: the user's setting; `None` for the service's default.
    pub retention_days: Option<u32>,
}

/// An image as callers see it, with signed URLs.
#[derive(Clone, Debug)]
pub struct Image {
    pub row: ImageRow,
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub url_expires_at: OffsetDateTime,
}

/// An object being served through a signed URL.
pub struct Served {
    pub meta: ObjectMeta,
    pub range: std::ops::RangeInclusive<u64>,
    pub body: ByteStream,
    pub row: ImageRow,
}

pub struct Images {
    store: Store,
    objects: Arc<dyn ObjectStore>,
    signer: UrlSigner,
    clock: Arc<dyn Clock>,
    decodes: DecodeGate,
    settings: Settings,
}

/// The display name of an upload: its last path segment, without control
/// characters, bounded. Never used as a path.
pub fn display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect();
    let clean = clean.trim().trim_start_matches('.').trim();
    if clean.is_empty() {
        "image".to_owned()
    } else {
        clean.to_owned()
    }
}

/// What the uploader's subscription tier allows, and what they store already.
#[derive(Clone, Debug)]
pub struct UploadQuota {
    pub tier: String,
    pub max_file_size_bytes: Option<i64>,
    pub storage_bytes: Option<i64>,
    /// Bytes the user stores now.
    pub storage_used: i64,
    /// The user's retention in days; `None` for the service's default.
    pub retention_days: Option<u32>,
}

impl UploadQuota {
    /// Refuses an upload once `received` bytes are over either limit.
    pub fn check(&self, received: u64) -> Result<(), ImageError> {
        let received = received as i64;
        if let Some(allowed) = self.max_file_size_bytes
            && received > allowed
        {
            return Err(ImageError::TooLargeForPlan(self.refusal(
                "max_file_size_bytes",
                allowed,
                0,
                received,
            )));
        }
        self.check_storage(self.storage_used, received)
    }

    /// Refuses `size` more bytes when the user stores `used` already and the tier's
    /// storage would overflow.
    pub fn check_storage(&self, used: i64, size: i64) -> Result<(), ImageError> {
        match self.storage_bytes {
            Some(allowed) if used + size > allowed => Err(ImageError::QuotaExceeded(self.refusal(
                "storage_bytes",
                allowed,
                used,
                size,
            ))),
            _ => Ok(()),
        }
    }

    fn refusal(&self, limit: &str, allowed: i64, used: i64, requested: i64) -> QuotaExceeded {
        QuotaExceeded {
            limit: limit.to_owned(),
            allowed,
            used,
            requested,
            tier: self.tier.clone(),
            resets_at: None,
        }
    }
}

fn object_key(user_id: Uuid, id: Uuid, variant: Variant) -> String {
    format!("images/{user_id}/{id}/{}", variant.as_str())
}

impl Images {
    pub fn new(
        store: Store,
        objects: Arc<dyn ObjectStore>,
        signer: UrlSigner,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            objects,
            signer,
            clock,
            decodes: DecodeGate::new(settings.max_parallel_decodes),
            settings,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Receives, checks and stores an image, within the uploader's `quota` (none for
    /// job results). Returns it, and whether it was already stored (a job result
    /// delivered twice).
    pub async fn upload<S>(
        self: &Arc<Self>,
        new: NewImage,
        quota: Option<UploadQuota>,
        mut body: S,
    ) -> Result<(Image, bool), ImageError>
    where
        S: Stream<Item = Result<Bytes, ImageError>> + Unpin + Send,
    {
        if let Origin::Result {
            job_id,
            output_index,
            ..
        } = new.origin
            && let Some(existing) = self.store.by_job_output(job_id, output_index).await?
        {
            return Ok((self.present(existing).await?, true));
        }
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.settings.tmp_dir)
            .map_err(|err| anyhow::anyhow!("creating a temporary file: {err}"))?;
        let mut file = tokio::fs::File::from_std(
            tmp.reopen()
                .map_err(|err| anyhow::anyhow!("opening a temporary file: {err}"))?,
        );
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let limit = match new.origin {
            Origin::Upload => self.settings.max_file_bytes,
            Origin::Result { .. } => self.settings.max_result_bytes,
        };
        let mut head = Vec::with_capacity(32);
        let mut sniffed = false;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ImageError::TooLarge {
                    limit_mb: limit / (1024 * 1024),
                });
            }
            if let Some(quota) = &quota {
                quota.check(size)?;
            }
            if !sniffed {
                head.extend_from_slice(&chunk[..chunk.len().min(32 - head.len())]);
                if head.len() == 32 {
                    inspect::sniff(&head)?;
                    sniffed = true;
                }
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|err| anyhow::anyhow!("writing a temporary file: {err}"))?;
        }
        if !sniffed {
            inspect::sniff(&head)?;
        }
        file.flush()
            .await
            .map_err(|err| anyhow::anyhow!("writing a temporary file: {err}"))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());

        // From here on the work runs to its end even if the client goes away, so
        // it never stops between storing objects and writing the row.
        let this = Arc::clone(self);
        tokio::spawn(async move { this.finish(new, quota, tmp, size, sha256).await })
            .await
            .map_err(|err| anyhow::anyhow!("storing an upload: {err}"))?
    }

    /// Inspects a received upload, stores its objects, and records its row within
    /// the uploader's storage quota; a refusal or failure removes the objects.
    async fn finish(
        &self,
        new: NewImage,
        quota: Option<UploadQuota>,
        tmp: tempfile::NamedTempFile,
        size: u64,
        sha256: String,
    ) -> Result<(Image, bool), ImageError> {
        let path = tmp.path().to_owned();
        let limits = DecodeLimits {
            max_pixels: self.settings.max_pixels,
            max_alloc: self.settings.max_decode_bytes,
        };
        let strip = self.settings.strip_location;
        let inspected = self
            .decodes
            .run(move || inspect::inspect(&path, limits, strip))
            .await??;

        let id = Uuid::now_v7();
        let original_key = object_key(new.user_id, id, Variant::Original);
        let thumbnail_key = object_key(new.user_id, id, Variant::Thumbnail);
        let Inspected {
            kind,
            width,
            height,
            orientation,
            had_location,
            thumbnail,
            thumbnail_mime,
            stripped,
        } = inspected;
        let location_stripped = stripped.is_some();
        let stored_size = match stripped {
            Some(bytes) => {
                let len = bytes.len() as u64;
                self.put_bytes(&original_key, kind.mime(), bytes).await?;
                len
            }
            None => {
                let file = tokio::fs::File::open(tmp.path())
                    .await
                    .map_err(|err| anyhow::anyhow!("reading a temporary file: {err}"))?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed();
                self.objects.put(&original_key, kind.mime(), stream).await?
            }
        };
        drop(tmp);
        if let Err(err) = self
            .put_bytes(&thumbnail_key, thumbnail_mime, thumbnail)
            .await
        {
            self.remove_objects(&[&original_key]).await;
            return Err(err);
        }

        let now = self.clock.now();
        let mut metadata = new.metadata;
        metadata.insert("format".into(), kind.extension().into());
        metadata.insert("orientation".into(), orientation.into());
        metadata.insert("location_stripped".into(), location_stripped.into());
        metadata.insert("had_location".into(), had_location.into());
        metadata.insert("uploaded_size".into(), size.into());
        let (kind_name, job_id, output_index, source_image_id) = match new.origin {
            Origin::Upload => ("original", None, None, None),
            Origin::Result {
                job_id,
                output_index,
                source_image_id,
            } => ("result", Some(job_id), Some(output_index), source_image_id),
        };
        // A result is named by its job (`<input>_<workflow>[_<n>]`); the extension
        // is the one of the type it turned out to be.
        let original_filename = match new.origin {
            Origin::Upload => display_name(&new.filename),
            Origin::Result { .. } => {
                display_name(&format!("{}.{}", new.filename.trim(), kind.extension()))
            }
        };
        let row = ImageRow {
            id,
            user_id: new.user_id,
            filename: format!("{id}.{}", kind.extension()),
            original_filename,
            file_size: stored_size as i64,
            mime_type: kind.mime().to_owned(),
            storage_path: original_key.clone(),
            thumbnail_path: Some(thumbnail_key.clone()),
            thumbnail_mime_type: Some(thumbnail_mime.to_owned()),
            sha256,
            width: width as i32,
            height: height as i32,
            metadata: serde_json::Value::Object(metadata),
            kind: kind_name.to_owned(),
            job_id,
            output_index,
            source_image_id,
            created_at: now,
            expires_at: Some(
                now + new.retention_days.map_or(self.settings.retention, |days| {
                    Duration::from_secs(u64::from(days) * 24 * 60 * 60)
                }),
            ),
        };
        // The storage quota is checked again as the row is written, under the
        // user's lock: uploads that pass the first check together cannot together
        // pass the limit.
        let inserted = match &quota {
            Some(quota) => {
                self.store
                    .insert_checked(row, |used| quota.check_storage(used, stored_size as i64))
                    .await
            }
            None => self.store.insert(row).await.map_err(ImageError::from),
        };
        match inserted {
            Ok(row) => {
                tracing::info!(image_id = %row.id, user_id = %row.user_id, size = row.file_size, "image stored");
                metrics::counter!("atelier_images_stored_total", "kind" => kind_name).increment(1);
                Ok((self.present(row).await?, false))
            }
            Err(err) => {
                self.remove_objects(&[&original_key, &thumbnail_key]).await;
                if let ImageError::Database(db_err) = &err
                    && atelier_common::db::is_unique_violation(db_err)
                    && let (Some(job_id), Some(index)) = (job_id, output_index)
                    && let Some(existing) = self.store.by_job_output(job_id, index).await?
                {
                    return Ok((self.present(existing).await?, true));
                }
                Err(err)
            }
        }
    }

    async fn put_bytes(
        &self,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<u64, ImageError> {
        let stream = futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed();
        Ok(self.objects.put(key, content_type, stream).await?)
    }

    async fn remove_objects(&self, keys: &[&str]) {
        for key in keys {
            if let Err(err) = self.objects.delete(key).await {
                tracing::warn!(key, error = %err, "cannot remove an object; it is orphaned");
            }
        }
    }

    /// An image with freshly signed URLs.
    async fn present(&self, row: ImageRow) -> Result<Image, ImageError> {
        let ttl = self.settings.url_ttl;
        let expires = self.clock.now() + ttl;
        let url = self.url(&row, Variant::Original, ttl, expires).await?;
        let thumbnail_url = match row.thumbnail_path {
            Some(_) => Some(self.url(&row, Variant::Thumbnail, ttl, expires).await?),
            None => None,
        };
        Ok(Image {
            row,
            url,
            thumbnail_url,
            url_expires_at: expires,
        })
    }

    async fn url(
        &self,
        row: &ImageRow,
        variant: Variant,
        ttl: Duration,
        expires: OffsetDateTime,
    ) -> Result<String, ImageError> {
        let key = key_of(row, variant).ok_or(ImageError::NotFound)?;
        let name = (variant == Variant::Original).then_some(row.original_filename.as_str());
        Ok(match self.objects.presigned_get(key, ttl, name).await? {
            Some(url) => url,
            None => format!(
                "{}{}",
                self.settings.public_base,
                self.signer.sign(row.id, variant, expires)
            ),
        })
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<Image, ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        self.present(row).await
    }

    pub async fn get_many(&self, user_id: Uuid, ids: &[Uuid]) -> Result<Vec<Image>, ImageError> {
        let rows = self.store.owned_many(user_id, ids).await?;
        let mut images = Vec::with_capacity(rows.len());
        for row in rows {
            images.push(self.present(row).await?);
        }
        Ok(images)
    }

    /// One page of the caller's images, newest first, and the id to continue
    /// after; `name` keeps those whose original filename contains it (any case).
    pub async fn list(
        &self,
        user_id: Uuid,
        kind: Option<&str>,
        name: Option<&str>,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<Image>, Option<Uuid>), ImageError> {
        let mut rows = self
            .store
            .page(user_id, kind, name, after, page_size + 1)
            .await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|row| row.id)
        } else {
            None
        };
        let mut images = Vec::with_capacity(rows.len());
        for row in rows {
            images.push(self.present(row).await?);
        }
        Ok((images, next))
    }

    /// Deletes an image: its objects first, then its row.
    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        self.delete_objects_of(&row).await?;
        self.store.delete(user_id, id).await?;
        tracing::info!(image_id = %id, "image deleted");
        Ok(())
    }

    async fn delete_objects_of(&self, row: &ImageRow) -> Result<(), ImageError> {
        self.objects.delete(&row.storage_path).await?;
        if let Some(thumbnail) = &row.thumbnail_path {
            self.objects.delete(thumbnail).await?;
        }
        Ok(())
    }

    pub async fn delete_all_of(&self, user_id: Uuid) -> Result<u64, ImageError> {
        let rows = self.store.all_of_user(user_id).await?;
        let mut deleted = 0;
        for row in rows {
            self.delete_objects_of(&row).await?;
            if self.store.delete(user_id, row.id).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// A URL for `id`'s `variant` valid for `ttl` (bounded by the configured TTL),
    /// for a remote worker; checks that `user_id` owns the image.
    pub async fn download_url(
        &self,
        user_id: Uuid,
        id: Uuid,
        variant: Variant,
        ttl: Option<Duration>,
    ) -> Result<(String, OffsetDateTime, String), ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        let ttl = ttl.map_or(self.settings.url_ttl, |ttl| ttl.min(self.settings.url_ttl));
        let expires = self.clock.now() + ttl;
        let url = self.url(&row, variant, ttl, expires).await?;
        let mime = match variant {
            Variant::Original => row.mime_type.clone(),
            Variant::Thumbnail => row.thumbnail_mime_type.clone().unwrap_or_default(),
        };
        Ok((url, expires, mime))
    }

    pub async fn owned(&self, user_id: Uuid, id: Uuid) -> Result<Option<Image>, ImageError> {
        match self.store.owned(user_id, id).await? {
            Some(row) => Ok(Some(self.present(row).await?)),
            None => Ok(None),
        }
    }

    /// Opens the object a signed URL names, if its signature holds.
    pub async fn read_signed(
        &self,
        path: &str,
        query: &str,
        range: Option<ByteRange>,
    ) -> Result<Served, ImageError> {
        let (id, variant) = self
            .signer
            .verify(path, query, self.clock.now())
            .ok_or(ImageError::NotFound)?;
        let row = self.store.by_id(id).await?.ok_or(ImageError::NotFound)?;
        self.read(row, variant, range).await
    }

    /// Opens the caller's image `id`.
    pub async fn read_owned(
        &self,
        user_id: Uuid,
        id: Uuid,
        variant: Variant,
        range: Option<ByteRange>,
    ) -> Result<Served, ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        self.read(row, variant, range).await
    }

    async fn read(
        &self,
        row: ImageRow,
        variant: Variant,
        range: Option<ByteRange>,
    ) -> Result<Served, ImageError> {
        let key = key_of(&row, variant).ok_or(ImageError::NotFound)?;
        let read = self.objects.get(key, range).await?;
        Ok(Served {
            meta: read.meta,
            range: read.range,
            body: read.body,
            row,
        })
    }

    pub async fn usage(&self, user_id: Uuid) -> Result<(i64, i64), ImageError> {
        Ok(self.store.usage(user_id).await?)
    }

    /// Moves the expiry of every image of the user to `days` after its creation (`None`:
    /// the service's default).
    pub async fn set_retention(&self, user_id: Uuid, days: Option<u32>) -> Result<u64, ImageError> {
        let days = days.map_or(
            self.settings.retention.as_secs() / (24 * 60 * 60),
            u64::from,
        );
        Ok(self.store.set_retention(user_id, days as i64).await?)
    }

    /// Deletes images whose retention ran out, objects first, then rows. Safe to
    /// run on several replicas at once: object deletes are idempotent and only
    /// one replica's row delete succeeds. Returns how many rows it deleted.
    pub async fn sweep(&self) -> Result<u64, ImageError> {
        let now = self.clock.now();
        let mut deleted = 0;
        loop {
            let expired = self.store.expired(now, 100).await?;
            if expired.is_empty() {
                break;
            }
            let batch = expired.len();
            for row in expired {
                self.delete_objects_of(&row).await?;
                if self.store.delete_if_expired(row.id, now).await? {
                    deleted += 1;
                }
            }
            if batch < 100 {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "expired images deleted");
            metrics::counter!("atelier_images_expired_total").increment(deleted);
        }
        Ok(deleted)
    }
}

fn key_of(row: &ImageRow, variant: Variant) -> Option<&str> {
    match variant {
        Variant::Original => Some(&row.storage_path),
        Variant::Thumbnail => row.thumbnail_path.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn display_names_are_never_paths() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name("C:\\\\Users\\\\me\\\\cat.png"), "cat.png");
        assert_eq!(display_name("a\u{0}b.png"), "ab.png");
        assert_eq!(display_name("../"), "image");
        assert_eq!(display_name(".hidden"), "hidden");
        assert_eq!(display_name(&"x".repeat(1000)).len(), 255);
    }
}
