//! The image schema. Migrations are never edited once shipped: add a new one.

use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateImages),
            Box::new(AddScanResult),
            Box::new(CreateShareLinks),
        ]
    }
}

#[derive(DeriveIden)]
enum Images {
    Table,
    Id,
    UserId,
    Filename,
    OriginalFilename,
    FileSize,
    MimeType,
    StoragePath,
    ThumbnailPath,
    ThumbnailMimeType,
    Sha256,
    Width,
    Height,
    Metadata,
    Kind,
    JobId,
    OutputIndex,
    SourceImageId,
    CreatedAt,
    ExpiresAt,
    ScanStatus,
    ScannedAt,
    Scanner,
}

struct CreateImages;

impl MigrationName for CreateImages {
    fn name(&self) -> &str {
        "m20261125_000001_images"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateImages {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Images::Table)
                    .col(ColumnDef::new(Images::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Images::UserId).uuid().not_null())
                    .col(ColumnDef::new(Images::Filename).string_len(255).not_null())
                    .col(
                        ColumnDef::new(Images::OriginalFilename)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Images::FileSize).big_integer().not_null())
                    .col(ColumnDef::new(Images::MimeType).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Images::StoragePath)
                            .string_len(512)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Images::ThumbnailPath).string_len(512).null())
                    .col(
                        ColumnDef::new(Images::ThumbnailMimeType)
                            .string_len(64)
                            .null(),
                    )
                    .col(ColumnDef::new(Images::Sha256).string_len(64).not_null())
                    .col(ColumnDef::new(Images::Width).integer().not_null())
                    .col(ColumnDef::new(Images::Height).integer().not_null())
                    .col(ColumnDef::new(Images::Metadata).json_binary().not_null())
                    .col(ColumnDef::new(Images::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Images::JobId).uuid().null())
                    .col(ColumnDef::new(Images::OutputIndex).integer().null())
                    .col(ColumnDef::new(Images::SourceImageId).uuid().null())
                    .col(
                        ColumnDef::new(Images::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Images::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // The caller's images, newest first (ids are UUIDv7: time-ordered).
        manager
            .create_index(
                Index::create()
                    .name("images_user_created_idx")
                    .table(Images::Table)
                    .col(Images::UserId)
                    .col((Images::Id, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("images_expires_idx")
                    .table(Images::Table)
                    .col(Images::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        // A job's result is stored once, however often the worker retries.
        manager
            .create_index(
                Index::create()
                    .name("images_job_output_idx")
                    .table(Images::Table)
                    .col(Images::JobId)
                    .col(Images::OutputIndex)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Images::Table).to_owned())
            .await
    }
}

/// What the malware scan said of each image: `clean`, or `not_scanned` (no
/// scanner configured; every image stored before scanning existed). Infected files
/// are never stored, so there is no such status.
struct AddScanResult;

impl MigrationName for AddScanResult {
    fn name(&self) -> &str {
        "m20261206_000001_images_scan_result"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddScanResult {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds a single column per ALTER TABLE.
        for column in [
            ColumnDef::new(Images::ScanStatus)
                .string_len(16)
                .not_null()
                .default("not_scanned")
                .to_owned(),
            ColumnDef::new(Images::ScannedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Images::Scanner)
                .string_len(32)
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Images::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Images::ScanStatus, Images::ScannedAt, Images::Scanner] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Images::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ShareLinks {
    Table,
    Id,
    UserId,
    ImageId,
    BeforeImageId,
    TokenHash,
    ExpiresAt,
    RevokedAt,
    CreatedAt,
    ViewCount,
    LastViewedAt,
}

/// Public links to images: only the SHA-256 of each link's token is kept.
struct CreateShareLinks;

impl MigrationName for CreateShareLinks {
    fn name(&self) -> &str {
        "m20261215_000001_share_links"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateShareLinks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ShareLinks::Table)
                    .col(
                        ColumnDef::new(ShareLinks::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ShareLinks::UserId).uuid().not_null())
                    .col(ColumnDef::new(ShareLinks::ImageId).uuid().not_null())
                    .col(ColumnDef::new(ShareLinks::BeforeImageId).uuid().null())
                    .col(
                        ColumnDef::new(ShareLinks::TokenHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ShareLinks::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ShareLinks::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ShareLinks::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ShareLinks::ViewCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(ShareLinks::LastViewedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // A link is found by its token's hash.
        manager
            .create_index(
                Index::create()
                    .name("share_links_token_idx")
                    .table(ShareLinks::Table)
                    .col(ShareLinks::TokenHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The owner's links, newest first (ids are UUIDv7: time-ordered).
        manager
            .create_index(
                Index::create()
                    .name("share_links_user_idx")
                    .table(ShareLinks::Table)
                    .col(ShareLinks::UserId)
                    .col((ShareLinks::Id, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        // An image's links, dropped with it.
        manager
            .create_index(
                Index::create()
                    .name("share_links_image_idx")
                    .table(ShareLinks::Table)
                    .col(ShareLinks::ImageId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ShareLinks::Table).to_owned())
            .await
    }
}
