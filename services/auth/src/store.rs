//! The auth tables and the queries on them, mapped to the domain's records here
//! and nowhere else.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait, sea_query::Expr,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    Account, RefreshToken, Rotation, Throttle,
    api_keys::ApiKey,
    audit::{AuditEntry, AuditFilter},
};

pub mod users {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(unique)]
        pub email: String,
        pub password_hash: String,
        pub created_at: TimeDateTimeWithTimeZone,
        pub updated_at: TimeDateTimeWithTimeZone,
        /// Access tokens issued before this instant are refused.
        pub tokens_not_before: Option<TimeDateTimeWithTimeZone>,
        /// `user` or `admin`.
        pub role: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_tokens {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub family_id: Uuid,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub expires_at: TimeDateTimeWithTimeZone,
        pub revoked_at: Option<TimeDateTimeWithTimeZone>,
        pub replaced_by: Option<Uuid>,
        pub created_at: TimeDateTimeWithTimeZone,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_keys {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub name: String,
        pub prefix: String,
        /// The SHA-256 of the key, lowercase hex.
        #[sea_orm(unique)]
        pub hash: String,
        /// A JSON array of scope names.
        pub scopes: String,
        pub rate_limit_per_minute: Option<i32>,
        pub created_at: TimeDateTimeWithTimeZone,
        pub expires_at: Option<TimeDateTimeWithTimeZone>,
        pub last_used_at: Option<TimeDateTimeWithTimeZone>,
        pub revoked_at: Option<TimeDateTimeWithTimeZone>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl From<api_keys::Model> for ApiKey {
    fn from(row: api_keys::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            prefix: row.prefix,
            hash: row.hash,
            // Written by `insert_api_key` only; a row it cannot read grants nothing.
            scopes: serde_json::from_str(&row.scopes).unwrap_or_default(),
            rate_limit_per_minute: row
                .rate_limit_per_minute
                .and_then(|rate| u32::try_from(rate).ok()),
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

pub mod audit_events {
    use sea_orm::entity::prelude::*;

    /// The audit log; the database refuses any change to a row once written.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub at: TimeDateTimeWithTimeZone,
        pub actor_user_id: Option<Uuid>,
        pub actor_service: String,
        pub action: String,
        pub subject_user_id: Option<Uuid>,
        pub target_kind: String,
        pub target_id: String,
        pub outcome: String,
        pub client_ip: String,
        pub user_agent: String,
        pub request_id: String,
        pub details: Json,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod login_throttle {
    use sea_orm::entity::prelude::*;

    /// Failed sign-ins per email address (known or not), keyed by the SHA-256 of
    /// the normalised address.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_throttle")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// Failures since the count last started over (attempts under way count).
        pub failures: i32,
        pub last_failure_at: TimeDateTimeWithTimeZone,
        /// Password attempts are refused until then.
        pub locked_until: Option<TimeDateTimeWithTimeZone>,
        /// Bumped on every write, so concurrent attempts cannot both count as one.
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl From<users::Model> for Account {
    fn from(row: users::Model) -> Self {
        Self {
            id: row.id,
            email: row.email,
            password_hash: row.password_hash,
            created_at: row.created_at,
            updated_at: row.updated_at,
            tokens_not_before: row.tokens_not_before,
            role: row.role,
        }
    }
}

impl From<refresh_tokens::Model> for RefreshToken {
    fn from(row: refresh_tokens::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            family_id: row.family_id,
            token_hash: row.token_hash,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            replaced_by: row.replaced_by,
            created_at: row.created_at,
        }
    }
}

impl From<audit_events::Model> for AuditEntry {
    fn from(row: audit_events::Model) -> Self {
        Self {
            id: row.id,
            at: row.at,
            actor_user_id: row.actor_user_id,
            actor_service: row.actor_service,
            action: row.action,
            subject_user_id: row.subject_user_id,
            target_kind: row.target_kind,
            target_id: row.target_id,
            outcome: row.outcome,
            client_ip: row.client_ip,
            user_agent: row.user_agent,
            request_id: row.request_id,
            details: match row.details {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        }
    }
}

impl From<login_throttle::Model> for Throttle {
    fn from(row: login_throttle::Model) -> Self {
        Self {
            key: row.key,
            failures: row.failures,
            last_failure_at: row.last_failure_at,
            locked_until: row.locked_until,
            version: row.version,
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

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Inserts `user`; false, inserting nothing, when its email is taken.
    pub async fn insert_user(&self, user: &Account) -> Result<bool, DbErr> {
        let active = users::ActiveModel {
            id: Set(user.id),
            email: Set(user.email.clone()),
            password_hash: Set(user.password_hash.clone()),
            created_at: Set(user.created_at),
            updated_at: Set(user.updated_at),
            tokens_not_before: Set(user.tokens_not_before),
            role: Set(user.role.clone()),
        };
        match users::Entity::insert(active)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if atelier_common::db::is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Accounts whose email contains `query` (every account when empty; only
    /// `only` when set), newest first: `limit` of them after the first `offset`.
    pub async fn list_users(
        &self,
        query: &str,
        only: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Account>, DbErr> {
        let mut find = users::Entity::find();
        if let Some(id) = only {
            find = find.filter(users::Column::Id.eq(id));
        }
        if !query.is_empty() {
            find = find.filter(users::Column::Email.contains(query));
        }
        Ok(find
            .order_by_desc(users::Column::CreatedAt)
            .order_by_desc(users::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Account::from)
            .collect())
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<Account>, DbErr> {
        Ok(users::Entity::find()
            .filter(users::Column::Email.eq(email))
            .one(&self.db)
            .await?
            .map(Account::from))
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<Account>, DbErr> {
        Ok(users::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(Account::from))
    }

    /// Inserts a new session's refresh token, and `audit` with it in one transaction.
    pub async fn insert_refresh_token(
        &self,
        token: RefreshToken,
        audit: Option<&AuditEntry>,
    ) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        insert_token(&txn, token).await?;
        if let Some(entry) = audit {
            insert_audit(&txn, entry).await?;
        }
        txn.commit().await
    }

    /// Appends `entry` to the audit log on its own.
    pub async fn insert_audit(&self, entry: &AuditEntry) -> Result<(), DbErr> {
        insert_audit(&self.db, entry).await
    }

    /// Appends `entry` through `db` (a transaction of the caller's).
    pub async fn insert_audit_in(
        db: &impl ConnectionTrait,
        entry: &AuditEntry,
    ) -> Result<(), DbErr> {
        insert_audit(db, entry).await
    }

    /// Entries matching `filter`, newest first (or oldest first when `ascending`),
    /// starting after the entry `after`; at most `limit`.
    pub async fn audit_entries(
        &self,
        filter: &AuditFilter,
        after: Option<Uuid>,
        limit: u64,
        ascending: bool,
    ) -> Result<Vec<AuditEntry>, DbErr> {
        use sea_orm::{QueryOrder, QuerySelect};
        let mut query = audit_events::Entity::find();
        if let Some(actor) = filter.actor_user_id {
            query = query.filter(audit_events::Column::ActorUserId.eq(actor));
        }
        if let Some(subject) = filter.subject_user_id {
            query = query.filter(audit_events::Column::SubjectUserId.eq(subject));
        }
        if let Some(prefix) = &filter.action_prefix {
            query = query.filter(audit_events::Column::Action.starts_with(prefix));
        }
        if let Some(since) = filter.since {
            query = query.filter(audit_events::Column::At.gte(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_events::Column::At.lt(until));
        }
        if let Some(after) = after {
            query = query.filter(if ascending {
                audit_events::Column::Id.gt(after)
            } else {
                audit_events::Column::Id.lt(after)
            });
        }
        let order = if ascending {
            sea_orm::Order::Asc
        } else {
            sea_orm::Order::Desc
        };
        Ok(query
            .order_by(audit_events::Column::Id, order)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(AuditEntry::from)
            .collect())
    }

    /// Removes the entries older than `before`: the retention purge, the one
    /// deletion the database lets through.
    pub async fn purge_audit(&self, before: OffsetDateTime) -> Result<u64, DbErr> {
        use sea_orm::{DatabaseBackend, Statement};
        let backend = self.db.get_database_backend();
        if backend == DatabaseBackend::Postgres {
            let row = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT audit_events_purge($1) AS purged",
                    [before.into()],
                ))
                .await?;
            let purged: i64 = match row {
                Some(row) => row.try_get("", "purged")?,
                None => 0,
            };
            return Ok(u64::try_from(purged).unwrap_or(0));
        }
        let txn = atelier_common::db::begin_write(&self.db).await?;
        txn.execute_unprepared("INSERT INTO audit_purge (id) VALUES (1)")
            .await?;
        let purged = audit_events::Entity::delete_many()
            .filter(audit_events::Column::At.lt(before))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.execute_unprepared("DELETE FROM audit_purge").await?;
        txn.commit().await?;
        Ok(purged)
    }

    /// Rotates the token whose hash is `hash` into `next`, atomically: of two
    /// concurrent rotations of one token exactly one wins, and the other is
    /// treated as reuse. A token rotated after `grace_since` whose successor was
    /// never used is rotated again (the successor is revoked): its holder lost the
    /// answer. Any other rotated or revoked token revokes its family.
    pub async fn rotate(
        &self,
        hash: &str,
        next: impl FnOnce(&RefreshToken) -> RefreshToken,
        now: OffsetDateTime,
        grace_since: OffsetDateTime,
        reuse: &AuditEntry,
    ) -> Result<Rotation, DbErr> {
        let txn = atelier_common::db::begin_write(&self.db).await?;
        let Some(current) = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(hash))
            .one(&txn)
            .await?
            .map(RefreshToken::from)
        else {
            return Ok(Rotation::Unknown);
        };
        let lost = match (current.revoked_at, current.replaced_by) {
            (None, Some(successor)) => {
                revoke_unused_successor(&txn, successor, grace_since, now).await?
            }
            _ => false,
        };
        let reused = |current: &RefreshToken| {
            reuse
                .clone()
                .about_user(current.user_id)
                .detail("family_id", current.family_id.to_string())
        };
        if !lost && (current.revoked_at.is_some() || current.replaced_by.is_some()) {
            revoke_family(&txn, current.family_id, now).await?;
            insert_audit(&txn, &reused(&current)).await?;
            txn.commit().await?;
            return Ok(Rotation::Reused);
        }
        if current.expires_at <= now {
            return Ok(Rotation::Expired);
        }
        let successor = next(&current);
        let claimed = refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::ReplacedBy,
                Expr::value(successor.id),
            )
            .filter(refresh_tokens::Column::Id.eq(current.id))
            .filter(match current.replaced_by {
                // Claimed only if no concurrent rotation got there first.
                Some(lost) => refresh_tokens::Column::ReplacedBy.eq(lost),
                None => refresh_tokens::Column::ReplacedBy.is_null(),
            })
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            revoke_family(&txn, current.family_id, now).await?;
            insert_audit(&txn, &reused(&current)).await?;
            txn.commit().await?;
            return Ok(Rotation::Reused);
        }
        insert_token(&txn, successor).await?;
        let Some(account) = users::Entity::find_by_id(current.user_id).one(&txn).await? else {
            return Ok(Rotation::Unknown);
        };
        txn.commit().await?;
        Ok(Rotation::Rotated {
            account: account.into(),
            family_id: current.family_id,
        })
    }

    /// Revokes the family of the token whose hash is `hash`; false if unknown.
    pub async fn revoke_family_of(&self, hash: &str, now: OffsetDateTime) -> Result<bool, DbErr> {
        let Some(token) = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(hash))
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        revoke_family(&self.db, token.family_id, now).await?;
        Ok(true)
    }

    /// Revokes every open session of `user_id` and refuses its access tokens issued
    /// before `not_before`, in one transaction with `audit`; returns how many
    /// sessions were open.
    pub async fn revoke_all(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
        not_before: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<u64, DbErr> {
        let txn = self.db.begin().await?;
        users::Entity::update_many()
            .col_expr(users::Column::TokensNotBefore, Expr::value(not_before))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        let revoked = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
            .filter(refresh_tokens::Column::UserId.eq(user_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        insert_audit(&txn, &audit.clone().detail("revoked_sessions", revoked)).await?;
        txn.commit().await?;
        Ok(revoked)
    }

    /// Sets `user_id`'s password hash, ends every session of theirs but the family
    /// `keep`, and refuses their access tokens issued before `not_before`, in one
    /// transaction with `audit`; returns how many sessions were ended.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Option<Uuid>,
        now: OffsetDateTime,
        not_before: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<u64, DbErr> {
        let txn = self.db.begin().await?;
        users::Entity::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(password_hash))
            .col_expr(users::Column::TokensNotBefore, Expr::value(not_before))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        let mut others = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
            .filter(refresh_tokens::Column::UserId.eq(user_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null());
        if let Some(family) = keep {
            others = others.filter(refresh_tokens::Column::FamilyId.ne(family));
        }
        let revoked = others.exec(&txn).await?.rows_affected;
        insert_audit(&txn, &audit.clone().detail("revoked_sessions", revoked)).await?;
        txn.commit().await?;
        Ok(revoked)
    }

    /// Gives `user_id` the role `role` and refuses their access tokens issued
    /// before `not_before` (they carry the old role), in one transaction with
    /// `audit`; the account, or `None` when there is none.
    pub async fn set_role(
        &self,
        user_id: Uuid,
        role: &str,
        now: OffsetDateTime,
        not_before: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<Account>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(before) = users::Entity::find_by_id(user_id).one(&txn).await? else {
            return Ok(None);
        };
        users::Entity::update_many()
            .col_expr(users::Column::Role, Expr::value(role))
            .col_expr(users::Column::TokensNotBefore, Expr::value(not_before))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        insert_audit(
            &txn,
            &audit
                .clone()
                .detail("previous_role", before.role.clone())
                .detail("role", role),
        )
        .await?;
        let after = users::Entity::find_by_id(user_id).one(&txn).await?;
        txn.commit().await?;
        Ok(after.map(Account::from))
    }

    /// Inserts `key`, and `audit` with it in one transaction.
    pub async fn insert_api_key(&self, key: &ApiKey, audit: &AuditEntry) -> Result<(), DbErr> {
        let active = api_keys::ActiveModel {
            id: Set(key.id),
            user_id: Set(key.user_id),
            name: Set(key.name.clone()),
            prefix: Set(key.prefix.clone()),
            hash: Set(key.hash.clone()),
            scopes: Set(serde_json::to_string(&key.scopes)
                .map_err(|err| DbErr::Custom(format!("encoding scopes: {err}")))?),
            rate_limit_per_minute: Set(key
                .rate_limit_per_minute
                .map(|rate| i32::try_from(rate).unwrap_or(i32::MAX))),
            created_at: Set(key.created_at),
            expires_at: Set(key.expires_at),
            last_used_at: Set(key.last_used_at),
            revoked_at: Set(key.revoked_at),
        };
        let txn = self.db.begin().await?;
        api_keys::Entity::insert(active)
            .exec_without_returning(&txn)
            .await?;
        insert_audit(&txn, audit).await?;
        txn.commit().await
    }

    /// How many keys `user_id` holds, revoked ones included.
    pub async fn count_api_keys(&self, user_id: Uuid) -> Result<u64, DbErr> {
        use sea_orm::PaginatorTrait;
        api_keys::Entity::find()
            .filter(api_keys::Column::UserId.eq(user_id))
            .count(&self.db)
            .await
    }

    /// `user_id`'s keys, newest first.
    pub async fn api_keys_of(&self, user_id: Uuid) -> Result<Vec<ApiKey>, DbErr> {
        use sea_orm::QueryOrder;
        Ok(api_keys::Entity::find()
            .filter(api_keys::Column::UserId.eq(user_id))
            .order_by_desc(api_keys::Column::CreatedAt)
            .order_by_desc(api_keys::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ApiKey::from)
            .collect())
    }

    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, DbErr> {
        Ok(api_keys::Entity::find()
            .filter(api_keys::Column::Hash.eq(hash))
            .one(&self.db)
            .await?
            .map(ApiKey::from))
    }

    /// Marks the key used at `now` unless it was since `since`.
    pub async fn touch_api_key(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        since: OffsetDateTime,
    ) -> Result<(), DbErr> {
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::LastUsedAt, Expr::value(now))
            .filter(api_keys::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(api_keys::Column::LastUsedAt.is_null())
                    .add(api_keys::Column::LastUsedAt.lt(since)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Revokes `user_id`'s key `id` at `now`, with `audit` (about the key) in one
    /// transaction; `None` when the user has no such key. A key revoked already
    /// is returned as it is, nothing written.
    pub async fn revoke_api_key(
        &self,
        user_id: Uuid,
        id: Uuid,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<ApiKey>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(row) = api_keys::Entity::find_by_id(id)
            .filter(api_keys::Column::UserId.eq(user_id))
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        if row.revoked_at.is_some() {
            return Ok(Some(ApiKey::from(row)));
        }
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
            .filter(api_keys::Column::Id.eq(id))
            .filter(api_keys::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let mut key = ApiKey::from(row);
        key.revoked_at = Some(now);
        insert_audit(&txn, &audit.clone().api_key(&key)).await?;
        txn.commit().await?;
        Ok(Some(key))
    }

    /// Deletes the user, their sessions and API keys, in one transaction with `audit`
    /// (written only when there was an account to delete).
    pub async fn delete_user(&self, user_id: Uuid, audit: &AuditEntry) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        api_keys::Entity::delete_many()
            .filter(api_keys::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        refresh_tokens::Entity::delete_many()
            .filter(refresh_tokens::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        let deleted = users::Entity::delete_by_id(user_id).exec(&txn).await?;
        if deleted.rows_affected > 0 {
            insert_audit(&txn, audit).await?;
        }
        txn.commit().await
    }

    pub async fn throttle(&self, key: &str) -> Result<Option<Throttle>, DbErr> {
        Ok(login_throttle::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await?
            .map(Throttle::from))
    }

    /// Writes `next` if the row is still as it was read: absent (`read` is
    /// `None`) or at version `read`. False when another writer came first.
    pub async fn put_throttle(&self, read: Option<i64>, next: Throttle) -> Result<bool, DbErr> {
        let Some(version) = read else {
            let inserted = login_throttle::Entity::insert(login_throttle::ActiveModel {
                key: Set(next.key),
                failures: Set(next.failures),
                last_failure_at: Set(next.last_failure_at),
                locked_until: Set(next.locked_until),
                version: Set(next.version),
            })
            .exec_without_returning(&self.db)
            .await;
            return match inserted {
                Ok(_) => Ok(true),
                Err(err) if atelier_common::db::is_unique_violation(&err) => Ok(false),
                Err(err) => Err(err),
            };
        };
        let updated = login_throttle::Entity::update_many()
            .col_expr(login_throttle::Column::Failures, Expr::value(next.failures))
            .col_expr(
                login_throttle::Column::LastFailureAt,
                Expr::value(next.last_failure_at),
            )
            .col_expr(
                login_throttle::Column::LockedUntil,
                Expr::value(next.locked_until),
            )
            .col_expr(login_throttle::Column::Version, Expr::value(next.version))
            .filter(login_throttle::Column::Key.eq(next.key))
            .filter(login_throttle::Column::Version.eq(version))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    pub async fn clear_throttle(&self, key: &str) -> Result<(), DbErr> {
        login_throttle::Entity::delete_by_id(key.to_owned())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes the counts that no longer hold anything back: no failure since
    /// `before` and no delay running past it.
    pub async fn forget_throttles(&self, before: OffsetDateTime) -> Result<u64, DbErr> {
        Ok(login_throttle::Entity::delete_many()
            .filter(login_throttle::Column::LastFailureAt.lt(before))
            .filter(
                Condition::any()
                    .add(login_throttle::Column::LockedUntil.is_null())
                    .add(login_throttle::Column::LockedUntil.lt(before)),
            )
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    pub async fn refresh_token_by_hash(&self, hash: &str) -> Result<Option<RefreshToken>, DbErr> {
        Ok(refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(hash))
            .one(&self.db)
            .await?
            .map(RefreshToken::from))
    }
}

async fn insert_audit(db: &impl ConnectionTrait, entry: &AuditEntry) -> Result<(), DbErr> {
    let active = audit_events::ActiveModel {
        id: Set(entry.id),
        at: Set(entry.at),
        actor_user_id: Set(entry.actor_user_id),
        actor_service: Set(entry.actor_service.clone()),
        action: Set(entry.action.clone()),
        subject_user_id: Set(entry.subject_user_id),
        target_kind: Set(entry.target_kind.clone()),
        target_id: Set(entry.target_id.clone()),
        outcome: Set(entry.outcome.clone()),
        client_ip: Set(entry.client_ip.clone()),
        user_agent: Set(entry.user_agent.clone()),
        request_id: Set(entry.request_id.clone()),
        details: Set(serde_json::Value::Object(entry.details.clone())),
    };
    audit_events::Entity::insert(active)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

async fn insert_token(db: &impl ConnectionTrait, token: RefreshToken) -> Result<(), DbErr> {
    let active = refresh_tokens::ActiveModel {
        id: Set(token.id),
        user_id: Set(token.user_id),
        family_id: Set(token.family_id),
        token_hash: Set(token.token_hash),
        expires_at: Set(token.expires_at),
        revoked_at: Set(token.revoked_at),
        replaced_by: Set(token.replaced_by),
        created_at: Set(token.created_at),
    };
    refresh_tokens::Entity::insert(active)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Revokes `successor` if it was issued after `since` and has been neither used nor
/// revoked; true if it was.
async fn revoke_unused_successor(
    db: &impl ConnectionTrait,
    successor: Uuid,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, DbErr> {
    let revoked = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::Id.eq(successor))
        .filter(refresh_tokens::Column::CreatedAt.gt(since))
        .filter(refresh_tokens::Column::ReplacedBy.is_null())
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(revoked.rows_affected == 1)
}

async fn revoke_family(
    db: &impl ConnectionTrait,
    family_id: Uuid,
    now: OffsetDateTime,
) -> Result<(), DbErr> {
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::FamilyId.eq(family_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
