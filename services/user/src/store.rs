//! The profiles table.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, TryInsertResult,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use time::OffsetDateTime;
use uuid::Uuid;

pub mod profiles {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "profiles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub display_name: String,
        pub subscription_tier: String,
        pub settings: Json,
        pub settings_revision: i64,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use profiles::Model as ProfileRow;

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
    pub async fn ensure(&self, fresh: ProfileRow) -> Result<(ProfileRow, bool), DbErr> {
        let user_id = fresh.user_id;
        if let Some(row) = self.get(user_id).await? {
            return Ok((row, false));
        }
        let active = profiles::ActiveModel {
            user_id: Set(fresh.user_id),
            display_name: Set(fresh.display_name),
            subscription_tier: Set(fresh.subscription_tier),
            settings: Set(fresh.settings),
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

    pub async fn get(&self, user_id: Uuid) -> Result<Option<ProfileRow>, DbErr> {
        profiles::Entity::find_by_id(user_id).one(&self.db).await
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

    pub async fn set_tier(
        &self,
        user_id: Uuid,
        tier: &str,
        now: OffsetDateTime,
    ) -> Result<(), DbErr> {
        profiles::Entity::update_many()
            .col_expr(profiles::Column::SubscriptionTier, Expr::value(tier))
            .col_expr(profiles::Column::UpdatedAt, Expr::value(now))
            .filter(profiles::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Replaces the settings if they are still at `expected` revision (any revision when
    /// `None`); false when another write came first.
    pub async fn replace_settings(
        &self,
        user_id: Uuid,
        settings: serde_json::Value,
        expected: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<bool, DbErr> {
        let mut update = profiles::Entity::update_many()
            .col_expr(profiles::Column::Settings, Expr::value(settings))
            .col_expr(
                profiles::Column::SettingsRevision,
                Expr::col(profiles::Column::SettingsRevision).add(1),
            )
            .col_expr(profiles::Column::UpdatedAt, Expr::value(now))
            .filter(profiles::Column::UserId.eq(user_id));
        if let Some(revision) = expected {
            update = update.filter(profiles::Column::SettingsRevision.eq(revision));
        }
        Ok(update.exec(&self.db).await?.rows_affected == 1)
    }

    pub async fn delete(&self, user_id: Uuid) -> Result<(), DbErr> {
        profiles::Entity::delete_by_id(user_id)
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
