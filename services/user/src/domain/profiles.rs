//! Profiles: one per account, made with the defaults (free tier) the first time
//! the account is met, and deleted last when the account is.

use atelier_common::FieldViolation;
use atelier_common::audit::{AuditRecord, RequestOrigin};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Settings, Tier, Users};
use crate::{error::UserError, peers::Credentials};

/// A user's profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub user_id: Uuid,
    pub display_name: String,
    pub tier: Tier,
    pub settings: Settings,
    /// Bumped by every change of the settings (their ETag).
    pub settings_revision: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A display name as stored: trimmed, at most 100 characters, no control characters.
pub fn display_name(raw: &str) -> Result<String, FieldViolation> {
    let name = raw.trim();
    if name.chars().count() > 100 {
        return Err(FieldViolation::new(
            "display_name",
            "must be at most 100 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

impl Users {
    /// The user's profile, made with the defaults (free tier) if this is the first
    /// time the user is met. A profile is only ever made for an account auth knows:
    /// one made for a deleted account is removed again, so deletion leaves nothing.
    pub async fn profile(&self, user_id: Uuid) -> Result<Profile, UserError> {
        let now = self.clock.now();
        let (profile, created) = self
            .store
            .ensure(&Profile {
                user_id,
                display_name: String::new(),
                tier: Tier::Free,
                settings: Settings::default(),
                settings_revision: 0,
                created_at: now,
                updated_at: now,
            })
            .await?;
        if created {
            // Asked after the insert: an account deleted before this answer is gone
            // here too, and one deleted after it has its profile removed by the
            // deletion, which removes the profile after the account.
            let exists = match self.peers.accounts.exists(user_id).await {
                Ok(exists) => exists,
                Err(err) => {
                    self.store.delete(user_id).await?;
                    return Err(err);
                }
            };
            if !exists {
                self.store.delete(user_id).await?;
                tracing::info!(%user_id, "refused a profile for an account that does not exist");
                return Err(UserError::AccountNotFound);
            }
        }
        Ok(profile)
    }

    /// Renames the user, when `raw` is a valid display name.
    pub async fn rename(&self, user_id: Uuid, raw: &str) -> Result<Profile, UserError> {
        self.profile(user_id).await?;
        let name =
            display_name(raw).map_err(|violation| UserError::InvalidInput(vec![violation]))?;
        self.store
            .set_display_name(user_id, &name, self.clock.now())
            .await?;
        self.profile(user_id).await
    }

    /// Moves the user to `tier`, recording it in the audit log (`user.tier_changed`)
    /// before the change commits: when the entry cannot be written, nothing changes.
    pub async fn set_tier(
        &self,
        user_id: Uuid,
        tier: Tier,
        origin: &RequestOrigin,
    ) -> Result<Profile, UserError> {
        self.set_tier_as(user_id, tier, origin, None).await
    }

    /// [`Users::set_tier`] by `actor` (an administrator; `None` for the
    /// operator).
    pub async fn set_tier_as(
        &self,
        user_id: Uuid,
        tier: Tier,
        origin: &RequestOrigin,
        actor: Option<Uuid>,
    ) -> Result<Profile, UserError> {
        let before = self.profile(user_id).await?;
        let record = AuditRecord::new("user.tier_changed", origin.clone())
            .actor(actor)
            .about_user(user_id)
            .detail("previous_tier", before.tier.as_str())
            .detail("tier", tier.as_str());
        self.store
            .set_tier(
                user_id,
                tier,
                self.clock.now(),
                self.peers.audit.record(record),
            )
            .await?;
        self.profile(user_id).await
    }

    /// The tiers of `user_ids`, in order; a user without a profile yet is on
    /// the free plan (their profile is made with it when first met).
    pub async fn tiers(&self, user_ids: &[Uuid]) -> Result<Vec<Tier>, UserError> {
        let known: std::collections::HashMap<Uuid, Tier> =
            self.store.tiers(user_ids).await?.into_iter().collect();
        Ok(user_ids
            .iter()
            .map(|id| known.get(id).copied().unwrap_or(Tier::Free))
            .collect())
    }

    /// Deletes the caller's account and everything of it. Jobs first, so no worker
    /// stores a new result afterwards; then images and their objects; then the
    /// account (which ends its sessions); the profile last. Every step is
    /// idempotent: a failed deletion can simply be repeated.
    pub async fn delete_account(
        &self,
        user_id: Uuid,
        caller: &Credentials,
    ) -> Result<(), UserError> {
        self.peers.jobs.delete_all(user_id).await?;
        self.peers.images.delete_all(user_id).await?;
        self.peers.accounts.delete(caller).await?;
        self.store.delete(user_id).await?;
        tracing::info!(%user_id, "account deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(display_name("  Ada  ").ok().as_deref(), Some("Ada"));
        assert!(display_name(&"x".repeat(101)).is_err());
        assert!(display_name("a\u{7}b").is_err());
    }
}
