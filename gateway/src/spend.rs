//! Spend and analytics: `/api/users/me/spend` (the caller's spend, budgets and
//! alerts), and for administrators `/api/admin/spend`, a user's budget
//! (`/api/admin/users/{id}/budget`) and `/api/admin/analytics*` (figures, per
//! workflow, CSV). Anyone else gets `404` on the admin routes, as for a resource
//! that does not exist.

use atelier_common::FieldViolation;
use atelier_proto::spend::v1::{
    self as pb, analytics_service_client::AnalyticsServiceClient,
    spend_service_client::SpendServiceClient,
};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::transport::Channel;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::Query,
    problem::Problem,
    state::{AppState, grpc_request},
    views::rfc3339,
};

fn spend_client(state: &AppState) -> SpendServiceClient<Channel> {
    SpendServiceClient::new(state.processing.clone())
}

fn analytics_client(state: &AppState) -> AnalyticsServiceClient<Channel> {
    AnalyticsServiceClient::new(state.processing.clone())
}

/// One period's spend against its budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodSpendBody {
    /// `day` or `month` (UTC).
    pub period: String,
    /// The period's start (inclusive) and end (exclusive), RFC 3339.
    pub start: Option<String>,
    pub end: Option<String>,
    /// What final jobs created in the period cost (their actual costs).
    pub spent: f64,
    /// What unfinished ones are estimated to cost.
    pub reserved: f64,
    /// Jobs created in the period.
    pub jobs: i64,
    /// `null`: no budget.
    pub budget: Option<f64>,
    /// `spent + reserved` in percent of the budget.
    pub percent: Option<f64>,
    /// What is left of the budget.
    pub remaining: Option<f64>,
}

impl From<pb::PeriodSpend> for PeriodSpendBody {
    fn from(period: pb::PeriodSpend) -> Self {
        Self {
            period: period.period,
            start: rfc3339(period.start),
            end: rfc3339(period.end),
            spent: period.spent,
            reserved: period.reserved,
            jobs: period.jobs,
            budget: period.budget,
            percent: period.percent,
            remaining: period.remaining,
        }
    }
}

/// A budget threshold reached: raised once per period and threshold.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetAlertBody {
    /// `day` or `month`.
    pub period: String,
    pub period_start: Option<String>,
    /// In percent of the budget (the alert share, or 100).
    pub threshold_percent: u32,
    pub spent: f64,
    pub budget: f64,
    pub raised_at: Option<String>,
}

impl From<pb::BudgetAlert> for BudgetAlertBody {
    fn from(alert: pb::BudgetAlert) -> Self {
        Self {
            period: alert.period,
            period_start: rfc3339(alert.period_start),
            threshold_percent: alert.threshold_percent,
            spent: alert.spent,
            budget: alert.budget,
            raised_at: rfc3339(alert.raised_at),
        }
    }
}

/// A user's spend this UTC day and month, their budgets and alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpendBody {
    /// ISO 4217, e.g. `USD`.
    pub currency: String,
    pub day: Option<PeriodSpendBody>,
    pub month: Option<PeriodSpendBody>,
    /// `tier` (the subscription tier's budgets) or `override` (set by an
    /// administrator for this user).
    pub budget_source: String,
    /// The share of a budget (percent) that raises an alert.
    pub alert_percent: u32,
    /// Whether a start that would take spend past a budget is refused.
    pub hard_stop: bool,
    /// Alerts raised this month, oldest first.
    pub alerts: Vec<BudgetAlertBody>,
}

impl From<pb::Spend> for SpendBody {
    fn from(spend: pb::Spend) -> Self {
        Self {
            currency: spend.currency,
            day: spend.day.map(PeriodSpendBody::from),
            month: spend.month.map(PeriodSpendBody::from),
            budget_source: spend.budget_source,
            alert_percent: spend.alert_percent,
            hard_stop: spend.hard_stop,
            alerts: spend
                .alerts
                .into_iter()
                .map(BudgetAlertBody::from)
                .collect(),
        }
    }
}

fn spend_body(spend: Option<pb::Spend>) -> Result<Json<SpendBody>, Problem> {
    spend
        .map(|spend| Json(SpendBody::from(spend)))
        .ok_or_else(|| Problem::from(tonic::Status::internal("no spend in the reply")))
}

/// One user's spend in a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserTotalBody {
    pub user_id: String,
    pub cost: f64,
    pub jobs: i64,
}

impl From<pb::UserTotal> for UserTotalBody {
    fn from(total: pb::UserTotal) -> Self {
        Self {
            user_id: total.user_id,
            cost: total.cost,
            jobs: total.jobs,
        }
    }
}

/// The platform's spend this UTC day and month.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformSpendBody {
    pub currency: String,
    pub day: Option<PeriodSpendBody>,
    /// With the platform's monthly budget (`PLATFORM_MONTHLY_BUDGET`), if any.
    pub month: Option<PeriodSpendBody>,
    pub alert_percent: u32,
    pub hard_stop: bool,
    /// The users who spent most this month, most first.
    pub top_users: Vec<UserTotalBody>,
    /// The platform budget's alerts this month.
    pub alerts: Vec<BudgetAlertBody>,
}

/// The caller's spend this UTC day and month (what their final jobs cost and
/// what their running ones are estimated to), their budgets and the alerts
/// raised this month.
#[utoipa::path(
    get, path = "/api/users/me/spend", tag = "users", operation_id = "get_my_spend",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's spend", body = SpendBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn my_spend(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SpendBody>, Problem> {
    let reply = spend_client(&state)
        .get_my_spend(grpc_request(pb::GetMySpendRequest {}, &headers))
        .await?
        .into_inner();
    spend_body(reply.spend)
}

#[derive(Debug, Deserialize)]
pub struct TopParams {
    /// How many top users (1-100, default 10).
    pub top: Option<u32>,
}

/// The platform's spend this UTC day and month, its monthly budget and the
/// users who spent most this month. Administrators only.
#[utoipa::path(
    get, path = "/api/admin/spend", tag = "admin", operation_id = "get_platform_spend",
    security(("bearer" = [])),
    params(("top" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many top users (default 10)")),
    responses(
        (status = 200, description = "The platform's spend", body = PlatformSpendBody),
        (status = 404, description = "The caller is not an administrator (answered as for a missing resource)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn platform_spend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<TopParams>,
) -> Result<Json<PlatformSpendBody>, Problem> {
    let reply = spend_client(&state)
        .get_platform_spend(grpc_request(
            pb::GetPlatformSpendRequest {
                top: params.top.unwrap_or(0),
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(PlatformSpendBody {
        currency: reply.currency,
        day: reply.day.map(PeriodSpendBody::from),
        month: reply.month.map(PeriodSpendBody::from),
        alert_percent: reply.alert_percent,
        hard_stop: reply.hard_stop,
        top_users: reply
            .top_users
            .into_iter()
            .map(UserTotalBody::from)
            .collect(),
        alerts: reply
            .alerts
            .into_iter()
            .map(BudgetAlertBody::from)
            .collect(),
    }))
}

/// A user's spend and budgets, as they see them. Administrators only.
#[utoipa::path(
    get, path = "/api/admin/users/{id}/spend", tag = "admin", operation_id = "get_user_spend",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user")),
    responses(
        (status = 200, description = "The user's spend", body = SpendBody),
        (status = 404, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a user id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn user_spend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SpendBody>, Problem> {
    let reply = spend_client(&state)
        .get_user_spend(grpc_request(
            pb::GetUserSpendRequest { user_id: id },
            &headers,
        ))
        .await?
        .into_inner();
    spend_body(reply.spend)
}

/// A user's budgets, replacing their tier's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    /// Per UTC day, in the platform's currency; `null` or absent: no daily budget.
    pub daily: Option<f64>,
    /// Per UTC calendar month; `null` or absent: no monthly budget.
    pub monthly: Option<f64>,
}

/// Sets a user's budgets, replacing both of their tier's (a budget left out is
/// none). Administrators only.
#[utoipa::path(
    put, path = "/api/admin/users/{id}/budget", tag = "admin", operation_id = "set_user_budget",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user")),
    request_body = BudgetRequest,
    responses(
        (status = 200, description = "The user's spend under the new budgets", body = SpendBody),
        (status = 404, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A negative budget or not a user id (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    crate::extract::Body(body): crate::extract::Body<BudgetRequest>,
) -> Result<Json<SpendBody>, Problem> {
    let reply = spend_client(&state)
        .set_user_budget(grpc_request(
            pb::SetUserBudgetRequest {
                user_id: id,
                daily: body.daily,
                monthly: body.monthly,
            },
            &headers,
        ))
        .await?
        .into_inner();
    spend_body(reply.spend)
}

/// Removes a user's budgets: their tier's apply again. Administrators only.
#[utoipa::path(
    delete, path = "/api/admin/users/{id}/budget", tag = "admin", operation_id = "clear_user_budget",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user")),
    responses(
        (status = 200, description = "The user's spend under their tier's budgets", body = SpendBody),
        (status = 404, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a user id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn clear_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SpendBody>, Problem> {
    let reply = spend_client(&state)
        .clear_user_budget(grpc_request(
            pb::ClearUserBudgetRequest { user_id: id },
            &headers,
        ))
        .await?
        .into_inner();
    spend_body(reply.spend)
}

#[derive(Debug, Deserialize)]
pub struct RangeParams {
    /// From (inclusive): RFC 3339, or a date (its UTC midnight).
    pub from: Option<String>,
    /// To (exclusive): RFC 3339, or a date (the end of that UTC day).
    pub to: Option<String>,
    /// How many top users (1-100, default 10).
    pub top: Option<u32>,
}

/// An instant of the range: RFC 3339, or a `YYYY-MM-DD` date (its UTC midnight;
/// the next one when `end`).
fn range_instant(
    field: &str,
    raw: Option<&str>,
    end: bool,
) -> Result<Option<prost_types::Timestamp>, FieldViolation> {
    let Some(raw) = raw.filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(Some(atelier_common::timestamp(at)));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(raw, &format)
        .map(|date| {
            let midnight = date.midnight().assume_utc();
            let at = if end {
                midnight + time::Duration::days(1)
            } else {
                midnight
            };
            Some(atelier_common::timestamp(at))
        })
        .map_err(|_| {
            FieldViolation::new(
                field,
                "must be an RFC 3339 instant or a date, e.g. 2026-01-31",
            )
        })
}

fn range(
    params: &RangeParams,
) -> Result<
    (
        Option<prost_types::Timestamp>,
        Option<prost_types::Timestamp>,
    ),
    Problem,
> {
    let mut violations = Vec::new();
    let from = range_instant("from", params.from.as_deref(), false).unwrap_or_else(|violation| {
        violations.push(violation);
        None
    });
    let to = range_instant("to", params.to.as_deref(), true).unwrap_or_else(|violation| {
        violations.push(violation);
        None
    });
    if violations.is_empty() {
        Ok((from, to))
    } else {
        Err(Problem::invalid(violations))
    }
}

/// One workflow's figures (or all workflows', with `workflow_id` `all`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowFiguresBody {
    pub workflow_id: String,
    pub jobs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// `succeeded / (succeeded + failed)`, 0 to 1; 0 when none finished.
    pub success_rate: f64,
    /// Processing time of completed jobs, nearest-rank percentiles; `null`
    /// when none completed.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    /// From creation to a worker's first claim, nearest-rank percentiles.
    pub queue_wait_p50_ms: Option<i64>,
    pub queue_wait_p95_ms: Option<i64>,
    /// What the jobs cost (actual once final, estimated while running).
    pub cost: f64,
}

impl From<pb::WorkflowFigures> for WorkflowFiguresBody {
    fn from(figures: pb::WorkflowFigures) -> Self {
        Self {
            workflow_id: if figures.workflow_id.is_empty() {
                "all".to_owned()
            } else {
                figures.workflow_id
            },
            jobs: figures.jobs,
            succeeded: figures.succeeded,
            failed: figures.failed,
            cancelled: figures.cancelled,
            success_rate: figures.success_rate,
            p50_ms: figures.p50_ms,
            p95_ms: figures.p95_ms,
            queue_wait_p50_ms: figures.queue_wait_p50_ms,
            queue_wait_p95_ms: figures.queue_wait_p95_ms,
            cost: figures.cost,
        }
    }
}

/// Jobs of one workflow created on one UTC day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayCountBody {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub workflow_id: String,
    pub jobs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub cost: f64,
}

/// The operator's figures over the jobs created in a range.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsBody {
    pub from: Option<String>,
    pub to: Option<String>,
    pub currency: String,
    /// Every workflow together (`workflow_id` `all`).
    pub totals: Option<WorkflowFiguresBody>,
    /// By day, then workflow.
    pub days: Vec<DayCountBody>,
    /// By workflow id.
    pub workflows: Vec<WorkflowFiguresBody>,
    /// Who spent most in the range, most first.
    pub top_users: Vec<UserTotalBody>,
    /// Bytes held by every stored image now; `null` when the image service did
    /// not answer.
    pub storage_bytes: Option<i64>,
    pub storage_images: Option<i64>,
}

async fn analytics(
    state: &AppState,
    headers: &HeaderMap,
    params: &RangeParams,
) -> Result<pb::GetAnalyticsResponse, Problem> {
    let (from, to) = range(params)?;
    Ok(analytics_client(state)
        .get_analytics(grpc_request(
            pb::GetAnalyticsRequest {
                from,
                to,
                top: params.top.unwrap_or(0),
            },
            headers,
        ))
        .await?
        .into_inner())
}

/// Jobs per day per workflow, success rate, p50/p95 processing time and queue
/// wait (nearest-rank), spend, top users and storage, over the jobs created in
/// `from..to` (default: the last 30 days; at most 366). Administrators only.
#[utoipa::path(
    get, path = "/api/admin/analytics", tag = "admin", operation_id = "get_analytics",
    security(("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "From (inclusive): RFC 3339, or a date (its UTC midnight)"),
        ("to" = Option<String>, Query, description = "To (exclusive): RFC 3339, or a date (that whole UTC day included)"),
        ("top" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many top users (default 10)"),
    ),
    responses(
        (status = 200, description = "The figures", body = AnalyticsBody),
        (status = 404, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid range (each field named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_analytics(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<RangeParams>,
) -> Result<Json<AnalyticsBody>, Problem> {
    let reply = analytics(&state, &headers, &params).await?;
    Ok(Json(AnalyticsBody {
        from: rfc3339(reply.from),
        to: rfc3339(reply.to),
        currency: reply.currency,
        totals: reply.totals.map(WorkflowFiguresBody::from),
        days: reply
            .days
            .into_iter()
            .map(|day| DayCountBody {
                date: day.date,
                workflow_id: day.workflow_id,
                jobs: day.jobs,
                succeeded: day.succeeded,
                failed: day.failed,
                cancelled: day.cancelled,
                cost: day.cost,
            })
            .collect(),
        workflows: reply
            .workflows
            .into_iter()
            .map(WorkflowFiguresBody::from)
            .collect(),
        top_users: reply
            .top_users
            .into_iter()
            .map(UserTotalBody::from)
            .collect(),
        storage_bytes: reply.storage_bytes,
        storage_images: reply.storage_images,
    }))
}

/// One workflow's figures, as the admin console lists them.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowStatsBody {
    pub workflow_id: String,
    pub jobs: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// `succeeded / (succeeded + failed)`, 0 to 1; 0 when none finished.
    pub success_rate: f64,
    /// Processing time of completed jobs, nearest-rank; `null` when none.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub cost: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowStatsPage {
    pub workflows: Vec<WorkflowStatsBody>,
}

/// Per-workflow figures over the jobs created in `from..to` (default: the last
/// 30 days). Administrators only.
#[utoipa::path(
    get, path = "/api/admin/analytics/workflows", tag = "admin", operation_id = "get_workflow_stats",
    security(("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "From (inclusive): RFC 3339, or a date"),
        ("to" = Option<String>, Query, description = "To (exclusive): RFC 3339, or a date (that whole UTC day included)"),
    ),
    responses(
        (status = 200, description = "Each workflow's figures", body = WorkflowStatsPage),
        (status = 404, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid range (each field named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn workflow_stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<RangeParams>,
) -> Result<Json<WorkflowStatsPage>, Problem> {
    let (from, to) = range(&params)?;
    let reply = analytics_client(&state)
        .get_workflow_stats(grpc_request(
            pb::GetWorkflowStatsRequest { from, to },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(WorkflowStatsPage {
        workflows: reply
            .workflows
            .into_iter()
            .map(|figures| WorkflowStatsBody {
                workflow_id: figures.workflow_id,
                jobs: figures.jobs,
                succeeded: figures.succeeded,
                failed: figures.failed,
                success_rate: figures.success_rate,
                p50_ms: figures.p50_ms,
                p95_ms: figures.p95_ms,
                cost: figures.cost,
            })
            .collect(),
    }))
}

/// The figures as CSV (RFC 4180): one row per day and workflow, then one per
/// workflow and the total (date `all`). Administrators only.
#[utoipa::path(
    get, path = "/api/admin/analytics/export.csv", tag = "admin", operation_id = "export_analytics",
    security(("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "From (inclusive): RFC 3339, or a date"),
        ("to" = Option<String>, Query, description = "To (exclusive): RFC 3339, or a date (that whole UTC day included)"),
    ),
    responses(
        (status = 200, description = "The figures", content_type = "text/csv", body = String),
        (status = 404, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid range (each field named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<RangeParams>,
) -> Result<Response, Problem> {
    let reply = analytics(&state, &headers, &params).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"atelier-analytics.csv\""),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        reply.csv,
    )
        .into_response())
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_spend))
        .routes(routes!(platform_spend))
        .routes(routes!(user_spend))
        .routes(routes!(set_budget, clear_budget))
        .routes(routes!(get_analytics))
        .routes(routes!(workflow_stats))
        .routes(routes!(export_csv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_takes_instants_or_whole_utc_days() {
        let at = |raw, end| {
            range_instant("from", Some(raw), end)
                .expect("valid")
                .and_then(atelier_common::instant)
                .expect("an instant")
        };
        assert_eq!(
            at("2026-12-01", false),
            time::macros::datetime!(2026-12-01 00:00 UTC)
        );
        assert_eq!(
            at("2026-12-01", true),
            time::macros::datetime!(2026-12-02 00:00 UTC)
        );
        assert_eq!(
            at("2026-12-01T10:00:00+01:00", true),
            time::macros::datetime!(2026-12-01 09:00 UTC)
        );
        assert!(range_instant("from", Some("yesterday"), false).is_err());
        assert_eq!(range_instant("to", None, true).expect("absent"), None);
    }
}
