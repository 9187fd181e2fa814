//! The workflows table, mapped to the domain's [`Definition`] here and nowhere
//! else.

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
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
        let active = workflows::ActiveModel {
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
            // Prices are written by `set_price` only, never by a catalogue seed.
            unit_price: NotSet,
            price_unit: NotSet,
            currency: NotSet,
            priced_at: NotSet,
        };
        workflows::Entity::insert(active)
            .on_conflict(
                OnConflict::column(workflows::Column::Id)
                    .update_columns([
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
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
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
