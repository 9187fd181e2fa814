//! Test helpers that need no service: a database of the test's own (a fresh
//! PostgreSQL database, dropped afterwards), a bucket or directory of its own, images
//! made on the spot, a clock tests move, and the REST calls tests make through a
//! gateway. Nothing is shared between tests, so they run in parallel in any order.
//! The harness that spawns the services lives with them (`atelier-testbed`).
//!
//! PostgreSQL is found at `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it is not reachable the test
//! fails, it never skips.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

/// Which database backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs an async test body once per backend: `backends!(name, body_fn)` makes
/// `name::postgres` and `name::sqlite`, each calling `body_fn(Backend)`.
#[macro_export]
macro_rules! backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
            }
        )+
    };
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL database of its own, dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn create() -> anyhow::Result<Self> {
        let admin = admin_url();
        let name = format!("atelier_test_{}", uuid::Uuid::new_v4().simple());
        let conn = Database::connect(&admin).await.with_context(|| {
            format!(
                "PostgreSQL is not reachable at {admin} (TEST_DATABASE_URL); `make test` starts it"
            )
        })?;
        conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        conn.close().await.ok();
        let (base, _) = admin
            .rsplit_once('/')
            .context("TEST_DATABASE_URL has no database name")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let conn = Database::connect(&admin_url()).await?;
                conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                conn.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// A database of the test's own on `backend`, holding the service `schema` migrated by
/// `M`: a fresh PostgreSQL database (dropped with the returned [`TestDb`]; keep it alive
/// as long as the connection) or `<schema>.db` in `dir`.
pub async fn migrated_database<M: sea_orm_migration::MigratorTrait>(
    backend: Backend,
    schema: &'static str,
    dir: &std::path::Path,
) -> anyhow::Result<(sea_orm::DatabaseConnection, Option<TestDb>)> {
    let (db, test_db) = match backend {
        Backend::Postgres => {
            let test_db = TestDb::create().await?;
            let db = atelier_common::db::connect_postgres(&test_db.url, schema).await?;
            (db, Some(test_db))
        }
        Backend::Sqlite => {
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("{schema}.db")).display()
            );
            (atelier_common::db::connect_sqlite(&url).await?, None)
        }
    };
    atelier_common::db::migrate::<M>(&db, schema).await?;
    Ok((db, test_db))
}

/// A free loopback port (the listener is closed again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The gRPC listen addresses of the five services for an `atelier serve` a test
/// starts, each on a free loopback port: `command.envs(service_addresses())`.
pub fn service_addresses() -> [(&'static str, String); 5] {
    [
        "AUTH_GRPC_ADDR",
        "IMAGE_GRPC_ADDR",
        "WORKFLOW_GRPC_ADDR",
        "PROCESSING_GRPC_ADDR",
        "USER_GRPC_ADDR",
    ]
    .map(|name| (name, format!("127.0.0.1:{}", free_port())))
}

/// Where a test keeps its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A directory of the test's own.
    Local,
    /// A bucket of the test's own on the S3-compatible test server
    /// (`TEST_S3_ENDPOINT`, default `http://127.0.0.1:9000`).
    S3,
}

/// The S3 settings of the test server, for a bucket of the test's own.
pub fn s3_config(bucket: &str) -> atelier_storage::S3Config {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let mut config = atelier_storage::S3Config::new(bucket);
    config.endpoint = Some(env("TEST_S3_ENDPOINT", "http://127.0.0.1:9000"));
    config.force_path_style = true;
    config.access_key_id = Some(env("TEST_S3_ACCESS_KEY", "atelier-test"));
    config.secret_access_key = Some(env("TEST_S3_SECRET_KEY", "atelier-test-secret"));
    config
}

/// An object store of the test's own.
pub async fn object_store(
    storage: Storage,
    dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn atelier_storage::ObjectStore>> {
    Ok(match storage {
        Storage::Local => Arc::new(atelier_storage::LocalStore::new(dir.join("objects"))?),
        Storage::S3 => {
            let bucket = format!("atelier-test-{}", uuid::Uuid::new_v4().simple());
            let store = atelier_storage::S3Store::new(s3_config(&bucket)).await?;
            store.create_bucket_if_missing().await.context(
                "the S3 test server is not reachable at TEST_S3_ENDPOINT; `make test` starts it",
            )?;
            Arc::new(store)
        }
    })
}

/// The system clock moved by an offset tests control.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_secs: std::sync::atomic::AtomicI64,
}

impl OffsetClock {
    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        self.offset_secs
            .fetch_add(by.as_secs() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl atelier_common::Clock for OffsetClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
            + time::Duration::seconds(self.offset_secs.load(std::sync::atomic::Ordering::SeqCst))
    }
}

pub mod clamd;
pub mod fixtures;
pub mod postgres;
pub mod rest;
