//! Outgoing webhooks' tables: endpoints, messages (the outbox), deliveries (one
//! message to one endpoint) and their attempts. Every read or change a user asks
//! for takes their id, so another user's rows are never reached.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, InsertStatement, LockBehavior, LockType, Query},
};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::outbound::{Attempt, Delivery, DeliveryLog, DeliveryStatus, Endpoint, Message};

pub mod endpoints {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_endpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub url: String,
        pub description: String,
        pub event_types: Json,
        pub secret: String,
        pub previous_secret: Option<String>,
        pub previous_secret_expires_at: Option<TimeDateTimeWithTimeZone>,
        pub enabled: bool,
        pub disabled_reason: Option<String>,
        pub disabled_at: Option<TimeDateTimeWithTimeZone>,
        pub failing_since: Option<TimeDateTimeWithTimeZone>,
        pub failed_deliveries: i32,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod messages {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub event_type: String,
        pub payload: String,
        pub dedupe_key: Option<String>,
        pub created_at: TimeDateTimeWithTimeZone,
        /// Its deliveries are made.
        pub fanned_out: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod deliveries {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub message_id: Uuid,
        pub endpoint_id: Uuid,
        pub user_id: Uuid,
        pub status: String,
        pub manual: bool,
        pub attempts: i32,
        pub next_attempt_at: Option<TimeDateTimeWithTimeZone>,
        pub lease_until: Option<TimeDateTimeWithTimeZone>,
        pub leased_by: Option<String>,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attempts {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub number: i32,
        pub at: TimeDateTimeWithTimeZone,
        pub response_status: Option<i32>,
        pub response_body: Option<String>,
        pub latency_ms: i64,
        pub error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl From<endpoints::Model> for Endpoint {
    fn from(row: endpoints::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            url: row.url,
            description: row.description,
            event_types: serde_json::from_value(row.event_types).unwrap_or_default(),
            secret: row.secret,
            previous_secret: row.previous_secret,
            previous_secret_expires_at: row.previous_secret_expires_at,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at,
            failing_since: row.failing_since,
            failed_deliveries: row.failed_deliveries,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn endpoint_row(endpoint: &Endpoint) -> endpoints::ActiveModel {
    endpoints::ActiveModel {
        id: Set(endpoint.id),
        user_id: Set(endpoint.user_id),
        url: Set(endpoint.url.clone()),
        description: Set(endpoint.description.clone()),
        event_types: Set(Value::from(endpoint.event_types.clone())),
        secret: Set(endpoint.secret.clone()),
        previous_secret: Set(endpoint.previous_secret.clone()),
        previous_secret_expires_at: Set(endpoint.previous_secret_expires_at),
        enabled: Set(endpoint.enabled),
        disabled_reason: Set(endpoint.disabled_reason.clone()),
        disabled_at: Set(endpoint.disabled_at),
        failing_since: Set(endpoint.failing_since),
        failed_deliveries: Set(endpoint.failed_deliveries),
        created_at: Set(endpoint.created_at),
        updated_at: Set(endpoint.updated_at),
    }
}

impl From<messages::Model> for Message {
    fn from(row: messages::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            event_type: row.event_type,
            payload: row.payload,
            dedupe_key: row.dedupe_key,
            created_at: row.created_at,
        }
    }
}

fn message_row(message: &Message, fanned_out: bool) -> messages::ActiveModel {
    messages::ActiveModel {
        id: Set(message.id),
        user_id: Set(message.user_id),
        event_type: Set(message.event_type.clone()),
        payload: Set(message.payload.clone()),
        dedupe_key: Set(message.dedupe_key.clone()),
        created_at: Set(message.created_at),
        fanned_out: Set(fanned_out),
    }
}

fn status_of(raw: &str) -> DeliveryStatus {
    match raw {
        "succeeded" => DeliveryStatus::Succeeded,
        "failed" => DeliveryStatus::Failed,
        _ => DeliveryStatus::Pending,
    }
}

impl From<deliveries::Model> for Delivery {
    fn from(row: deliveries::Model) -> Self {
        Self {
            id: row.id,
            message_id: row.message_id,
            endpoint_id: row.endpoint_id,
            user_id: row.user_id,
            status: status_of(&row.status),
            manual: row.manual,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
        }
    }
}

fn new_delivery(
    message: &Message,
    endpoint_id: Uuid,
    manual: bool,
    now: OffsetDateTime,
) -> deliveries::ActiveModel {
    deliveries::ActiveModel {
        id: Set(Uuid::now_v7()),
        message_id: Set(message.id),
        endpoint_id: Set(endpoint_id),
        user_id: Set(message.user_id),
        status: Set(DeliveryStatus::Pending.as_str().to_owned()),
        manual: Set(manual),
        attempts: Set(0),
        next_attempt_at: Set(Some(now)),
        lease_until: Set(None),
        leased_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

impl From<attempts::Model> for Attempt {
    fn from(row: attempts::Model) -> Self {
        Self {
            delivery_id: row.delivery_id,
            number: row.number,
            at: row.at,
            response_status: row.response_status,
            response_body: row.response_body,
            latency_ms: row.latency_ms,
            error: row.error,
        }
    }
}

/// Where a delivery goes after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAttempt {
    Succeeded,
    /// Failed; tried again at this time.
    Retry(OffsetDateTime),
    /// Failed, and that was its last attempt.
    Failed,
}

/// A claimed delivery with what sending it needs.
#[derive(Clone, Debug)]
pub struct Due {
    pub delivery: Delivery,
    pub message: Message,
    pub endpoint: Endpoint,
}

/// The insert of `message` into the outbox, made only when its user has an
/// enabled endpoint (most users have none: no row for them) and, with `only_if`,
/// when that table (a CTE of the caller's statement) has a row.
pub fn outbox_insert(
    message: &Message,
    only_if: Option<sea_orm::sea_query::Alias>,
) -> Result<InsertStatement, DbErr> {
    use messages::Column;
    let mut values = Query::select()
        .expr(Expr::val(message.id))
        .expr(Expr::val(message.user_id))
        .expr(Expr::val(message.event_type.clone()))
        .expr(Expr::val(message.payload.clone()))
        .expr(Expr::val(message.dedupe_key.clone()))
        .expr(Expr::val(message.created_at))
        .expr(Expr::val(false))
        .and_where(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(endpoints::Entity)
                .and_where(endpoints::Column::UserId.eq(message.user_id))
                .and_where(endpoints::Column::Enabled.eq(true))
                .to_owned(),
        ))
        .to_owned();
    if let Some(table) = only_if {
        values.and_where(Expr::exists(
            Query::select().expr(Expr::val(1)).from(table).to_owned(),
        ));
    }
    Ok(Query::insert()
        .into_table(messages::Entity)
        .columns([
            Column::Id,
            Column::UserId,
            Column::EventType,
            Column::Payload,
            Column::DedupeKey,
            Column::CreatedAt,
            Column::FannedOut,
        ])
        .select_from(values)
        .map_err(|err| DbErr::Custom(err.to_string()))?
        .to_owned())
}

#[derive(Clone)]
pub struct WebhookStore {
    db: DatabaseConnection,
}

impl WebhookStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn insert_endpoint(&self, endpoint: &Endpoint) -> Result<(), DbErr> {
        endpoints::Entity::insert(endpoint_row(endpoint))
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    pub async fn endpoints_of(&self, user_id: Uuid) -> Result<Vec<Endpoint>, DbErr> {
        Ok(endpoints::Entity::find()
            .filter(endpoints::Column::UserId.eq(user_id))
            .order_by_desc(endpoints::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Endpoint::from)
            .collect())
    }

    pub async fn endpoint(&self, user_id: Uuid, id: Uuid) -> Result<Option<Endpoint>, DbErr> {
        Ok(endpoints::Entity::find_by_id(id)
            .filter(endpoints::Column::UserId.eq(user_id))
            .one(&self.db)
            .await?
            .map(Endpoint::from))
    }

    /// Writes every field an owner may change (not the failure counters, which
    /// deliveries keep, unless `enabled` resets them).
    pub async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<(), DbErr> {
        use endpoints::Column as C;
        let mut update = endpoints::Entity::update_many()
            .col_expr(C::Url, Expr::value(endpoint.url.clone()))
            .col_expr(C::Description, Expr::value(endpoint.description.clone()))
            .col_expr(
                C::EventTypes,
                Expr::value(Value::from(endpoint.event_types.clone())),
            )
            .col_expr(C::Secret, Expr::value(endpoint.secret.clone()))
            .col_expr(
                C::PreviousSecret,
                Expr::value(endpoint.previous_secret.clone()),
            )
            .col_expr(
                C::PreviousSecretExpiresAt,
                Expr::value(endpoint.previous_secret_expires_at),
            )
            .col_expr(C::Enabled, Expr::value(endpoint.enabled))
            .col_expr(
                C::DisabledReason,
                Expr::value(endpoint.disabled_reason.clone()),
            )
            .col_expr(C::DisabledAt, Expr::value(endpoint.disabled_at))
            .col_expr(C::UpdatedAt, Expr::value(endpoint.updated_at));
        if endpoint.enabled && endpoint.failing_since.is_none() {
            update = update
                .col_expr(C::FailingSince, Expr::value(None::<OffsetDateTime>))
                .col_expr(C::FailedDeliveries, Expr::value(0));
        }
        update
            .filter(C::Id.eq(endpoint.id))
            .filter(C::UserId.eq(endpoint.user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes an endpoint with its deliveries and their attempts; false when the
    /// user has no such endpoint.
    pub async fn delete_endpoint(&self, user_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let deleted = endpoints::Entity::delete_many()
            .filter(endpoints::Column::Id.eq(id))
            .filter(endpoints::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Ok(false);
        }
        let of_endpoint = Query::select()
            .column(deliveries::Column::Id)
            .from(deliveries::Entity)
            .and_where(deliveries::Column::EndpointId.eq(id))
            .to_owned();
        attempts::Entity::delete_many()
            .filter(attempts::Column::DeliveryId.in_subquery(of_endpoint))
            .exec(&txn)
            .await?;
        deliveries::Entity::delete_many()
            .filter(deliveries::Column::EndpointId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Deletes every webhook row of a user (their account is going).
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), DbErr> {
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let of_user = Query::select()
            .column(deliveries::Column::Id)
            .from(deliveries::Entity)
            .and_where(deliveries::Column::UserId.eq(user_id))
            .to_owned();
        attempts::Entity::delete_many()
            .filter(attempts::Column::DeliveryId.in_subquery(of_user))
            .exec(&txn)
            .await?;
        deliveries::Entity::delete_many()
            .filter(deliveries::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        messages::Entity::delete_many()
            .filter(messages::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        endpoints::Entity::delete_many()
            .filter(endpoints::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    /// Adds a message to the outbox, whether its user has endpoints or not; a
    /// message with the dedupe key of one already there is dropped.
    pub async fn insert_message(&self, message: &Message) -> Result<(), DbErr> {
        messages::Entity::insert(message_row(message, false))
            .on_conflict_do_nothing_on([messages::Column::DedupeKey])
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Messages not fanned out yet, oldest first.
    pub async fn unsent_messages(&self, limit: u64) -> Result<Vec<Message>, DbErr> {
        Ok(messages::Entity::find()
            .filter(messages::Column::FannedOut.eq(false))
            .order_by_asc(messages::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Message::from)
            .collect())
    }

    /// Makes `message`'s deliveries to `endpoint_ids`, due `now`, and marks it
    /// fanned out, in one transaction; false (and nothing written) when another
    /// worker fanned it out first.
    pub async fn fan_out(
        &self,
        message: &Message,
        endpoint_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> Result<bool, DbErr> {
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let claimed = messages::Entity::update_many()
            .col_expr(messages::Column::FannedOut, Expr::value(true))
            .filter(messages::Column::Id.eq(message.id))
            .filter(messages::Column::FannedOut.eq(false))
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(false);
        }
        if !endpoint_ids.is_empty() {
            deliveries::Entity::insert_many(
                endpoint_ids
                    .iter()
                    .map(|endpoint| new_delivery(message, *endpoint, false, now)),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// A message for one endpoint only (a test event), with its delivery, due now.
    pub async fn insert_direct(
        &self,
        message: &Message,
        endpoint_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<DeliveryLog, DbErr> {
        let txn = atelier_common::db::begin_write(&self.db).await?;
        messages::Entity::insert(message_row(message, true))
            .exec_without_returning(&txn)
            .await?;
        let row = new_delivery(message, endpoint_id, false, now);
        let delivery = deliveries::Entity::insert(row)
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(DeliveryLog {
            delivery: delivery.into(),
            event_type: message.event_type.clone(),
            payload: message.payload.clone(),
            attempts: Vec::new(),
        })
    }

    /// A new delivery of `delivery_id`'s message to its endpoint, one attempt, due
    /// now; `None` when the user's endpoint has no such delivery.
    pub async fn redeliver(
        &self,
        user_id: Uuid,
        endpoint_id: Uuid,
        delivery_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<DeliveryLog>, DbErr> {
        let Some(old) = deliveries::Entity::find_by_id(delivery_id)
            .filter(deliveries::Column::UserId.eq(user_id))
            .filter(deliveries::Column::EndpointId.eq(endpoint_id))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(message) = messages::Entity::find_by_id(old.message_id)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let message = Message::from(message);
        let delivery = deliveries::Entity::insert(new_delivery(&message, endpoint_id, true, now))
            .exec_with_returning(&self.db)
            .await?;
        Ok(Some(DeliveryLog {
            delivery: delivery.into(),
            event_type: message.event_type,
            payload: message.payload,
            attempts: Vec::new(),
        }))
    }

    /// The endpoint's deliveries, newest first, before `before`, with their
    /// messages and attempts.
    pub async fn deliveries(
        &self,
        user_id: Uuid,
        endpoint_id: Uuid,
        limit: u64,
        before: Option<Uuid>,
    ) -> Result<Vec<DeliveryLog>, DbErr> {
        let mut query = deliveries::Entity::find()
            .filter(deliveries::Column::UserId.eq(user_id))
            .filter(deliveries::Column::EndpointId.eq(endpoint_id));
        if let Some(before) = before {
            query = query.filter(deliveries::Column::Id.lt(before));
        }
        let rows = query
            .order_by_desc(deliveries::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        let message_ids: Vec<Uuid> = rows.iter().map(|row| row.message_id).collect();
        let delivery_ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let messages: std::collections::HashMap<Uuid, messages::Model> = messages::Entity::find()
            .filter(messages::Column::Id.is_in(message_ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        let mut attempts: std::collections::HashMap<Uuid, Vec<Attempt>> = Default::default();
        for row in attempts::Entity::find()
            .filter(attempts::Column::DeliveryId.is_in(delivery_ids))
            .order_by_asc(attempts::Column::Number)
            .all(&self.db)
            .await?
        {
            attempts
                .entry(row.delivery_id)
                .or_default()
                .push(row.into());
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let message = messages.get(&row.message_id);
                DeliveryLog {
                    event_type: message.map(|m| m.event_type.clone()).unwrap_or_default(),
                    payload: message.map(|m| m.payload.clone()).unwrap_or_default(),
                    attempts: attempts.remove(&row.id).unwrap_or_default(),
                    delivery: row.into(),
                }
            })
            .collect())
    }

    /// Claims up to `limit` due deliveries of enabled endpoints for `worker` until
    /// `lease_until`: on PostgreSQL rows other workers are claiming are skipped
    /// (`FOR UPDATE SKIP LOCKED`); SQLite runs one write at a time anyway.
    pub async fn claim(
        &self,
        worker: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u64,
    ) -> Result<Vec<Due>, DbErr> {
        use deliveries::Column as C;
        let enabled = Query::select()
            .column(endpoints::Column::Id)
            .from(endpoints::Entity)
            .and_where(endpoints::Column::Enabled.eq(true))
            .to_owned();
        let mut due = Query::select()
            .column(C::Id)
            .from(deliveries::Entity)
            .and_where(C::Status.eq(DeliveryStatus::Pending.as_str()))
            .and_where(C::NextAttemptAt.lte(now))
            .and_where(
                Expr::col(C::LeaseUntil)
                    .is_null()
                    .or(Expr::col(C::LeaseUntil).lte(now)),
            )
            .and_where(C::EndpointId.in_subquery(enabled))
            .order_by(C::NextAttemptAt, sea_orm::Order::Asc)
            .limit(limit)
            .to_owned();
        if self.db.get_database_backend() == DbBackend::Postgres {
            due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let claimed = atelier_common::db::retry_busy(|| {
            deliveries::Entity::update_many()
                .col_expr(C::LeaseUntil, Expr::value(lease_until))
                .col_expr(C::LeasedBy, Expr::value(worker))
                .filter(C::Id.in_subquery(due.clone()))
                .exec_with_returning(&self.db)
        })
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let message_ids: Vec<Uuid> = claimed.iter().map(|row| row.message_id).collect();
        let endpoint_ids: Vec<Uuid> = claimed.iter().map(|row| row.endpoint_id).collect();
        let messages: std::collections::HashMap<Uuid, Message> = messages::Entity::find()
            .filter(messages::Column::Id.is_in(message_ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.id, row.into()))
            .collect();
        let endpoints: std::collections::HashMap<Uuid, Endpoint> = endpoints::Entity::find()
            .filter(endpoints::Column::Id.is_in(endpoint_ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.id, row.into()))
            .collect();
        Ok(claimed
            .into_iter()
            .filter_map(|row| {
                Some(Due {
                    message: messages.get(&row.message_id)?.clone(),
                    endpoint: endpoints.get(&row.endpoint_id)?.clone(),
                    delivery: row.into(),
                })
            })
            .collect())
    }

    /// Records an attempt `worker` made at a delivery it holds, moves the delivery
    /// on and keeps the endpoint's failure counters, in one transaction. Returns
    /// the endpoint as it is after; `None` when the delivery is no longer
    /// `worker`'s (its lease ran out and another worker took it).
    pub async fn record_attempt(
        &self,
        worker: &str,
        attempt: &Attempt,
        endpoint_id: Uuid,
        after: AfterAttempt,
    ) -> Result<Option<Endpoint>, DbErr> {
        use deliveries::Column as C;
        let now = attempt.at;
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let (status, next) = match after {
            AfterAttempt::Succeeded => (DeliveryStatus::Succeeded, None),
            AfterAttempt::Retry(at) => (DeliveryStatus::Pending, Some(at)),
            AfterAttempt::Failed => (DeliveryStatus::Failed, None),
        };
        let moved = deliveries::Entity::update_many()
            .col_expr(C::Status, Expr::value(status.as_str()))
            .col_expr(C::Attempts, Expr::value(attempt.number))
            .col_expr(C::NextAttemptAt, Expr::value(next))
            .col_expr(C::LeaseUntil, Expr::value(None::<OffsetDateTime>))
            .col_expr(C::LeasedBy, Expr::value(None::<String>))
            .col_expr(C::UpdatedAt, Expr::value(now))
            .filter(C::Id.eq(attempt.delivery_id))
            .filter(C::LeasedBy.eq(worker))
            .exec(&txn)
            .await?;
        if moved.rows_affected == 0 {
            return Ok(None);
        }
        attempts::Entity::insert(attempts::ActiveModel {
            delivery_id: Set(attempt.delivery_id),
            number: Set(attempt.number),
            at: Set(attempt.at),
            response_status: Set(attempt.response_status),
            response_body: Set(attempt.response_body.clone()),
            latency_ms: Set(attempt.latency_ms),
            error: Set(attempt.error.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        use endpoints::Column as E;
        let counters = endpoints::Entity::update_many();
        let counters = match after {
            AfterAttempt::Succeeded => counters
                .col_expr(E::FailingSince, Expr::value(None::<OffsetDateTime>))
                .col_expr(E::FailedDeliveries, Expr::value(0)),
            AfterAttempt::Retry(_) => counters.col_expr(
                E::FailingSince,
                Func::coalesce([Expr::col(E::FailingSince), Expr::val(now)]).into(),
            ),
            AfterAttempt::Failed => counters
                .col_expr(
                    E::FailingSince,
                    Func::coalesce([Expr::col(E::FailingSince), Expr::val(now)]).into(),
                )
                .col_expr(E::FailedDeliveries, Expr::col(E::FailedDeliveries).add(1)),
        };
        counters.filter(E::Id.eq(endpoint_id)).exec(&txn).await?;
        let endpoint = endpoints::Entity::find_by_id(endpoint_id)
            .one(&txn)
            .await?
            .map(Endpoint::from);
        txn.commit().await?;
        Ok(endpoint)
    }

    /// Disables an enabled endpoint, saying why.
    pub async fn disable(
        &self,
        endpoint_id: Uuid,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, DbErr> {
        use endpoints::Column as E;
        let disabled = endpoints::Entity::update_many()
            .col_expr(E::Enabled, Expr::value(false))
            .col_expr(E::DisabledReason, Expr::value(reason))
            .col_expr(E::DisabledAt, Expr::value(now))
            .col_expr(E::UpdatedAt, Expr::value(now))
            .filter(E::Id.eq(endpoint_id))
            .filter(E::Enabled.eq(true))
            .exec(&self.db)
            .await?;
        Ok(disabled.rows_affected > 0)
    }

    /// Gives back the deliveries `worker` holds (it is stopping), for another to take
    /// at once.
    pub async fn release(&self, worker: &str) -> Result<u64, DbErr> {
        use deliveries::Column as C;
        Ok(deliveries::Entity::update_many()
            .col_expr(C::LeaseUntil, Expr::value(None::<OffsetDateTime>))
            .col_expr(C::LeasedBy, Expr::value(None::<String>))
            .filter(C::LeasedBy.eq(worker))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

/// Runs `statement` on `db` (the caller's transaction).
pub async fn execute(db: &impl ConnectionTrait, statement: &InsertStatement) -> Result<(), DbErr> {
    db.execute(statement).await?;
    Ok(())
}
