//! The jobs and their events. Every read or change of one user's job takes the
//! user id, so another user's rows are never reached. Rows are mapped to the
//! domain's [`Job`] and [`Event`] here, and nowhere else.

use atelier_common::QuotaExceeded;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
    TransactionTrait,
    sea_query::{
        Alias, Asterisk, CommonTableExpression, Expr, ExprTrait, Func, InsertStatement, LikeExpr,
        Query, SubQueryStatement,
    },
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Event, Job, JobFilter, Priority, Quota, Status};

pub mod failures;
pub mod pipelines;
pub mod spend;
pub mod webhooks;

pub mod jobs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "processing_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub image_id: Uuid,
        pub workflow_id: String,
        pub workflow_name: String,
        pub workflow_version: i32,
        pub fal_endpoint: String,
        pub parameters: Json,
        pub priority: JobPriority,
        pub status: JobStatus,
        pub fal_request_id: Option<String>,
        pub result_image_id: Option<Uuid>,
        pub result_image_ids: Json,
        pub error_code: Option<String>,
        pub error_message: Option<String>,
        pub error_details: Option<Json>,
        pub attempts: i32,
        pub queue_position: Option<i32>,
        pub progress: Option<f64>,
        pub processing_time_ms: Option<i64>,
        pub idempotency_key: Option<String>,
        pub batch_id: Option<Uuid>,
        pub created_at: TimeDateTimeWithTimeZone,
        pub started_at: Option<TimeDateTimeWithTimeZone>,
        pub completed_at: Option<TimeDateTimeWithTimeZone>,
        pub updated_at: TimeDateTimeWithTimeZone,
        /// What history search matches: the workflow's name, the input's file
        /// name and the prompts.
        pub search_text: String,
        /// The input image's file name when the job started; `None` for jobs
        /// older than the column until the search backfill reaches them.
        pub input_filename: Option<String>,
        /// The cost estimated at fal's price when the job started, in
        /// `cost_currency`; `None` when there was no estimate.
        pub estimated_cost: Option<f64>,
        pub cost_currency: Option<String>,
        /// fal's price when the job started, so many `cost_currency` per
        /// `price_unit` (`image`, `megapixels`); what its actual cost is
        /// reckoned at.
        pub unit_price: Option<f64>,
        pub price_unit: Option<String>,
        /// What fal billed once the job was final: its successful outputs at
        /// `unit_price`; 0 when it failed or was cancelled.
        pub actual_cost: Option<f64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The `status` column, spelled as job events spell a status.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
    pub enum JobStatus {
        #[sea_orm(string_value = "pending")]
        Pending,
        #[sea_orm(string_value = "queued")]
        Queued,
        #[sea_orm(string_value = "submitted")]
        Submitted,
        #[sea_orm(string_value = "processing")]
        Processing,
        #[sea_orm(string_value = "completed")]
        Completed,
        #[sea_orm(string_value = "failed")]
        Failed,
        #[sea_orm(string_value = "cancelled")]
        Cancelled,
    }

    /// The `priority` column.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::N(8))")]
    pub enum JobPriority {
        #[sea_orm(string_value = "high")]
        High,
        #[sea_orm(string_value = "normal")]
        Normal,
        #[sea_orm(string_value = "low")]
        Low,
    }
}

pub mod job_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub at: TimeDateTimeWithTimeZone,
        pub kind: String,
        pub data: Json,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One run of a job: its start, and each retry. The daily job quota counts these.
pub mod job_runs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub started_at: TimeDateTimeWithTimeZone,
        pub user_id: Uuid,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use jobs::{JobPriority, JobStatus};

impl From<Status> for JobStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => Self::Pending,
            Status::Queued => Self::Queued,
            Status::Submitted => Self::Submitted,
            Status::Processing => Self::Processing,
            Status::Completed => Self::Completed,
            Status::Failed => Self::Failed,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

impl From<JobStatus> for Status {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Pending => Self::Pending,
            JobStatus::Queued => Self::Queued,
            JobStatus::Submitted => Self::Submitted,
            JobStatus::Processing => Self::Processing,
            JobStatus::Completed => Self::Completed,
            JobStatus::Failed => Self::Failed,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<Priority> for JobPriority {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::High => Self::High,
            Priority::Normal => Self::Normal,
            Priority::Low => Self::Low,
        }
    }
}

impl From<JobPriority> for Priority {
    fn from(priority: JobPriority) -> Self {
        match priority {
            JobPriority::High => Self::High,
            JobPriority::Normal => Self::Normal,
            JobPriority::Low => Self::Low,
        }
    }
}

/// A job row as a [`Job`] and back: the same fields, the status and priority
/// converted.
macro_rules! convert_job {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(row: $from) -> Self {
                Self {
                    id: row.id,
                    user_id: row.user_id,
                    image_id: row.image_id,
                    workflow_id: row.workflow_id,
                    workflow_name: row.workflow_name,
                    workflow_version: row.workflow_version,
                    fal_endpoint: row.fal_endpoint,
                    parameters: row.parameters,
                    priority: row.priority.into(),
                    status: row.status.into(),
                    fal_request_id: row.fal_request_id,
                    result_image_id: row.result_image_id,
                    result_image_ids: row.result_image_ids,
                    error_code: row.error_code,
                    error_message: row.error_message,
                    error_details: row.error_details,
                    attempts: row.attempts,
                    queue_position: row.queue_position,
                    progress: row.progress,
                    processing_time_ms: row.processing_time_ms,
                    idempotency_key: row.idempotency_key,
                    batch_id: row.batch_id,
                    created_at: row.created_at,
                    started_at: row.started_at,
                    completed_at: row.completed_at,
                    updated_at: row.updated_at,
                    search_text: row.search_text,
                    input_filename: row.input_filename,
                    estimated_cost: row.estimated_cost,
                    cost_currency: row.cost_currency,
                    unit_price: row.unit_price,
                    price_unit: row.price_unit,
                    actual_cost: row.actual_cost,
                }
            }
        }
    };
}

convert_job!(jobs::Model => Job);
convert_job!(Job => jobs::Model);

impl From<job_events::Model> for Event {
    fn from(row: job_events::Model) -> Self {
        Self {
            job_id: row.job_id,
            seq: row.seq,
            at: row.at,
            kind: row.kind,
            data: row.data,
        }
    }
}

/// Why jobs were not inserted.
#[derive(Debug)]
pub enum NotInserted {
    /// Their owner's quota does not admit them.
    Quota(QuotaExceeded),
    /// An idempotency key is taken: another request made its job.
    KeyTaken,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// A job a change is made to: by id (read first), or as the caller last saw it.
#[derive(Clone, Copy)]
pub enum JobRef<'a> {
    Id(Uuid),
    Seen(&'a Job),
}

impl From<Uuid> for JobRef<'_> {
    fn from(id: Uuid) -> Self {
        Self::Id(id)
    }
}

impl<'a> From<&'a Job> for JobRef<'a> {
    fn from(job: &'a Job) -> Self {
        Self::Seen(job)
    }
}

/// The columns `next` changes from `current`, and no others, as an update: so a
/// change never writes back what another writer changed meanwhile.
fn changes(current: &Job, next: Job) -> jobs::ActiveModel {
    let mut model = <jobs::ActiveModel as ActiveModelTrait>::default();
    // The pattern names every field, so one added to a job cannot be left out;
    // the second list is converted to its column's type.
    macro_rules! set_changed {
        ($($field:ident),*; $($converted:ident),*) => {
            let Job { $($field,)* $($converted,)* } = next;
            $(if current.$field != $field {
                model.$field = Set($field);
            })*
            $(if current.$converted != $converted {
                model.$converted = Set($converted.into());
            })*
        };
    }
    set_changed!(
        id,
        user_id,
        image_id,
        workflow_id,
        workflow_name,
        workflow_version,
        fal_endpoint,
        parameters,
        fal_request_id,
        result_image_id,
        result_image_ids,
        error_code,
        error_message,
        error_details,
        attempts,
        queue_position,
        progress,
        processing_time_ms,
        idempotency_key,
        batch_id,
        created_at,
        started_at,
        completed_at,
        updated_at,
        search_text,
        input_filename,
        estimated_cost,
        cost_currency,
        unit_price,
        price_unit,
        actual_cost;
        priority,
        status
    );
    model
}

fn active_model(row: &Job) -> jobs::ActiveModel {
    jobs::ActiveModel {
        id: Set(row.id),
        user_id: Set(row.user_id),
        image_id: Set(row.image_id),
        workflow_id: Set(row.workflow_id.clone()),
        workflow_name: Set(row.workflow_name.clone()),
        workflow_version: Set(row.workflow_version),
        fal_endpoint: Set(row.fal_endpoint.clone()),
        parameters: Set(row.parameters.clone()),
        priority: Set(row.priority.into()),
        status: Set(row.status.into()),
        fal_request_id: Set(row.fal_request_id.clone()),
        result_image_id: Set(row.result_image_id),
        result_image_ids: Set(row.result_image_ids.clone()),
        error_code: Set(row.error_code.clone()),
        error_message: Set(row.error_message.clone()),
        error_details: Set(row.error_details.clone()),
        attempts: Set(row.attempts),
        queue_position: Set(row.queue_position),
        progress: Set(row.progress),
        processing_time_ms: Set(row.processing_time_ms),
        idempotency_key: Set(row.idempotency_key.clone()),
        batch_id: Set(row.batch_id),
        created_at: Set(row.created_at),
        started_at: Set(row.started_at),
        completed_at: Set(row.completed_at),
        updated_at: Set(row.updated_at),
        search_text: Set(row.search_text.clone()),
        input_filename: Set(row.input_filename.clone()),
        estimated_cost: Set(row.estimated_cost),
        cost_currency: Set(row.cost_currency.clone()),
        unit_price: Set(row.unit_price),
        price_unit: Set(row.price_unit.clone()),
        actual_cost: Set(row.actual_cost),
    }
}

fn statuses(statuses: &[Status]) -> impl Iterator<Item = JobStatus> + '_ {
    statuses.iter().map(|status| JobStatus::from(*status))
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Spend's tables, on the same database.
    pub fn spend(&self) -> spend::SpendStore {
        spend::SpendStore::new(self.db.clone())
    }

    async fn one(&self, query: Select<jobs::Entity>) -> Result<Option<Job>, DbErr> {
        Ok(query.one(&self.db).await?.map(Job::from))
    }

    async fn all(&self, query: Select<jobs::Entity>) -> Result<Vec<Job>, DbErr> {
        Ok(query
            .all(&self.db)
            .await?
            .into_iter()
            .map(Job::from)
            .collect())
    }

    pub async fn by_idempotency_key(&self, user_id: Uuid, key: &str) -> Result<Option<Job>, DbErr> {
        self.one(
            jobs::Entity::find()
                .filter(jobs::Column::UserId.eq(user_id))
                .filter(jobs::Column::IdempotencyKey.eq(key)),
        )
        .await
    }

    pub async fn owned(&self, user_id: Uuid, id: Uuid) -> Result<Option<Job>, DbErr> {
        self.one(jobs::Entity::find_by_id(id).filter(jobs::Column::UserId.eq(user_id)))
            .await
    }

    pub async fn by_id(&self, id: Uuid) -> Result<Option<Job>, DbErr> {
        self.one(jobs::Entity::find_by_id(id)).await
    }

    pub async fn of_batch(&self, user_id: Uuid, batch_id: Uuid) -> Result<Vec<Job>, DbErr> {
        self.all(
            jobs::Entity::find()
                .filter(jobs::Column::UserId.eq(user_id))
                .filter(jobs::Column::BatchId.eq(batch_id))
                .order_by_asc(jobs::Column::Id),
        )
        .await
    }

    /// Runs (starts and retries) of `user_id`'s jobs since `since`, and how many of
    /// their jobs are unfinished.
    pub async fn usage(
        &self,
        user_id: Uuid,
        since: OffsetDateTime,
        unfinished: &[Status],
    ) -> Result<(u64, u64), DbErr> {
        usage(&self.db, user_id, since, unfinished).await
    }

    /// Inserts jobs of one user with their first events, in one transaction that
    /// holds the user's quota lock, once `quota` admitted them all given the runs
    /// in its window and the unfinished jobs: either every job is inserted, or
    /// none is and the refusal says which limit (or that an idempotency key is
    /// taken).
    pub async fn insert_admitted(
        &self,
        rows: &[Job],
        events: &[(&str, serde_json::Value)],
        quota: &Quota,
    ) -> Result<Result<Vec<Event>, NotInserted>, DbErr> {
        let Some(user_id) = rows.first().map(|row| row.user_id) else {
            return Ok(Ok(Vec::new()));
        };
        // New jobs: their events are numbered from 1.
        let appended: Vec<Event> = rows
            .iter()
            .flat_map(|row| {
                events.iter().zip(1..).map(|((kind, data), seq)| Event {
                    job_id: row.id,
                    seq,
                    at: row.created_at,
                    kind: (*kind).to_owned(),
                    data: data.clone(),
                })
            })
            .collect();
        // A tier that limits nothing has nothing to count, so needs no lock: on
        // PostgreSQL the inserts are one statement, atomic by itself.
        let inserted = if quota.counts_nothing()
            && self.db.get_database_backend() == DbBackend::Postgres
        {
            insert_new(&self.db, rows, &appended)
                .await
                .map(|()| Ok(appended))
        } else {
            atelier_common::db::retry_busy(|| async {
                let (txn, started, active) = self.lock_quota(user_id, quota.period_start).await?;
                if let Err(refused) = quota.admit(rows.len() as i64, started, active) {
                    return Ok(Err(NotInserted::Quota(refused)));
                }
                insert_new(&txn, rows, &appended).await?;
                txn.commit().await?;
                Ok(Ok(appended.clone()))
            })
            .await
        };
        match inserted {
            Err(err) if atelier_common::db::is_unique_violation(&err) => {
                Ok(Err(NotInserted::KeyTaken))
            }
            other => other,
        }
    }

    /// Sends `user_id`'s jobs `ids` that are failed or cancelled round again, in
    /// one transaction that holds the user's quota lock: a retry is a new run, so
    /// `quota` must admit them all, as new jobs, or none changes. Returns the
    /// changed rows with their events (jobs no longer retryable are left out).
    pub async fn retry_admitted(
        &self,
        user_id: Uuid,
        ids: &[Uuid],
        change: impl Fn(&mut Job),
        event: (&str, serde_json::Value),
        now: OffsetDateTime,
        quota: &Quota,
    ) -> Result<Result<Vec<(Job, Event)>, QuotaExceeded>, DbErr> {
        atelier_common::db::retry_busy(|| async {
            let (txn, started, active) = self.lock_quota(user_id, quota.period_start).await?;
            let retryable = jobs::Entity::find()
                .filter(jobs::Column::UserId.eq(user_id))
                .filter(jobs::Column::Id.is_in(ids.iter().copied()))
                .filter(jobs::Column::Status.is_in(statuses(&Status::RETRYABLE)))
                .order_by_asc(jobs::Column::Id)
                .all(&txn)
                .await?;
            if retryable.is_empty() {
                return Ok(Ok(Vec::new()));
            }
            if let Err(refused) = quota.admit(retryable.len() as i64, started, active) {
                return Ok(Err(refused));
            }
            let mut changed = Vec::with_capacity(retryable.len());
            for row in retryable {
                let previous = row.status;
                let mut row = Job::from(row);
                change(&mut row);
                row.updated_at = now;
                let updated = jobs::Entity::update_many()
                    .set(active_model(&row))
                    .filter(jobs::Column::Id.eq(row.id))
                    .filter(jobs::Column::Status.eq(previous))
                    .exec(&txn)
                    .await?;
                if updated.rows_affected == 1 {
                    let event = append(&txn, row.id, now, event.0, event.1.clone()).await?;
                    record_run(&txn, &row, now).await?;
                    changed.push((row, event));
                }
            }
            txn.commit().await?;
            Ok(Ok(changed))
        })
        .await
    }

    /// Begins a transaction holding `user_id`'s quota lock, and counts their runs
    /// since `since` and their unfinished jobs inside it.
    async fn lock_quota(
        &self,
        user_id: Uuid,
        since: OffsetDateTime,
    ) -> Result<(DatabaseTransaction, i64, i64), DbErr> {
        let txn =
            atelier_common::db::begin_locked(&self.db, "processing.quota", user_id.as_bytes())
                .await?;
        let (started, active) = usage(&txn, user_id, since, &Status::UNFINISHED).await?;
        Ok((txn, started as i64, active as i64))
    }

    /// Deletes every job of `user_id` and their events; returns the ids deleted.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<Vec<Uuid>, DbErr> {
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let ids: Vec<Uuid> = jobs::Entity::find()
            .select_only()
            .column(jobs::Column::Id)
            .filter(jobs::Column::UserId.eq(user_id))
            .into_tuple()
            .all(&txn)
            .await?;
        job_events::Entity::delete_many()
            .filter(job_events::Column::JobId.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
        job_runs::Entity::delete_many()
            .filter(job_runs::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        jobs::Entity::delete_many()
            .filter(jobs::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(ids)
    }

    pub async fn by_fal_request(&self, request_id: &str) -> Result<Option<Job>, DbErr> {
        self.one(jobs::Entity::find().filter(jobs::Column::FalRequestId.eq(request_id)))
            .await
    }

    /// Jobs in any of `wanted`, oldest first (the reconciler's view).
    pub async fn with_status(&self, wanted: &[Status], limit: u64) -> Result<Vec<Job>, DbErr> {
        self.all(
            jobs::Entity::find()
                .filter(jobs::Column::Status.is_in(statuses(wanted)))
                .order_by_asc(jobs::Column::Id)
                .limit(limit),
        )
        .await
    }

    pub async fn page(
        &self,
        user_id: Uuid,
        filter: &JobFilter,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Job>, DbErr> {
        let mut query = jobs::Entity::find().filter(jobs::Column::UserId.eq(user_id));
        if !filter.statuses.is_empty() {
            query = query.filter(jobs::Column::Status.is_in(statuses(&filter.statuses)));
        }
        if let Some(workflow) = &filter.workflow_id {
            query = query.filter(jobs::Column::WorkflowId.eq(workflow.clone()));
        }
        if let Some(image) = filter.image_id {
            query = query.filter(jobs::Column::ImageId.eq(image));
        }
        if let Some(batch) = filter.batch_id {
            query = query.filter(jobs::Column::BatchId.eq(batch));
        }
        if let Some(after) = filter.created_after {
            query = query.filter(jobs::Column::CreatedAt.gte(after));
        }
        if let Some(before) = filter.created_before {
            query = query.filter(jobs::Column::CreatedAt.lt(before));
        }
        if let Some(words) = filter
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
        {
            query = query.filter(match self.db.get_database_backend() {
                // The GIN index of the `job_search` migration serves this expression.
                DbBackend::Postgres => Expr::cust_with_values(
                    "to_tsvector('english', search_text) @@ websearch_to_tsquery('english', $1)",
                    [words.to_owned()],
                ),
                _ => jobs::Column::SearchText.like(
                    LikeExpr::new(format!(
                        "%{}%",
                        words
                            .replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_")
                    ))
                    .escape('\\'),
                ),
            });
        }
        if let Some(after) = after {
            query = query.filter(jobs::Column::Id.lt(after));
        }
        self.all(query.order_by_desc(jobs::Column::Id).limit(limit))
            .await
    }

    /// Claims a waiting (`pending` or `queued`) job for submission in one
    /// conditional update: `submitted`, started now, on its `attempt`. `None` when
    /// the job is not waiting (or not there).
    pub async fn claim_waiting(
        &self,
        id: Uuid,
        attempt: i32,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, DbErr> {
        atelier_common::db::retry_busy(|| async {
            let mut claimed = jobs::Entity::update_many()
                .col_expr(jobs::Column::Status, Expr::value(JobStatus::Submitted))
                .col_expr(jobs::Column::StartedAt, Expr::value(now))
                .col_expr(jobs::Column::Attempts, Expr::value(attempt))
                .col_expr(jobs::Column::UpdatedAt, Expr::value(now))
                .filter(jobs::Column::Id.eq(id))
                .filter(jobs::Column::Status.is_in(statuses(&Status::WAITING)))
                .exec_with_returning(&self.db)
                .await?;
            Ok(claimed.pop().map(Job::from))
        })
        .await
    }

    /// Applies `change` to `job` if its status is one of `from`, and appends
    /// `event`, in one transaction. Returns the updated row, or `None` when the
    /// job was not in one of those states (another worker or a cancel won).
    ///
    /// Only the columns `change` alters are written, guarded by the status they
    /// were decided from, in one `UPDATE … RETURNING`. Given the row as the caller
    /// last saw it ([`JobRef::Seen`]), nothing is read first: should its status
    /// have moved on since, the job is read again and the change decided anew.
    pub async fn transition(
        &self,
        job: impl Into<JobRef<'_>>,
        from: &[Status],
        change: impl Fn(&mut Job),
        event: Option<(&str, serde_json::Value)>,
        now: OffsetDateTime,
    ) -> Result<Option<(Job, Option<Event>)>, DbErr> {
        let (id, mut seen) = match job.into() {
            JobRef::Id(id) => (id, None),
            JobRef::Seen(row) => (row.id, Some(row)),
        };
        let mut raced = 0;
        loop {
            let attempt = atelier_common::db::retry_busy(|| {
                self.try_transition(id, seen, from, &change, event.clone(), now)
            })
            .await;
            match attempt {
                Ok(Attempt::Changed(changed)) => return Ok(Some(*changed)),
                Ok(Attempt::NotFrom) => return Ok(None),
                // The row seen was not the current one, another change came between
                // the read and the write, or took the event's sequence number: read
                // the job again and decide anew.
                Ok(Attempt::Raced) if raced < 20 => raced += 1,
                Err(err) if atelier_common::db::is_unique_violation(&err) && raced < 20 => {
                    raced += 1;
                }
                Ok(Attempt::Raced) => return Ok(None),
                Err(err) => return Err(err),
            }
            seen = None;
        }
    }

    async fn try_transition<F: Fn(&mut Job)>(
        &self,
        id: Uuid,
        seen: Option<&Job>,
        from: &[Status],
        change: &F,
        event: Option<(&str, serde_json::Value)>,
        now: OffsetDateTime,
    ) -> Result<Attempt, DbErr> {
        let read;
        let current = match seen {
            Some(row) => row,
            None => match jobs::Entity::find_by_id(id).one(&self.db).await? {
                Some(row) => {
                    read = Job::from(row);
                    &read
                }
                None => return Ok(Attempt::NotFrom),
            },
        };
        if !from.contains(&current.status) {
            // A status seen earlier may be stale: only a fresh read says no.
            return Ok(if seen.is_some() {
                Attempt::Raced
            } else {
                Attempt::NotFrom
            });
        }
        let mut next = current.clone();
        change(&mut next);
        next.updated_at = now;
        // A final state reached: its webhook message, in the same transaction.
        let outbox = crate::domain::outbound::payload::job_message(current, &next, now);
        let update = jobs::Entity::update_many()
            .set(changes(current, next))
            .filter(jobs::Column::Id.eq(id))
            .filter(jobs::Column::Status.eq(JobStatus::from(current.status)));
        if event.is_none() && outbox.is_none() {
            let mut updated = update.exec_with_returning(&self.db).await?;
            return Ok(match updated.pop() {
                Some(row) => Attempt::Changed(Box::new((row.into(), None))),
                None => Attempt::Raced,
            });
        }
        if self.db.get_database_backend() == DbBackend::Postgres
            && let Some((kind, data)) = event.clone()
        {
            return changed_with_event(&self.db, update, id, now, kind, data, outbox.as_ref())
                .await;
        }
        let txn = self.db.begin().await?;
        let Some(row) = update.exec_with_returning(&txn).await?.pop() else {
            return Ok(Attempt::Raced);
        };
        let event = match event {
            Some((kind, data)) => Some(append(&txn, id, now, kind, data).await?),
            None => None,
        };
        if let Some(message) = &outbox {
            webhooks::execute(&txn, &webhooks::outbox_insert(message, None)?).await?;
        }
        txn.commit().await?;
        Ok(Attempt::Changed(Box::new((row.into(), event))))
    }

    /// Appends an event outside a state change (progress, logs, queue position).
    pub async fn append_event(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<Event, DbErr> {
        let mut collided = 0;
        loop {
            let appended =
                atelier_common::db::retry_busy(|| append(&self.db, id, now, kind, data.clone()))
                    .await;
            match appended {
                // Another event took the sequence number: take the next one.
                Err(err) if atelier_common::db::is_unique_violation(&err) && collided < 20 => {
                    collided += 1;
                }
                other => return other,
            }
        }
    }

    /// Updates the display-only fields of a job (no event).
    pub async fn set_progress(
        &self,
        id: Uuid,
        queue_position: Option<i32>,
        progress: Option<f64>,
    ) -> Result<(), DbErr> {
        jobs::Entity::update_many()
            .col_expr(jobs::Column::QueuePosition, Expr::value(queue_position))
            .col_expr(jobs::Column::Progress, Expr::value(progress))
            .filter(jobs::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Jobs that have no `input_filename` yet (rows from before it was kept),
    /// oldest first.
    pub async fn without_input_filename(&self, limit: u64) -> Result<Vec<Job>, DbErr> {
        self.all(
            jobs::Entity::find()
                .filter(jobs::Column::InputFilename.is_null())
                .order_by_asc(jobs::Column::Id)
                .limit(limit),
        )
        .await
    }

    /// Records a job's input file name and the search text made with it.
    pub async fn set_input_filename(
        &self,
        id: Uuid,
        input_filename: &str,
        search_text: &str,
    ) -> Result<(), DbErr> {
        jobs::Entity::update_many()
            .col_expr(jobs::Column::InputFilename, Expr::value(input_filename))
            .col_expr(jobs::Column::SearchText, Expr::value(search_text))
            .filter(jobs::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Events of job `id` after `after_seq`, in order.
    pub async fn events_after(&self, id: Uuid, after_seq: i64) -> Result<Vec<Event>, DbErr> {
        Ok(job_events::Entity::find()
            .filter(job_events::Column::JobId.eq(id))
            .filter(job_events::Column::Seq.gt(after_seq))
            .order_by_asc(job_events::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Event::from)
            .collect())
    }
}

/// How one try at a state change went.
enum Attempt {
    Changed(Box<(Job, Option<Event>)>),
    /// The job is not (or no longer) in one of the states the change is from.
    NotFrom,
    /// Another change came between reading the job and writing it.
    Raced,
}

async fn usage(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    since: OffsetDateTime,
    unfinished: &[Status],
) -> Result<(u64, u64), DbErr> {
    // Both counts in one round trip.
    let count = |select: &mut sea_orm::sea_query::SelectStatement| {
        Expr::from(SubQueryStatement::from(
            select.expr(Expr::col(Asterisk).count()).to_owned(),
        ))
    };
    let statement = Query::select()
        .expr_as(
            count(
                Query::select()
                    .from(job_runs::Entity)
                    .and_where(job_runs::Column::UserId.eq(user_id))
                    .and_where(job_runs::Column::StartedAt.gte(since)),
            ),
            Alias::new("started"),
        )
        .expr_as(
            count(
                Query::select()
                    .from(jobs::Entity)
                    .and_where(jobs::Column::UserId.eq(user_id))
                    .and_where(jobs::Column::Status.is_in(statuses(unfinished))),
            ),
            Alias::new("active"),
        )
        .to_owned();
    let row = db
        .query_one(&statement)
        .await?
        .ok_or_else(|| DbErr::Custom("counting a user's runs returned no row".into()))?;
    let started: i64 = row.try_get("", "started")?;
    let active: i64 = row.try_get("", "active")?;
    Ok((started as u64, active as u64))
}

/// A run of `row` (its start, or a retry) counted against its owner's quota.
fn run(row: &Job, at: OffsetDateTime) -> job_runs::ActiveModel {
    job_runs::ActiveModel {
        job_id: Set(row.id),
        started_at: Set(at),
        user_id: Set(row.user_id),
    }
}

/// Records one run of `row`'s job, started `at`.
async fn record_run(db: &impl ConnectionTrait, row: &Job, at: OffsetDateTime) -> Result<(), DbErr> {
    job_runs::Entity::insert(run(row, at))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Inserts new jobs, their first events and their runs: on PostgreSQL in one
/// statement (the inserts as data-modifying CTEs), elsewhere in three, which the
/// caller's transaction makes one.
async fn insert_new(
    db: &impl ConnectionTrait,
    rows: &[Job],
    events: &[Event],
) -> Result<(), DbErr> {
    let jobs = jobs::Entity::insert_many(rows.iter().map(active_model)).into_query();
    let events = (!events.is_empty()).then(|| {
        job_events::Entity::insert_many(events.iter().map(|event| job_events::ActiveModel {
            job_id: Set(event.job_id),
            seq: Set(event.seq),
            at: Set(event.at),
            kind: Set(event.kind.clone()),
            data: Set(event.data.clone()),
        }))
        .into_query()
    });
    let runs =
        job_runs::Entity::insert_many(rows.iter().map(|row| run(row, row.created_at))).into_query();
    if db.get_database_backend() == DbBackend::Postgres {
        let mut with = Query::with();
        with.cte(
            CommonTableExpression::new()
                .query(jobs)
                .table_name(Alias::new("new_jobs"))
                .to_owned(),
        );
        if let Some(events) = events {
            with.cte(
                CommonTableExpression::new()
                    .query(events)
                    .table_name(Alias::new("new_events"))
                    .to_owned(),
            );
        }
        db.execute(&with.query(runs)).await?;
        return Ok(());
    }
    for insert in std::iter::once(jobs).chain(events).chain([runs]) {
        db.execute(&insert).await?;
    }
    Ok(())
}

/// A state change and its event in one PostgreSQL statement (atomic without a
/// transaction's four round trips): the update in a data-modifying CTE, the event
/// inserted from its returned row, numbered in the insert as [`append`] does.
/// `Raced` when the update matched no row.
async fn changed_with_event(
    db: &DatabaseConnection,
    update: sea_orm::UpdateMany<jobs::Entity>,
    job_id: Uuid,
    at: OffsetDateTime,
    kind: &str,
    data: serde_json::Value,
    outbox: Option<&crate::domain::outbound::Message>,
) -> Result<Attempt, DbErr> {
    let changed = Alias::new("changed");
    let event = Alias::new("event");
    let mut update = update.into_query();
    update.returning_all();
    // No row changed, no event.
    let insert = next_event(job_id, at, kind, &data, Some(changed.clone()))?;
    let seq = Query::select()
        .column(job_events::Column::Seq)
        .from(event.clone())
        .to_owned();
    let mut with = Query::with();
    with.cte(
        CommonTableExpression::new()
            .query(update)
            .table_name(changed.clone())
            .to_owned(),
    )
    .cte(
        CommonTableExpression::new()
            .query(insert)
            .table_name(event)
            .to_owned(),
    );
    // The webhook message too, only if the row changed (and its user has an
    // endpoint): PostgreSQL runs every data-modifying CTE.
    if let Some(message) = outbox {
        with.cte(
            CommonTableExpression::new()
                .query(webhooks::outbox_insert(message, Some(changed.clone()))?)
                .table_name(Alias::new("outbox"))
                .to_owned(),
        );
    }
    let statement = with.to_owned().query(
        Query::select()
            .column((changed.clone(), Asterisk))
            .expr_as(
                Expr::from(SubQueryStatement::from(seq)),
                Alias::new("event_seq"),
            )
            .from(changed)
            .to_owned(),
    );
    let Some(row) = db.query_one(&statement).await? else {
        return Ok(Attempt::Raced);
    };
    let seq: i64 = row.try_get("", "event_seq")?;
    let job = jobs::Model::from_query_result(&row, "")?.into();
    let event = Event {
        job_id,
        seq,
        at,
        kind: kind.to_owned(),
        data,
    };
    Ok(Attempt::Changed(Box::new((job, Some(event)))))
}

/// The insert of the job's next event, returning its number, which is taken in the
/// insert itself (one round trip; two appends racing for one number collide on the
/// primary key, and the caller tries again). With `only_if`, nothing is inserted
/// unless that table (a CTE) has a row.
fn next_event(
    job_id: Uuid,
    at: OffsetDateTime,
    kind: &str,
    data: &serde_json::Value,
    only_if: Option<Alias>,
) -> Result<InsertStatement, DbErr> {
    use job_events::Column;
    let mut next = Query::select()
        .expr(Expr::val(job_id))
        .expr(Func::coalesce([Expr::col(Column::Seq).max(), Expr::val(0i64)]).add(1i64))
        .expr(Expr::val(at))
        .expr(Expr::val(kind))
        .expr(Expr::val(data.clone()))
        .from(job_events::Entity)
        .and_where(Expr::col(Column::JobId).eq(job_id))
        .to_owned();
    if let Some(table) = only_if {
        // The aggregate's one row is dropped when the table is empty.
        next.and_having(Expr::exists(
            Query::select().expr(Expr::val(1)).from(table).to_owned(),
        ));
    }
    Ok(Query::insert()
        .into_table(job_events::Entity)
        .columns([
            Column::JobId,
            Column::Seq,
            Column::At,
            Column::Kind,
            Column::Data,
        ])
        .select_from(next)
        .map_err(|err| DbErr::Custom(err.to_string()))?
        .returning_col(Column::Seq)
        .to_owned())
}

/// Appends the job's next event (sequence numbers start at 1, no gaps).
async fn append(
    db: &impl ConnectionTrait,
    job_id: Uuid,
    at: OffsetDateTime,
    kind: &str,
    data: serde_json::Value,
) -> Result<Event, DbErr> {
    let insert = next_event(job_id, at, kind, &data, None)?;
    let seq: i64 = db
        .query_one(&insert)
        .await?
        .ok_or_else(|| DbErr::RecordNotInserted)?
        .try_get("", "seq")?;
    Ok(Event {
        job_id,
        seq,
        at,
        kind: kind.to_owned(),
        data,
    })
}

#[cfg(test)]
impl Store {
    /// A store in a new SQLite database under `dir`, migrated: for tests of the
    /// rules above it.
    pub async fn temporary(dir: &std::path::Path) -> Self {
        let url = format!("sqlite://{}?mode=rwc", dir.join("processing.db").display());
        let db = atelier_common::db::connect_sqlite(&url)
            .await
            .expect("sqlite");
        atelier_common::db::migrate::<crate::migration::Migrator>(&db, "processing")
            .await
            .expect("migrate");
        Self::new(db)
    }
}
