//! Test harness. Every test gets its own database (a fresh PostgreSQL database,
//! dropped afterwards, or SQLite files in a temporary directory) and its own
//! services, spawned in-process on port 0 and talking real gRPC. Nothing is shared
//! between tests, so they run in parallel in any order.
//!
//! PostgreSQL is found at `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it is not reachable the test
//! fails, it never skips.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use atelier_common::config::{Endpoint, Endpoints, Platform, Secret};
use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use atelier_auth::Lifetimes;
pub use atelier_gateway::limits::LimitConfig;

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

/// Knobs for a spawned platform.
#[derive(Clone, Debug)]
pub struct Options {
    pub backend: Backend,
    pub limits: LimitConfig,
    pub lifetimes: Lifetimes,
    pub cors_origins: Vec<String>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            limits: LimitConfig {
                per_ip: 10_000,
                per_user: 10_000,
                credentials_per_ip: 10_000,
            },
            lifetimes: Lifetimes::default(),
            cors_origins: vec!["https://app.example.com".into()],
        }
    }
}

/// A running auth service and gateway, stopped when dropped.
pub struct TestPlatform {
    pub platform: Platform,
    /// `http://127.0.0.1:<port>` of the gateway.
    pub gateway_url: String,
    pub auth_url: String,
    /// The directory the signing keys live in (tests sign their own tokens).
    pub keys_dir: PathBuf,
    shutdown: CancellationToken,
    _db: Option<TestDb>,
    _dir: Arc<tempfile::TempDir>,
}

async fn listener() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

impl TestPlatform {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(Options::new(backend)).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        Self::try_spawn(options)
            .await
            .expect("spawning the test platform")
    }

    async fn try_spawn(options: Options) -> anyhow::Result<Self> {
        let dir = Arc::new(tempfile::tempdir()?);
        let db = match options.backend {
            Backend::Postgres => Some(TestDb::create().await?),
            Backend::Sqlite => None,
        };
        let (auth_listener, auth_addr) = listener().await?;
        let (gateway_listener, gateway_addr) = listener().await?;
        let unused = Endpoint::bound(SocketAddr::from(([127, 0, 0, 1], 9)));
        let platform = Platform {
            data_dir: dir.path().to_owned(),
            database_url: db.as_ref().map(|db| Secret::new(db.url.clone())),
            endpoints: Endpoints {
                auth: Endpoint::bound(auth_addr),
                image: unused.clone(),
                processing: unused.clone(),
                workflow: unused.clone(),
                user: unused,
                gateway: gateway_addr,
            },
            grpc_timeout: Duration::from_secs(10),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let shutdown = CancellationToken::new();
        let keys_dir = dir.path().join("keys");
        let auth_config = atelier_auth::AuthConfig {
            platform: platform.clone(),
            keys_dir: keys_dir.clone(),
            lifetimes: options.lifetimes,
        };
        tokio::spawn(atelier_auth::serve(
            auth_config,
            auth_listener,
            shutdown.clone(),
        ));

        let gateway_config = atelier_gateway::GatewayConfig {
            platform: platform.clone(),
            public_url: None,
            cors_origins: options
                .cors_origins
                .iter()
                .map(|origin| origin.parse())
                .collect::<Result<_, _>>()?,
            max_body_bytes: 64 * 1024,
            limits: options.limits,
            trust_proxy: false,
            web_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../gateway/web/dist"),
        };
        tokio::spawn(atelier_gateway::serve(
            gateway_config,
            gateway_listener,
            shutdown.clone(),
        ));

        let spawned = Self {
            gateway_url: format!("http://{gateway_addr}"),
            auth_url: format!("http://{auth_addr}"),
            platform,
            keys_dir,
            shutdown,
            _db: db,
            _dir: dir,
        };
        spawned.wait_ready().await?;
        Ok(spawned)
    }

    /// Waits (bounded) until the auth service answers its health check.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let channel = atelier_common::grpc::channel(&self.auth_url, Duration::from_secs(2))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match atelier_common::grpc::check_health(channel.clone(), "atelier.auth.v1.AuthService")
                .await
            {
                Ok(()) => return Ok(()),
                Err(err) if tokio::time::Instant::now() > deadline => {
                    anyhow::bail!("auth service not ready after 30 s: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A gRPC channel to the auth service.
    pub fn auth_channel(&self) -> tonic_channel::Channel {
        atelier_common::grpc::channel(&self.auth_url, Duration::from_secs(10)).expect("auth url")
    }
}

/// Re-exported so tests name the channel type without depending on tonic directly.
pub mod tonic_channel {
    pub use atelier_common::grpc::Channel;
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
