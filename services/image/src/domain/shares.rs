//! Share links: a public page showing one of a user's images (optionally beside
//! the image it was made from) to anyone holding the link, until it expires or
//! its owner revokes it.
//!
//! The link carries a token of 32 random bytes (base64url); only its SHA-256 is
//! kept, so the token is shown once, at creation, and a copy of the database
//! opens no link. A token is looked up by its hash (an index lookup on a value an
//! attacker cannot steer towards a stored one), and the hash found is compared
//! again in constant time. Unknown, revoked and expired tokens, and links whose
//! image is gone, all get the same refusal after the same single lookup.
//!
//! The viewer gets short-lived URLs of the shared images only, always served by
//! the gateway (never S3 presigned URLs, whose object keys name the owner), signed
//! for that image and marked shared, so they are served under a neutral name.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ImageRecord, Images, ShareLinkRecord, signing::Variant};
use crate::error::ImageError;

/// The shortest life a link may be given.
pub const MIN_TTL: Duration = Duration::from_secs(60);

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// How long share links live.
#[derive(Clone, Debug)]
pub struct ShareSettings {
    /// When the creator names no expiry (`SHARE_DEFAULT_DAYS`, 7).
    pub default_ttl: Duration,
    /// The longest expiry allowed (`SHARE_MAX_DAYS`, 90).
    pub max_ttl: Duration,
}

impl Default for ShareSettings {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_ttl: Duration::from_secs(90 * 24 * 60 * 60),
        }
    }
}

/// When a new link stops working.
#[derive(Clone, Copy, Debug)]
pub enum Expiry {
    /// After the configured default.
    Default,
    /// This long after it is created.
    In(Duration),
    /// At this instant.
    At(OffsetDateTime),
}

/// What a new link shows beside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    /// Nothing: the image alone.
    None,
    /// The image it was made from (a result's job input).
    Source,
    /// This image of the owner's.
    Image(Uuid),
}

#[derive(Clone, Debug)]
pub struct NewShare {
    pub user_id: Uuid,
    pub image_id: Uuid,
    pub expiry: Expiry,
    pub before: Before,
}

/// A link just created, and its token (never kept).
#[derive(Clone, Debug)]
pub struct Created {
    pub link: ShareLinkRecord,
    pub token: String,
}

/// One image as a share's viewer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedImage {
    pub mime_type: String,
    pub width: u32,
    pub height: u32,
    pub file_size: i64,
    pub url: String,
}

/// What a share link shows.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedView {
    pub image: SharedImage,
    pub before: Option<SharedImage>,
    pub expires_at: OffsetDateTime,
    pub url_expires_at: OffsetDateTime,
}

pub struct Shares {
    images: Arc<Images>,
    settings: ShareSettings,
}

/// The hex SHA-256 of a token: what the store keeps and looks up.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of one this service issues (43 base64url
/// characters for 32 bytes).
fn well_formed(token: &str) -> bool {
    token.len() == 43
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|bytes| bytes.len() == TOKEN_BYTES)
}

/// The name a shared image is served under: nothing of its owner's file name.
pub fn neutral_name(row: &ImageRecord) -> String {
    let extension = row
        .filename
        .rsplit_once('.')
        .map_or("img", |(_, extension)| extension);
    format!("shared.{extension}")
}

fn count_view(outcome: &'static str) {
    metrics::counter!("atelier_share_views_total", "outcome" => outcome).increment(1);
}

impl Shares {
    pub fn new(images: Arc<Images>, settings: ShareSettings) -> Self {
        Self { images, settings }
    }

    pub fn settings(&self) -> &ShareSettings {
        &self.settings
    }

    /// When a link created at `now` with `expiry` stops working, within the bounds.
    fn expires_at(
        &self,
        expiry: Expiry,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, ImageError> {
        let (field, at) = match expiry {
            Expiry::Default => return Ok(now + self.settings.default_ttl),
            Expiry::In(ttl) => ("expires_in_seconds", now + ttl),
            Expiry::At(at) => ("expires_at", at),
        };
        if at < now + MIN_TTL {
            return Err(ImageError::field(
                field,
                format!("must be at least {} seconds from now", MIN_TTL.as_secs()),
            ));
        }
        if at > now + self.settings.max_ttl {
            return Err(ImageError::field(
                field,
                format!(
                    "must be at most {} days from now",
                    self.settings.max_ttl.as_secs() / (24 * 60 * 60)
                ),
            ));
        }
        Ok(at)
    }

    /// Creates a link to one of the owner's images; another user's image, or
    /// another user's "before" image, is not found.
    pub async fn create(&self, new: NewShare) -> Result<Created, ImageError> {
        let store = &self.images.store;
        let now = self.images.clock.now();
        let expires_at = self.expires_at(new.expiry, now)?;
        let image = store
            .owned(new.user_id, new.image_id)
            .await?
            .ok_or(ImageError::NotFound)?;
        let before_image_id = match new.before {
            Before::None => None,
            Before::Image(id) if id == image.id => {
                return Err(ImageError::field(
                    "before_image_id",
                    "must be another image than the one shared",
                ));
            }
            Before::Image(id) => Some(
                store
                    .owned(new.user_id, id)
                    .await?
                    .ok_or(ImageError::NotFound)?
                    .id,
            ),
            Before::Source => {
                let source = match image.source_image_id {
                    Some(id) => store.owned(new.user_id, id).await?,
                    None => None,
                };
                Some(
                    source
                        .ok_or_else(|| {
                            ImageError::field(
                                "before_after",
                                "the image was not made from another image you still have; name one in before_image_id",
                            )
                        })?
                        .id,
                )
            }
        };
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let link = ShareLinkRecord {
            id: Uuid::now_v7(),
            user_id: new.user_id,
            image_id: image.id,
            before_image_id,
            token_hash: token_hash(&token),
            expires_at,
            revoked_at: None,
            created_at: now,
            view_count: 0,
            last_viewed_at: None,
        };
        store.insert_share(&link).await?;
        tracing::info!(share_id = %link.id, image_id = %link.image_id, user_id = %link.user_id, before = before_image_id.is_some(), "share link created");
        metrics::counter!("atelier_share_links_created_total").increment(1);
        Ok(Created { link, token })
    }

    /// One page of the owner's links, newest first, and the id to continue after.
    pub async fn list(
        &self,
        user_id: Uuid,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<ShareLinkRecord>, Option<Uuid>), ImageError> {
        let mut links = self
            .images
            .store
            .share_page(user_id, after, page_size + 1)
            .await?;
        let next = if links.len() as u64 > page_size {
            links.truncate(page_size as usize);
            links.last().map(|link| link.id)
        } else {
            None
        };
        Ok((links, next))
    }

    /// Revokes one of the owner's links (again: nothing changes).
    pub async fn revoke(&self, user_id: Uuid, id: Uuid) -> Result<ShareLinkRecord, ImageError> {
        let store = &self.images.store;
        store
            .owned_share(user_id, id)
            .await?
            .ok_or(ImageError::ShareNotFound)?;
        store
            .revoke_share(user_id, id, self.images.clock.now())
            .await?;
        tracing::info!(share_id = %id, %user_id, "share link revoked");
        store
            .owned_share(user_id, id)
            .await?
            .ok_or(ImageError::ShareNotFound)
    }

    /// What the link of `token` shows, with fresh URLs, counting the view.
    pub async fn view(&self, token: &str) -> Result<SharedView, ImageError> {
        let viewed = self.open(token).await;
        count_view(if viewed.is_ok() { "shown" } else { "refused" });
        viewed
    }

    async fn open(&self, token: &str) -> Result<SharedView, ImageError> {
        if !well_formed(token) {
            return Err(ImageError::ShareUnavailable);
        }
        let store = &self.images.store;
        let hash = token_hash(token);
        let link = store
            .share_by_token(&hash)
            .await?
            .ok_or(ImageError::ShareUnavailable)?;
        let now = self.images.clock.now();
        let matches = bool::from(link.token_hash.as_bytes().ct_eq(hash.as_bytes()));
        if !matches || link.revoked_at.is_some() || link.expires_at <= now {
            return Err(ImageError::ShareUnavailable);
        }
        let image = store
            .owned(link.user_id, link.image_id)
            .await?
            .ok_or(ImageError::ShareUnavailable)?;
        let before = match link.before_image_id {
            Some(id) => store.owned(link.user_id, id).await?,
            None => None,
        };
        // The URLs last the configured URL lifetime, never past the link.
        let url_expires_at = (now + self.images.settings.url_ttl).min(link.expires_at);
        let shared = |row: &ImageRecord| SharedImage {
            mime_type: row.mime_type.clone(),
            width: row.width.max(0) as u32,
            height: row.height.max(0) as u32,
            file_size: row.file_size,
            url: format!(
                "{}{}",
                self.images.settings.public_base,
                self.images
                    .signer
                    .sign_shared(row.id, Variant::Original, url_expires_at)
            ),
        };
        let view = SharedView {
            image: shared(&image),
            before: before.as_ref().map(shared),
            expires_at: link.expires_at,
            url_expires_at,
        };
        store.count_share_view(link.id, now).await?;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_recognised_by_shape_and_hashed() {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; TOKEN_BYTES]);
        assert!(well_formed(&token));
        assert!(!well_formed(&token[1..]));
        assert!(!well_formed(&format!("{}=", &token[1..])));
        assert!(!well_formed(""));
        assert!(!well_formed(&"/".repeat(43)));
        assert_eq!(token_hash(&token).len(), 64);
        assert_ne!(token_hash(&token), token_hash(&token.replace('B', "C")));
    }
}
