//! gRPC handlers of `atelier.spend.v1`: `SpendService` (the caller's spend; the
//! platform's, and budgets per user, for administrators) and `AnalyticsService`
//! (administrators). Who may call what is declared in the contract and enforced
//! by the shared policy: a non-administrator never reaches the admin handlers.

use std::sync::Arc;

use atelier_common::{FieldViolation, grpc::caller, instant, timestamp};
use atelier_proto::spend::v1::{
    self as pb, analytics_service_server::AnalyticsService, spend_service_server::SpendService,
};
use time::{Duration, OffsetDateTime};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        analytics::{self, Analytics, Figures},
        spend::{Alert, BudgetOverride, PeriodSpend, Spend, UserSpend, UserTotal},
    },
    error::ProcessingError,
    peers::StorageSource,
};

/// The longest range analytics are computed over.
const MAX_RANGE: Duration = Duration::days(366);

pub struct SpendApi {
    spend: Arc<Spend>,
    storage: Option<Arc<dyn StorageSource>>,
}

impl SpendApi {
    pub fn new(spend: Arc<Spend>, storage: Option<Arc<dyn StorageSource>>) -> Self {
        Self { spend, storage }
    }

    /// The figures of `from..to` (the last 30 days when unset), storage included
    /// when the image service answers.
    pub async fn analytics(
        &self,
        from: Option<prost_types::Timestamp>,
        to: Option<prost_types::Timestamp>,
        top: u32,
    ) -> Result<Analytics, ProcessingError> {
        let (from, to) = range(from, to, self.spend.now())?;
        let mut figures = self.spend.analytics(from, to, top_of(top)).await?;
        if let Some(storage) = &self.storage {
            match storage.platform_storage().await {
                Ok(storage) => figures.storage = Some(storage),
                Err(err) => tracing::warn!(error = %err, "storage usage unknown"),
            }
        }
        Ok(figures)
    }
}

fn top_of(top: u32) -> usize {
    match top {
        0 => 10,
        top => top.min(100) as usize,
    }
}

/// The range asked for: `to` defaults to now, `from` to 30 days before `to`.
fn range(
    from: Option<prost_types::Timestamp>,
    to: Option<prost_types::Timestamp>,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), ProcessingError> {
    let bad = |field: &str, why: &str| {
        ProcessingError::InvalidInput(vec![FieldViolation::new(field, why)])
    };
    let to = match to {
        Some(to) => instant(to).ok_or_else(|| bad("to", "not a valid time"))?,
        None => now,
    };
    let from = match from {
        Some(from) => instant(from).ok_or_else(|| bad("from", "not a valid time"))?,
        None => to - Duration::days(30),
    };
    if from >= to {
        return Err(bad("from", "must be before `to`"));
    }
    if to - from > MAX_RANGE {
        return Err(bad("from", "the range may span at most 366 days"));
    }
    Ok((from, to))
}

fn user_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| {
        ProcessingError::InvalidInput(vec![FieldViolation::new("user_id", "not a valid id")])
    })
}

fn encode_period(period: &PeriodSpend) -> pb::PeriodSpend {
    pb::PeriodSpend {
        period: period.kind.as_str().to_owned(),
        start: Some(timestamp(period.start)),
        end: Some(timestamp(period.end)),
        spent: period.totals.spent,
        reserved: period.totals.reserved,
        jobs: period.totals.jobs,
        budget: period.budget,
        percent: period.percent(),
        remaining: period.remaining(),
    }
}

fn encode_alert(alert: &Alert) -> pb::BudgetAlert {
    pb::BudgetAlert {
        period: alert.period.as_str().to_owned(),
        period_start: Some(timestamp(alert.period_start)),
        threshold_percent: alert.threshold,
        spent: alert.spent,
        budget: alert.budget,
        raised_at: Some(timestamp(alert.at)),
    }
}

fn encode_spend(spend: &UserSpend) -> pb::Spend {
    pb::Spend {
        currency: spend.currency.clone(),
        day: Some(encode_period(&spend.day)),
        month: Some(encode_period(&spend.month)),
        budget_source: spend.source.as_str().to_owned(),
        alert_percent: spend.alert_percent,
        hard_stop: spend.hard_stop,
        alerts: spend.alerts.iter().map(encode_alert).collect(),
    }
}

fn encode_user(total: &UserTotal) -> pb::UserTotal {
    pb::UserTotal {
        user_id: total.user_id.to_string(),
        cost: total.cost,
        jobs: total.jobs,
    }
}

pub fn encode_figures(figures: &Figures) -> pb::WorkflowFigures {
    pb::WorkflowFigures {
        workflow_id: figures.workflow_id.clone(),
        jobs: figures.jobs,
        succeeded: figures.succeeded,
        failed: figures.failed,
        cancelled: figures.cancelled,
        success_rate: figures.success_rate,
        p50_ms: figures.p50_ms,
        p95_ms: figures.p95_ms,
        queue_wait_p50_ms: figures.queue_p50_ms,
        queue_wait_p95_ms: figures.queue_p95_ms,
        cost: figures.cost,
    }
}

#[tonic::async_trait]
impl SpendService for SpendApi {
    async fn get_my_spend(
        &self,
        request: Request<pb::GetMySpendRequest>,
    ) -> Result<Response<pb::GetMySpendResponse>, Status> {
        let caller = caller(&request)?;
        let spend = self.spend.of_user(caller.user_id).await?;
        Ok(Response::new(pb::GetMySpendResponse {
            spend: Some(encode_spend(&spend)),
        }))
    }

    async fn get_platform_spend(
        &self,
        request: Request<pb::GetPlatformSpendRequest>,
    ) -> Result<Response<pb::GetPlatformSpendResponse>, Status> {
        let top = top_of(request.get_ref().top) as u64;
        let spend = self.spend.of_platform(top).await?;
        Ok(Response::new(pb::GetPlatformSpendResponse {
            currency: spend.currency.clone(),
            day: Some(encode_period(&spend.day)),
            month: Some(encode_period(&spend.month)),
            alert_percent: spend.alert_percent,
            hard_stop: spend.hard_stop,
            top_users: spend.top_users.iter().map(encode_user).collect(),
            alerts: spend.alerts.iter().map(encode_alert).collect(),
        }))
    }

    async fn get_user_spend(
        &self,
        request: Request<pb::GetUserSpendRequest>,
    ) -> Result<Response<pb::GetUserSpendResponse>, Status> {
        let user_id = user_id(&request.get_ref().user_id)?;
        let spend = self.spend.of_user(user_id).await?;
        Ok(Response::new(pb::GetUserSpendResponse {
            spend: Some(encode_spend(&spend)),
        }))
    }

    async fn set_user_budget(
        &self,
        request: Request<pb::SetUserBudgetRequest>,
    ) -> Result<Response<pb::SetUserBudgetResponse>, Status> {
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        // A user the platform does not know answers not-found, and keeps no budget.
        self.spend.of_user(user_id).await?;
        self.spend
            .set_override(
                user_id,
                BudgetOverride {
                    daily: request.daily,
                    monthly: request.monthly,
                },
            )
            .await?;
        let spend = self.spend.of_user(user_id).await?;
        Ok(Response::new(pb::SetUserBudgetResponse {
            spend: Some(encode_spend(&spend)),
        }))
    }

    async fn clear_user_budget(
        &self,
        request: Request<pb::ClearUserBudgetRequest>,
    ) -> Result<Response<pb::ClearUserBudgetResponse>, Status> {
        let user_id = user_id(&request.get_ref().user_id)?;
        self.spend.clear_override(user_id).await?;
        let spend = self.spend.of_user(user_id).await?;
        Ok(Response::new(pb::ClearUserBudgetResponse {
            spend: Some(encode_spend(&spend)),
        }))
    }
}

#[tonic::async_trait]
impl AnalyticsService for SpendApi {
    async fn get_analytics(
        &self,
        request: Request<pb::GetAnalyticsRequest>,
    ) -> Result<Response<pb::GetAnalyticsResponse>, Status> {
        let request = request.into_inner();
        let figures = self
            .analytics(request.from, request.to, request.top)
            .await?;
        Ok(Response::new(pb::GetAnalyticsResponse {
            from: Some(timestamp(figures.from)),
            to: Some(timestamp(figures.to)),
            currency: self.spend.settings().currency,
            totals: Some(encode_figures(&figures.totals)),
            days: figures
                .days
                .iter()
                .map(|day| pb::DayCount {
                    date: day.date.clone(),
                    workflow_id: day.workflow_id.clone(),
                    jobs: day.jobs,
                    succeeded: day.succeeded,
                    failed: day.failed,
                    cancelled: day.cancelled,
                    cost: day.cost,
                })
                .collect(),
            workflows: figures.workflows.iter().map(encode_figures).collect(),
            top_users: figures.top_users.iter().map(encode_user).collect(),
            storage_bytes: figures.storage.map(|(bytes, _)| bytes),
            storage_images: figures.storage.map(|(_, images)| images),
            csv: analytics::csv(&figures),
        }))
    }

    async fn get_workflow_stats(
        &self,
        request: Request<pb::GetWorkflowStatsRequest>,
    ) -> Result<Response<pb::GetWorkflowStatsResponse>, Status> {
        let request = request.into_inner();
        let (from, to) = range(request.from, request.to, self.spend.now())?;
        let figures = self.spend.analytics(from, to, 0).await?;
        Ok(Response::new(pb::GetWorkflowStatsResponse {
            from: Some(timestamp(from)),
            to: Some(timestamp(to)),
            currency: self.spend.settings().currency,
            workflows: figures.workflows.iter().map(encode_figures).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_range_defaults_to_the_last_30_days_and_is_bounded() {
        let now = datetime!(2026-12-20 12:00 UTC);
        assert_eq!(
            range(None, None, now).expect("the default range"),
            (datetime!(2026-11-20 12:00 UTC), now)
        );
        let at = |at| Some(timestamp(at));
        assert!(matches!(
            range(at(now), at(now), now),
            Err(ProcessingError::InvalidInput(_))
        ));
        assert!(matches!(
            range(at(datetime!(2025-01-01 00:00 UTC)), at(now), now),
            Err(ProcessingError::InvalidInput(_))
        ));
    }
}
