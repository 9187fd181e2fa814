//! The auth schema. Migrations are never edited once shipped: add a new one.

use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateUsersAndRefreshTokens),
            Box::new(CreateLoginThrottle),
            Box::new(AddTokensNotBefore),
            Box::new(AddRolesAndAuditEvents),
            Box::new(CreateApiKeys),
        ]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    CreatedAt,
    UpdatedAt,
    TokensNotBefore,
    Role,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    UserId,
    FamilyId,
    TokenHash,
    ExpiresAt,
    RevokedAt,
    ReplacedBy,
    CreatedAt,
}

struct CreateUsersAndRefreshTokens;

impl MigrationName for CreateUsersAndRefreshTokens {
    fn name(&self) -> &str {
        "m20261125_000001_users_and_refresh_tokens"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateUsersAndRefreshTokens {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(ColumnDef::new(Users::Id).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(Users::Email)
                            .string_len(254)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Users::PasswordHash).string().not_null())
                    .col(
                        ColumnDef::new(Users::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Users::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(
                        ColumnDef::new(RefreshTokens::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RefreshTokens::UserId).uuid().not_null())
                    .col(ColumnDef::new(RefreshTokens::FamilyId).uuid().not_null())
                    .col(
                        ColumnDef::new(RefreshTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(RefreshTokens::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RefreshTokens::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(RefreshTokens::ReplacedBy).uuid().null())
                    .col(
                        ColumnDef::new(RefreshTokens::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_family_idx")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::FamilyId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_user_idx")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RefreshTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    Key,
    Failures,
    LastFailureAt,
    LockedUntil,
    Version,
}

struct CreateLoginThrottle;

impl MigrationName for CreateLoginThrottle {
    fn name(&self) -> &str {
        "m20261210_000001_login_throttle"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLoginThrottle {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginThrottle::Table)
                    .col(
                        ColumnDef::new(LoginThrottle::Key)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LoginThrottle::Failures).integer().not_null())
                    .col(
                        ColumnDef::new(LoginThrottle::LastFailureAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoginThrottle::LockedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginThrottle::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_throttle_last_failure_idx")
                    .table(LoginThrottle::Table)
                    .col(LoginThrottle::LastFailureAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginThrottle::Table).to_owned())
            .await
    }
}

/// Access tokens of a user issued before `tokens_not_before` are refused.
struct AddTokensNotBefore;

impl MigrationName for AddTokensNotBefore {
    fn name(&self) -> &str {
        "m20261210_000002_users_tokens_not_before"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTokensNotBefore {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::TokensNotBefore)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::TokensNotBefore)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    ActorUserId,
    ActorService,
    Action,
    SubjectUserId,
    TargetKind,
    TargetId,
    Outcome,
    ClientIp,
    UserAgent,
    RequestId,
    Details,
}

#[derive(DeriveIden)]
enum AuditPurge {
    Table,
    Id,
}

/// Users get a role (`user` or `admin`), and the platform its append-only audit
/// log: triggers refuse every UPDATE of an entry, and every DELETE but the
/// retention purge's (on PostgreSQL, `audit_events_purge`, which marks its own
/// transaction; on SQLite, a row in `audit_purge` for the purge's transaction).
struct AddRolesAndAuditEvents;

impl MigrationName for AddRolesAndAuditEvents {
    fn name(&self) -> &str {
        "m20261206_000001_roles_and_audit_events"
    }
}

/// The PostgreSQL side of the append-only rule.
const POSTGRES_APPEND_ONLY: &[&str] = &[
    r#"CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('atelier.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$"#,
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events \
     FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events \
     FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
    // The retention purge: the only way entries go. It runs with its owner's
    // rights, so a production role needs only INSERT and SELECT on the table and
    // EXECUTE on this; and it never removes an entry younger than a day.
    r#"CREATE FUNCTION audit_events_purge(before timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    purged bigint;
BEGIN
    IF before > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit entries younger than a day are kept';
    END IF;
    PERFORM set_config('atelier.audit_purge', 'on', true);
    DELETE FROM audit_events WHERE at < before;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('atelier.audit_purge', 'off', true);
    RETURN purged;
END
$$"#,
];

/// The SQLite side of the append-only rule.
const SQLITE_APPEND_ONLY: &[&str] = &[
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events \
     WHEN NOT EXISTS (SELECT 1 FROM audit_purge) \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
];

#[async_trait::async_trait]
impl MigrationTrait for AddRolesAndAuditEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::Role)
                            .string_len(16)
                            .not_null()
                            .default("user"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::ActorUserId).uuid().null())
                    .col(
                        ColumnDef::new(AuditEvents::ActorService)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Action)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::SubjectUserId).uuid().null())
                    .col(
                        ColumnDef::new(AuditEvents::TargetKind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::TargetId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Outcome)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::ClientIp)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::UserAgent)
                            .string_len(512)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::RequestId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Details)
                            .json_binary()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("audit_events_at_idx", AuditEvents::At),
            ("audit_events_actor_idx", AuditEvents::ActorUserId),
            ("audit_events_subject_idx", AuditEvents::SubjectUserId),
            ("audit_events_action_idx", AuditEvents::Action),
        ] {
            let mut index = Index::create();
            index.name(name).table(AuditEvents::Table).col(column);
            if name != "audit_events_at_idx" {
                index.col(AuditEvents::Id);
            }
            manager.create_index(index.to_owned()).await?;
        }
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                for statement in POSTGRES_APPEND_ONLY {
                    db.execute_unprepared(statement).await?;
                }
            }
            _ => {
                manager
                    .create_table(
                        Table::create()
                            .table(AuditPurge::Table)
                            .col(
                                ColumnDef::new(AuditPurge::Id)
                                    .integer()
                                    .not_null()
                                    .primary_key(),
                            )
                            .to_owned(),
                    )
                    .await?;
                for statement in SQLITE_APPEND_ONLY {
                    db.execute_unprepared(statement).await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            db.execute_unprepared("DROP FUNCTION IF EXISTS audit_events_purge(timestamptz)")
                .await?;
        } else {
            manager
                .drop_table(Table::drop().table(AuditPurge::Table).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await?;
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            db.execute_unprepared("DROP FUNCTION IF EXISTS audit_events_append_only()")
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::Role)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Name,
    Prefix,
    Hash,
    Scopes,
    RateLimitPerMinute,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
}

/// API keys: only the SHA-256 of each is stored; `scopes` is a JSON array of
/// scope names, kept as text so SQLite and PostgreSQL read it alike.
struct CreateApiKeys;

impl MigrationName for CreateApiKeys {
    fn name(&self) -> &str {
        "m20261206_000001_api_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateApiKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::UserId).uuid().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string_len(100).not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string_len(32).not_null())
                    .col(
                        ColumnDef::new(ApiKeys::Hash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::Scopes).text().not_null())
                    .col(ColumnDef::new(ApiKeys::RateLimitPerMinute).integer().null())
                    .col(
                        ColumnDef::new(ApiKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::LastUsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_user_idx")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
