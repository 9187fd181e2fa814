//! The processing schema. Migrations are never edited once shipped: add a new one.

mod pipelines;

use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateJobs),
            Box::new(JobSearch),
            Box::new(InputFilename),
            Box::new(EstimatedCost),
            Box::new(CreateJobRuns),
            Box::new(PartialJobIndexes),
            Box::new(OutgoingWebhooks),
            Box::new(Spend),
            Box::new(pipelines::Pipelines),
        ]
    }
}

#[derive(DeriveIden)]
enum ProcessingJobs {
    Table,
    Id,
    UserId,
    ImageId,
    WorkflowId,
    WorkflowName,
    WorkflowVersion,
    FalEndpoint,
    Parameters,
    Priority,
    Status,
    FalRequestId,
    ResultImageId,
    ResultImageIds,
    ErrorCode,
    ErrorMessage,
    ErrorDetails,
    Attempts,
    QueuePosition,
    Progress,
    ProcessingTimeMs,
    IdempotencyKey,
    BatchId,
    CreatedAt,
    StartedAt,
    CompletedAt,
    UpdatedAt,
    SearchText,
    InputFilename,
    EstimatedCost,
    CostCurrency,
}

#[derive(DeriveIden)]
enum JobRuns {
    Table,
    JobId,
    UserId,
    StartedAt,
}

#[derive(DeriveIden)]
enum JobEvents {
    Table,
    JobId,
    Seq,
    At,
    Kind,
    Data,
}

struct CreateJobs;

impl MigrationName for CreateJobs {
    fn name(&self) -> &str {
        "m20261125_000001_jobs_and_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateJobs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ProcessingJobs as J;
        manager
            .create_table(
                Table::create()
                    .table(J::Table)
                    .col(ColumnDef::new(J::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(J::UserId).uuid().not_null())
                    .col(ColumnDef::new(J::ImageId).uuid().not_null())
                    .col(ColumnDef::new(J::WorkflowId).string_len(64).not_null())
                    .col(ColumnDef::new(J::WorkflowName).string_len(200).not_null())
                    .col(ColumnDef::new(J::WorkflowVersion).integer().not_null())
                    .col(ColumnDef::new(J::FalEndpoint).string_len(200).not_null())
                    .col(ColumnDef::new(J::Parameters).json_binary().not_null())
                    .col(ColumnDef::new(J::Priority).string_len(8).not_null())
                    .col(ColumnDef::new(J::Status).string_len(16).not_null())
                    .col(ColumnDef::new(J::FalRequestId).string_len(128).null())
                    .col(ColumnDef::new(J::ResultImageId).uuid().null())
                    .col(ColumnDef::new(J::ResultImageIds).json_binary().not_null())
                    .col(ColumnDef::new(J::ErrorCode).string_len(64).null())
                    .col(ColumnDef::new(J::ErrorMessage).text().null())
                    .col(ColumnDef::new(J::ErrorDetails).json_binary().null())
                    .col(ColumnDef::new(J::Attempts).integer().not_null())
                    .col(ColumnDef::new(J::QueuePosition).integer().null())
                    .col(ColumnDef::new(J::Progress).double().null())
                    .col(ColumnDef::new(J::ProcessingTimeMs).big_integer().null())
                    .col(ColumnDef::new(J::IdempotencyKey).string_len(255).null())
                    .col(ColumnDef::new(J::BatchId).uuid().null())
                    .col(
                        ColumnDef::new(J::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(J::StartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(J::CompletedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(J::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            ("jobs_user_status_idx", vec![J::UserId, J::Status], false),
            ("jobs_user_created_idx", vec![J::UserId, J::Id], false),
            ("jobs_status_idx", vec![J::Status], false),
            (
                "jobs_idempotency_idx",
                vec![J::UserId, J::IdempotencyKey],
                true,
            ),
            ("jobs_fal_request_idx", vec![J::FalRequestId], false),
        ] {
            let mut index = Index::create();
            index.name(name).table(J::Table);
            for column in columns {
                index.col(column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(JobEvents::Table)
                    .col(ColumnDef::new(JobEvents::JobId).uuid().not_null())
                    .col(ColumnDef::new(JobEvents::Seq).big_integer().not_null())
                    .col(
                        ColumnDef::new(JobEvents::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(JobEvents::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(JobEvents::Data).json_binary().not_null())
                    .primary_key(Index::create().col(JobEvents::JobId).col(JobEvents::Seq))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ProcessingJobs::Table).to_owned())
            .await
    }
}

/// History search: the text a job is found by, and on PostgreSQL a full-text index.
struct JobSearch;

impl MigrationName for JobSearch {
    fn name(&self) -> &str {
        "m20261125_000002_job_search"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for JobSearch {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProcessingJobs::Table)
                    .add_column(
                        ColumnDef::new(ProcessingJobs::SearchText)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.execute_unprepared(
                "UPDATE processing_jobs SET search_text = concat_ws(' ', workflow_name, \
                 workflow_id, parameters->>'prompt', parameters->>'negative_prompt')",
            )
            .await?;
            db.execute_unprepared(
                "CREATE INDEX jobs_search_idx ON processing_jobs \
                 USING gin (to_tsvector('english', search_text))",
            )
            .await?;
        } else {
            db.execute_unprepared(
                "UPDATE processing_jobs SET search_text = workflow_name || ' ' || workflow_id \
                 || ' ' || coalesce(json_extract(parameters, '$.prompt'), '')",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProcessingJobs::Table)
                    .drop_column(ProcessingJobs::SearchText)
                    .to_owned(),
            )
            .await
    }
}

/// History search by file name: the input image's name kept with each job and
/// made part of `search_text`. Rows from before have `input_filename` NULL; the
/// service fills them in at start-up from the image service (which owns the
/// names), a page at a time (`Jobs::backfill_search`).
struct InputFilename;

impl MigrationName for InputFilename {
    fn name(&self) -> &str {
        "m20261205_000003_job_input_filename"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for InputFilename {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProcessingJobs::Table)
                    .add_column(ColumnDef::new(ProcessingJobs::InputFilename).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_search_backfill_idx")
                    .table(ProcessingJobs::Table)
                    .col(ProcessingJobs::InputFilename)
                    .col(ProcessingJobs::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("jobs_search_backfill_idx")
                    .table(ProcessingJobs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ProcessingJobs::Table)
                    .drop_column(ProcessingJobs::InputFilename)
                    .to_owned(),
            )
            .await
    }
}

/// The cost estimated at fal's price when a job starts.
struct EstimatedCost;

impl MigrationName for EstimatedCost {
    fn name(&self) -> &str {
        "m20261205_000004_job_estimated_cost"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EstimatedCost {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(ProcessingJobs::EstimatedCost)
                .double()
                .null()
                .to_owned(),
            ColumnDef::new(ProcessingJobs::CostCurrency)
                .string_len(8)
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProcessingJobs::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [ProcessingJobs::EstimatedCost, ProcessingJobs::CostCurrency] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProcessingJobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The runs of jobs (a start, and each retry): what the daily job quota counts.
/// Every existing job counts as one run, at its creation.
struct CreateJobRuns;

impl MigrationName for CreateJobRuns {
    fn name(&self) -> &str {
        "m20261215_000005_job_runs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateJobRuns {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobRuns::Table)
                    .col(ColumnDef::new(JobRuns::JobId).uuid().not_null())
                    .col(ColumnDef::new(JobRuns::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(JobRuns::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(JobRuns::JobId).col(JobRuns::StartedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("job_runs_user_started_idx")
                    .table(JobRuns::Table)
                    .col(JobRuns::UserId)
                    .col(JobRuns::StartedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO job_runs (job_id, user_id, started_at) \
                 SELECT id, user_id, created_at FROM processing_jobs",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobRuns::Table).to_owned())
            .await
    }
}

/// Indexes that serve one rare query cover only the rows it looks for, so a job's
/// every state change does not also write them: the search backfill's (jobs without
/// an input file name) and the reconciler's (unfinished jobs, by id).
struct PartialJobIndexes;

impl MigrationName for PartialJobIndexes {
    fn name(&self) -> &str {
        "m20261215_000006_partial_job_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PartialJobIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX IF EXISTS jobs_search_backfill_idx",
            "CREATE INDEX IF NOT EXISTS jobs_search_backfill_idx ON processing_jobs (id) \
             WHERE input_filename IS NULL",
            "DROP INDEX IF EXISTS jobs_status_idx",
            "CREATE INDEX jobs_unfinished_idx ON processing_jobs (id) \
             WHERE status IN ('pending', 'queued', 'submitted', 'processing')",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX IF EXISTS jobs_unfinished_idx",
            "CREATE INDEX jobs_status_idx ON processing_jobs (status)",
            "DROP INDEX IF EXISTS jobs_search_backfill_idx",
            "CREATE INDEX jobs_search_backfill_idx ON processing_jobs (input_filename, id)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}

/// Outgoing webhooks: the users' endpoints, the outbox of messages, the deliveries
/// of each message to each endpoint, and their attempts.
struct OutgoingWebhooks;

impl MigrationName for OutgoingWebhooks {
    fn name(&self) -> &str {
        "m20261220_000001_outgoing_webhooks"
    }
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    UserId,
    Url,
    Description,
    EventTypes,
    Secret,
    PreviousSecret,
    PreviousSecretExpiresAt,
    Enabled,
    DisabledReason,
    DisabledAt,
    FailingSince,
    FailedDeliveries,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookMessages {
    Table,
    Id,
    UserId,
    EventType,
    Payload,
    DedupeKey,
    CreatedAt,
    FannedOut,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    MessageId,
    EndpointId,
    UserId,
    Status,
    Manual,
    Attempts,
    NextAttemptAt,
    LeaseUntil,
    LeasedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    DeliveryId,
    Number,
    At,
    ResponseStatus,
    ResponseBody,
    LatencyMs,
    Error,
}

/// A time column.
fn at(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

/// A time column that may be empty.
fn at_opt(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for OutgoingWebhooks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(
                        ColumnDef::new(WebhookEndpoints::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WebhookEndpoints::UserId).uuid().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::Url).text().not_null())
                    .col(
                        ColumnDef::new(WebhookEndpoints::Description)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEndpoints::EventTypes)
                            .json_binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookEndpoints::Secret).string().not_null())
                    .col(
                        ColumnDef::new(WebhookEndpoints::PreviousSecret)
                            .string()
                            .null(),
                    )
                    .col(at_opt(WebhookEndpoints::PreviousSecretExpiresAt))
                    .col(
                        ColumnDef::new(WebhookEndpoints::Enabled)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEndpoints::DisabledReason)
                            .text()
                            .null(),
                    )
                    .col(at_opt(WebhookEndpoints::DisabledAt))
                    .col(at_opt(WebhookEndpoints::FailingSince))
                    .col(
                        ColumnDef::new(WebhookEndpoints::FailedDeliveries)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(at(WebhookEndpoints::CreatedAt))
                    .col(at(WebhookEndpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookMessages::Table)
                    .col(
                        ColumnDef::new(WebhookMessages::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WebhookMessages::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(WebhookMessages::EventType)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookMessages::Payload).text().not_null())
                    .col(ColumnDef::new(WebhookMessages::DedupeKey).string().null())
                    .col(at(WebhookMessages::CreatedAt))
                    .col(
                        ColumnDef::new(WebhookMessages::FannedOut)
                            .boolean()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(
                        ColumnDef::new(WebhookDeliveries::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::MessageId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::EndpointId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookDeliveries::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(WebhookDeliveries::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::Manual)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::Attempts)
                            .integer()
                            .not_null(),
                    )
                    .col(at_opt(WebhookDeliveries::NextAttemptAt))
                    .col(at_opt(WebhookDeliveries::LeaseUntil))
                    .col(ColumnDef::new(WebhookDeliveries::LeasedBy).string().null())
                    .col(at(WebhookDeliveries::CreatedAt))
                    .col(at(WebhookDeliveries::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(
                        ColumnDef::new(WebhookAttempts::DeliveryId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookAttempts::Number).integer().not_null())
                    .col(at(WebhookAttempts::At))
                    .col(
                        ColumnDef::new(WebhookAttempts::ResponseStatus)
                            .integer()
                            .null(),
                    )
                    .col(ColumnDef::new(WebhookAttempts::ResponseBody).text().null())
                    .col(
                        ColumnDef::new(WebhookAttempts::LatencyMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookAttempts::Error).text().null())
                    .primary_key(
                        Index::create()
                            .col(WebhookAttempts::DeliveryId)
                            .col(WebhookAttempts::Number),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX webhook_endpoints_user_idx ON webhook_endpoints (user_id, id)",
            "CREATE UNIQUE INDEX webhook_messages_dedupe_idx ON webhook_messages (dedupe_key)",
            "CREATE INDEX webhook_messages_unsent_idx ON webhook_messages (created_at) \
             WHERE fanned_out = FALSE",
            "CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id)",
            "CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) \
             WHERE status = 'pending'",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookMessages::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Spend control: each job's price and actual cost beside its estimate, budgets
/// an administrator set for a user (over their tier's), and the budget alerts
/// raised (one per scope, period and threshold).
struct Spend;

impl MigrationName for Spend {
    fn name(&self) -> &str {
        "m20261221_000001_spend"
    }
}

#[derive(DeriveIden)]
enum SpendColumns {
    UnitPrice,
    PriceUnit,
    ActualCost,
}

#[derive(DeriveIden)]
enum BudgetOverrides {
    Table,
    UserId,
    DailyBudget,
    MonthlyBudget,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BudgetAlerts {
    Table,
    Scope,
    Period,
    PeriodStart,
    Threshold,
    Spent,
    Budget,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Spend {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(SpendColumns::UnitPrice)
                .double()
                .null()
                .to_owned(),
            ColumnDef::new(SpendColumns::PriceUnit)
                .string_len(32)
                .null()
                .to_owned(),
            ColumnDef::new(SpendColumns::ActualCost)
                .double()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProcessingJobs::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("jobs_created_idx")
                    .table(ProcessingJobs::Table)
                    .col(ProcessingJobs::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BudgetOverrides::Table)
                    .col(
                        ColumnDef::new(BudgetOverrides::UserId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(BudgetOverrides::DailyBudget).double().null())
                    .col(
                        ColumnDef::new(BudgetOverrides::MonthlyBudget)
                            .double()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(BudgetOverrides::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BudgetAlerts::Table)
                    .col(
                        ColumnDef::new(BudgetAlerts::Scope)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BudgetAlerts::Period)
                            .string_len(8)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BudgetAlerts::PeriodStart)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(BudgetAlerts::Threshold).integer().not_null())
                    .col(ColumnDef::new(BudgetAlerts::Spent).double().not_null())
                    .col(ColumnDef::new(BudgetAlerts::Budget).double().not_null())
                    .col(
                        ColumnDef::new(BudgetAlerts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BudgetAlerts::Scope)
                            .col(BudgetAlerts::Period)
                            .col(BudgetAlerts::PeriodStart)
                            .col(BudgetAlerts::Threshold),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BudgetAlerts::Table.into_iden(),
            BudgetOverrides::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("jobs_created_idx")
                    .table(ProcessingJobs::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            SpendColumns::UnitPrice,
            SpendColumns::PriceUnit,
            SpendColumns::ActualCost,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProcessingJobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
