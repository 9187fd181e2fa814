//! Databases: each service owns its schema. On PostgreSQL that is a schema named
//! after the service in the shared database; in the embedded default it is a SQLite
//! file of its own under the data directory. The same sea-orm code runs on both.

use std::{future::Future, time::Duration};

use anyhow::Context;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
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
            crate::files::private_dir(&platform.data_dir).context("creating the data directory")?;
            let path = platform.data_dir.join(format!("{service}.db"));
            // SQLite gives its -wal and -shm files the database file's mode, so a
            // database created 0600 here keeps all three private.
            if !crate::files::create_private(&path, b"")? {
                for suffix in ["", "-wal", "-shm"] {
                    let file = platform.data_dir.join(format!("{service}.db{suffix}"));
                    crate::files::narrow_private(&file)?;
                }
            }
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
                lock_key(&[service.as_bytes()])
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

/// A stable 63-bit key for PostgreSQL advisory locks: FNV-1a over the parts,
/// joined by a zero byte (one part hashes as it always did: the migration lock of
/// a service stays the same across versions).
fn lock_key(parts: &[&[u8]]) -> i64 {
    let step = |hash: u64, byte: u8| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hash = step(hash, 0);
        }
        hash = part.iter().fold(hash, |hash, byte| step(hash, *byte));
    }
    (hash >> 1) as i64
}

/// Begins a transaction that holds the lock named `scope` for `key` (e.g. one
/// user's quota) until it commits or rolls back, so a check made inside it and the
/// writes it guards are one atomic step, across replicas too.
///
/// On PostgreSQL that is a transaction-level advisory lock: holders of the same
/// `(scope, key)` take turns, others are not held up (two keys hashing alike only
/// take turns needlessly). SQLite has one writer at a time: the transaction starts
/// as a write transaction (`BEGIN IMMEDIATE`), so it waits for the current writer
/// (up to the busy timeout) rather than reading first and failing to write later.
pub async fn begin_locked(
    db: &DatabaseConnection,
    scope: &str,
    key: &[u8],
) -> Result<DatabaseTransaction, DbErr> {
    let txn = begin_write(db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [lock_key(&[scope.as_bytes(), key]).into()],
        ))
        .await?;
    }
    Ok(txn)
}

/// A transaction that reads before it writes. On SQLite it starts as a write
/// transaction (`BEGIN IMMEDIATE`), waiting for the current writer up to the busy
/// timeout: a deferred one would read, then fail to take the write lock when
/// another writer came first (`database is locked`).
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// SQLite refuses a write that would wait on another (a deferred transaction
/// upgrading its lock, or the busy timeout running out): such a transaction is
/// simply tried again. PostgreSQL never answers this way.
pub fn is_busy(err: &DbErr) -> bool {
    let text = err.to_string();
    text.contains("database is locked")
        || text.contains("SQLITE_BUSY")
        || text.contains("(code: 5)")
        || text.contains("(code: 517)")
}

/// Runs `attempt` until it does not fail with [`is_busy`], at most 20 times with a
/// growing pause. `attempt` must leave nothing behind when it fails (one
/// transaction).
pub async fn retry_busy<T, F, Fut>(mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(err) if is_busy(&err) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}

/// True when `err` says the database cannot be reached right now (stopped, restarting,
/// the pool cannot get a connection) rather than that the query was wrong: callers
/// answer "unavailable, try again" (503), not an internal error.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let err = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(err))
        | DbErr::Exec(RuntimeErr::SqlxError(err))
        | DbErr::Query(RuntimeErr::SqlxError(err)) => err,
        DbErr::Conn(_) => return true,
        _ => return false,
    };
    match err.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        // Class 08: connection exceptions; 57P01-03: the server is shutting down,
        // crashed or is starting up.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// True when `err` is a unique-constraint violation, on either backend.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::{ConnAcquireErr, RuntimeErr, sqlx};

    use super::*;

    #[test]
    fn connection_failures_are_unavailable_and_query_failures_are_not() {
        let sqlx_err = |err: sqlx::Error| DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)));
        assert!(is_unavailable(&DbErr::ConnectionAcquire(
            ConnAcquireErr::Timeout
        )));
        assert!(is_unavailable(&sqlx_err(sqlx::Error::PoolTimedOut)));
        assert!(is_unavailable(&sqlx_err(sqlx::Error::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        ))));
        assert!(!is_unavailable(&sqlx_err(sqlx::Error::RowNotFound)));
        assert!(!is_unavailable(&DbErr::RecordNotFound("job".into())));
        assert!(!is_unavailable(&DbErr::Custom("bad".into())));
    }

    /// What PostgreSQL answers a session it ends (as at a restart), and a wrong query.
    #[tokio::test]
    async fn a_session_postgresql_ends_is_unavailable_and_a_bad_query_is_not() {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut options = ConnectOptions::new(url);
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options)
            .await
            .expect("PostgreSQL at TEST_DATABASE_URL");
        let bad = db
            .execute_unprepared("SELECT * FROM no_such_table_anywhere")
            .await
            .expect_err("no such table");
        assert!(!is_unavailable(&bad), "{bad}");
        let ended = db
            .execute_unprepared("SELECT pg_terminate_backend(pg_backend_pid())")
            .await
            .expect_err("the session is ended");
        assert!(is_unavailable(&ended), "{ended}");
    }
}
