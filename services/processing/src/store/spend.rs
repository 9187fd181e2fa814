//! Spend's tables: the budgets administrators set per user, the budget alerts
//! raised, and the sums over jobs' costs (see [`crate::domain::spend`]).

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{jobs, webhooks};
use crate::domain::{
    Status,
    analytics::JobFacts,
    outbound::Message,
    spend::{Alert, BudgetOverride, PeriodKind, Totals, UserTotal, round_cost},
};

pub mod budget_overrides {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "budget_overrides")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub daily_budget: Option<f64>,
        pub monthly_budget: Option<f64>,
        pub updated_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod budget_alerts {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "budget_alerts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub period: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub period_start: TimeDateTimeWithTimeZone,
        #[sea_orm(primary_key, auto_increment = false)]
        pub threshold: i32,
        pub spent: f64,
        pub budget: f64,
        pub created_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A job's charge: its actual cost once known, 0 when it failed or was
/// cancelled without one, else its estimate.
const CHARGE: &str = "COALESCE(actual_cost, CASE WHEN status IN ('failed', 'cancelled') \
                      THEN 0 ELSE estimated_cost END)";
/// Whether a job is final.
const FINAL: &str = "status IN ('completed', 'failed', 'cancelled')";

#[derive(Clone)]
pub struct SpendStore {
    db: DatabaseConnection,
}

impl SpendStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// What jobs created in `from..to` (of `user_id`, or everyone's) cost.
    pub async fn totals(
        &self,
        user_id: Option<Uuid>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Totals, DbErr> {
        let mut query = jobs::Entity::find()
            .select_only()
            .column_as(
                Expr::cust(format!("SUM(CASE WHEN {FINAL} THEN {CHARGE} END)")),
                "spent",
            )
            .column_as(
                Expr::cust(format!("SUM(CASE WHEN NOT ({FINAL}) THEN {CHARGE} END)")),
                "reserved",
            )
            .column_as(Expr::cust("COUNT(*)"), "jobs")
            .filter(jobs::Column::CreatedAt.gte(from))
            .filter(jobs::Column::CreatedAt.lt(to));
        if let Some(user_id) = user_id {
            query = query.filter(jobs::Column::UserId.eq(user_id));
        }
        let row: Option<(Option<f64>, Option<f64>, i64)> = query.into_tuple().one(&self.db).await?;
        let (spent, reserved, jobs) = row.unwrap_or_default();
        Ok(Totals {
            spent: round_cost(spent.unwrap_or_default()),
            reserved: round_cost(reserved.unwrap_or_default()),
            jobs,
        })
    }

    /// The `limit` users whose jobs created in `from..to` cost most.
    pub async fn top_users(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u64,
    ) -> Result<Vec<UserTotal>, DbErr> {
        let rows: Vec<(Uuid, Option<f64>, i64)> = jobs::Entity::find()
            .select_only()
            .column(jobs::Column::UserId)
            .column_as(Expr::cust(format!("SUM({CHARGE})")), "cost")
            .column_as(Expr::cust("COUNT(*)"), "jobs")
            .filter(jobs::Column::CreatedAt.gte(from))
            .filter(jobs::Column::CreatedAt.lt(to))
            .group_by(jobs::Column::UserId)
            .order_by_desc(Expr::cust(format!("SUM({CHARGE})")))
            .order_by_desc(Expr::cust("COUNT(*)"))
            .order_by_asc(jobs::Column::UserId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user_id, cost, jobs)| UserTotal {
                user_id,
                cost: round_cost(cost.unwrap_or_default()),
                jobs,
            })
            .collect())
    }

    /// What the analytics need of every job created in `from..to`, in id order.
    pub async fn job_facts(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<JobFacts>, DbErr> {
        let rows = jobs::Entity::find()
            .filter(jobs::Column::CreatedAt.gte(from))
            .filter(jobs::Column::CreatedAt.lt(to))
            .order_by_asc(jobs::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let status: Status = row.status.into();
                let charge = row.actual_cost.unwrap_or(match status {
                    Status::Failed | Status::Cancelled => 0.0,
                    _ => row.estimated_cost.unwrap_or_default(),
                });
                JobFacts {
                    user_id: row.user_id,
                    workflow_id: row.workflow_id,
                    status,
                    created_at: row.created_at,
                    started_at: row.started_at,
                    processing_time_ms: row.processing_time_ms,
                    charge,
                }
            })
            .collect())
    }

    pub async fn budget_override(&self, user_id: Uuid) -> Result<Option<BudgetOverride>, DbErr> {
        Ok(budget_overrides::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .map(|row| BudgetOverride {
                daily: row.daily_budget,
                monthly: row.monthly_budget,
            }))
    }

    pub async fn set_override(
        &self,
        user_id: Uuid,
        budgets: BudgetOverride,
        at: OffsetDateTime,
    ) -> Result<(), DbErr> {
        use budget_overrides::Column;
        budget_overrides::Entity::insert(budget_overrides::ActiveModel {
            user_id: Set(user_id),
            daily_budget: Set(budgets.daily),
            monthly_budget: Set(budgets.monthly),
            updated_at: Set(at),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(Column::UserId)
                .update_columns([
                    Column::DailyBudget,
                    Column::MonthlyBudget,
                    Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    pub async fn clear_override(&self, user_id: Uuid) -> Result<bool, DbErr> {
        let deleted = budget_overrides::Entity::delete_by_id(user_id)
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected > 0)
    }

    /// Records `alert` unless it was raised already, with its webhook message
    /// (sent when its user has an enabled endpoint) in the same transaction.
    /// True when this call raised it.
    pub async fn raise(&self, alert: &Alert, message: Option<&Message>) -> Result<bool, DbErr> {
        use budget_alerts::Column;
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let inserted = budget_alerts::Entity::insert(budget_alerts::ActiveModel {
            scope: Set(alert.scope.clone()),
            period: Set(alert.period.as_str().to_owned()),
            period_start: Set(alert.period_start),
            threshold: Set(alert.threshold as i32),
            spent: Set(alert.spent),
            budget: Set(alert.budget),
            created_at: Set(alert.at),
        })
        .on_conflict_do_nothing_on([
            Column::Scope,
            Column::Period,
            Column::PeriodStart,
            Column::Threshold,
        ])
        .exec_without_returning(&txn)
        .await?;
        if !matches!(inserted, sea_orm::TryInsertResult::Inserted(rows) if rows > 0) {
            txn.rollback().await?;
            return Ok(false);
        }
        if let Some(message) = message {
            webhooks::execute(&txn, &webhooks::outbox_insert(message, None)?).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// The alerts of `scope` (a user id, or `platform`) in periods starting at
    /// or after `since`, oldest first.
    pub async fn alerts(&self, scope: &str, since: OffsetDateTime) -> Result<Vec<Alert>, DbErr> {
        use budget_alerts::Column;
        let rows = budget_alerts::Entity::find()
            .filter(Column::Scope.eq(scope))
            .filter(Column::PeriodStart.gte(since))
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Threshold)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Alert {
                scope: row.scope,
                period: if row.period == "day" {
                    PeriodKind::Day
                } else {
                    PeriodKind::Month
                },
                period_start: row.period_start,
                threshold: row.threshold.max(0) as u32,
                spent: row.spent,
                budget: row.budget,
                at: row.created_at,
            })
            .collect())
    }

    /// Deletes `user_id`'s budget and alerts (their account is deleted).
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        budget_overrides::Entity::delete_by_id(user_id)
            .exec(&txn)
            .await?;
        budget_alerts::Entity::delete_many()
            .filter(budget_alerts::Column::Scope.eq(user_id.to_string()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}
