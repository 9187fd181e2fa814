//! Pipelines' tables: saved pipelines, runs (their steps as JSON), the runs'
//! events and the link from each step's job to its run. Every read or change a
//! user asks for takes their id, so another user's rows are never reached. A
//! run changes only from the version it was read at, with its event, in one
//! transaction: two replicas advancing one run cannot both win.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::pipelines::{Pipeline, Run, RunEvent, RunStatus, StepSpec};

pub mod saved {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pipelines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub name: String,
        pub steps: Json,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod runs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pipeline_runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub pipeline_id: Option<Uuid>,
        pub pipeline_name: String,
        pub image_id: Uuid,
        pub batch_id: Uuid,
        pub status: String,
        pub current_step: i32,
        pub steps: Json,
        pub error: Option<String>,
        pub idempotency_key: Option<String>,
        pub version: i64,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
        pub completed_at: Option<TimeDateTimeWithTimeZone>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod run_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pipeline_run_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub at: TimeDateTimeWithTimeZone,
        pub kind: String,
        pub step: i32,
        pub run: Json,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod step_jobs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pipeline_step_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: Uuid,
        pub run_id: Uuid,
        pub step_index: i32,
        pub attempt: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn pipeline_of(row: saved::Model) -> Pipeline {
    Pipeline {
        id: row.id,
        user_id: row.user_id,
        name: row.name,
        steps: serde_json::from_value::<Vec<StepSpec>>(row.steps).unwrap_or_default(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn run_of(row: runs::Model) -> Result<Run, DbErr> {
    Ok(Run {
        id: row.id,
        user_id: row.user_id,
        pipeline_id: row.pipeline_id,
        pipeline_name: row.pipeline_name,
        image_id: row.image_id,
        batch_id: row.batch_id,
        status: RunStatus::parse(&row.status)
            .ok_or_else(|| DbErr::Custom(format!("unknown run status {:?}", row.status)))?,
        current_step: usize::try_from(row.current_step).unwrap_or_default(),
        steps: serde_json::from_value(row.steps)
            .map_err(|err| DbErr::Custom(format!("a run's steps do not read: {err}")))?,
        error: row.error,
        idempotency_key: row.idempotency_key,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        completed_at: row.completed_at,
    })
}

fn json(value: &impl serde::Serialize) -> Result<Value, DbErr> {
    serde_json::to_value(value).map_err(|err| DbErr::Custom(err.to_string()))
}

fn run_row(run: &Run) -> Result<runs::ActiveModel, DbErr> {
    Ok(runs::ActiveModel {
        id: Set(run.id),
        user_id: Set(run.user_id),
        pipeline_id: Set(run.pipeline_id),
        pipeline_name: Set(run.pipeline_name.clone()),
        image_id: Set(run.image_id),
        batch_id: Set(run.batch_id),
        status: Set(run.status.as_str().to_owned()),
        current_step: Set(run.current_step as i32),
        steps: Set(json(&run.steps)?),
        error: Set(run.error.clone()),
        idempotency_key: Set(run.idempotency_key.clone()),
        version: Set(run.version),
        created_at: Set(run.created_at),
        updated_at: Set(run.updated_at),
        completed_at: Set(run.completed_at),
    })
}

fn event_row(run: &Run, kind: &str, step: Option<usize>) -> Result<run_events::ActiveModel, DbErr> {
    Ok(run_events::ActiveModel {
        run_id: Set(run.id),
        seq: Set(run.version),
        at: Set(run.updated_at),
        kind: Set(kind.to_owned()),
        step: Set(step.map_or(-1, |step| step as i32)),
        run: Set(json(run)?),
    })
}

/// Runs are not inserted when their idempotency key is taken.
pub struct KeyTaken;

#[derive(Clone)]
pub struct PipelineStore {
    db: DatabaseConnection,
}

impl PipelineStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn insert_pipeline(&self, pipeline: &Pipeline) -> Result<(), DbErr> {
        saved::Entity::insert(saved::ActiveModel {
            id: Set(pipeline.id),
            user_id: Set(pipeline.user_id),
            name: Set(pipeline.name.clone()),
            steps: Set(json(&pipeline.steps)?),
            created_at: Set(pipeline.created_at),
            updated_at: Set(pipeline.updated_at),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    pub async fn pipeline(&self, user_id: Uuid, id: Uuid) -> Result<Option<Pipeline>, DbErr> {
        Ok(saved::Entity::find_by_id(id)
            .filter(saved::Column::UserId.eq(user_id))
            .one(&self.db)
            .await?
            .map(pipeline_of))
    }

    /// The user's pipelines, newest first (ids are time-ordered).
    pub async fn pipelines(&self, user_id: Uuid) -> Result<Vec<Pipeline>, DbErr> {
        Ok(saved::Entity::find()
            .filter(saved::Column::UserId.eq(user_id))
            .order_by_desc(saved::Column::Id)
            .limit(500)
            .all(&self.db)
            .await?
            .into_iter()
            .map(pipeline_of)
            .collect())
    }

    /// Saves a changed pipeline; false when it is not (any more) the user's.
    pub async fn update_pipeline(&self, pipeline: &Pipeline) -> Result<bool, DbErr> {
        let updated = saved::Entity::update_many()
            .set(saved::ActiveModel {
                name: Set(pipeline.name.clone()),
                steps: Set(json(&pipeline.steps)?),
                updated_at: Set(pipeline.updated_at),
                ..Default::default()
            })
            .filter(saved::Column::Id.eq(pipeline.id))
            .filter(saved::Column::UserId.eq(pipeline.user_id))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    pub async fn delete_pipeline(&self, user_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let deleted = saved::Entity::delete_many()
            .filter(saved::Column::Id.eq(id))
            .filter(saved::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected == 1)
    }

    /// Inserts new runs, each with its first event (`kind`), all or none.
    pub async fn insert_runs(
        &self,
        runs: &[Run],
        kind: &str,
    ) -> Result<Result<(), KeyTaken>, DbErr> {
        let txn = self.db.begin().await?;
        for run in runs {
            if let Some(key) = &run.idempotency_key {
                let taken = runs::Entity::find()
                    .filter(runs::Column::UserId.eq(run.user_id))
                    .filter(runs::Column::IdempotencyKey.eq(key.as_str()))
                    .one(&txn)
                    .await?
                    .is_some();
                if taken {
                    return Ok(Err(KeyTaken));
                }
            }
            if let Err(err) = runs::Entity::insert(run_row(run)?)
                .exec_without_returning(&txn)
                .await
            {
                return if run.idempotency_key.is_some() && is_unique_violation(&err) {
                    Ok(Err(KeyTaken))
                } else {
                    Err(err)
                };
            }
            run_events::Entity::insert(event_row(run, kind, None)?)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(Ok(()))
    }

    /// The user's run started with idempotency key `key`.
    pub async fn run_by_key(&self, user_id: Uuid, key: &str) -> Result<Option<Run>, DbErr> {
        runs::Entity::find()
            .filter(runs::Column::UserId.eq(user_id))
            .filter(runs::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
            .map(run_of)
            .transpose()
    }

    /// Run `id`, whoever's it is.
    pub async fn run(&self, id: Uuid) -> Result<Option<Run>, DbErr> {
        runs::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(run_of)
            .transpose()
    }

    /// The user's runs, newest first, after `after` (a run id), at most `limit`.
    pub async fn runs(
        &self,
        user_id: Uuid,
        pipeline_id: Option<Uuid>,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Run>, DbErr> {
        let mut query = runs::Entity::find().filter(runs::Column::UserId.eq(user_id));
        if let Some(pipeline_id) = pipeline_id {
            query = query.filter(runs::Column::PipelineId.eq(pipeline_id));
        }
        if let Some(after) = after {
            query = query.filter(runs::Column::Id.lt(after));
        }
        query
            .order_by_desc(runs::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(run_of)
            .collect()
    }

    /// Runs still running, least recently changed first, at most `limit`.
    pub async fn running(&self, limit: u64) -> Result<Vec<Uuid>, DbErr> {
        runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
            .order_by_asc(runs::Column::UpdatedAt)
            .limit(limit)
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await
    }

    /// Stores `next` (whose version is one past the stored one) with its event,
    /// if the run is still at the version before; false when another change
    /// came first (nothing is written then).
    pub async fn update_run(
        &self,
        next: &Run,
        kind: &str,
        step: Option<usize>,
    ) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        let mut row = run_row(next)?;
        row.id = sea_orm::ActiveValue::NotSet;
        row.user_id = sea_orm::ActiveValue::NotSet;
        row.created_at = sea_orm::ActiveValue::NotSet;
        row.idempotency_key = sea_orm::ActiveValue::NotSet;
        let updated = runs::Entity::update_many()
            .set(row)
            .filter(runs::Column::Id.eq(next.id))
            .filter(runs::Column::Version.eq(next.version - 1))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Ok(false);
        }
        run_events::Entity::insert(event_row(next, kind, step)?)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// A run's stored events after `after_seq`, oldest first.
    pub async fn events_after(&self, run_id: Uuid, after_seq: i64) -> Result<Vec<RunEvent>, DbErr> {
        run_events::Entity::find()
            .filter(run_events::Column::RunId.eq(run_id))
            .filter(run_events::Column::Seq.gt(after_seq))
            .order_by_asc(run_events::Column::Seq)
            .limit(1000)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                Ok(RunEvent {
                    seq: row.seq,
                    at: row.at,
                    kind: row.kind,
                    step: usize::try_from(row.step).ok(),
                    run: serde_json::from_value(row.run).map_err(|err| {
                        DbErr::Custom(format!("a run event does not read: {err}"))
                    })?,
                })
            })
            .collect()
    }

    /// Records that job `job_id` runs attempt `attempt` of step `step` of run
    /// `run_id` (again: nothing changes).
    pub async fn link_job(
        &self,
        job_id: Uuid,
        run_id: Uuid,
        step: usize,
        attempt: i32,
    ) -> Result<(), DbErr> {
        step_jobs::Entity::insert(step_jobs::ActiveModel {
            job_id: Set(job_id),
            run_id: Set(run_id),
            step_index: Set(step as i32),
            attempt: Set(attempt),
        })
        .on_conflict_do_nothing_on([step_jobs::Column::JobId])
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// The run job `job_id` is a step of.
    pub async fn run_of_job(&self, job_id: Uuid) -> Result<Option<Uuid>, DbErr> {
        Ok(step_jobs::Entity::find_by_id(job_id)
            .one(&self.db)
            .await?
            .map(|row| row.run_id))
    }

    /// Every job that ran a step of run `run_id`.
    pub async fn jobs_of_run(&self, run_id: Uuid) -> Result<Vec<Uuid>, DbErr> {
        step_jobs::Entity::find()
            .select_only()
            .column(step_jobs::Column::JobId)
            .filter(step_jobs::Column::RunId.eq(run_id))
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await
    }

    /// Deletes every pipeline and run of `user_id` (account deletion).
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        let ids: Vec<Uuid> = runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(runs::Column::UserId.eq(user_id))
            .into_tuple()
            .all(&txn)
            .await?;
        for chunk in ids.chunks(500) {
            run_events::Entity::delete_many()
                .filter(run_events::Column::RunId.is_in(chunk.to_vec()))
                .exec(&txn)
                .await?;
            step_jobs::Entity::delete_many()
                .filter(step_jobs::Column::RunId.is_in(chunk.to_vec()))
                .exec(&txn)
                .await?;
        }
        runs::Entity::delete_many()
            .filter(runs::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        saved::Entity::delete_many()
            .filter(saved::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
