//! The rules of stored images. An upload streams through once: as each chunk
//! arrives its size is checked and it is hashed, handed to a decoder that inspects
//! the image as it comes (on the blocking pool, see [`feed`]), and sent on to
//! storage. The stored object is completed only once the decoder accepted the
//! image; a refusal at any point cuts the storage upload short (aborting it), so
//! nothing is left behind. The row is written last.
//!
//! Every chunk also goes to the malware scanner ([`atelier_scan`]) as it passes;
//! its verdict is awaited once the bytes ended, before the stored object is
//! completed: an infected file is refused and nothing of it is kept, and a file
//! that could not be scanned (the scanner away or failing) is refused too, never
//! kept unscanned. The order of refusals: the type first (by magic bytes; a file
//! that is no image is scanned from its first bytes only, so that malware is
//! named as such), then the decoder's as the bytes stream, then the scanner's
//! verdict at the end.

pub mod feed;
pub mod gate;
pub mod inspect;
pub mod intake;
pub mod record;
pub mod shares;
pub mod signing;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use atelier_common::{Clock, QuotaExceeded, audit::AuditRecord};
use atelier_scan::{Scan, ScanError, Scanner, Verdict};
use atelier_storage::{ByteRange, ByteStream, ObjectMeta, ObjectStore};
use base64::Engine as _;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::{sync::mpsc, task::JoinHandle};
use uuid::Uuid;

use crate::{error::ImageError, peers::AuditLog, store::Store};
use feed::{Fed, Feed};
use gate::{DecodeGate, Slot};
use inspect::{DecodeLimits, Inspected, Kind, THUMBNAIL_SIZE};
pub use intake::Intake;
pub use record::{ImageKind, ImageRecord, ScanStatus, ShareLinkRecord};
pub use shares::{ShareSettings, Shares};
use signing::{UrlSigner, Variant};

/// The longest display name kept.
const MAX_FILENAME_CHARS: usize = 255;

/// How much of a file that is no image is read, at most, to scan it: enough for
/// a script or a test file; a larger one is refused for its type alone.
const NON_IMAGE_SCAN_BYTES: u64 = 64 * 1024;

/// Chunks in flight from an upload's task to its decoder, and to its store: the
/// memory an upload holds beyond what the decoder keeps.
const CHUNKS_IN_FLIGHT: usize = 16;

/// An image within a thumbnail's size whose file is no larger than its thumbnail
/// would be, or than this, serves as its own thumbnail.
const OWN_THUMBNAIL_MAX_BYTES: u64 = 64 * 1024;

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
    /// The size the sender declared before the first byte, when it did: over a
    /// limit, the upload is refused at once; otherwise it must be exactly that long,
    /// and is stored as it streams in one piece.
    pub size: Option<u64>,
}

/// An image as callers see it, with signed URLs.
#[derive(Clone, Debug)]
pub struct Image {
    pub row: ImageRecord,
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub url_expires_at: OffsetDateTime,
}

/// An object being served through a signed URL.
pub struct Served {
    pub meta: ObjectMeta,
    pub range: std::ops::RangeInclusive<u64>,
    pub body: ByteStream,
    pub row: ImageRecord,
}

pub struct Images {
    store: Store,
    objects: Arc<dyn ObjectStore>,
    signer: UrlSigner,
    clock: Arc<dyn Clock>,
    decodes: DecodeGate,
    scanner: Arc<dyn Scanner>,
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

/// `images/<user>/<image>-<variant>`: an image's objects side by side under its
/// owner (in a local store, files in one directory per user rather than a directory
/// per image). Rows keep their keys, so objects stored under an earlier scheme
/// (`images/<user>/<image>/<variant>`) stay where they are.
fn object_key(user_id: Uuid, id: Uuid, variant: Variant) -> String {
    format!("images/{user_id}/{id}-{}", variant.as_str())
}

impl Images {
    pub fn new(
        store: Store,
        objects: Arc<dyn ObjectStore>,
        signer: UrlSigner,
        clock: Arc<dyn Clock>,
        scanner: Arc<dyn Scanner>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            objects,
            signer,
            clock,
            decodes: DecodeGate::new(settings.max_parallel_decodes),
            scanner,
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
        let mut received = Received {
            size: 0,
            limit: match new.origin {
                Origin::Upload => self.settings.max_file_bytes,
                Origin::Result { .. } => self.settings.max_result_bytes,
            },
            declared: new.size,
            hasher: Sha256::new(),
        };
        // A declared size over a limit is refused before a byte is read.
        if let Some(declared) = new.size {
            received.allow(declared, quota.as_ref())?;
        }

        // The type, from the first bytes: nothing starts for what is no image.
        let mut first = Vec::new();
        let mut head = Vec::with_capacity(32);
        while head.len() < 32 {
            let Some(chunk) = body.next().await else {
                break;
            };
            let chunk = chunk?;
            received.take(&chunk, quota.as_ref())?;
            head.extend_from_slice(&chunk[..chunk.len().min(32 - head.len())]);
            first.push(chunk);
        }
        let kind = match inspect::sniff(&head) {
            Ok(kind) => kind,
            Err(rejection) => {
                return Err(self
                    .refuse_non_image(rejection, first, &mut body, &mut received, &new)
                    .await);
            }
        };
        // The scanner first: nothing is stored while it cannot scan. Without one,
        // no scan runs and no chunk goes its way.
        let scan = if self.scanner.scans() {
            let scan = self.scanner.open().await.map_err(|err| {
                count_scan(self.scanner.name(), scan_failure(&err));
                ImageError::from(err)
            })?;
            Some(scan)
        } else {
            None
        };

        let id = Uuid::now_v7();
        let original_key = object_key(new.user_id, id, Variant::Original);
        let (to_store, stored) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let put = tokio::spawn({
            let objects = Arc::clone(&self.objects);
            let (key, declared) = (original_key.clone(), new.size);
            async move {
                let body = stored_body(stored);
                match declared {
                    Some(len) => objects.put_exact(&key, kind.mime(), len, body).await,
                    None => objects.put(&key, kind.mime(), body).await,
                }
            }
        });
        let (to_decoder, fed) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let decode = {
            let limits = self.decode_limits();
            let strip = self.settings.strip_location;
            let tmp_dir = self.settings.tmp_dir.clone();
            self.decodes
                .spawn(move |slot| inspect_upload(kind, fed, slot, limits, strip, &tmp_dir))
        };
        let (to_scanner, scanned) = match scan {
            Some(scan) => {
                let (to_scanner, scanning) = mpsc::channel(CHUNKS_IN_FLIGHT);
                (
                    Some(to_scanner),
                    Some(tokio::spawn(scan_chunks(scan, scanning))),
                )
            }
            None => (None, None),
        };
        let mut upload = Streaming {
            to_decoder: Some(to_decoder),
            decode,
            verdict: None,
            scans: scanned.is_some(),
            to_scanner,
            scan: scanned,
            to_store,
            put,
        };

        let pumped = async {
            for chunk in first {
                upload.forward(chunk).await?;
            }
            loop {
                let next = tokio::select! {
                    biased;
                    decoded = &mut upload.decode, if upload.verdict.is_none() => {
                        // Done before the body: refused early, or the image ended
                        // before the bytes did (the rest is only stored).
                        let decoded = joined(decoded);
                        upload.to_decoder = None;
                        if let Err(err) = decoded {
                            return Err(err);
                        }
                        upload.verdict = Some(decoded);
                        continue;
                    }
                    next = body.next() => next,
                };
                let Some(chunk) = next else {
                    break;
                };
                let chunk = chunk?;
                received.take(&chunk, quota.as_ref())?;
                upload.forward(chunk).await?;
            }
            received.whole()
        }
        .await;
        if let Err(err) = pumped {
            upload.abandon().await;
            return Err(err);
        }
        if let Some(decoder) = upload.to_decoder.take() {
            // Gone already if the decoder stopped: its verdict says why.
            let _ = decoder.send(Fed::End).await;
        }
        let size = received.size;
        let sha256 = hex::encode(received.hasher.finalize());

        // From here on the work runs to its end even if the client goes away, so
        // it never stops between storing objects and writing the row.
        let this = Arc::clone(self);
        let accepted = Accepted {
            id,
            kind,
            size,
            sha256,
            original_key,
        };
        tokio::spawn(async move { this.finish(new, quota, upload, accepted).await })
            .await
            .map_err(|err| anyhow::anyhow!("storing an upload: {err}"))?
    }

    /// The scanner's verdict on a received upload: an infected file, or one that
    /// could not be scanned, is an error.
    async fn verdict(&self, upload: &mut Streaming, new: &NewImage) -> Result<Verdict, ImageError> {
        let scanner = self.scanner.name();
        let verdict = match upload.scanned().await {
            Ok(verdict) => verdict,
            Err(err) => {
                count_scan(scanner, scan_failure(&err));
                tracing::warn!(scanner, user_id = %new.user_id, error = %err, "an upload could not be scanned");
                return Err(err.into());
            }
        };
        match verdict {
            Verdict::Infected(signature) => {
                count_scan(scanner, "infected");
                self.malware(new, signature)
            }
            Verdict::Clean => {
                count_scan(scanner, "clean");
                Ok(Verdict::Clean)
            }
            Verdict::NotScanned => {
                count_scan(scanner, "not_scanned");
                Ok(Verdict::NotScanned)
            }
        }
    }

    /// Refuses an infected file, saying so in the log.
    fn malware<T>(&self, new: &NewImage, signature: String) -> Result<T, ImageError> {
        let (origin, job_id) = match new.origin {
            Origin::Upload => ("upload", None),
            Origin::Result { job_id, .. } => ("result", Some(job_id)),
        };
        tracing::warn!(
            scanner = self.scanner.name(),
            user_id = %new.user_id,
            job_id = ?job_id,
            origin,
            signature,
            "malware found, the file is not stored"
        );
        Err(ImageError::MalwareDetected { signature })
    }

    /// The refusal of a file that is no image: for its type, unless the scanner
    /// finds malware in its first bytes (up to [`NON_IMAGE_SCAN_BYTES`]), which is
    /// named as such. Nothing of it was stored. A scanner that is away changes
    /// nothing: the file is refused for its type either way.
    async fn refuse_non_image<S>(
        &self,
        rejection: inspect::Rejection,
        first: Vec<Bytes>,
        body: &mut S,
        received: &mut Received,
        new: &NewImage,
    ) -> ImageError
    where
        S: Stream<Item = Result<Bytes, ImageError>> + Unpin + Send,
    {
        if !self.scanner.scans() || rejection == inspect::Rejection::Empty {
            return rejection.into();
        }
        let scanned = async {
            let mut scan = self.scanner.open().await?;
            for chunk in &first {
                scan.write(chunk).await?;
            }
            while received.size < NON_IMAGE_SCAN_BYTES {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        received.size += chunk.len() as u64;
                        scan.write(&chunk).await?;
                    }
                    // Cut short: what came is scanned.
                    Some(Err(_)) | None => return scan.verdict().await,
                }
            }
            // Too long to scan here: refused for its type.
            Ok(Verdict::NotScanned)
        }
        .await;
        match scanned {
            Ok(Verdict::Infected(signature)) => {
                count_scan(self.scanner.name(), "infected");
                match self.malware::<()>(new, signature) {
                    Err(err) => err,
                    Ok(()) => rejection.into(),
                }
            }
            _ => rejection.into(),
        }
    }

    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.settings.max_pixels,
            max_alloc: self.settings.max_decode_bytes,
        }
    }

    /// Waits for the decoder's verdict on a received upload, completes or replaces
    /// its stored original, stores its thumbnail, and records its row within the
    /// uploader's storage quota; a refusal or failure removes the objects.
    async fn finish(
        &self,
        new: NewImage,
        quota: Option<UploadQuota>,
        mut upload: Streaming,
        accepted: Accepted,
    ) -> Result<(Image, bool), ImageError> {
        let Accepted {
            id,
            kind,
            size,
            sha256,
            original_key,
        } = accepted;
        let inspected = match upload.verdict.take() {
            Some(verdict) => verdict,
            None => joined((&mut upload.decode).await),
        };
        let inspected = match inspected {
            Ok(inspected) => inspected,
            Err(err) => {
                upload.abandon().await;
                return Err(err);
            }
        };
        // The verdict on the bytes as sent, before anything is kept.
        let scanned = match self.verdict(&mut upload, &new).await {
            Ok(verdict) => verdict,
            Err(err) => {
                upload.abandon().await;
                return Err(err);
            }
        };
        let Inspected {
            kind: _,
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
            // The upload as sent is not kept: its location goes.
            Some(bytes) => {
                upload.abandon().await;
                let len = bytes.len() as u64;
                self.put_bytes(&original_key, kind.mime(), bytes).await?;
                len
            }
            None => upload.complete().await?,
        };
        // An image already small enough to show in a gallery is its own thumbnail,
        // unless it shows differently once decoded (turned, located).
        let own_thumbnail = orientation <= 1
            && !had_location
            && matches!(kind, Kind::Jpeg | Kind::Png | Kind::WebP)
            && width.max(height) <= THUMBNAIL_SIZE
            && stored_size <= (thumbnail.len() as u64).max(OWN_THUMBNAIL_MAX_BYTES);
        let (thumbnail_key, thumbnail_mime) = if own_thumbnail {
            (original_key.clone(), kind.mime())
        } else {
            let key = object_key(new.user_id, id, Variant::Thumbnail);
            if let Err(err) = self.put_bytes(&key, thumbnail_mime, thumbnail).await {
                self.remove_objects(&[&original_key]).await;
                return Err(err);
            }
            (key, thumbnail_mime)
        };

        let now = self.clock.now();
        let mut metadata = new.metadata;
        metadata.insert("format".into(), kind.extension().into());
        metadata.insert("orientation".into(), orientation.into());
        metadata.insert("location_stripped".into(), location_stripped.into());
        metadata.insert("had_location".into(), had_location.into());
        metadata.insert("uploaded_size".into(), size.into());
        let (image_kind, job_id, output_index, source_image_id) = match new.origin {
            Origin::Upload => (ImageKind::Original, None, None, None),
            Origin::Result {
                job_id,
                output_index,
                source_image_id,
            } => (
                ImageKind::Result,
                Some(job_id),
                Some(output_index),
                source_image_id,
            ),
        };
        // A result is named by its job (`<input>_<workflow>[_<n>]`); the extension
        // is the one of the type it turned out to be.
        let original_filename = match new.origin {
            Origin::Upload => display_name(&new.filename),
            Origin::Result { .. } => {
                display_name(&format!("{}.{}", new.filename.trim(), kind.extension()))
            }
        };
        let row = ImageRecord {
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
            kind: image_kind,
            job_id,
            output_index,
            source_image_id,
            created_at: now,
            scan_status: match scanned {
                Verdict::Clean => ScanStatus::Clean,
                _ => ScanStatus::NotScanned,
            },
            scanned_at: (scanned == Verdict::Clean).then_some(now),
            scanner: (scanned == Verdict::Clean).then(|| self.scanner.name().to_owned()),
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
                    .insert_checked(&row, |used| quota.check_storage(used, stored_size as i64))
                    .await
            }
            None => self.store.insert(&row).await.map_err(ImageError::from),
        };
        match inserted {
            Ok(true) => {
                tracing::info!(image_id = %row.id, user_id = %row.user_id, size = row.file_size, "image stored");
                metrics::counter!("atelier_images_stored_total", "kind" => image_kind.as_str())
                    .increment(1);
                Ok((self.present(row).await?, false))
            }
            Ok(false) => {
                self.remove_objects(&[&original_key, &thumbnail_key]).await;
                // The job's output was stored already (its result delivered twice).
                if let (Some(job_id), Some(index)) = (job_id, output_index)
                    && let Some(existing) = self.store.by_job_output(job_id, index).await?
                {
                    return Ok((self.present(existing).await?, true));
                }
                Err(ImageError::Internal(anyhow::anyhow!(
                    "image {} was stored twice",
                    row.id
                )))
            }
            Err(err) => {
                self.remove_objects(&[&original_key, &thumbnail_key]).await;
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
    async fn present(&self, row: ImageRecord) -> Result<Image, ImageError> {
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
        row: &ImageRecord,
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
        kind: Option<ImageKind>,
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

    /// Deletes one of `user_id`'s images (its objects first, then its row), recording `record` (`image.deleted`,
    /// completed with the image) in the audit log first: when the entry cannot be
    /// written, nothing is deleted.
    pub async fn delete(
        &self,
        user_id: Uuid,
        id: Uuid,
        audit: &dyn AuditLog,
        record: AuditRecord,
    ) -> Result<(), ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        let mut record = record.target("image", id);
        record.subject_user_id = Some(user_id);
        audit
            .record(
                record
                    .detail("kind", row.kind.as_str())
                    .detail("file_size", row.file_size),
            )
            .await?;
        self.remove(&row).await?;
        tracing::info!(image_id = %id, "image deleted");
        Ok(())
    }

    /// Deletes one of `user_id`'s images without an audit entry: the platform's own
    /// cleanup (a result whose job is gone), not anyone's action.
    pub async fn discard(&self, user_id: Uuid, id: Uuid) -> Result<(), ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        self.remove(&row).await
    }

    async fn remove(&self, row: &ImageRecord) -> Result<(), ImageError> {
        self.delete_objects_of(row).await?;
        self.store.delete(row.user_id, row.id).await?;
        self.store.forget_shares_of(row.id).await?;
        Ok(())
    }

    async fn delete_objects_of(&self, row: &ImageRecord) -> Result<(), ImageError> {
        self.objects.delete(&row.storage_path).await?;
        if let Some(thumbnail) = &row.thumbnail_path
            && *thumbnail != row.storage_path
        {
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
        self.store.delete_shares_of_user(user_id).await?;
        Ok(deleted)
    }

    /// A URL for `id`'s `variant` valid for `ttl` (bounded by the configured TTL),
    /// for a remote worker; checks that `user_id` owns the image. An original of at
    /// most `inline_max` bytes comes as a `data:` URI instead: the worker has the
    /// image itself, and no one has to fetch it.
    pub async fn download_url(
        &self,
        user_id: Uuid,
        id: Uuid,
        variant: Variant,
        ttl: Option<Duration>,
        inline_max: u64,
    ) -> Result<(String, OffsetDateTime, String), ImageError> {
        let row = self
            .store
            .owned(user_id, id)
            .await?
            .ok_or(ImageError::NotFound)?;
        let ttl = ttl.map_or(self.settings.url_ttl, |ttl| ttl.min(self.settings.url_ttl));
        let expires = self.clock.now() + ttl;
        let mime = match variant {
            Variant::Original => row.mime_type.clone(),
            Variant::Thumbnail => row.thumbnail_mime_type.clone().unwrap_or_default(),
        };
        if variant == Variant::Original
            && u64::try_from(row.file_size).unwrap_or(u64::MAX) <= inline_max
        {
            let bytes = self.read_whole(&row.storage_path, inline_max).await?;
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            return Ok((format!("data:{mime};base64,{data}"), expires, mime));
        }
        let url = self.url(&row, variant, ttl, expires).await?;
        Ok((url, expires, mime))
    }

    /// The object at `key`, which its row says is at most `max` bytes.
    async fn read_whole(&self, key: &str, max: u64) -> Result<Vec<u8>, ImageError> {
        let mut body = self.objects.get(key, None).await?.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|err| anyhow::anyhow!("reading {key}: {err}"))?);
            if bytes.len() as u64 > max {
                return Err(anyhow::anyhow!("{key} is larger than its row says").into());
            }
        }
        Ok(bytes)
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
        let verified = self
            .signer
            .verify_any(path, query, self.clock.now())
            .ok_or(ImageError::NotFound)?;
        let mut row = self
            .store
            .by_id(verified.id)
            .await?
            .ok_or(ImageError::NotFound)?;
        if verified.shared {
            // A share's viewer learns nothing of the owner's file name.
            row.original_filename = shares::neutral_name(&row);
        }
        self.read(row, verified.variant, range).await
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
        row: ImageRecord,
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

    /// Bytes and number of every image stored, for the operator's analytics.
    pub async fn platform_usage(&self) -> Result<(i64, i64), ImageError> {
        Ok(self.store.platform_usage().await?)
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
                    self.store.forget_shares_of(row.id).await?;
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

/// What an upload's task counts and hashes as the bytes arrive.
struct Received {
    size: u64,
    limit: u64,
    declared: Option<u64>,
    hasher: Sha256,
}

impl Received {
    /// Refuses `size` bytes over the limit or the uploader's plan.
    fn allow(&self, size: u64, quota: Option<&UploadQuota>) -> Result<(), ImageError> {
        if size > self.limit {
            return Err(ImageError::TooLarge {
                limit_mb: self.limit / (1024 * 1024),
            });
        }
        match quota {
            Some(quota) => quota.check(size),
            None => Ok(()),
        }
    }

    fn take(&mut self, chunk: &[u8], quota: Option<&UploadQuota>) -> Result<(), ImageError> {
        self.size += chunk.len() as u64;
        self.allow(self.size, quota)?;
        if self.declared.is_some_and(|declared| self.size > declared) {
            return Err(self.mismatch());
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Refuses a body that ended short of its declared size.
    fn whole(&self) -> Result<(), ImageError> {
        match self.declared {
            Some(declared) if declared != self.size => Err(self.mismatch()),
            _ => Ok(()),
        }
    }

    fn mismatch(&self) -> ImageError {
        ImageError::field(
            "size_bytes",
            format!(
                "{} bytes were declared, {} or more sent",
                self.declared.unwrap_or_default(),
                self.size
            ),
        )
    }
}

/// What the upload's task hands on to storage.
enum Stored {
    Chunk(Bytes),
    /// The image was accepted: the object may be completed.
    End,
}

/// The chunks for storage as a body: it ends only on [`Stored::End`], and fails
/// when the upload's task drops its sender without it, so that the store never
/// completes an object for an upload that was refused or abandoned.
fn stored_body(chunks: mpsc::Receiver<Stored>) -> ByteStream {
    futures::stream::unfold(Some(chunks), |chunks| async move {
        let mut chunks = chunks?;
        match chunks.recv().await {
            Some(Stored::Chunk(chunk)) => Some((Ok(chunk), Some(chunks))),
            Some(Stored::End) => None,
            None => Some((
                Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the upload stopped before it was accepted",
                )),
                None,
            )),
        }
    })
    .boxed()
}

/// An upload on its way: its decoder, and its storage upload.
struct Streaming {
    /// `None` once the decoder has what it needs.
    to_decoder: Option<mpsc::Sender<Fed>>,
    decode: JoinHandle<Result<Inspected, ImageError>>,
    verdict: Option<Result<Inspected, ImageError>>,
    /// Whether a scan runs (else the verdict is `NotScanned`).
    scans: bool,
    /// `None` once the file ended (closing it ends the scan), or without a scan.
    to_scanner: Option<mpsc::Sender<Bytes>>,
    /// The scan, until its verdict is taken.
    scan: Option<JoinHandle<Result<Verdict, ScanError>>>,
    to_store: mpsc::Sender<Stored>,
    put: JoinHandle<Result<u64, atelier_storage::StorageError>>,
}

impl Streaming {
    /// Hands `chunk` to the decoder (while it reads), the scanner and storage.
    async fn forward(&mut self, chunk: Bytes) -> Result<(), ImageError> {
        if let Some(decoder) = &self.to_decoder
            && decoder.send(Fed::Chunk(chunk.clone())).await.is_err()
        {
            self.to_decoder = None;
        }
        if let Some(scanner) = &self.to_scanner
            && scanner.send(chunk.clone()).await.is_err()
        {
            // The scan stopped early: the scanner failed, and says why.
            self.to_scanner = None;
            if let Err(err) = self.scanned().await {
                return Err(err.into());
            }
        }
        if self.to_store.send(Stored::Chunk(chunk)).await.is_err() {
            // The store stopped reading: it failed, and says why.
            let failed = (&mut self.put).await;
            return Err(match failed {
                Ok(Err(err)) => err.into(),
                Ok(Ok(_)) => anyhow::anyhow!("storage finished before the upload ended").into(),
                Err(err) => anyhow::anyhow!("storing an upload: {err}").into(),
            });
        }
        Ok(())
    }

    /// Stops the decoder and cuts the storage upload short, and waits until the
    /// store has let go of it (an S3 multipart upload aborted), so nothing is left
    /// once the refusal is answered.
    async fn abandon(self) {
        let Self {
            to_decoder,
            to_scanner,
            scan,
            to_store,
            put,
            ..
        } = self;
        if let Some(scan) = scan {
            scan.abort();
        }
        drop((to_decoder, to_scanner, to_store));
        // It fails: its body ends without `Stored::End`.
        let _ = put.await;
    }

    /// Ends the file for the scanner, and waits for its verdict (once).
    async fn scanned(&mut self) -> Result<Verdict, ScanError> {
        self.to_scanner = None;
        if !self.scans {
            return Ok(Verdict::NotScanned);
        }
        match self.scan.take() {
            Some(scan) => match scan.await {
                Ok(verdict) => verdict,
                Err(err) => Err(ScanError::Failed(format!("the scan stopped: {err}"))),
            },
            None => Err(ScanError::Failed("the scan was already taken".into())),
        }
    }

    /// Lets the store complete the object; its stored size.
    async fn complete(self) -> Result<u64, ImageError> {
        // The store reads until this end, unless it failed (it says why below).
        let _ = self.to_store.send(Stored::End).await;
        drop(self.to_store);
        match self.put.await {
            Ok(stored) => Ok(stored?),
            Err(err) => Err(anyhow::anyhow!("storing an upload: {err}").into()),
        }
    }
}

/// Hands the chunks to `scan` until the file ends (the sender is dropped), then
/// asks for the verdict.
async fn scan_chunks(
    mut scan: Box<dyn Scan>,
    mut chunks: mpsc::Receiver<Bytes>,
) -> Result<Verdict, ScanError> {
    while let Some(chunk) = chunks.recv().await {
        scan.write(&chunk).await?;
    }
    scan.verdict().await
}

/// Counts a scan's outcome: `clean`, `infected`, `not_scanned`, `unavailable` or
/// `failed`.
fn count_scan(scanner: &'static str, outcome: &'static str) {
    metrics::counter!("atelier_image_scans_total", "scanner" => scanner, "outcome" => outcome)
        .increment(1);
}

fn scan_failure(err: &ScanError) -> &'static str {
    match err {
        ScanError::Unavailable(_) => "unavailable",
        ScanError::Failed(_) => "failed",
    }
}

/// A received upload's facts, for [`Images::finish`].
struct Accepted {
    id: Uuid,
    kind: Kind,
    size: u64,
    sha256: String,
    original_key: String,
}

/// A decode's result, with a decoder that panicked as an internal error.
fn joined(
    decoded: Result<Result<Inspected, ImageError>, tokio::task::JoinError>,
) -> Result<Inspected, ImageError> {
    decoded.map_err(|err| anyhow::anyhow!("decoding an image: {err}"))?
}

/// Inspects an upload as it arrives (see [`inspect::inspect_stream`]); one that
/// needs its whole file is spooled to `tmp_dir` as it arrives and inspected once
/// whole, holding its decode slot throughout.
fn inspect_upload(
    kind: Kind,
    fed: mpsc::Receiver<Fed>,
    slot: &mut Slot,
    limits: DecodeLimits,
    strip_location: bool,
    tmp_dir: &Path,
) -> Result<Inspected, ImageError> {
    let mut feed = Feed::new(fed, slot);
    match inspect::inspect_stream(kind, &mut feed, limits, strip_location) {
        Ok(Some(inspected)) => return Ok(inspected),
        Ok(None) => {}
        Err(_) if feed.overflowed() => {}
        Err(rejection) => return Err(rejection.into()),
    }
    tracing::debug!(
        kind = kind.extension(),
        "inspecting an upload once it is whole"
    );
    let spooled = (|| -> io::Result<tempfile::NamedTempFile> {
        let mut file = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(tmp_dir)?;
        let mut out = io::BufWriter::with_capacity(256 * 1024, file.as_file_mut());
        feed.spool(&mut out)?;
        out.flush()?;
        drop(out);
        Ok(file)
    })()
    .map_err(|err| anyhow::anyhow!("spooling an upload: {err}"))?;
    slot.hold();
    Ok(inspect::inspect(spooled.path(), limits, strip_location)?)
}

fn key_of(row: &ImageRecord, variant: Variant) -> Option<&str> {
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
