//! The images table and the queries on it. Every query that reads or changes one
//! user's images takes the user id, so another user's rows are never reached.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Alias, Expr, ExprTrait, Func, LikeExpr},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{ImageKind, ImageRecord, ScanStatus, ShareLinkRecord};

pub mod images {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "images")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub filename: String,
        pub original_filename: String,
        pub file_size: i64,
        pub mime_type: String,
        pub storage_path: String,
        pub thumbnail_path: Option<String>,
        pub thumbnail_mime_type: Option<String>,
        pub sha256: String,
        pub width: i32,
        pub height: i32,
        pub metadata: Json,
        pub kind: Kind,
        pub job_id: Option<Uuid>,
        pub output_index: Option<i32>,
        pub source_image_id: Option<Uuid>,
        pub created_at: TimeDateTimeWithTimeZone,
        pub expires_at: Option<TimeDateTimeWithTimeZone>,
        pub scan_status: ScanStatus,
        pub scanned_at: Option<TimeDateTimeWithTimeZone>,
        pub scanner: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The `kind` column.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
    pub enum Kind {
        #[sea_orm(string_value = "original")]
        Original,
        #[sea_orm(string_value = "result")]
        Result,
    }

    /// The `scan_status` column.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
    pub enum ScanStatus {
        #[sea_orm(string_value = "clean")]
        Clean,
        #[sea_orm(string_value = "not_scanned")]
        NotScanned,
    }
}

impl From<ScanStatus> for images::ScanStatus {
    fn from(status: ScanStatus) -> Self {
        match status {
            ScanStatus::Clean => Self::Clean,
            ScanStatus::NotScanned => Self::NotScanned,
        }
    }
}

impl From<images::ScanStatus> for ScanStatus {
    fn from(status: images::ScanStatus) -> Self {
        match status {
            images::ScanStatus::Clean => Self::Clean,
            images::ScanStatus::NotScanned => Self::NotScanned,
        }
    }
}

impl From<ImageKind> for images::Kind {
    fn from(kind: ImageKind) -> Self {
        match kind {
            ImageKind::Original => Self::Original,
            ImageKind::Result => Self::Result,
        }
    }
}

impl From<images::Kind> for ImageKind {
    fn from(kind: images::Kind) -> Self {
        match kind {
            images::Kind::Original => Self::Original,
            images::Kind::Result => Self::Result,
        }
    }
}

impl From<images::Model> for ImageRecord {
    fn from(row: images::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            filename: row.filename,
            original_filename: row.original_filename,
            file_size: row.file_size,
            mime_type: row.mime_type,
            storage_path: row.storage_path,
            thumbnail_path: row.thumbnail_path,
            thumbnail_mime_type: row.thumbnail_mime_type,
            sha256: row.sha256,
            width: row.width,
            height: row.height,
            metadata: row.metadata,
            kind: row.kind.into(),
            job_id: row.job_id,
            output_index: row.output_index,
            source_image_id: row.source_image_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            scan_status: row.scan_status.into(),
            scanned_at: row.scanned_at,
            scanner: row.scanner,
        }
    }
}

fn records(rows: Vec<images::Model>) -> Vec<ImageRecord> {
    rows.into_iter().map(ImageRecord::from).collect()
}

/// A LIKE pattern matching values that contain `text` (lowercased, to be
/// compared with `lower(column)`), with LIKE's wildcards and the escape
/// character itself escaped, so `50%_off` finds only that text.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
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

    /// Inserts `row`; false, inserting nothing, when a unique key of it (its
    /// job's output) is taken.
    pub async fn insert(&self, row: &ImageRecord) -> Result<bool, DbErr> {
        not_taken(
            images::Entity::insert(active_model(row))
                .exec_without_returning(&self.db)
                .await
                .map(|_| ()),
        )
    }

    /// Inserts `row` once `check(the bytes its user stores now)` accepted it, in a
    /// transaction that holds the user's storage lock: uploads of one user that
    /// end together are counted one after the other, so together they never pass
    /// what `check` allows. False, as [`Self::insert`], when a unique key is taken.
    pub async fn insert_checked<E: From<DbErr>>(
        &self,
        row: &ImageRecord,
        check: impl Fn(i64) -> Result<(), E>,
    ) -> Result<bool, E> {
        let checked = atelier_common::db::retry_busy(|| async {
            let txn =
                atelier_common::db::begin_locked(&self.db, "image.storage", row.user_id.as_bytes())
                    .await?;
            let (used, _) = usage(&txn, row.user_id).await?;
            if let Err(refused) = check(used) {
                return Ok(Err(refused));
            }
            images::Entity::insert(active_model(row))
                .exec_without_returning(&txn)
                .await?;
            txn.commit().await?;
            Ok(Ok(()))
        })
        .await;
        match checked {
            Ok(checked) => checked.map(|()| true),
            Err(err) => Ok(not_taken::<()>(Err(err))?),
        }
    }

    pub async fn owned(&self, user_id: Uuid, id: Uuid) -> Result<Option<ImageRecord>, DbErr> {
        Ok(images::Entity::find_by_id(id)
            .filter(images::Column::UserId.eq(user_id))
            .one(&self.db)
            .await?
            .map(ImageRecord::from))
    }

    /// The image `id`, whoever owns it (signed URLs carry no caller).
    pub async fn by_id(&self, id: Uuid) -> Result<Option<ImageRecord>, DbErr> {
        Ok(images::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(ImageRecord::from))
    }

    pub async fn owned_many(&self, user_id: Uuid, ids: &[Uuid]) -> Result<Vec<ImageRecord>, DbErr> {
        Ok(records(
            images::Entity::find()
                .filter(images::Column::UserId.eq(user_id))
                .filter(images::Column::Id.is_in(ids.iter().copied()))
                .order_by_desc(images::Column::Id)
                .all(&self.db)
                .await?,
        ))
    }

    pub async fn by_job_output(
        &self,
        job_id: Uuid,
        output_index: i32,
    ) -> Result<Option<ImageRecord>, DbErr> {
        Ok(images::Entity::find()
            .filter(images::Column::JobId.eq(job_id))
            .filter(images::Column::OutputIndex.eq(output_index))
            .one(&self.db)
            .await?
            .map(ImageRecord::from))
    }

    /// One page of a user's images, newest first, after the image `after`: only
    /// those of `kind` when given, and only those whose original filename holds
    /// `name` (case-insensitively, as a plain substring) when given.
    pub async fn page(
        &self,
        user_id: Uuid,
        kind: Option<ImageKind>,
        name: Option<&str>,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<ImageRecord>, DbErr> {
        let mut query = images::Entity::find().filter(images::Column::UserId.eq(user_id));
        if let Some(kind) = kind {
            query = query.filter(images::Column::Kind.eq(images::Kind::from(kind)));
        }
        if let Some(name) = name {
            query = query.filter(
                Expr::expr(Func::lower(Expr::col(images::Column::OriginalFilename)))
                    .like(LikeExpr::new(contains_pattern(name)).escape('\\')),
            );
        }
        if let Some(after) = after {
            query = query.filter(images::Column::Id.lt(after));
        }
        Ok(records(
            query
                .order_by_desc(images::Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?,
        ))
    }

    /// Deletes the row of `id` owned by `user_id`; false if there was none.
    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let result = images::Entity::delete_many()
            .filter(images::Column::Id.eq(id))
            .filter(images::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn all_of_user(&self, user_id: Uuid) -> Result<Vec<ImageRecord>, DbErr> {
        Ok(records(
            images::Entity::find()
                .filter(images::Column::UserId.eq(user_id))
                .all(&self.db)
                .await?,
        ))
    }

    /// Up to `limit` images whose retention has run out at `now`.
    pub async fn expired(
        &self,
        now: OffsetDateTime,
        limit: u64,
    ) -> Result<Vec<ImageRecord>, DbErr> {
        Ok(records(
            images::Entity::find()
                .filter(images::Column::ExpiresAt.lte(now))
                .order_by_asc(images::Column::ExpiresAt)
                .limit(limit)
                .all(&self.db)
                .await?,
        ))
    }

    /// Deletes the row `id` if it is still expired at `now` (another replica, or a
    /// retention change, may have got there first).
    pub async fn delete_if_expired(&self, id: Uuid, now: OffsetDateTime) -> Result<bool, DbErr> {
        let result = images::Entity::delete_many()
            .filter(images::Column::Id.eq(id))
            .filter(images::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn usage(&self, user_id: Uuid) -> Result<(i64, i64), DbErr> {
        usage(&self.db, user_id).await
    }

    /// Bytes and number of every stored image (thumbnails included).
    pub async fn platform_usage(&self) -> Result<(i64, i64), DbErr> {
        usage_of(&self.db, None).await
    }

    /// Sets every image of `user_id` to expire `days` after it was created.
    pub async fn set_retention(&self, user_id: Uuid, days: i64) -> Result<u64, DbErr> {
        let rows = self.all_of_user(user_id).await?;
        let mut updated = 0;
        for row in rows {
            let expires = row.created_at + time::Duration::days(days);
            let result = images::Entity::update_many()
                .col_expr(images::Column::ExpiresAt, Expr::value(expires))
                .filter(Condition::all().add(images::Column::Id.eq(row.id)))
                .exec(&self.db)
                .await?;
            updated += result.rows_affected;
        }
        Ok(updated)
    }
}

/// Whether a write went through; `Ok(false)` when a unique key was taken.
fn not_taken<T>(written: Result<T, DbErr>) -> Result<bool, DbErr> {
    match written {
        Ok(_) => Ok(true),
        Err(err) if atelier_common::db::is_unique_violation(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

fn active_model(row: &ImageRecord) -> images::ActiveModel {
    images::ActiveModel {
        id: Set(row.id),
        user_id: Set(row.user_id),
        filename: Set(row.filename.clone()),
        original_filename: Set(row.original_filename.clone()),
        file_size: Set(row.file_size),
        mime_type: Set(row.mime_type.clone()),
        storage_path: Set(row.storage_path.clone()),
        thumbnail_path: Set(row.thumbnail_path.clone()),
        thumbnail_mime_type: Set(row.thumbnail_mime_type.clone()),
        sha256: Set(row.sha256.clone()),
        width: Set(row.width),
        height: Set(row.height),
        metadata: Set(row.metadata.clone()),
        kind: Set(row.kind.into()),
        job_id: Set(row.job_id),
        output_index: Set(row.output_index),
        source_image_id: Set(row.source_image_id),
        created_at: Set(row.created_at),
        expires_at: Set(row.expires_at),
        scan_status: Set(row.scan_status.into()),
        scanned_at: Set(row.scanned_at),
        scanner: Set(row.scanner.clone()),
    }
}

/// The bytes `user_id` stores and how many images.
async fn usage(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(i64, i64), DbErr> {
    usage_of(db, Some(user_id)).await
}

/// Bytes and number of the images of `user_id`, or of everyone.
async fn usage_of(db: &impl ConnectionTrait, user_id: Option<Uuid>) -> Result<(i64, i64), DbErr> {
    let only = |query: sea_orm::Select<images::Entity>| match user_id {
        Some(user_id) => query.filter(images::Column::UserId.eq(user_id)),
        None => query,
    };
    let count = only(images::Entity::find()).count(db).await?;
    let bytes: Option<Option<i64>> = only(images::Entity::find())
        .select_only()
        .column_as(
            Expr::from(Func::cast_as(
                Func::sum(Expr::col(images::Column::FileSize)),
                Alias::new("bigint"),
            )),
            "total",
        )
        .into_tuple()
        .one(db)
        .await?;
    Ok((bytes.flatten().unwrap_or(0), count as i64))
}

pub mod share_links {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "share_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub image_id: Uuid,
        pub before_image_id: Option<Uuid>,
        pub token_hash: String,
        pub expires_at: TimeDateTimeWithTimeZone,
        pub revoked_at: Option<TimeDateTimeWithTimeZone>,
        pub created_at: TimeDateTimeWithTimeZone,
        pub view_count: i64,
        pub last_viewed_at: Option<TimeDateTimeWithTimeZone>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl From<share_links::Model> for ShareLinkRecord {
    fn from(row: share_links::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            image_id: row.image_id,
            before_image_id: row.before_image_id,
            token_hash: row.token_hash,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            created_at: row.created_at,
            view_count: row.view_count,
            last_viewed_at: row.last_viewed_at,
        }
    }
}

/// The share links: every query of an owner's links takes the owner's id; the
/// public one finds a link by its token's hash only.
impl Store {
    pub async fn insert_share(&self, link: &ShareLinkRecord) -> Result<(), DbErr> {
        share_links::Entity::insert(share_links::ActiveModel {
            id: Set(link.id),
            user_id: Set(link.user_id),
            image_id: Set(link.image_id),
            before_image_id: Set(link.before_image_id),
            token_hash: Set(link.token_hash.clone()),
            expires_at: Set(link.expires_at),
            revoked_at: Set(link.revoked_at),
            created_at: Set(link.created_at),
            view_count: Set(link.view_count),
            last_viewed_at: Set(link.last_viewed_at),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// The link whose token hashes to `token_hash`, whoever owns it.
    pub async fn share_by_token(&self, token_hash: &str) -> Result<Option<ShareLinkRecord>, DbErr> {
        Ok(share_links::Entity::find()
            .filter(share_links::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
            .map(ShareLinkRecord::from))
    }

    pub async fn owned_share(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<Option<ShareLinkRecord>, DbErr> {
        Ok(share_links::Entity::find_by_id(id)
            .filter(share_links::Column::UserId.eq(user_id))
            .one(&self.db)
            .await?
            .map(ShareLinkRecord::from))
    }

    /// One page of a user's links, newest first, after the link `after`.
    pub async fn share_page(
        &self,
        user_id: Uuid,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<ShareLinkRecord>, DbErr> {
        let mut query = share_links::Entity::find().filter(share_links::Column::UserId.eq(user_id));
        if let Some(after) = after {
            query = query.filter(share_links::Column::Id.lt(after));
        }
        Ok(query
            .order_by_desc(share_links::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ShareLinkRecord::from)
            .collect())
    }

    /// Revokes the link `id` of `user_id` at `now` unless it was revoked already.
    pub async fn revoke_share(
        &self,
        user_id: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<(), DbErr> {
        share_links::Entity::update_many()
            .col_expr(share_links::Column::RevokedAt, Expr::value(now))
            .filter(share_links::Column::Id.eq(id))
            .filter(share_links::Column::UserId.eq(user_id))
            .filter(share_links::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Counts a view of the link `id` at `now` (one atomic update).
    pub async fn count_share_view(&self, id: Uuid, now: OffsetDateTime) -> Result<(), DbErr> {
        share_links::Entity::update_many()
            .col_expr(
                share_links::Column::ViewCount,
                Expr::col(share_links::Column::ViewCount).add(1),
            )
            .col_expr(share_links::Column::LastViewedAt, Expr::value(now))
            .filter(share_links::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Drops the links of a deleted image, and the "before" of links that showed it
    /// beside another.
    pub async fn forget_shares_of(&self, image_id: Uuid) -> Result<(), DbErr> {
        share_links::Entity::delete_many()
            .filter(share_links::Column::ImageId.eq(image_id))
            .exec(&self.db)
            .await?;
        share_links::Entity::update_many()
            .col_expr(
                share_links::Column::BeforeImageId,
                Expr::value(Option::<Uuid>::None),
            )
            .filter(share_links::Column::BeforeImageId.eq(image_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Drops every link of a user (account deletion).
    pub async fn delete_shares_of_user(&self, user_id: Uuid) -> Result<u64, DbErr> {
        Ok(share_links::Entity::delete_many()
            .filter(share_links::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
