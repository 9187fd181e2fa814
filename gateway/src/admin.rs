//! `/api/admin/*`: what administrators (users with the admin role) may see: the
//! platform's audit log, page by page or exported whole as JSON lines for a SIEM.
//! Anyone else gets `404`, as for a resource that does not exist (what
//! administrators can see is no one else's business). The log can only be read here: no route changes or deletes an entry.

use atelier_common::FieldViolation;
use atelier_proto::audit::v1::{self as pb, audit_service_client::AuditServiceClient};
use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tonic::transport::Channel;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::Query,
    problem::Problem,
    state::{AppState, grpc_request},
    users::instant,
    views::{optional_id, page_size, page_token, rfc3339},
};

fn client(state: &AppState) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(state.auth_channel.clone())
}

/// The resource an action was about.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTarget {
    /// `user`, `image`, `audit_log`, ...
    pub kind: String,
    pub id: Option<String>,
}

/// One audited action: who did what, when and from where.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventBody {
    /// A UUIDv7: ids sort by time.
    pub id: String,
    /// When it happened (RFC 3339).
    pub at: Option<String>,
    /// The signed-in user who acted; absent for the operator, a service, or a
    /// failed sign-in.
    pub actor_user_id: Option<String>,
    /// The service identity that made the call: `gateway` for a user's request,
    /// `operator`, or a platform service.
    pub actor_service: String,
    /// `auth.sign_in`, `auth.sign_in_failed`, `auth.refresh_reuse`,
    /// `auth.logout_all`, `auth.password_changed`, `account.deleted`,
    /// `user.role_changed`, `user.tier_changed`, `user.settings_changed`,
    /// `image.deleted`, `audit.queried`, `audit.exported`, `api_key.created`,
    /// `api_key.revoked` (target kind `api_key`; details name, prefix, scopes).
    #[schema(example = "auth.sign_in")]
    pub action: String,
    /// The user the action was about.
    pub subject_user_id: Option<String>,
    pub target: Option<AuditTarget>,
    /// `success` or `failure`.
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Anything else kept about the action; never a secret.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

fn present(text: String) -> Option<String> {
    Some(text).filter(|text| !text.is_empty())
}

impl From<pb::AuditEvent> for AuditEventBody {
    fn from(event: pb::AuditEvent) -> Self {
        Self {
            id: event.id,
            at: rfc3339(event.at),
            actor_user_id: present(event.actor_user_id),
            actor_service: event.actor_service,
            action: event.action,
            subject_user_id: present(event.subject_user_id),
            target: present(event.target_kind).map(|kind| AuditTarget {
                kind,
                id: present(event.target_id),
            }),
            outcome: event.outcome,
            client_ip: present(event.client_ip),
            user_agent: present(event.user_agent),
            request_id: present(event.request_id),
            details: atelier_common::json::from_struct(event.details),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    /// Newest first.
    pub events: Vec<AuditEventBody>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

/// The filters of a listing or an export.
#[derive(Debug, Deserialize)]
pub struct AuditFilterParams {
    /// Only actions by this user.
    pub actor_user_id: Option<String>,
    /// Only actions about this user.
    pub subject_user_id: Option<String>,
    /// Only actions starting with this, e.g. `auth.` for every sign-in matter.
    pub action: Option<String>,
    /// Only actions at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Only actions before this instant (RFC 3339).
    pub to: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageParams {
    /// Entries per page (default 20, at most 100).
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page (keep the filters the same).
    pub page_token: Option<String>,
}

fn filter(params: AuditFilterParams, violations: &mut Vec<FieldViolation>) -> pb::AuditFilter {
    let mut take = |result: Result<String, FieldViolation>| {
        result.unwrap_or_else(|violation| {
            violations.push(violation);
            String::new()
        })
    };
    let actor_user_id = take(optional_id("actor_user_id", params.actor_user_id));
    let subject_user_id = take(optional_id("subject_user_id", params.subject_user_id));
    let action_prefix = params.action.unwrap_or_default();
    if action_prefix.chars().count() > 64 {
        violations.push(FieldViolation::new(
            "action",
            "must be at most 64 characters",
        ));
    }
    let mut at = |field: &str, raw: Option<String>| {
        instant(field, raw.as_deref()).unwrap_or_else(|violation| {
            violations.push(violation);
            None
        })
    };
    let since = at("from", params.from);
    let until = at("to", params.to);
    pb::AuditFilter {
        actor_user_id,
        subject_user_id,
        action_prefix,
        since,
        until,
    }
}

/// The audit log, newest first, filtered and page by page. Administrators only;
/// the reading is itself recorded (`audit.queried`).
#[utoipa::path(
    get, path = "/api/admin/audit-events", tag = "admin", operation_id = "list_audit_events",
    security(("bearer" = [])),
    params(
        ("actor_user_id" = Option<String>, Query, format = Uuid, description = "Only actions by this user"),
        ("subject_user_id" = Option<String>, Query, format = Uuid, description = "Only actions about this user"),
        ("action" = Option<String>, Query, max_length = 64, description = "Only actions starting with this, e.g. `auth.` for every sign-in matter"),
        ("from" = Option<String>, Query, format = DateTime, description = "Only actions at or after this instant (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Only actions before this instant (RFC 3339)"),
        ("page_size" = Option<i32>, Query, minimum = 1, maximum = 100, description = "Entries per page (default 20, at most 100)"),
        ("page_token" = Option<String>, Query, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "`next_page_token` of the previous page (keep the filters the same)"),
    ),
    responses(
        (status = 200, description = "One page of the audit log", body = AuditEventPage),
        (status = 403, description = "Called with an API key: no key is an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller is not an administrator (answered as for a missing resource)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filters (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<AuditFilterParams>,
    Query(paging): Query<PageParams>,
) -> Result<Json<AuditEventPage>, Problem> {
    let mut violations = Vec::new();
    let filter = filter(params, &mut violations);
    let page_size = page_size(paging.page_size).unwrap_or_else(|violation| {
        violations.push(violation);
        0
    });
    let page_token = page_token(paging.page_token).unwrap_or_else(|violation| {
        violations.push(violation);
        String::new()
    });
    if !violations.is_empty() {
        return Err(Problem::invalid(violations));
    }
    let reply = client(&state)
        .list_audit_events(grpc_request(
            pb::ListAuditEventsRequest {
                filter: Some(filter),
                page_size,
                page_token,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(AuditEventPage {
        events: reply.events.into_iter().map(AuditEventBody::from).collect(),
        next_page_token: present(reply.next_page_token),
    }))
}

/// Every entry of the audit log matching the filters, oldest first, as JSON
/// lines (`application/x-ndjson`, one entry per line, as in a page of
/// `list_audit_events`): for a SIEM. Administrators only; the export is itself
/// recorded (`audit.exported`).
#[utoipa::path(
    get, path = "/api/admin/audit-events/export", tag = "admin", operation_id = "export_audit_events",
    security(("bearer" = [])),
    params(
        ("actor_user_id" = Option<String>, Query, format = Uuid, description = "Only actions by this user"),
        ("subject_user_id" = Option<String>, Query, format = Uuid, description = "Only actions about this user"),
        ("action" = Option<String>, Query, max_length = 64, description = "Only actions starting with this, e.g. `auth.` for every sign-in matter"),
        ("from" = Option<String>, Query, format = DateTime, description = "Only actions at or after this instant (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Only actions before this instant (RFC 3339)"),
    ),
    responses(
        (status = 200, description = "The entries, one JSON object per line", content_type = "application/x-ndjson", body = String),
        (status = 403, description = "Called with an API key: no key is an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller is not an administrator (answered as for a missing resource)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filters (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<AuditFilterParams>,
) -> Result<Response, Problem> {
    let mut violations = Vec::new();
    let filter = filter(params, &mut violations);
    if !violations.is_empty() {
        return Err(Problem::invalid(violations));
    }
    let batches = client(&state)
        .export_audit_events(grpc_request(
            pb::ExportAuditEventsRequest {
                filter: Some(filter),
            },
            &headers,
        ))
        .await?
        .into_inner();
    let lines = batches.map(|batch| {
        let batch = batch.map_err(|status| {
            tracing::warn!(code = ?status.code(), error = %status.message(), "audit export cut short");
            std::io::Error::other(status.message().to_owned())
        })?;
        let mut text = Vec::new();
        for event in batch.events {
            serde_json::to_writer(&mut text, &AuditEventBody::from(event))
                .map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        Ok::<_, std::io::Error>(bytes::Bytes::from(text))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(lines),
    )
        .into_response())
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(export))
}
