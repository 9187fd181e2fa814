//! The user service's gRPC handlers: decode, authorize, call the domain, encode.

use std::sync::Arc;

use atelier_common::{
    FieldViolation,
    grpc::{RequestOrigin, caller},
    json::{from_struct, map_to_struct},
    timestamp,
};
use atelier_proto::user::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{Limits, Notifications, Profile, Settings, Theme, Tier, Usage, Users, settings},
    error::UserError,
    peers::{Credentials, GrpcPeers},
};

pub struct UserApi {
    users: Users,
    /// Where history pages are read from.
    peers: Arc<GrpcPeers>,
}

fn tier_code(tier: Tier) -> i32 {
    let tier = match tier {
        Tier::Free => pb::SubscriptionTier::Free,
        Tier::Pro => pb::SubscriptionTier::Pro,
        Tier::Enterprise => pb::SubscriptionTier::Enterprise,
    };
    tier as i32
}

fn encode_limits(limits: Limits) -> pb::QuotaLimits {
    pb::QuotaLimits {
        jobs_per_day: limits.jobs_per_day,
        concurrent_jobs: limits.concurrent_jobs,
        storage_bytes: limits.storage_bytes,
        max_file_size_bytes: limits.max_file_size_bytes,
        max_retention_days: limits.max_retention_days,
        parallel_jobs: limits.parallel_jobs,
        high_priority: Some(limits.high_priority),
        daily_budget: limits.daily_budget,
        monthly_budget: limits.monthly_budget,
    }
}

fn encode_usage(usage: Usage) -> pb::Usage {
    pb::Usage {
        jobs_today: usage.jobs_today,
        active_jobs: usage.active_jobs,
        storage_bytes: usage.storage_bytes,
        image_count: usage.image_count,
        period_start: Some(timestamp(usage.period_start)),
        period_end: Some(timestamp(usage.period_end)),
    }
}

fn encode_settings(settings: &Settings) -> pb::Settings {
    pb::Settings {
        schema_version: settings::SCHEMA_VERSION,
        default_workflow_id: settings.default_workflow_id.clone().unwrap_or_default(),
        workflow_defaults: settings
            .workflow_defaults
            .iter()
            .map(|(id, parameters)| (id.clone(), map_to_struct(parameters)))
            .collect(),
        retention_days: settings.retention_days,
        notifications: Some(pb::NotificationSettings {
            job_completed: settings.notifications.job_completed,
            job_failed: settings.notifications.job_failed,
            quota_warning: settings.notifications.quota_warning,
        }),
        theme: theme_code(settings.theme),
    }
}

fn theme_code(theme: Theme) -> i32 {
    let theme = match theme {
        Theme::System => pb::Theme::System,
        Theme::Light => pb::Theme::Light,
        Theme::Dark => pb::Theme::Dark,
    };
    theme as i32
}

fn decode_settings(settings: pb::Settings) -> Result<Settings, FieldViolation> {
    let theme = match pb::Theme::try_from(settings.theme) {
        Ok(pb::Theme::Unspecified | pb::Theme::System) => Theme::System,
        Ok(pb::Theme::Light) => Theme::Light,
        Ok(pb::Theme::Dark) => Theme::Dark,
        Err(_) => return Err(FieldViolation::new("theme", "is not a known theme")),
    };
    let notifications = settings
        .notifications
        .map(|n| Notifications {
            job_completed: n.job_completed,
            job_failed: n.job_failed,
            quota_warning: n.quota_warning,
        })
        .unwrap_or_default();
    Ok(Settings {
        schema_version: settings.schema_version,
        default_workflow_id: Some(settings.default_workflow_id).filter(|id| !id.is_empty()),
        workflow_defaults: settings
            .workflow_defaults
            .into_iter()
            .map(|(id, parameters)| (id, from_struct(Some(parameters))))
            .collect(),
        retention_days: settings.retention_days,
        notifications,
        theme,
    })
}

/// The ETag of a settings revision.
fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// The revision an `If-Match` ETag names: `None` for any (empty or `*`).
fn expected_revision(etag: &str) -> Result<Option<i64>, UserError> {
    match etag.trim() {
        "" | "*" => Ok(None),
        tag => tag
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<i64>()
            .map(Some)
            // Not one of ours: it cannot match.
            .map_err(|_| UserError::StaleSettings),
    }
}

/// The settings of `profile` as served: the document, its ETag, when it changed,
/// its revision.
fn settings_reply(profile: &Profile) -> pb::GetSettingsResponse {
    pb::GetSettingsResponse {
        settings: Some(encode_settings(&profile.settings)),
        etag: etag(profile.settings_revision),
        updated_at: Some(timestamp(profile.updated_at)),
        revision: profile.settings_revision,
    }
}

fn user_id(raw: &str) -> Result<Uuid, UserError> {
    Uuid::parse_str(raw).map_err(|_| {
        UserError::InvalidInput(vec![FieldViolation::new("user_id", "is not a valid id")])
    })
}

impl UserApi {
    pub fn new(users: Users, peers: Arc<GrpcPeers>) -> Self {
        Self { users, peers }
    }

    async fn profile(&self, profile: &Profile, email: String) -> Result<pb::Profile, UserError> {
        Ok(pb::Profile {
            user_id: profile.user_id.to_string(),
            email,
            display_name: profile.display_name.clone(),
            subscription_tier: tier_code(profile.tier),
            created_at: Some(timestamp(profile.created_at)),
            updated_at: Some(timestamp(profile.updated_at)),
            usage: Some(encode_usage(self.users.usage(profile.user_id).await?)),
            limits: Some(encode_limits(self.users.limits(profile.tier))),
        })
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let caller = caller(&request)?;
        let profile = self.users.profile(caller.user_id).await?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(self.profile(&profile, caller.email).await?),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let caller = caller(&request)?;
        let profile = match request.into_inner().display_name {
            Some(name) => self.users.rename(caller.user_id, &name).await?,
            None => self.users.profile(caller.user_id).await?,
        };
        Ok(Response::new(pb::UpdateProfileResponse {
            profile: Some(self.profile(&profile, caller.email).await?),
        }))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let caller = caller(&request)?;
        let profile = self.users.profile(caller.user_id).await?;
        Ok(Response::new(settings_reply(&profile)))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::UpdateSettingsResponse>, Status> {
        let caller = caller(&request)?;
        let origin = RequestOrigin::of(&request);
        let request = request.into_inner();
        let expected = expected_revision(&request.etag)?;
        let settings = decode_settings(request.settings.unwrap_or_default())
            .map_err(|violation| UserError::InvalidInput(vec![violation]))?;
        let profile = self
            .users
            .update_settings(caller.user_id, settings, expected, &origin)
            .await?;
        let stored = settings_reply(&profile);
        Ok(Response::new(pb::UpdateSettingsResponse {
            settings: stored.settings,
            etag: stored.etag,
            updated_at: stored.updated_at,
            revision: stored.revision,
        }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let caller = caller(&request)?;
        let profile = self.users.profile(caller.user_id).await?;
        Ok(Response::new(pb::GetUsageResponse {
            tier: tier_code(profile.tier),
            usage: Some(encode_usage(self.users.usage(caller.user_id).await?)),
            limits: Some(encode_limits(self.users.limits(profile.tier))),
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(self.peers.history(&request).await?))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = caller(&request)?;
        self.users
            .delete_account(caller.user_id, &Credentials::of(&request))
            .await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn get_quota(
        &self,
        request: Request<pb::GetQuotaRequest>,
    ) -> Result<Response<pb::GetQuotaResponse>, Status> {
        let quota = self
            .users
            .quota(user_id(&request.get_ref().user_id)?)
            .await?;
        Ok(Response::new(pb::GetQuotaResponse {
            tier: tier_code(quota.tier),
            limits: Some(encode_limits(quota.limits)),
            period_start: Some(timestamp(quota.period_start)),
            period_end: Some(timestamp(quota.period_end)),
            retention_days: quota.retention_days,
        }))
    }

    async fn set_subscription_tier(
        &self,
        request: Request<pb::SetSubscriptionTierRequest>,
    ) -> Result<Response<pb::SetSubscriptionTierResponse>, Status> {
        let origin = RequestOrigin::of(&request);
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let tier = tier_of(request.tier)?;
        let profile = self.users.set_tier(user_id, tier, &origin).await?;
        Ok(Response::new(pb::SetSubscriptionTierResponse {
            profile: Some(self.profile(&profile, String::new()).await?),
        }))
    }

    async fn admin_get_subscription_tiers(
        &self,
        request: Request<pb::AdminGetSubscriptionTiersRequest>,
    ) -> Result<Response<pb::AdminGetSubscriptionTiersResponse>, Status> {
        let request = request.into_inner();
        if request.user_ids.len() > MAX_TIER_LOOKUPS {
            return Err(UserError::InvalidInput(vec![FieldViolation::new(
                "user_ids",
                format!("must hold at most {MAX_TIER_LOOKUPS} ids"),
            )])
            .into());
        }
        let ids = request
            .user_ids
            .iter()
            .map(|id| user_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let tiers = self.users.tiers(&ids).await?;
        Ok(Response::new(pb::AdminGetSubscriptionTiersResponse {
            tiers: request
                .user_ids
                .into_iter()
                .zip(tiers)
                .map(|(user_id, tier)| pb::UserTier {
                    user_id,
                    tier: tier_code(tier),
                })
                .collect(),
        }))
    }

    async fn admin_set_subscription_tier(
        &self,
        request: Request<pb::AdminSetSubscriptionTierRequest>,
    ) -> Result<Response<pb::AdminSetSubscriptionTierResponse>, Status> {
        let origin = RequestOrigin::of(&request);
        let actor = caller(&request).ok().map(|caller| caller.user_id);
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let tier = tier_of(request.tier)?;
        let profile = self
            .users
            .set_tier_as(user_id, tier, &origin, actor)
            .await?;
        Ok(Response::new(pb::AdminSetSubscriptionTierResponse {
            profile: Some(self.profile(&profile, String::new()).await?),
        }))
    }
}

/// Most users one tier lookup names.
const MAX_TIER_LOOKUPS: usize = 100;

/// The tier a request names.
fn tier_of(code: i32) -> Result<Tier, UserError> {
    match pb::SubscriptionTier::try_from(code) {
        Ok(pb::SubscriptionTier::Free) => Ok(Tier::Free),
        Ok(pb::SubscriptionTier::Pro) => Ok(Tier::Pro),
        Ok(pb::SubscriptionTier::Enterprise) => Ok(Tier::Enterprise),
        _ => Err(UserError::InvalidInput(vec![FieldViolation::new(
            "tier",
            "must be free, pro or enterprise",
        )])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_the_proto_round_trip() {
        let mut settings = Settings {
            schema_version: settings::SCHEMA_VERSION,
            default_workflow_id: Some("upscale".to_owned()),
            retention_days: Some(14),
            theme: Theme::Dark,
            ..Settings::default()
        };
        settings.workflow_defaults.insert(
            "upscale".to_owned(),
            serde_json::json!({"scale": 4})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(
            decode_settings(encode_settings(&settings)).ok(),
            Some(settings)
        );
        let bad = pb::Settings {
            theme: 42,
            ..pb::Settings::default()
        };
        assert_eq!(
            decode_settings(bad).err().map(|v| v.field),
            Some("theme".to_owned())
        );
    }

    #[test]
    fn etags_name_a_revision_or_any() {
        assert_eq!(expected_revision(" * ").ok(), Some(None));
        assert_eq!(expected_revision("W/\"7\"").ok(), Some(Some(7)));
        assert!(matches!(
            expected_revision("\"abc\""),
            Err(UserError::StaleSettings)
        ));
    }
}
