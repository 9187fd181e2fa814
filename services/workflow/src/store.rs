//! The workflows table, mapped to the domain's [`Definition`] here and nowhere
//! else.

use std::future::Future;

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use time::OffsetDateTime;

use crate::domain::Definition;

pub mod workflows {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workflows")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub description: String,
        pub category: String,
        pub fal_endpoint: String,
        pub parameters_schema: Json,
        pub defaults: Json,
        pub is_active: bool,
        /// Display order within the catalogue file.
        pub position: i32,
        pub version: i32,
        pub updated_at: TimeDateTimeWithTimeZone,
        /// fal's unit price of the endpoint, in `currency`, when known.
        pub unit_price: Option<f64>,
        /// fal's billing unit: `image`, `megapixels`, `second`, ...
        pub price_unit: Option<String>,
        pub currency: Option<String>,
        /// When the price was read from fal.
        pub priced_at: Option<TimeDateTimeWithTimeZone>,
        pub pinned: bool,
        pub custom: bool,
        pub edited: bool,
        pub latest_schema: Option<Json>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl From<workflows::Model> for Definition {
    fn from(row: workflows::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            category: row.category,
            fal_endpoint: row.fal_endpoint,
            parameters_schema: row.parameters_schema,
            defaults: row.defaults,
            is_active: row.is_active,
            position: row.position,
            version: row.version,
            updated_at: row.updated_at,
            unit_price: row.unit_price,
            price_unit: row.price_unit,
            currency: row.currency,
            priced_at: row.priced_at,
            pinned: row.pinned,
            custom: row.custom,
            edited: row.edited,
            latest_schema: row.latest_schema,
        }
    }
}

/// `row` as written by the catalogue and its administrators: everything but
/// the price, which only `set_price` writes.
fn active_model(row: Definition) -> workflows::ActiveModel {
    workflows::ActiveModel {
        id: Set(row.id),
        name: Set(row.name),
        description: Set(row.description),
        category: Set(row.category),
        fal_endpoint: Set(row.fal_endpoint),
        parameters_schema: Set(row.parameters_schema),
        defaults: Set(row.defaults),
        is_active: Set(row.is_active),
        position: Set(row.position),
        version: Set(row.version),
        updated_at: Set(row.updated_at),
        unit_price: NotSet,
        price_unit: NotSet,
        currency: NotSet,
        priced_at: NotSet,
        pinned: Set(row.pinned),
        custom: Set(row.custom),
        edited: Set(row.edited),
        latest_schema: Set(row.latest_schema),
    }
}

/// The columns `active_model` writes, less the id.
const WRITTEN: [workflows::Column; 14] = [
    workflows::Column::Name,
    workflows::Column::Description,
    workflows::Column::Category,
    workflows::Column::FalEndpoint,
    workflows::Column::ParametersSchema,
    workflows::Column::Defaults,
    workflows::Column::IsActive,
    workflows::Column::Position,
    workflows::Column::Version,
    workflows::Column::UpdatedAt,
    workflows::Column::Pinned,
    workflows::Column::Custom,
    workflows::Column::Edited,
    workflows::Column::LatestSchema,
];

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn all(&self) -> Result<Vec<Definition>, DbErr> {
        Ok(workflows::Entity::find()
            .order_by_asc(workflows::Column::Category)
            .order_by_asc(workflows::Column::Position)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Definition::from)
            .collect())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Definition>, DbErr> {
        Ok(workflows::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(Definition::from))
    }

    /// Inserts `row`, or replaces the stored one.
    pub async fn upsert(&self, row: Definition) -> Result<(), DbErr> {
        workflows::Entity::insert(active_model(row))
            .on_conflict(
                OnConflict::column(workflows::Column::Id)
                    .update_columns(WRITTEN)
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Inserts `row` unless its id is taken (false then). `before_commit` (the
    /// audit entry) runs inside the transaction once the insert is known to
    /// apply, and when it fails nothing changes.
    pub async fn insert_new<E: From<DbErr>>(
        &self,
        row: Definition,
        before_commit: impl Future<Output = Result<(), E>>,
    ) -> Result<bool, E> {
        let txn = self.db.begin().await?;
        let inserted = workflows::Entity::insert(active_model(row))
            .on_conflict(
                OnConflict::column(workflows::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        before_commit.await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Replaces the stored row with `row` if it is still at version `expected`
    /// (false when another write came first). `before_commit` as for
    /// [`Store::insert_new`].
    pub async fn replace_if<E: From<DbErr>>(
        &self,
        row: Definition,
        expected: i32,
        before_commit: impl Future<Output = Result<(), E>>,
    ) -> Result<bool, E> {
        let id = row.id.clone();
        let txn = self.db.begin().await?;
        let mut update = workflows::Entity::update_many();
        let model = active_model(row);
        for column in WRITTEN {
            if let Set(value) = sea_orm::ActiveModelTrait::get(&model, column) {
                update = update.col_expr(column, Expr::value(value));
            }
        }
        let updated = update
            .filter(workflows::Column::Id.eq(id))
            .filter(workflows::Column::Version.eq(expected))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Ok(false);
        }
        before_commit.await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Keeps `schema` as the newest fal offers for pinned workflow `id`.
    pub async fn set_latest_schema(
        &self,
        id: &str,
        schema: Option<serde_json::Value>,
    ) -> Result<(), DbErr> {
        workflows::Entity::update_many()
            .col_expr(workflows::Column::LatestSchema, Expr::value(schema))
            .filter(workflows::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Records the price fal gave for workflow `id`.
    pub async fn set_price(
        &self,
        id: &str,
        unit_price: f64,
        unit: &str,
        currency: &str,
        priced_at: OffsetDateTime,
    ) -> Result<(), DbErr> {
        workflows::Entity::update_many()
            .col_expr(workflows::Column::UnitPrice, Expr::value(unit_price))
            .col_expr(workflows::Column::PriceUnit, Expr::value(unit))
            .col_expr(workflows::Column::Currency, Expr::value(currency))
            .col_expr(workflows::Column::PricedAt, Expr::value(priced_at))
            .filter(workflows::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
