//! Failed jobs as administrators look at them: how many failed with each error
//! type since an instant, and the most recent of a type.

use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
};
use time::OffsetDateTime;

use super::{Store, jobs, statuses};
use crate::domain::job::{Job, Status};

/// How many jobs failed with one error code, and when the last did.
#[derive(Debug, FromQueryResult)]
pub struct FailureCount {
    pub error_code: Option<String>,
    pub count: i64,
    pub last_at: Option<OffsetDateTime>,
}

impl Store {
    /// Jobs failed at or after `since`, counted by error code.
    pub async fn failure_counts(&self, since: OffsetDateTime) -> Result<Vec<FailureCount>, DbErr> {
        jobs::Entity::find()
            .select_only()
            .column(jobs::Column::ErrorCode)
            .column_as(jobs::Column::Id.count(), "count")
            .column_as(jobs::Column::CompletedAt.max(), "last_at")
            .filter(jobs::Column::Status.is_in(statuses(&[Status::Failed])))
            .filter(jobs::Column::CompletedAt.gte(since))
            .group_by(jobs::Column::ErrorCode)
            .into_model::<FailureCount>()
            .all(&self.db)
            .await
    }

    /// The most recent jobs failed with `error_code` (none: without one) at or
    /// after `since`, at most `limit`.
    pub async fn failed_with(
        &self,
        error_code: Option<&str>,
        since: OffsetDateTime,
        limit: u64,
    ) -> Result<Vec<Job>, DbErr> {
        let code = match error_code {
            Some(code) => jobs::Column::ErrorCode.eq(code),
            None => jobs::Column::ErrorCode.is_null(),
        };
        self.all(
            jobs::Entity::find()
                .filter(jobs::Column::Status.is_in(statuses(&[Status::Failed])))
                .filter(jobs::Column::CompletedAt.gte(since))
                .filter(code)
                .order_by_desc(jobs::Column::CompletedAt)
                .limit(limit),
        )
        .await
    }
}
