//! Pipelines: saved chains of workflows, their runs (the steps as JSON on the
//! run), the runs' events, and the link from each step's job to its run.

use sea_orm_migration::prelude::*;

pub struct Pipelines;

impl MigrationName for Pipelines {
    fn name(&self) -> &str {
        "m20261221_000001_pipelines"
    }
}

#[derive(DeriveIden)]
enum Pipeline {
    #[sea_orm(iden = "pipelines")]
    Table,
    Id,
    UserId,
    Name,
    Steps,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PipelineRuns {
    Table,
    Id,
    UserId,
    PipelineId,
    PipelineName,
    ImageId,
    BatchId,
    Status,
    CurrentStep,
    Steps,
    Error,
    IdempotencyKey,
    Version,
    CreatedAt,
    UpdatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum PipelineRunEvents {
    Table,
    RunId,
    Seq,
    At,
    Kind,
    Step,
    Run,
}

#[derive(DeriveIden)]
enum PipelineStepJobs {
    Table,
    JobId,
    RunId,
    StepIndex,
    Attempt,
}

fn at(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Pipelines {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Pipeline::Table)
                    .col(ColumnDef::new(Pipeline::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Pipeline::UserId).uuid().not_null())
                    .col(ColumnDef::new(Pipeline::Name).text().not_null())
                    .col(ColumnDef::new(Pipeline::Steps).json_binary().not_null())
                    .col(at(Pipeline::CreatedAt))
                    .col(at(Pipeline::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PipelineRuns::Table)
                    .col(
                        ColumnDef::new(PipelineRuns::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(PipelineRuns::UserId).uuid().not_null())
                    .col(ColumnDef::new(PipelineRuns::PipelineId).uuid().null())
                    .col(ColumnDef::new(PipelineRuns::PipelineName).text().not_null())
                    .col(ColumnDef::new(PipelineRuns::ImageId).uuid().not_null())
                    .col(ColumnDef::new(PipelineRuns::BatchId).uuid().not_null())
                    .col(
                        ColumnDef::new(PipelineRuns::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PipelineRuns::CurrentStep)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(PipelineRuns::Steps).json_binary().not_null())
                    .col(ColumnDef::new(PipelineRuns::Error).text().null())
                    .col(ColumnDef::new(PipelineRuns::IdempotencyKey).string().null())
                    .col(
                        ColumnDef::new(PipelineRuns::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(at(PipelineRuns::CreatedAt))
                    .col(at(PipelineRuns::UpdatedAt))
                    .col(
                        ColumnDef::new(PipelineRuns::CompletedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PipelineRunEvents::Table)
                    .col(ColumnDef::new(PipelineRunEvents::RunId).uuid().not_null())
                    .col(
                        ColumnDef::new(PipelineRunEvents::Seq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(at(PipelineRunEvents::At))
                    .col(
                        ColumnDef::new(PipelineRunEvents::Kind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(PipelineRunEvents::Step).integer().not_null())
                    .col(
                        ColumnDef::new(PipelineRunEvents::Run)
                            .json_binary()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(PipelineRunEvents::RunId)
                            .col(PipelineRunEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PipelineStepJobs::Table)
                    .col(
                        ColumnDef::new(PipelineStepJobs::JobId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(PipelineStepJobs::RunId).uuid().not_null())
                    .col(
                        ColumnDef::new(PipelineStepJobs::StepIndex)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PipelineStepJobs::Attempt)
                            .integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX pipelines_user_idx ON pipelines (user_id, id)",
            "CREATE INDEX pipeline_runs_user_idx ON pipeline_runs (user_id, id)",
            "CREATE UNIQUE INDEX pipeline_runs_key_idx ON pipeline_runs (user_id, idempotency_key)",
            "CREATE INDEX pipeline_runs_running_idx ON pipeline_runs (updated_at) \
             WHERE status = 'running'",
            "CREATE INDEX pipeline_step_jobs_run_idx ON pipeline_step_jobs (run_id, step_index)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PipelineStepJobs::Table.into_iden(),
            PipelineRunEvents::Table.into_iden(),
            PipelineRuns::Table.into_iden(),
            Pipeline::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
