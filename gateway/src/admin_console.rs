//! `/api/admin/*` for the admin console: users with their roles and plans,
//! the queue and its dead letters, fal's circuit breakers and recent failures
//! by error type. Each route calls the service that owns the data (auth and
//! user for accounts, processing for the queue and jobs); anyone but an
//! administrator gets `404`, as for a missing resource.

use atelier_common::FieldViolation;
use atelier_proto::{
    auth::v1 as auth_pb,
    operations::v1::{self as pb, operations_service_client::OperationsServiceClient},
    user::v1::{self as user_pb, user_service_client::UserServiceClient},
};
use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    users::instant,
    views::rfc3339,
};

fn operations(state: &AppState) -> OperationsServiceClient<Channel> {
    OperationsServiceClient::new(state.processing.clone())
}

fn profiles(state: &AppState) -> UserServiceClient<Channel> {
    UserServiceClient::new(state.user.clone())
}

const FORBIDDEN_KEY: &str = "Called with an API key: no key is an administrator";
const NOT_ADMIN: &str = "The caller is not an administrator (answered as for a missing resource)";

// ---------------------------------------------------------------------------
// Users

/// An account as administrators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserBody {
    pub id: String,
    pub email: String,
    /// `user` or `admin`.
    pub role: String,
    /// `free`, `pro` or `enterprise`.
    pub tier: String,
    pub created_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserPage {
    /// Newest first.
    pub users: Vec<AdminUserBody>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UserSearch {
    /// Only accounts whose email contains this (any case).
    pub q: Option<String>,
    /// Accounts per page (default 20, at most 100).
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page (keep `q` the same).
    pub page_token: Option<String>,
}

/// The tiers of `users`, in order.
async fn with_tiers(
    state: &AppState,
    headers: &HeaderMap,
    users: Vec<auth_pb::User>,
) -> Result<Vec<AdminUserBody>, Problem> {
    let tiers = if users.is_empty() {
        Vec::new()
    } else {
        profiles(state)
            .admin_get_subscription_tiers(grpc_request(
                user_pb::AdminGetSubscriptionTiersRequest {
                    user_ids: users.iter().map(|user| user.id.clone()).collect(),
                },
                headers,
            ))
            .await?
            .into_inner()
            .tiers
    };
    Ok(users
        .into_iter()
        .zip(tiers.into_iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(user, tier)| AdminUserBody {
            id: user.id,
            email: user.email,
            role: user.role,
            tier: tier
                .map(|tier| user_pb::SubscriptionTier::slug_of(tier.tier))
                .unwrap_or("free")
                .to_owned(),
            created_at: rfc3339(user.created_at),
        })
        .collect())
}

/// The accounts, newest first, with their roles and plans; `q` searches emails.
#[utoipa::path(
    get, path = "/api/admin/users", tag = "admin", operation_id = "admin_list_users",
    security(("bearer" = [])),
    params(
        ("q" = Option<String>, Query, description = "Only accounts whose email contains this (any case)"),
        ("page_size" = Option<i32>, Query, minimum = 1, maximum = 100, description = "Accounts per page (default 20, at most 100)"),
        ("page_token" = Option<String>, Query, description = "`next_page_token` of the previous page (keep `q` the same)"),
    ),
    responses(
        (status = 200, description = "One page of accounts", body = AdminUserPage),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = NOT_ADMIN, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid paging (each field named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(search): Query<UserSearch>,
) -> Result<Json<AdminUserPage>, Problem> {
    let reply = state
        .auth
        .clone()
        .admin_list_users(grpc_request(
            auth_pb::AdminListUsersRequest {
                query: search.q.unwrap_or_default(),
                page_size: search.page_size.unwrap_or(0),
                page_token: search.page_token.unwrap_or_default(),
                user_id: String::new(),
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(AdminUserPage {
        users: with_tiers(&state, &headers, reply.users).await?,
        next_page_token: Some(reply.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// A change to an account: its plan, its role, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    /// `free`, `pro` or `enterprise`.
    pub tier: Option<String>,
    /// `user` or `admin`. An administrator cannot take their own role.
    pub role: Option<String>,
}

/// Changes an account's plan and/or role. Audited (`user.tier_changed`,
/// `user.role_changed`). A new role holds from the user's next token refresh.
#[utoipa::path(
    patch, path = "/api/admin/users/{id}", tag = "admin", operation_id = "admin_update_user",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "The account's id")),
    request_body = UpdateUserBody,
    responses(
        (status = 200, description = "The account as changed", body = AdminUserBody),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or the caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown tier or role, or taking one's own role (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(change): Body<UpdateUserBody>,
) -> Result<Json<AdminUserBody>, Problem> {
    let tier = match change.tier.as_deref() {
        None => None,
        Some("free") => Some(user_pb::SubscriptionTier::Free),
        Some("pro") => Some(user_pb::SubscriptionTier::Pro),
        Some("enterprise") => Some(user_pb::SubscriptionTier::Enterprise),
        Some(_) => {
            return Err(Problem::invalid(vec![FieldViolation::new(
                "tier",
                "must be free, pro or enterprise",
            )]));
        }
    };
    if tier.is_none() && change.role.is_none() {
        return Err(Problem::invalid(vec![FieldViolation::new(
            "tier",
            "give a tier, a role, or both",
        )]));
    }
    let mut user = None;
    if let Some(role) = change.role {
        user = state
            .auth
            .clone()
            .admin_set_user_role(grpc_request(
                auth_pb::AdminSetUserRoleRequest {
                    user_id: id.clone(),
                    role,
                },
                &headers,
            ))
            .await?
            .into_inner()
            .user;
    }
    if let Some(tier) = tier {
        profiles(&state)
            .admin_set_subscription_tier(grpc_request(
                user_pb::AdminSetSubscriptionTierRequest {
                    user_id: id.clone(),
                    tier: tier as i32,
                },
                &headers,
            ))
            .await?;
    }
    let user = match user {
        Some(user) => user,
        None => state
            .auth
            .clone()
            .admin_list_users(grpc_request(
                auth_pb::AdminListUsersRequest {
                    user_id: id,
                    ..Default::default()
                },
                &headers,
            ))
            .await?
            .into_inner()
            .users
            .pop()
            .ok_or_else(Problem::not_found)?,
    };
    let mut bodies = with_tiers(&state, &headers, vec![user]).await?;
    bodies.pop().map(Json).ok_or_else(Problem::not_found)
}

// ---------------------------------------------------------------------------
// The queue and its dead letters

/// How many jobs are where.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStateBody {
    /// Waiting jobs by priority (those of users at their cap included).
    pub high: u64,
    pub normal: u64,
    pub low: u64,
    /// Jobs waiting out a delay (retries, deferrals).
    pub delayed: u64,
    /// Jobs a worker holds.
    pub in_flight: u64,
    /// Dead letters kept.
    pub dead: u64,
    /// The effective bound on jobs running at fal; absent when unbounded.
    pub in_flight_limit: Option<u32>,
}

/// The queue's depth per priority, delayed, in flight and dead.
#[utoipa::path(
    get, path = "/api/admin/queue", tag = "admin", operation_id = "admin_get_queue",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The queue now", body = QueueStateBody),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = NOT_ADMIN, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn queue(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<QueueStateBody>, Problem> {
    let reply = operations(&state)
        .get_queue_state(grpc_request(pb::GetQueueStateRequest {}, &headers))
        .await?
        .into_inner();
    Ok(Json(QueueStateBody {
        high: reply.high,
        normal: reply.normal,
        low: reply.low,
        delayed: reply.delayed,
        in_flight: reply.in_flight,
        dead: reply.dead,
        in_flight_limit: reply.in_flight_limit,
    }))
}

/// A job the queue gave up on, with the job's last error.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    pub job_id: String,
    pub user_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed, as the worker saw it.
    pub reason: String,
    pub workflow_id: Option<String>,
    /// The job's state, e.g. `failed`; absent when the job is gone.
    pub status: Option<String>,
    /// The job's error code: fal's error type or the platform's.
    pub error_code: Option<String>,
    /// The message the job's owner sees.
    pub error_message: Option<String>,
    pub created_at: Option<String>,
    pub completed_at: Option<String>,
}

fn present(text: String) -> Option<String> {
    Some(text).filter(|text| !text.is_empty())
}

impl From<pb::DeadLetter> for DeadLetterBody {
    fn from(letter: pb::DeadLetter) -> Self {
        Self {
            job_id: letter.job_id,
            user_id: letter.user_id,
            attempts: letter.attempts,
            reason: letter.reason,
            workflow_id: present(letter.workflow_id),
            status: present(letter.status),
            error_code: present(letter.error_code),
            error_message: present(letter.error_message),
            created_at: rfc3339(letter.created_at),
            completed_at: rfc3339(letter.completed_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Newest first.
    pub dead_letters: Vec<DeadLetterBody>,
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterParams {
    /// At most this many (default 50, at most 500).
    pub limit: Option<i32>,
}

/// The most recent dead letters (jobs out of attempts), each with its job.
#[utoipa::path(
    get, path = "/api/admin/dead-letters", tag = "admin", operation_id = "admin_list_dead_letters",
    security(("bearer" = [])),
    params(("limit" = Option<i32>, Query, minimum = 1, maximum = 500, description = "At most this many (default 50)")),
    responses(
        (status = 200, description = "The dead letters", body = DeadLetterList),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = NOT_ADMIN, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<DeadLetterParams>,
) -> Result<Json<DeadLetterList>, Problem> {
    let limit = params.limit.unwrap_or(0);
    if !(0..=500).contains(&limit) {
        return Err(Problem::invalid(vec![FieldViolation::new(
            "limit",
            "must be from 1 to 500",
        )]));
    }
    let reply = operations(&state)
        .list_dead_letters(grpc_request(pb::ListDeadLettersRequest { limit }, &headers))
        .await?
        .into_inner();
    Ok(Json(DeadLetterList {
        dead_letters: reply.dead_letters.into_iter().map(Into::into).collect(),
    }))
}

/// One dead letter with its job.
#[utoipa::path(
    get, path = "/api/admin/dead-letters/{job_id}", tag = "admin", operation_id = "admin_get_dead_letter",
    security(("bearer" = [])),
    params(("job_id" = String, Path, format = Uuid, description = "The job's id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterBody),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a dead letter, or the caller is not an administrator", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<DeadLetterBody>, Problem> {
    let reply = operations(&state)
        .get_dead_letter(grpc_request(pb::GetDeadLetterRequest { job_id }, &headers))
        .await?
        .into_inner();
    reply
        .dead_letter
        .map(|letter| Json(letter.into()))
        .ok_or_else(Problem::not_found)
}

/// A dead letter's job after an administrator's retry or discard.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOutcome {
    pub job_id: String,
    /// The job's state now: `pending` or `queued` after a retry, `failed` after
    /// a discard.
    pub status: String,
}

/// Runs a dead-lettered job again: back to pending and into the queue, its
/// attempts counted afresh. Audited (`job.dead_letter_retried`).
#[utoipa::path(
    post, path = "/api/admin/dead-letters/{job_id}/retry", tag = "admin", operation_id = "admin_retry_dead_letter",
    security(("bearer" = [])),
    params(("job_id" = String, Path, format = Uuid, description = "The job's id")),
    responses(
        (status = 200, description = "The job, queued again", body = DeadLetterOutcome),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a dead letter, or the caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The job's owner is at a limit of their plan", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry_dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<DeadLetterOutcome>, Problem> {
    let reply = operations(&state)
        .retry_dead_letter(grpc_request(
            pb::RetryDeadLetterRequest { job_id },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(DeadLetterOutcome {
        job_id: reply.job_id,
        status: reply.status,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardBody {
    /// Why the job is given up (1 to 500 characters), for its owner and the
    /// audit log.
    pub reason: String,
}

/// Gives a dead-lettered job up: out of the dead letters, the job failed with
/// the reason. Audited (`job.dead_letter_discarded`).
#[utoipa::path(
    post, path = "/api/admin/dead-letters/{job_id}/discard", tag = "admin", operation_id = "admin_discard_dead_letter",
    security(("bearer" = [])),
    params(("job_id" = String, Path, format = Uuid, description = "The job's id")),
    request_body = DiscardBody,
    responses(
        (status = 200, description = "The job, failed", body = DeadLetterOutcome),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a dead letter, or the caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one too long", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn discard_dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    Body(body): Body<DiscardBody>,
) -> Result<Json<DeadLetterOutcome>, Problem> {
    let reply = operations(&state)
        .discard_dead_letter(grpc_request(
            pb::DiscardDeadLetterRequest {
                job_id,
                reason: body.reason,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(DeadLetterOutcome {
        job_id: reply.job_id,
        status: reply.status,
    }))
}

// ---------------------------------------------------------------------------
// fal

/// One fal host's circuit breaker.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerBody {
    /// e.g. `queue.fal.run`.
    pub host: String,
    /// `closed`, `half_open` or `open`.
    pub state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FalStateBody {
    /// Every fal host called so far (one processing replica's view).
    pub breakers: Vec<BreakerBody>,
    /// Jobs failed within the last hour.
    pub recent_failures: u64,
}

/// fal's circuit breakers and how many jobs failed lately.
#[utoipa::path(
    get, path = "/api/admin/fal", tag = "admin", operation_id = "admin_get_fal_state",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The breakers", body = FalStateBody),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = NOT_ADMIN, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn fal_state(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<FalStateBody>, Problem> {
    let reply = operations(&state)
        .get_fal_state(grpc_request(pb::GetFalStateRequest {}, &headers))
        .await?
        .into_inner();
    Ok(Json(FalStateBody {
        breakers: reply
            .breakers
            .into_iter()
            .map(|breaker| BreakerBody {
                host: breaker.host,
                state: breaker.state,
            })
            .collect(),
        recent_failures: reply.recent_failures,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureExampleBody {
    pub job_id: String,
    pub user_id: String,
    pub workflow_id: String,
    /// The message the job's owner sees.
    pub message: String,
    pub at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureGroupBody {
    /// fal's error type (e.g. `runner_server_error`) or the platform's failure
    /// code (e.g. `attempts_exhausted`).
    pub error_type: String,
    pub count: u64,
    pub last_at: Option<String>,
    /// The most recent first.
    pub examples: Vec<FailureExampleBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureReport {
    /// The window's start.
    pub since: Option<String>,
    /// Most frequent first.
    pub groups: Vec<FailureGroupBody>,
}

#[derive(Debug, Deserialize)]
pub struct FailureParams {
    /// Failures at or after this instant (RFC 3339); default: the last 24 hours.
    pub since: Option<String>,
    /// Examples per error type (default 3, at most 20).
    pub examples: Option<i32>,
}

/// Jobs failed lately, grouped by error type, most frequent first, with recent
/// examples.
#[utoipa::path(
    get, path = "/api/admin/failures", tag = "admin", operation_id = "admin_list_failures",
    security(("bearer" = [])),
    params(
        ("since" = Option<String>, Query, format = DateTime, description = "Failures at or after this instant (RFC 3339); default: the last 24 hours"),
        ("examples" = Option<i32>, Query, minimum = 1, maximum = 20, description = "Examples per error type (default 3)"),
    ),
    responses(
        (status = 200, description = "Failures by error type", body = FailureReport),
        (status = 403, description = FORBIDDEN_KEY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = NOT_ADMIN, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid instant or count", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn failures(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<FailureParams>,
) -> Result<Json<FailureReport>, Problem> {
    let mut violations = Vec::new();
    let since = instant("since", params.since.as_deref()).unwrap_or_else(|violation| {
        violations.push(violation);
        None
    });
    let examples = params.examples.unwrap_or(0);
    if !(0..=20).contains(&examples) {
        violations.push(FieldViolation::new("examples", "must be from 1 to 20"));
    }
    if !violations.is_empty() {
        return Err(Problem::invalid(violations));
    }
    let reply = operations(&state)
        .list_recent_failures(grpc_request(
            pb::ListRecentFailuresRequest { since, examples },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(FailureReport {
        since: rfc3339(reply.since),
        groups: reply
            .groups
            .into_iter()
            .map(|group| FailureGroupBody {
                error_type: group.error_type,
                count: group.count,
                last_at: rfc3339(group.last_at),
                examples: group
                    .examples
                    .into_iter()
                    .map(|example| FailureExampleBody {
                        job_id: example.job_id,
                        user_id: example.user_id,
                        workflow_id: example.workflow_id,
                        message: example.message,
                        at: rfc3339(example.at),
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(update_user))
        .routes(routes!(queue))
        .routes(routes!(dead_letters))
        .routes(routes!(dead_letter))
        .routes(routes!(retry_dead_letter))
        .routes(routes!(discard_dead_letter))
        .routes(routes!(fal_state))
        .routes(routes!(failures))
}
