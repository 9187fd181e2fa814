//! The workflow schema. Migrations are never edited once shipped: add a new one.

use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateWorkflows),
            Box::new(WorkflowPrices),
            Box::new(WorkflowManagement),
        ]
    }
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
    Name,
    Description,
    Category,
    FalEndpoint,
    ParametersSchema,
    Defaults,
    IsActive,
    Position,
    Version,
    UpdatedAt,
    UnitPrice,
    PriceUnit,
    Currency,
    PricedAt,
    Pinned,
    Custom,
    Edited,
    LatestSchema,
}

struct CreateWorkflows;

impl MigrationName for CreateWorkflows {
    fn name(&self) -> &str {
        "m20261125_000001_workflows"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWorkflows {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workflows::Table)
                    .col(
                        ColumnDef::new(Workflows::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Workflows::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Workflows::Description).text().not_null())
                    .col(
                        ColumnDef::new(Workflows::Category)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Workflows::FalEndpoint)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Workflows::ParametersSchema)
                            .json_binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Workflows::Defaults).json_binary().not_null())
                    .col(ColumnDef::new(Workflows::IsActive).boolean().not_null())
                    .col(ColumnDef::new(Workflows::Position).integer().not_null())
                    .col(ColumnDef::new(Workflows::Version).integer().not_null())
                    .col(
                        ColumnDef::new(Workflows::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("workflows_category_active_idx")
                    .table(Workflows::Table)
                    .col(Workflows::Category)
                    .col(Workflows::IsActive)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Workflows::Table).to_owned())
            .await
    }
}

/// fal's unit price of each workflow's endpoint, refreshed with the catalogue.
struct WorkflowPrices;

impl MigrationName for WorkflowPrices {
    fn name(&self) -> &str {
        "m20261205_000002_workflow_prices"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for WorkflowPrices {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(Workflows::UnitPrice)
                .double()
                .null()
                .to_owned(),
            ColumnDef::new(Workflows::PriceUnit)
                .string_len(32)
                .null()
                .to_owned(),
            ColumnDef::new(Workflows::Currency)
                .string_len(8)
                .null()
                .to_owned(),
            ColumnDef::new(Workflows::PricedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Workflows::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Workflows::UnitPrice,
            Workflows::PriceUnit,
            Workflows::Currency,
            Workflows::PricedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Workflows::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// What administrators manage: a pinned schema (and the newer one fal offers
/// meanwhile), workflows added by an administrator, and edits the built-in
/// catalogue must not undo.
struct WorkflowManagement;

impl MigrationName for WorkflowManagement {
    fn name(&self) -> &str {
        "m20261221_000003_workflow_management"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for WorkflowManagement {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(Workflows::Pinned)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Workflows::Custom)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Workflows::Edited)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Workflows::LatestSchema)
                .json_binary()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Workflows::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Workflows::Pinned,
            Workflows::Custom,
            Workflows::Edited,
            Workflows::LatestSchema,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Workflows::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
