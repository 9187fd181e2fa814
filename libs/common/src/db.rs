//! Databases: each service owns its schema. On PostgreSQL that is a schema named
//! after the service in the shared database; in the embedded default it is a SQLite
//! file of its own under the data directory. The same sea-orm code runs on both.

use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};
use sea_orm_migration::MigratorTrait;

use crate::config::Platform;

/// How long start-up waits for a database that is not up yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Connects to `service`'s schema, waiting a bounded time for the server.
pub async fn connect(
    platform: &Platform,
    service: &'static str,
) -> anyhow::Result<DatabaseConnection> {
    match &platform.database_url {
        Some(url) => connect_postgres(url.expose(), service).await,
        None => {
            std::fs::create_dir_all(&platform.data_dir).with_context(|| {
                format!(
                    "creating the data directory {}",
                    platform.data_dir.display()
                )
            })?;
            let path = platform.data_dir.join(format!("{service}.db"));
            connect_sqlite(&format!("sqlite://{}?mode=rwc", path.display())).await
        }
    }
}

/// Connects to `schema` in a PostgreSQL database, creating the schema if needed.
pub async fn connect_postgres(
    url: &str,
    schema: &'static str,
) -> anyhow::Result<DatabaseConnection> {
    let bootstrap = retry_connect(ConnectOptions::new(url).max_connections(1).to_owned()).await?;
    let created = bootstrap
        .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await;
    // Two processes creating the schema at once: one wins, both carry on.
    if let Err(err) = created
        && !is_unique_violation(&err)
    {
        return Err(err).with_context(|| format!("creating schema {schema}"));
    }
    bootstrap.close().await.ok();
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(crate::config::var("DATABASE_MAX_CONNECTIONS", 10)?)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .set_schema_search_path(schema)
        .sqlx_logging(false);
    retry_connect(options).await
}

/// Connects to a SQLite database (`sqlite://path?mode=rwc`).
pub async fn connect_sqlite(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    options.max_connections(5).sqlx_logging(false);
    let db = retry_connect(options).await?;
    // Readers never wait for the writer, and writers wait for each other.
    db.execute_unprepared("PRAGMA journal_mode = WAL").await?;
    db.execute_unprepared("PRAGMA foreign_keys = ON").await?;
    Ok(db)
}

async fn retry_connect(options: ConnectOptions) -> anyhow::Result<DatabaseConnection> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match Database::connect(options.clone()).await {
            Ok(db) => return Ok(db),
            Err(err) if started.elapsed() < CONNECT_PATIENCE => {
                tracing::warn!(error = %err, retry_in = ?delay, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("connecting to the database"),
        }
    }
}

/// Applies `M`'s pending migrations. On PostgreSQL an advisory lock makes replicas
/// starting together take turns.
pub async fn migrate<M: MigratorTrait>(
    db: &DatabaseConnection,
    service: &str,
) -> anyhow::Result<()> {
    let lock = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            let txn = db.begin().await?;
            txn.execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({})",
                lock_key(service)
            ))
            .await?;
            Some(txn)
        }
        _ => None,
    };
    M::up(db, None)
        .await
        .with_context(|| format!("migrating the {service} schema"))?;
    if let Some(txn) = lock {
        txn.commit().await?;
    }
    tracing::info!(service, "schema up to date");
    Ok(())
}

/// A stable 63-bit key per service for PostgreSQL advisory locks (FNV-1a).
fn lock_key(service: &str) -> i64 {
    let hash = service
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash >> 1) as i64
}

/// True when `err` is a unique-constraint violation, on either backend.
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
