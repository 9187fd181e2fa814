//! `/api/users/*`: the caller's profile, settings, history and account, over the
//! user service.

use std::collections::{BTreeMap, HashMap};

use atelier_common::{
    FieldViolation,
    json::{from_struct, map_to_struct},
};
use atelier_proto::{
    image::v1 as image_pb,
    user::v1::{self as pb, user_service_client::UserServiceClient},
};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    views::{
        ImageBody, JobBody, JobStatus, encode_job, page_size, page_token, parse_statuses, rfc3339,
    },
};

fn client(state: &AppState) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(state.user.clone())
}

/// What the caller uses now.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    /// Jobs started today (UTC).
    pub jobs_today: i64,
    /// Jobs not yet final.
    pub active_jobs: i32,
    /// Bytes of stored images.
    pub storage_bytes: i64,
    /// Stored originals and results.
    pub image_count: i64,
    /// When `jobs_today` resets (RFC 3339).
    pub jobs_reset_at: Option<String>,
}

/// What the caller's tier allows; `null` is no limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsBody {
    pub jobs_per_day: Option<i64>,
    /// Jobs not yet final at once.
    pub concurrent_jobs: Option<i32>,
    /// Jobs running at once; the rest wait their turn.
    pub parallel_jobs: Option<i32>,
    pub storage_bytes: Option<i64>,
    pub max_file_size_bytes: Option<i64>,
    pub max_retention_days: Option<i32>,
    /// Whether jobs may be started with `priority: high`.
    pub high_priority: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileBody {
    pub id: String,
    pub email: String,
    pub display_name: String,
    /// `free`, `pro` or `enterprise`.
    pub subscription_tier: String,
    pub created_at: Option<String>,
    pub usage: UsageBody,
    pub limits: LimitsBody,
}

impl From<pb::Profile> for ProfileBody {
    fn from(profile: pb::Profile) -> Self {
        let usage = profile.usage.unwrap_or_default();
        let limits = profile.limits.unwrap_or_default();
        Self {
            id: profile.user_id,
            email: profile.email,
            display_name: profile.display_name,
            subscription_tier: pb::SubscriptionTier::slug_of(profile.subscription_tier).to_owned(),
            created_at: rfc3339(profile.created_at),
            usage: UsageBody {
                jobs_today: usage.jobs_today,
                active_jobs: usage.active_jobs,
                storage_bytes: usage.storage_bytes,
                image_count: usage.image_count,
                jobs_reset_at: rfc3339(usage.period_end),
            },
            limits: LimitsBody {
                jobs_per_day: limits.jobs_per_day,
                concurrent_jobs: limits.concurrent_jobs,
                parallel_jobs: limits.parallel_jobs,
                storage_bytes: limits.storage_bytes,
                max_file_size_bytes: limits.max_file_size_bytes,
                max_retention_days: limits.max_retention_days,
                high_priority: limits.high_priority.unwrap_or(true),
            },
        }
    }
}

fn profile_reply(profile: Option<pb::Profile>) -> Result<Json<ProfileBody>, Problem> {
    profile
        .map(|profile| Json(profile.into()))
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without profile")))
}

/// The caller's profile, with usage against the limits of their tier.
#[utoipa::path(
    get, path = "/api/users/profile", tag = "users", operation_id = "get_profile",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = ProfileBody),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn profile(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ProfileBody>, Problem> {
    let reply = client(&state)
        .get_profile(grpc_request(pb::GetProfileRequest {}, &headers))
        .await?;
    profile_reply(reply.into_inner().profile)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// At most 100 characters, no control characters; surrounding spaces are dropped.
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub display_name: Option<String>,
}

/// Change the caller's display name.
#[utoipa::path(
    patch, path = "/api/users/profile", tag = "users", operation_id = "update_profile",
    security(("bearer" = [])),
    request_body = ProfilePatch,
    responses(
        (status = 200, description = "The changed profile", body = ProfileBody),
        (status = 422, description = "Invalid fields (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(patch): Body<ProfilePatch>,
) -> Result<Json<ProfileBody>, Problem> {
    let reply = client(&state)
        .update_profile(grpc_request(
            pb::UpdateProfileRequest {
                display_name: patch.display_name,
            },
            &headers,
        ))
        .await?;
    profile_reply(reply.into_inner().profile)
}

/// Which in-app notifications the user wants.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationsBody {
    pub job_completed: bool,
    pub job_failed: bool,
    pub quota_warning: bool,
}

/// The settings document. `PUT` replaces it whole: a field left out takes its
/// default, an unknown one is refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsBody {
    /// The document's format version (1).
    pub schema_version: i32,
    /// `system`, `light` or `dark`.
    pub theme: String,
    /// Days to keep processed images, at most the tier's `max_retention_days`;
    /// `null` for the default.
    pub retention_days: Option<i32>,
    pub notifications: NotificationsBody,
    /// The workflow the app preselects.
    pub default_workflow_id: Option<String>,
    /// Default parameters per workflow id, each valid for that workflow.
    #[schema(value_type = Object)]
    pub workflow_defaults: BTreeMap<String, Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsReply {
    /// How many times the document was written; its ETag is this number quoted.
    pub revision: i64,
    pub updated_at: Option<String>,
    pub settings: SettingsBody,
}

fn theme_name(code: i32) -> &'static str {
    match pb::Theme::try_from(code) {
        Ok(pb::Theme::Light) => "light",
        Ok(pb::Theme::Dark) => "dark",
        _ => "system",
    }
}

impl From<pb::Settings> for SettingsBody {
    fn from(settings: pb::Settings) -> Self {
        let notifications = settings.notifications.unwrap_or_default();
        Self {
            schema_version: settings.schema_version,
            theme: theme_name(settings.theme).to_owned(),
            retention_days: settings.retention_days,
            notifications: NotificationsBody {
                job_completed: notifications.job_completed,
                job_failed: notifications.job_failed,
                quota_warning: notifications.quota_warning,
            },
            default_workflow_id: Some(settings.default_workflow_id).filter(|id| !id.is_empty()),
            workflow_defaults: settings
                .workflow_defaults
                .into_iter()
                .map(|(id, parameters)| (id, from_struct(Some(parameters))))
                .collect(),
        }
    }
}

/// A settings reply with its `ETag`.
fn settings_reply(
    settings: Option<pb::Settings>,
    etag: &str,
    revision: i64,
    updated_at: Option<prost_types::Timestamp>,
) -> Response {
    let body = SettingsReply {
        revision,
        updated_at: rfc3339(updated_at),
        settings: settings.unwrap_or_default().into(),
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The caller's settings, with their `ETag`.
#[utoipa::path(
    get, path = "/api/users/settings", tag = "users", operation_id = "get_settings",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The settings; the ETag header guards the next change", body = SettingsReply),
    )
)]
pub async fn settings(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let reply = client(&state)
        .get_settings(grpc_request(pb::GetSettingsRequest {}, &headers))
        .await?
        .into_inner();
    Ok(settings_reply(
        reply.settings,
        &reply.etag,
        reply.revision,
        reply.updated_at,
    ))
}

/// Reads a settings document, naming every field that is wrong.
fn parse_settings(body: &Value) -> Result<pb::Settings, Vec<FieldViolation>> {
    let Some(object) = body.as_object() else {
        return Err(vec![FieldViolation::new("", "must be a JSON object")]);
    };
    let mut violations = Vec::new();
    let mut settings = pb::Settings {
        schema_version: 1,
        notifications: Some(pb::NotificationSettings {
            job_completed: true,
            job_failed: true,
            quota_warning: true,
        }),
        ..pb::Settings::default()
    };
    for (key, value) in object {
        match (key.as_str(), value) {
            ("schema_version", Value::Number(n)) if n.as_i64() == Some(1) => {}
            ("schema_version", _) => {
                violations.push(FieldViolation::new("schema_version", "must be 1"));
            }
            ("theme", Value::String(theme))
                if ["system", "light", "dark"].contains(&theme.as_str()) =>
            {
                settings.theme = match theme.as_str() {
                    "light" => pb::Theme::Light,
                    "dark" => pb::Theme::Dark,
                    _ => pb::Theme::System,
                } as i32;
            }
            ("theme", _) => violations.push(FieldViolation::new(
                "theme",
                "must be \"system\", \"light\" or \"dark\"",
            )),
            ("retention_days", Value::Null) => {}
            ("retention_days", Value::Number(n))
                if n.as_i64().is_some_and(|d| i32::try_from(d).is_ok()) =>
            {
                settings.retention_days = n.as_i64().map(|days| days as i32);
            }
            ("retention_days", _) => violations.push(FieldViolation::new(
                "retention_days",
                "must be a whole number of days or null",
            )),
            ("default_workflow_id", Value::Null) => {}
            ("default_workflow_id", Value::String(id)) => settings.default_workflow_id = id.clone(),
            ("default_workflow_id", _) => violations.push(FieldViolation::new(
                "default_workflow_id",
                "must be a workflow id or null",
            )),
            ("notifications", Value::Object(flags)) => {
                let notifications = settings.notifications.get_or_insert_default();
                for (flag, value) in flags {
                    let field = format!("notifications.{flag}");
                    let target = match flag.as_str() {
                        "job_completed" => &mut notifications.job_completed,
                        "job_failed" => &mut notifications.job_failed,
                        "quota_warning" => &mut notifications.quota_warning,
                        _ => {
                            violations.push(FieldViolation::new(field, "is not a known setting"));
                            continue;
                        }
                    };
                    match value.as_bool() {
                        Some(on) => *target = on,
                        None => {
                            violations.push(FieldViolation::new(field, "must be true or false"))
                        }
                    }
                }
            }
            ("notifications", _) => {
                violations.push(FieldViolation::new("notifications", "must be an object"));
            }
            ("workflow_defaults", Value::Object(workflows)) => {
                for (id, parameters) in workflows {
                    match parameters.as_object() {
                        Some(parameters) => {
                            settings
                                .workflow_defaults
                                .insert(id.clone(), map_to_struct(parameters));
                        }
                        None => violations.push(FieldViolation::new(
                            format!("workflow_defaults.{id}"),
                            "must be an object of parameters",
                        )),
                    }
                }
            }
            ("workflow_defaults", _) => violations.push(FieldViolation::new(
                "workflow_defaults",
                "must be an object keyed by workflow id",
            )),
            (other, _) => violations.push(FieldViolation::new(other, "is not a known setting")),
        }
    }
    if violations.is_empty() {
        Ok(settings)
    } else {
        Err(violations)
    }
}

/// Replace the caller's settings. Send the `ETag` you read as `If-Match`: if the
/// settings changed since, the write is refused with 412 and nothing changes.
#[utoipa::path(
    put, path = "/api/users/settings", tag = "users", operation_id = "replace_settings",
    security(("bearer" = [])),
    params(("If-Match" = Option<String>, Header, description = "The ETag the change is based on")),
    request_body(content = Object, description = "The whole settings document (see SettingsBody)"),
    responses(
        (status = 200, description = "The settings as stored, with their new ETag", body = SettingsReply),
        (status = 412, description = "The settings changed since that ETag", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replace_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<Value>,
) -> Result<Response, Problem> {
    let settings = parse_settings(&body).map_err(Problem::invalid)?;
    let etag = headers
        .get(header::IF_MATCH)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let reply = client(&state)
        .update_settings(grpc_request(
            pb::UpdateSettingsRequest {
                settings: Some(settings),
                etag,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(settings_reply(
        reply.settings,
        &reply.etag,
        reply.revision,
        reply.updated_at,
    ))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    /// At most this many entries (default 50, at most 100).
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Comma-separated states, e.g. `completed,failed`.
    pub status: Option<String>,
    pub workflow_id: Option<String>,
    /// Only jobs created at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Only jobs created before this instant (RFC 3339).
    pub to: Option<String>,
    /// Words to find in workflow names, input file names and prompts.
    pub q: Option<String>,
}

/// One job of the history with its images.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    #[serde(flatten)]
    pub job: JobBody,
    pub workflow_name: String,
    /// The input image with signed URLs; `null` once deleted.
    pub input_image: Option<ImageBody>,
    /// The first result image; `null` when there is none (yet).
    pub result_image: Option<ImageBody>,
    /// Every result image, in output order.
    pub result_images: Vec<ImageBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub items: Vec<HistoryItem>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

pub(crate) fn instant(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<prost_types::Timestamp>, FieldViolation> {
    match raw {
        None => Ok(None),
        Some(raw) => OffsetDateTime::parse(raw, &Rfc3339)
            .map(|at| Some(atelier_common::timestamp(at)))
            .map_err(|_| {
                FieldViolation::new(
                    field,
                    "must be an RFC 3339 instant, e.g. 2026-01-31T00:00:00Z",
                )
            }),
    }
}

/// The caller's jobs with their input and result images, newest first: filtered by
/// state, workflow and dates, searched, and cursor-paginated.
#[utoipa::path(
    get, path = "/api/users/history", tag = "users", operation_id = "get_history",
    security(("bearer" = [])),
    params(
        ("page_size" = Option<i32>, Query, minimum = 1, maximum = 100, description = "At most this many entries (default 50, at most 100)"),
        ("page_token" = Option<String>, Query, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "`next_page_token` of the previous page"),
        ("status" = Option<Vec<JobStatus>>, Query, style = Form, explode = false, min_items = 1, description = "Only jobs in one of these states (comma-separated), e.g. `completed,failed`"),
        ("workflow_id" = Option<String>, Query, description = "Only jobs of this workflow"),
        ("from" = Option<String>, Query, format = DateTime, description = "Only jobs created at or after this instant (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Only jobs created before this instant (RFC 3339)"),
        ("q" = Option<String>, Query, description = "Words to find in workflow names, input file names (`IMG_2041`, `img_2041.jpg` or `2041`) and prompts"),
    ),
    responses(
        (status = 200, description = "One page of the history", body = HistoryPage),
        (status = 422, description = "Invalid filters (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HistoryParams>,
) -> Result<Json<HistoryPage>, Problem> {
    let mut violations = Vec::new();
    let statuses = parse_statuses(params.status.as_deref()).unwrap_or_else(|violation| {
        violations.push(violation);
        Vec::new()
    });
    let from = instant("from", params.from.as_deref()).unwrap_or_else(|violation| {
        violations.push(violation);
        None
    });
    let to = instant("to", params.to.as_deref()).unwrap_or_else(|violation| {
        violations.push(violation);
        None
    });
    let page_size = page_size(params.page_size).unwrap_or_else(|violation| {
        violations.push(violation);
        0
    });
    let page_token = page_token(params.page_token).unwrap_or_else(|violation| {
        violations.push(violation);
        String::new()
    });
    if !violations.is_empty() {
        return Err(Problem::invalid(violations));
    }
    let reply = client(&state)
        .get_history(grpc_request(
            pb::GetHistoryRequest {
                page_size,
                page_token,
                statuses,
                workflow_id: params.workflow_id.unwrap_or_default(),
                created_after: from,
                created_before: to,
                query: params.q.unwrap_or_default(),
            },
            &headers,
        ))
        .await?
        .into_inner();
    let images: HashMap<String, image_pb::Image> = reply
        .entries
        .iter()
        .flat_map(|entry| entry.result_images.iter())
        .map(|image| (image.id.clone(), image.clone()))
        .collect();
    let items = reply
        .entries
        .into_iter()
        .filter_map(|entry| {
            let job = entry.job?;
            let result_images: Vec<ImageBody> = entry
                .result_images
                .into_iter()
                .map(ImageBody::from)
                .collect();
            Some(HistoryItem {
                workflow_name: job.workflow_name.clone(),
                input_image: entry.input_image.map(ImageBody::from),
                result_image: result_images.first().cloned(),
                result_images,
                job: encode_job(job, &images),
            })
        })
        .collect();
    Ok(Json(HistoryPage {
        items,
        next_page_token: Some(reply.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// Delete the caller's account, and with it every image, stored file and job.
#[utoipa::path(
    delete, path = "/api/users/me", tag = "users", operation_id = "delete_account",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The account and all its data are gone"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_account(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    client(&state)
        .delete_account(grpc_request(pb::DeleteAccountRequest {}, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(profile, update_profile))
        .routes(routes!(settings, replace_settings))
        .routes(routes!(history))
        .routes(routes!(delete_account))
}
