//! The user service's gRPC handlers.

use std::{collections::HashMap, sync::Arc};

use atelier_common::{
    Clock, FieldViolation,
    grpc::{caller, on_behalf},
    json::{from_struct, map_to_struct},
    timestamp,
};
use atelier_proto::{
    auth::v1::{
        DeleteCurrentUserRequest, GetSessionStateRequest, auth_service_client::AuthServiceClient,
    },
    image::v1::{
        BatchGetImagesRequest, DeleteUserImagesRequest, GetStorageUsageRequest, Image,
        UpdateRetentionRequest, image_service_client::ImageServiceClient,
    },
    processing::v1::{
        DeleteUserJobsRequest, GetJobUsageRequest, ListJobsRequest,
        processing_service_client::ProcessingServiceClient,
    },
    user::v1::{self as pb, user_service_server::UserService},
    workflow::v1::{
        GetWorkflowRequest, ValidateParametersRequest,
        workflow_service_client::WorkflowServiceClient,
    },
};
use futures::StreamExt;
use time::{Duration, OffsetDateTime, Time};
use tonic::{Code, Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    error::UserError,
    settings::{self, Notifications, Settings, Theme},
    store::{ProfileRow, Store},
    tiers::{Limits, Tier, Tiers},
};

/// Default parameters checked with the workflow service at once, at most.
const VALIDATIONS_AT_ONCE: usize = 8;

/// The other services the user service reads from and deletes through.
#[derive(Clone)]
pub struct Peers {
    pub auth: Channel,
    pub image: Channel,
    pub processing: Channel,
    pub workflow: Channel,
}

pub struct UserApi {
    store: Store,
    tiers: Tiers,
    clock: Arc<dyn Clock>,
    auth: AuthServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    jobs: ProcessingServiceClient<Channel>,
    workflows: WorkflowServiceClient<Channel>,
}

/// The current quota window: the UTC day around `now`.
pub fn quota_window(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let start = now
        .to_offset(time::UtcOffset::UTC)
        .replace_time(Time::MIDNIGHT);
    (start, start + Duration::days(1))
}

fn tier_of(row: &ProfileRow) -> Tier {
    row.subscription_tier.parse().unwrap_or(Tier::Free)
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
/// What is wrong with the default `parameters` of workflow `id`.
async fn default_violations(
    mut workflows: WorkflowServiceClient<Channel>,
    id: String,
    parameters: prost_types::Struct,
) -> Result<Vec<FieldViolation>, Status> {
    let field = format!("workflow_defaults.{id}");
    match workflows
        .validate_parameters(ValidateParametersRequest {
            workflow_id: id,
            parameters: Some(parameters),
        })
        .await
    {
        Ok(reply) => Ok(reply
            .into_inner()
            .violations
            .into_iter()
            .map(|violation| {
                FieldViolation::new(
                    format!("{field}{}", violation.field.replace('/', ".")),
                    violation.description,
                )
            })
            .collect()),
        Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {
            Ok(vec![FieldViolation::new(
                field,
                "is not a workflow of the catalogue",
            )])
        }
        Err(status) => Err(status),
    }
}

fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// The settings of `row` as served: the document, its ETag, when it changed, its revision.
fn settings_reply(row: &ProfileRow) -> pb::GetSettingsResponse {
    pb::GetSettingsResponse {
        settings: Some(encode_settings(&Settings::from_stored(&row.settings))),
        etag: etag(row.settings_revision),
        updated_at: Some(timestamp(row.updated_at)),
        revision: row.settings_revision,
    }
}

fn user_id(raw: &str) -> Result<Uuid, UserError> {
    Uuid::parse_str(raw).map_err(|_| {
        UserError::InvalidInput(vec![FieldViolation::new("user_id", "is not a valid id")])
    })
}

impl UserApi {
    pub fn new(store: Store, tiers: Tiers, clock: Arc<dyn Clock>, peers: Peers) -> Self {
        Self {
            store,
            tiers,
            clock,
            auth: AuthServiceClient::new(peers.auth),
            images: ImageServiceClient::new(peers.image),
            jobs: ProcessingServiceClient::new(peers.processing),
            workflows: WorkflowServiceClient::new(peers.workflow),
        }
    }

    /// The user's profile, made with the defaults (free tier) if this is the first
    /// time the user is met. A profile is only ever made for an account auth knows:
    /// one made for a deleted account is removed again, so deletion leaves nothing.
    async fn profile_row(&self, user_id: Uuid) -> Result<ProfileRow, UserError> {
        let now = self.clock.now();
        let (row, created) = self
            .store
            .ensure(ProfileRow {
                user_id,
                display_name: String::new(),
                subscription_tier: Tier::Free.as_str().to_owned(),
                settings: Settings::default().to_stored(),
                settings_revision: 0,
                created_at: now,
                updated_at: now,
            })
            .await?;
        if created {
            // Asked after the insert: an account deleted before this answer is gone
            // here too, and one deleted after it has its profile removed by the
            // deletion, which removes the profile after the account.
            let state = self
                .auth
                .clone()
                .get_session_state(GetSessionStateRequest {
                    user_id: user_id.to_string(),
                })
                .await;
            let exists = match state {
                Ok(reply) => !reply.into_inner().deleted,
                Err(status) => {
                    self.store.delete(user_id).await?;
                    return Err(status.into());
                }
            };
            if !exists {
                self.store.delete(user_id).await?;
                tracing::info!(%user_id, "refused a profile for an account that does not exist");
                return Err(UserError::AccountNotFound);
            }
        }
        Ok(row)
    }

    async fn usage(&self, user_id: Uuid) -> Result<pb::Usage, UserError> {
        let (start, end) = quota_window(self.clock.now());
        let (mut jobs, mut images) = (self.jobs.clone(), self.images.clone());
        let (jobs, storage) = tokio::try_join!(
            jobs.get_job_usage(GetJobUsageRequest {
                user_id: user_id.to_string(),
                since: Some(timestamp(start)),
            }),
            images.get_storage_usage(GetStorageUsageRequest {
                user_id: user_id.to_string(),
            }),
        )?;
        let (jobs, storage) = (jobs.into_inner(), storage.into_inner());
        Ok(pb::Usage {
            jobs_today: jobs.jobs_since,
            active_jobs: jobs.active_jobs,
            storage_bytes: storage.storage_bytes,
            image_count: storage.image_count,
            period_start: Some(timestamp(start)),
            period_end: Some(timestamp(end)),
        })
    }

    async fn profile(&self, row: &ProfileRow, email: String) -> Result<pb::Profile, UserError> {
        let tier = tier_of(row);
        Ok(pb::Profile {
            user_id: row.user_id.to_string(),
            email,
            display_name: row.display_name.clone(),
            subscription_tier: tier_code(tier),
            created_at: Some(timestamp(row.created_at)),
            updated_at: Some(timestamp(row.updated_at)),
            usage: Some(self.usage(row.user_id).await?),
            limits: Some(encode_limits(self.tiers.get(tier))),
        })
    }

    /// Checks what needs the workflow service: the default workflow exists and every
    /// workflow's default parameters are valid for its schema.
    async fn workflow_violations(
        &self,
        settings: &Settings,
    ) -> Result<Vec<FieldViolation>, UserError> {
        let mut violations = Vec::new();
        if let Some(id) = &settings.default_workflow_id {
            match self
                .workflows
                .clone()
                .get_workflow(GetWorkflowRequest {
                    workflow_id: id.clone(),
                })
                .await
            {
                Ok(_) => {}
                Err(status) if status.code() == Code::NotFound => {
                    violations.push(FieldViolation::new(
                        "default_workflow_id",
                        "is not a workflow of the catalogue",
                    ))
                }
                Err(status) => return Err(status.into()),
            }
        }
        // A few at a time, in the document's order.
        let defaults: Vec<_> = settings
            .workflow_defaults
            .iter()
            .map(|(id, parameters)| (id.clone(), map_to_struct(parameters)))
            .collect();
        let checked: Vec<Result<Vec<FieldViolation>, Status>> = futures::stream::iter(defaults)
            .map(|(id, parameters)| default_violations(self.workflows.clone(), id, parameters))
            .buffered(VALIDATIONS_AT_ONCE)
            .collect()
            .await;
        for found in checked {
            violations.extend(found?);
        }
        Ok(violations)
    }

    /// The images of one history page, by id, fetched on the caller's behalf (with
    /// their signed URLs).
    async fn images_of<T>(
        &self,
        request: &Request<T>,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Image>, UserError> {
        let calls = ids.chunks(100).map(|chunk| {
            let mut images = self.images.clone();
            let batch = on_behalf(
                request,
                BatchGetImagesRequest {
                    image_ids: chunk.to_vec(),
                },
            );
            async move { images.batch_get_images(batch).await }
        });
        let mut found = HashMap::new();
        for reply in futures::future::try_join_all(calls).await? {
            found.extend(
                reply
                    .into_inner()
                    .images
                    .into_iter()
                    .map(|image| (image.id.clone(), image)),
            );
        }
        Ok(found)
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.profile_row(caller.user_id).await?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(self.profile(&row, caller.email).await?),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        self.profile_row(caller.user_id).await?;
        if let Some(raw) = request.display_name {
            let name = settings::display_name(&raw)
                .map_err(|violation| UserError::InvalidInput(vec![violation]))?;
            self.store
                .set_display_name(caller.user_id, &name, self.clock.now())
                .await
                .map_err(UserError::from)?;
        }
        let row = self.profile_row(caller.user_id).await?;
        Ok(Response::new(pb::UpdateProfileResponse {
            profile: Some(self.profile(&row, caller.email).await?),
        }))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.profile_row(caller.user_id).await?;
        Ok(Response::new(settings_reply(&row)))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::UpdateSettingsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let row = self.profile_row(caller.user_id).await?;
        let expected = match request.etag.trim() {
            "" | "*" => None,
            tag => match tag
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<i64>()
            {
                Ok(revision) => Some(revision),
                // Not one of ours: it cannot match.
                Err(_) => return Err(UserError::StaleSettings.into()),
            },
        };
        let settings = decode_settings(request.settings.unwrap_or_default())
            .map_err(|violation| UserError::InvalidInput(vec![violation]))?;
        let limits = self.tiers.get(tier_of(&row));
        // Only a document within its size limits is worth asking the workflow
        // service about.
        let mut violations = settings.violations(limits.max_retention_days);
        if violations.is_empty() {
            violations = self.workflow_violations(&settings).await?;
        }
        if !violations.is_empty() {
            return Err(UserError::InvalidInput(violations).into());
        }
        let previous = Settings::from_stored(&row.settings);
        let now = self.clock.now();
        let written = self
            .store
            .replace_settings(caller.user_id, settings.to_stored(), expected, now)
            .await
            .map_err(UserError::from)?;
        if !written {
            return Err(UserError::StaleSettings.into());
        }
        if previous.retention_days != settings.retention_days {
            self.images
                .clone()
                .update_retention(UpdateRetentionRequest {
                    user_id: caller.user_id.to_string(),
                    retention_days: settings.retention_days.unwrap_or(0),
                })
                .await
                .map_err(UserError::from)?;
        }
        let stored = settings_reply(&self.profile_row(caller.user_id).await?);
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
        let row = self.profile_row(caller.user_id).await?;
        let tier = tier_of(&row);
        Ok(Response::new(pb::GetUsageResponse {
            tier: tier_code(tier),
            usage: Some(self.usage(caller.user_id).await?),
            limits: Some(encode_limits(self.tiers.get(tier))),
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        caller(&request)?;
        let query = request.get_ref().clone();
        let page = self
            .jobs
            .clone()
            .list_jobs(on_behalf(
                &request,
                ListJobsRequest {
                    page_size: query.page_size,
                    page_token: query.page_token,
                    statuses: query.statuses,
                    workflow_id: query.workflow_id,
                    created_after: query.created_after,
                    created_before: query.created_before,
                    query: query.query,
                    ..ListJobsRequest::default()
                },
            ))
            .await
            .map_err(UserError::from)?
            .into_inner();
        let ids = page
            .jobs
            .iter()
            .flat_map(|job| std::iter::once(&job.image_id).chain(&job.result_image_ids))
            .filter(|id| !id.is_empty())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let images = self.images_of(&request, ids).await?;
        let entries = page
            .jobs
            .into_iter()
            .map(|job| pb::HistoryEntry {
                input_image: images.get(&job.image_id).cloned(),
                result_images: job
                    .result_image_ids
                    .iter()
                    .filter_map(|id| images.get(id).cloned())
                    .collect(),
                job: Some(job),
            })
            .collect();
        Ok(Response::new(pb::GetHistoryResponse {
            entries,
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = caller(&request)?;
        let user_id = caller.user_id.to_string();
        // Jobs first, so no worker stores a new result afterwards; then images and
        // their objects; then the account (which ends its sessions); the profile
        // last. Every step is idempotent: a failed deletion can simply be repeated.
        self.jobs
            .clone()
            .delete_user_jobs(DeleteUserJobsRequest {
                user_id: user_id.clone(),
            })
            .await
            .map_err(UserError::from)?;
        self.images
            .clone()
            .delete_user_images(DeleteUserImagesRequest { user_id })
            .await
            .map_err(UserError::from)?;
        self.auth
            .clone()
            .delete_current_user(on_behalf(&request, DeleteCurrentUserRequest {}))
            .await
            .map_err(UserError::from)?;
        self.store
            .delete(caller.user_id)
            .await
            .map_err(UserError::from)?;
        tracing::info!(user_id = %caller.user_id, "account deleted");
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn get_quota(
        &self,
        request: Request<pb::GetQuotaRequest>,
    ) -> Result<Response<pb::GetQuotaResponse>, Status> {
        let user_id = user_id(&request.get_ref().user_id)?;
        let row = self.profile_row(user_id).await?;
        let tier = tier_of(&row);
        let limits = self.tiers.get(tier);
        let (start, end) = quota_window(self.clock.now());
        let retention = Settings::from_stored(&row.settings)
            .retention_days
            .map(|days| limits.max_retention_days.map_or(days, |max| days.min(max)))
            .unwrap_or(0);
        Ok(Response::new(pb::GetQuotaResponse {
            tier: tier_code(tier),
            limits: Some(encode_limits(limits)),
            period_start: Some(timestamp(start)),
            period_end: Some(timestamp(end)),
            retention_days: retention,
        }))
    }

    async fn set_subscription_tier(
        &self,
        request: Request<pb::SetSubscriptionTierRequest>,
    ) -> Result<Response<pb::SetSubscriptionTierResponse>, Status> {
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let tier = match pb::SubscriptionTier::try_from(request.tier) {
            Ok(pb::SubscriptionTier::Free) => Tier::Free,
            Ok(pb::SubscriptionTier::Pro) => Tier::Pro,
            Ok(pb::SubscriptionTier::Enterprise) => Tier::Enterprise,
            _ => {
                return Err(UserError::InvalidInput(vec![FieldViolation::new(
                    "tier",
                    "must be free, pro or enterprise",
                )])
                .into());
            }
        };
        self.profile_row(user_id).await?;
        self.store
            .set_tier(user_id, tier.as_str(), self.clock.now())
            .await
            .map_err(UserError::from)?;
        let row = self.profile_row(user_id).await?;
        Ok(Response::new(pb::SetSubscriptionTierResponse {
            profile: Some(self.profile(&row, String::new()).await?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_window_is_the_utc_day() {
        let now = time::macros::datetime!(2026-03-04 17:30 +02:00);
        let (start, end) = quota_window(now);
        assert_eq!(start, time::macros::datetime!(2026-03-04 00:00 UTC));
        assert_eq!(end, time::macros::datetime!(2026-03-05 00:00 UTC));
    }

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
}
