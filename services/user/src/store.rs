//! The profiles table, mapped to the domain's [`Profile`] here and nowhere else.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, TransactionTrait,
    TryInsertResult,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Profile, Settings, Tier};

pub mod profiles {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "profiles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub display_name: String,
        pub subscription_tier: SubscriptionTier,
        pub settings: Json,
        pub settings_revision: i64,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The `subscription_tier` column.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
    pub enum SubscriptionTier {
        #[sea_orm(string_value = "free")]
        Free,
        #[sea_orm(string_value = "pro")]
        Pro,
        #[sea_orm(string_value = "enterprise")]
        Enterprise,
    }
}

use profiles::SubscriptionTier;

impl From<Tier> for SubscriptionTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self::Free,
            Tier::Pro => Self::Pro,
            Tier::Enterprise => Self::Enterprise,
        }
    }
}

impl From<SubscriptionTier> for Tier {
    fn from(tier: SubscriptionTier) -> Self {
        match tier {
            SubscriptionTier::Free => Self::Free,
            SubscriptionTier::Pro => Self::Pro,
            SubscriptionTier::Enterprise => Self::Enterprise,
        }
    }
}

impl From<profiles::Model> for Profile {
    fn from(row: profiles::Model) -> Self {
        Self {
            user_id: row.user_id,
            display_name: row.display_name,
            tier: row.subscription_tier.into(),
            settings: Settings::from_stored(&row.settings),
            settings_revision: row.settings_revision,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The user's profile, created with `fresh` the first time the user is met; true
    /// when this call created it.
    pub async fn ensure(&self, fresh: &Profile) -> Result<(Profile, bool), DbErr> {
        let user_id = fresh.user_id;
        if let Some(row) = self.get(user_id).await? {
            return Ok((row, false));
        }
        let active = profiles::ActiveModel {
            user_id: Set(fresh.user_id),
            display_name: Set(fresh.display_name.clone()),
            subscription_tier: Set(fresh.tier.into()),
            settings: Set(fresh.settings.to_stored()),
            settings_revision: Set(fresh.settings_revision),
            created_at: Set(fresh.created_at),
            updated_at: Set(fresh.updated_at),
        };
        // Two first requests may race: the loser's insert does nothing.
        let inserted = profiles::Entity::insert(active)
            .on_conflict(
                OnConflict::column(profiles::Column::UserId)
                    .do_nothing()
                    .to_owned(),
            )
            .try_insert()
            .exec_without_returning(&self.db)
            .await?;
        let created = matches!(inserted, TryInsertResult::Inserted(rows) if rows > 0);
        let row = self
            .get(user_id)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("profile {user_id}")))?;
        Ok((row, created))
    }

    pub async fn get(&self, user_id: Uuid) -> Result<Option<Profile>, DbErr> {
        Ok(profiles::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .map(Profile::from))
    }

    pub async fn set_display_name(
        &self,
        user_id: Uuid,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<(), DbErr> {
        profiles::Entity::update_many()
            .col_expr(profiles::Column::DisplayName, Expr::value(name))
            .col_expr(profiles::Column::UpdatedAt, Expr::value(now))
            .filter(profiles::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The tiers of those of `user_ids` that have a profile.
    pub async fn tiers(&self, user_ids: &[Uuid]) -> Result<Vec<(Uuid, Tier)>, DbErr> {
        Ok(profiles::Entity::find()
            .filter(profiles::Column::UserId.is_in(user_ids.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.user_id, row.subscription_tier.into()))
            .collect())
    }

    /// Moves the user to `tier`; `before_commit` (the audit entry) runs inside the
    /// transaction, and when it fails nothing changes.
    pub async fn set_tier<E: From<DbErr>>(
        &self,
        user_id: Uuid,
        tier: Tier,
        now: OffsetDateTime,
        before_commit: impl Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        let txn = self.db.begin().await?;
        profiles::Entity::update_many()
            .col_expr(
                profiles::Column::SubscriptionTier,
                Expr::value(SubscriptionTier::from(tier)),
            )
            .col_expr(profiles::Column::UpdatedAt, Expr::value(now))
            .filter(profiles::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        before_commit.await?;
        txn.commit().await?;
        Ok(())
    }

    /// Replaces the settings if they are still at `expected` revision (any revision when
    /// `None`); false when another write came first. `before_commit` (the audit
    /// entry) runs inside the transaction once the write is known to apply, and when
    /// it fails nothing changes.
    pub async fn replace_settings<E: From<DbErr>>(
        &self,
        user_id: Uuid,
        settings: &Settings,
        expected: Option<i64>,
        now: OffsetDateTime,
        before_commit: impl Future<Output = Result<(), E>>,
    ) -> Result<bool, E> {
        let txn = self.db.begin().await?;
        let mut update = profiles::Entity::update_many()
            .col_expr(
                profiles::Column::Settings,
                Expr::value(settings.to_stored()),
            )
            .col_expr(
                profiles::Column::SettingsRevision,
                Expr::col(profiles::Column::SettingsRevision).add(1),
            )
            .col_expr(profiles::Column::UpdatedAt, Expr::value(now))
            .filter(profiles::Column::UserId.eq(user_id));
        if let Some(revision) = expected {
            update = update.filter(profiles::Column::SettingsRevision.eq(revision));
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            return Ok(false);
        }
        before_commit.await?;
        txn.commit().await?;
        Ok(true)
    }

    pub async fn delete(&self, user_id: Uuid) -> Result<(), DbErr> {
        profiles::Entity::delete_by_id(user_id)
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
impl Store {
    /// A store in a new SQLite database under `dir`, migrated: for tests of the
    /// rules above it.
    pub async fn temporary(dir: &std::path::Path) -> Self {
        let url = format!("sqlite://{}?mode=rwc", dir.join("user.db").display());
        let db = atelier_common::db::connect_sqlite(&url)
            .await
            .expect("sqlite");
        atelier_common::db::migrate::<crate::migration::Migrator>(&db, "user")
            .await
            .expect("migrate");
        Self::new(db)
    }
}
