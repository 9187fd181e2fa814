//! What other services decide about arriving images: how much the uploader's
//! tier lets them store and for how long, and whether the job a result is for
//! still exists.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use super::{Image, Images, NewImage, UploadQuota};
use crate::{
    error::ImageError,
    peers::{JobRegistry, TierSource},
};

pub struct Intake {
    images: Arc<Images>,
    tiers: Arc<dyn TierSource>,
    jobs: Arc<dyn JobRegistry>,
}

impl Intake {
    pub fn new(
        images: Arc<Images>,
        tiers: Arc<dyn TierSource>,
        jobs: Arc<dyn JobRegistry>,
    ) -> Self {
        Self {
            images,
            tiers,
            jobs,
        }
    }

    /// What the uploader's tier allows and what they store already.
    pub async fn upload_quota(&self, user_id: Uuid) -> Result<UploadQuota, ImageError> {
        let (tier, (storage_used, _)) =
            tokio::try_join!(self.tiers.tier(user_id), self.images.usage(user_id))?;
        Ok(UploadQuota {
            tier: tier.tier,
            max_file_size_bytes: tier.max_file_size_bytes,
            storage_bytes: tier.storage_bytes,
            storage_used,
            retention_days: tier.retention_days,
        })
    }

    /// How long `user_id`'s images are kept: their choice within their tier,
    /// `None` for the service's default.
    pub async fn retention(&self, user_id: Uuid) -> Result<Option<u32>, ImageError> {
        Ok(self.tiers.tier(user_id).await?.retention_days)
    }

    /// Stores the result `new` of job `job_id`, and whether it was stored already.
    ///
    /// A result is only for a job that exists, its owner's: checked once it is
    /// stored, which also covers a job deleted meanwhile. The caller is the
    /// processing service storing its own job's output, so a check before reading
    /// would only repeat that one. Results are not refused for quota (the job
    /// already ran).
    pub async fn store_result<S>(
        &self,
        new: NewImage,
        job_id: Uuid,
        body: S,
    ) -> Result<(Image, bool), ImageError>
    where
        S: Stream<Item = Result<Bytes, ImageError>> + Unpin + Send,
    {
        let owner = new.user_id;
        let (image, already_stored) = self.images.upload(new, None, body).await?;
        // Deleting a user's jobs comes before deleting their images, so a job still
        // there now has its images deleted with it later; a job gone now takes its
        // result back out here. Unsure (processing unreachable): taken out too, and
        // the worker tries again.
        let kept = self.jobs.exists(owner, job_id).await;
        if !matches!(kept, Ok(true)) {
            match self.images.discard(owner, image.row.id).await {
                // Deleted with the account's images already.
                Ok(()) | Err(ImageError::NotFound) => {}
                Err(err) => return Err(err),
            }
            tracing::info!(%job_id, image_id = %image.row.id, "result removed, its job is gone");
            kept?;
            return Err(ImageError::JobNotFound);
        }
        Ok((image, already_stored))
    }
}
