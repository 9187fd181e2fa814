//! The workflows table.

use sea_orm::{
    ActiveValue::Set, DatabaseConnection, DbErr, EntityTrait, QueryOrder, sea_query::OnConflict,
};

pub mod workflows {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use workflows::Model as WorkflowRow;

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn all(&self) -> Result<Vec<WorkflowRow>, DbErr> {
        workflows::Entity::find()
            .order_by_asc(workflows::Column::Category)
            .order_by_asc(workflows::Column::Position)
            .all(&self.db)
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<WorkflowRow>, DbErr> {
        workflows::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
    }

    /// Inserts `row`, or replaces the stored one.
    pub async fn upsert(&self, row: WorkflowRow) -> Result<(), DbErr> {
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
}
