//! Test harness: the whole platform, every service and the gateway, spawned
//! in-process on port 0 and talking real gRPC, with a database, a queue prefix, an
//! object store and a fal simulator of its own. Nothing is shared between tests, so
//! they run in parallel in any order. The helpers that need no service (databases,
//! fixtures, REST calls) are `atelier-testkit`'s.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use atelier_common::{
    admin::Readiness,
    config::{Endpoint, Endpoints, Platform, Secret, TlsSettings},
    identity::Identity,
};
use atelier_testkit::{TestDb, rest::User};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use atelier_auth::{Backoff, Lifetimes};
pub use atelier_common::identity::ServiceName;
pub use atelier_gateway::{forwarded::TrustedProxies, limits::LimitConfig, live::StreamConfig};
pub use atelier_image::ScannerConfig;
pub use atelier_scan::{ClamdConfig, Unavailable as ScanUnavailable};
pub use atelier_testkit::{Backend, OffsetClock, Storage};
pub use atelier_user::Tier;

pub mod seed;

/// Which queue a spawned platform's processing service uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueBackend {
    /// The in-process queue and event bus.
    Memory,
    /// Redis at `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), under a key
    /// prefix of the test's own.
    Redis,
}

/// Knobs for a spawned platform.
#[derive(Clone, Debug)]
pub struct Options {
    pub backend: Backend,
    pub storage: Storage,
    pub queue: QueueBackend,
    /// Upload size limit in bytes.
    pub max_file_bytes: u64,
    pub max_pixels: u64,
    pub limits: LimitConfig,
    /// The proxies whose `X-Forwarded-For` the gateway believes.
    pub proxies: TrustedProxies,
    /// The gateway's bounds on live streams.
    pub streams: StreamConfig,
    /// The gateway's `SEND_TIMEOUT_SECS` and `UPLOAD_IDLE_TIMEOUT_SECS`.
    pub send_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub lifetimes: Lifetimes,
    /// How the auth service slows failed sign-ins down. The default never does,
    /// so tests of other things may fail to sign in as often as they like.
    pub backoff: Backoff,
    pub cors_origins: Vec<String>,
    /// Jobs the processing service runs at once (`WORKER_CONCURRENCY`).
    pub worker_concurrency: usize,
    /// The queue's bound on jobs at fal (`FAL_MAX_CONCURRENCY`); `None`: unbounded.
    pub fal_max_concurrency: Option<u32>,
    /// How many requests the simulated fal account runs at once (`FAL_SIM_MAX_CONCURRENCY`).
    pub fal_sim_max_concurrency: usize,
    /// How often the processing service's reconciler looks for lost jobs.
    pub reconcile_every: Duration,
    /// Input images up to this size go to fal as `data:` URIs (`FAL_INLINE_INPUT_BYTES`).
    pub inline_input_bytes: u64,
    /// The processing service's `PUBLIC_URL`: fal (the simulator) posts webhooks to
    /// `<url>/api/fal/webhook`. `None`: the workers poll.
    pub processing_public_url: Option<String>,
    /// The fal client's circuit breaker.
    pub fal_breaker: atelier_fal::BreakerConfig,
    /// The fal client's retries of transient failures.
    pub fal_retry: atelier_fal::RetryConfig,
    /// The fal client's deadline for one HTTP call.
    pub fal_http_timeout: Duration,
    /// What each subscription tier allows. The default lifts every limit but the
    /// queue's per-user parallelism (4), so tests of other things are not throttled.
    pub tiers: atelier_user::Tiers,
    /// The user service's clock (quota windows); tests move it to see quotas reset.
    pub user_clock: Arc<OffsetClock>,
    /// How long the workflow service serves its catalogue from memory.
    pub workflow_cache_ttl: Duration,
    /// How often the workflow service reads prices from the simulator.
    pub pricing_every: Duration,
    /// The largest result fal may return and the image service stores
    /// (`FAL_MAX_RESULT_BYTES`).
    pub max_result_bytes: u64,
    /// The fal account the simulator signs webhooks for; the processing service is
    /// pinned to the simulator's default one.
    pub fal_sim_user_id: String,
    /// The gateway's `JOB_STATUS_CACHE_MS` (zero: off).
    pub status_cache_ttl: Duration,
    /// The image service's malware scanner (`SCANNER`); none by default.
    pub scanner: ScannerConfig,
    /// Outgoing webhooks: loopback receivers allowed, retries within seconds.
    pub webhooks: atelier_processing::domain::outbound::WebhookSettings,
    /// Spend budgets (none for the platform by default; the tiers' are in `tiers`).
    pub budgets: atelier_processing::domain::spend::BudgetSettings,
    /// The processing service's clock (job times, budget periods); tests move it.
    pub processing_clock: Arc<OffsetClock>,
}

/// Tiers without limits, but for the queue's per-user parallelism.
pub fn unlimited_tiers() -> atelier_user::Tiers {
    let mut tiers = atelier_user::Tiers::default();
    for tier in Tier::ALL {
        *tiers.get_mut(tier) = atelier_user::Limits {
            jobs_per_day: None,
            concurrent_jobs: None,
            parallel_jobs: Some(4),
            storage_bytes: None,
            max_file_size_bytes: None,
            max_retention_days: None,
            high_priority: true,
            daily_budget: None,
            monthly_budget: None,
        };
    }
    tiers
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            storage: Storage::Local,
            queue: QueueBackend::Memory,
            max_file_bytes: 50 * 1024 * 1024,
            max_pixels: 100_000_000,
            limits: LimitConfig {
                per_ip: 10_000,
                per_user: 10_000,
                credentials_per_ip: 10_000,
                per_key: 10_000,
            },
            proxies: TrustedProxies::none(),
            streams: StreamConfig::default(),
            send_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            lifetimes: Lifetimes::default(),
            backoff: Backoff {
                free_failures: u32::MAX,
                ..Backoff::default()
            },
            cors_origins: vec!["https://app.example.com".into()],
            worker_concurrency: 8,
            fal_max_concurrency: None,
            fal_sim_max_concurrency: atelier_fal_sim::SimConfig::default().max_concurrency,
            reconcile_every: Duration::from_secs(2),
            inline_input_bytes: 256 * 1024,
            processing_public_url: None,
            fal_breaker: atelier_fal::BreakerConfig::default(),
            fal_retry: atelier_fal::RetryConfig::default(),
            fal_http_timeout: Duration::from_secs(30),
            tiers: unlimited_tiers(),
            user_clock: Arc::new(OffsetClock::default()),
            workflow_cache_ttl: Duration::from_secs(60),
            pricing_every: Duration::from_secs(3600),
            max_result_bytes: atelier_fal::FalConfig::new("test").max_result_bytes,
            fal_sim_user_id: atelier_fal_sim::WEBHOOK_USER_ID.to_owned(),
            status_cache_ttl: Duration::from_secs(1),
            scanner: ScannerConfig::None,
            webhooks: atelier_processing::domain::outbound::WebhookSettings {
                schedule: vec![
                    Duration::ZERO,
                    Duration::from_millis(200),
                    Duration::from_millis(500),
                ],
                timeout: Duration::from_secs(5),
                lease: Duration::from_secs(10),
                poll_every: Duration::from_millis(100),
                targets: atelier_processing::domain::outbound::TargetPolicy {
                    allow_private: true,
                    allowed: Vec::new(),
                },
                ..Default::default()
            },
            budgets: atelier_processing::domain::spend::BudgetSettings::default(),
            processing_clock: Arc::new(OffsetClock::default()),
        }
    }
}

/// The processing service as the platform runs it.
struct ProcessingRun {
    config: atelier_processing::ProcessingConfig,
    clock: Arc<OffsetClock>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A running auth service and gateway, stopped when dropped.
pub struct TestPlatform {
    pub platform: Platform,
    /// `http://127.0.0.1:<port>` of the gateway.
    pub gateway_url: String,
    /// `http://127.0.0.1:<port>` of the gateway's admin endpoint (`/metrics`,
    /// `/healthz`, `/readyz`).
    pub admin_url: String,
    /// The gateway's settings, for more gateways in front of the same services.
    pub gateway_config: atelier_gateway::GatewayConfig,
    pub auth_url: String,
    pub image_url: String,
    pub workflow_url: String,
    pub processing_url: String,
    pub user_url: String,
    /// The user service's clock: advance it to move into the next quota window.
    pub user_clock: Arc<OffsetClock>,
    /// The processing service's clock: job times and budget periods.
    pub processing_clock: Arc<OffsetClock>,
    fal_sim: atelier_fal_sim::SimHandle,
    /// The objects the image service stores, for tests to look behind its back.
    pub objects: Arc<dyn atelier_storage::ObjectStore>,
    /// The platform's data directory.
    pub data_dir: PathBuf,
    /// The directory the signing keys live in (tests sign their own tokens).
    pub keys_dir: PathBuf,
    shutdown: CancellationToken,
    /// The processing service's settings, its stop signal and its task, for
    /// [`TestPlatform::restart_processing`].
    processing: tokio::sync::Mutex<ProcessingRun>,
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
        let (image_listener, image_addr) = listener().await?;
        let (workflow_listener, workflow_addr) = listener().await?;
        let (processing_listener, processing_addr) = listener().await?;
        let (user_listener, user_addr) = listener().await?;
        let platform = Platform {
            data_dir: dir.path().to_owned(),
            database_url: db.as_ref().map(|db| Secret::new(db.url.clone())),
            redis_url: match options.queue {
                QueueBackend::Memory => None,
                QueueBackend::Redis => Some(Secret::new(
                    std::env::var("TEST_REDIS_URL")
                        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
                )),
            },
            redis_prefix: format!("atelier-test-{}:", uuid::Uuid::new_v4().simple()),
            endpoints: Endpoints {
                auth: Endpoint::bound(auth_addr),
                image: Endpoint::bound(image_addr),
                processing: Endpoint::bound(processing_addr),
                workflow: Endpoint::bound(workflow_addr),
                user: Endpoint::bound(user_addr),
                gateway: gateway_addr,
            },
            grpc_timeout: Duration::from_secs(10),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: TlsSettings::generated(dir.path().join("tls")),
        };
        let shutdown = CancellationToken::new();
        let keys_dir = dir.path().join("keys");
        let auth_config = atelier_auth::AuthConfig {
            platform: platform.clone(),
            keys_dir: keys_dir.clone(),
            lifetimes: options.lifetimes,
            backoff: options.backoff,
            audit_retention: None,
        };
        tokio::spawn(atelier_auth::serve(
            auth_config,
            auth_listener,
            shutdown.clone(),
        ));

        let objects = atelier_testkit::object_store(options.storage, dir.path()).await?;
        let uploads = dir.path().join("uploads");
        std::fs::create_dir_all(&uploads)?;
        let image_config = atelier_image::ImageConfig {
            platform: platform.clone(),
            settings: atelier_image::Settings {
                max_file_bytes: options.max_file_bytes,
                max_result_bytes: options.max_result_bytes,
                max_pixels: options.max_pixels,
                max_decode_bytes: 512 * 1024 * 1024,
                max_parallel_decodes: 2,
                strip_location: true,
                retention: Duration::from_secs(30 * 24 * 60 * 60),
                url_ttl: Duration::from_secs(15 * 60),
                public_base: format!("http://{gateway_addr}"),
                tmp_dir: uploads,
            },
            url_signing_key: None,
            sweep_every: Duration::from_secs(3600),
            scanner: options.scanner.clone(),
            shares: atelier_image::ShareSettings::default(),
        };
        tokio::spawn(atelier_image::serve_with_store(
            image_config,
            objects.clone(),
            image_listener,
            shutdown.clone(),
        ));
        let (sim_listener, sim_addr) = listener().await?;
        let fal_sim = atelier_fal_sim::start(
            atelier_fal_sim::SimConfig {
                processing_time: Duration::from_millis(50),
                max_concurrency: options.fal_sim_max_concurrency,
                webhook_user_id: options.fal_sim_user_id.clone(),
                ..Default::default()
            },
            sim_listener,
            shutdown.clone(),
        )
        .await?;
        let mut pricing = atelier_fal::FalConfig::new("test");
        pricing.queue_url = format!("http://{sim_addr}");
        pricing.api_url = format!("http://{sim_addr}/v1");
        pricing.retry = options.fal_retry.clone();
        let workflow_config = atelier_workflow::WorkflowConfig {
            platform: platform.clone(),
            cache_ttl: options.workflow_cache_ttl,
            refresh: Some(atelier_workflow::refresh::RefreshConfig {
                fal: pricing,
                every: options.pricing_every,
                schemas: false,
            }),
            limits: atelier_workflow::estimate::Limits {
                max_bytes: options.max_result_bytes,
                max_pixels: options.max_pixels,
            },
        };
        tokio::spawn(atelier_workflow::serve(
            workflow_config,
            workflow_listener,
            shutdown.clone(),
        ));

        let mut fal = atelier_fal::FalConfig::new("test");
        fal.queue_url = format!("http://{sim_addr}");
        fal.allowed_result_hosts = vec![format!("http://{sim_addr}")];
        fal.poll_interval = Duration::from_millis(50);
        fal.breaker = options.fal_breaker.clone();
        fal.retry = options.fal_retry.clone();
        fal.http_timeout = options.fal_http_timeout;
        fal.max_result_bytes = options.max_result_bytes;
        let mut queue = atelier_queue::QueueConfig::default();
        queue.retry.base = Duration::from_millis(200);
        queue.max_in_flight = options.fal_max_concurrency;
        let processing_config = atelier_processing::ProcessingConfig {
            platform: platform.clone(),
            fal,
            webhook_jwks_url: fal_sim.jwks_url(),
            fal_user_id: Some(atelier_fal_sim::WEBHOOK_USER_ID.to_owned()),
            public_url: options.processing_public_url.clone(),
            concurrency: options.worker_concurrency,
            reconcile_every: options.reconcile_every,
            inline_input_bytes: options.inline_input_bytes,
            queue,
            webhooks: options.webhooks.clone(),
            budgets: options.budgets.clone(),
            analytics_every: Duration::from_secs(1),
        };
        let processing_shutdown = shutdown.child_token();
        let processing_task = tokio::spawn(atelier_processing::serve_with_clock(
            processing_config.clone(),
            options.processing_clock.clone(),
            processing_listener,
            processing_shutdown.clone(),
        ));

        let user_config = atelier_user::UserConfig {
            platform: platform.clone(),
            tiers: options.tiers.clone(),
        };
        tokio::spawn(atelier_user::serve_with_clock(
            user_config,
            options.user_clock.clone(),
            user_listener,
            shutdown.clone(),
        ));

        let gateway_config = atelier_gateway::GatewayConfig {
            platform: platform.clone(),
            public_url: None,
            tls: None,
            plaintext: false,
            cors_origins: options
                .cors_origins
                .iter()
                .map(|origin| origin.parse())
                .collect::<Result<_, _>>()?,
            max_body_bytes: 64 * 1024,
            max_upload_bytes: options.max_file_bytes as usize,
            limits: options.limits,
            proxies: options.proxies.clone(),
            streams: options.streams,
            send_timeout: options.send_timeout,
            body_idle_timeout: options.body_idle_timeout,
            web_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../gateway/web/dist"),
            status_cache_ttl: options.status_cache_ttl,
        };
        tokio::spawn(atelier_gateway::serve(
            gateway_config.clone(),
            gateway_listener,
            shutdown.clone(),
        ));
        let (admin_listener, admin_addr) = listener().await?;
        let readiness = atelier_gateway::readiness(&platform, Readiness::new(), &shutdown)?;
        readiness.started();
        tokio::spawn(atelier_common::admin::serve(
            admin_listener,
            readiness,
            shutdown.clone(),
        ));

        let spawned = Self {
            gateway_url: format!("http://{gateway_addr}"),
            admin_url: format!("http://{admin_addr}"),
            gateway_config,
            auth_url: format!("https://{auth_addr}"),
            image_url: format!("https://{image_addr}"),
            workflow_url: format!("https://{workflow_addr}"),
            processing_url: format!("https://{processing_addr}"),
            user_url: format!("https://{user_addr}"),
            user_clock: options.user_clock.clone(),
            fal_sim,
            objects,
            data_dir: dir.path().to_owned(),
            platform,
            keys_dir,
            processing_clock: options.processing_clock.clone(),
            processing: tokio::sync::Mutex::new(ProcessingRun {
                config: processing_config,
                clock: options.processing_clock.clone(),
                addr: processing_addr,
                shutdown: processing_shutdown,
                task: Some(processing_task),
            }),
            shutdown,
            _db: db,
            _dir: dir,
        };
        spawned.wait_ready().await?;
        Ok(spawned)
    }

    /// Waits (bounded) until every service answers its health check.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        for (url, service) in [
            (&self.auth_url, "atelier.auth.v1.AuthService"),
            (&self.image_url, "atelier.image.v1.ImageService"),
            (&self.workflow_url, "atelier.workflow.v1.WorkflowService"),
            (
                &self.processing_url,
                "atelier.processing.v1.ProcessingService",
            ),
            (&self.user_url, "atelier.user.v1.UserService"),
        ] {
            let channel = self
                .identity(ServiceName::Gateway)
                .channel(url, Duration::from_secs(2))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match atelier_common::grpc::check_health(channel.clone(), service).await {
                    Ok(()) => break,
                    Err(err) if tokio::time::Instant::now() > deadline => {
                        anyhow::bail!("{service} not ready after 30 s: {err}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(())
    }

    /// One more gateway in front of the same services (as another replica would
    /// be), stopped with the platform; its URL (`https://` when `config` has a
    /// certificate).
    pub async fn spawn_gateway(&self, config: atelier_gateway::GatewayConfig) -> String {
        let (listener, addr) = listener().await.expect("gateway listener");
        let scheme = config.scheme();
        tokio::spawn(atelier_gateway::serve(
            config,
            listener,
            self.shutdown.clone(),
        ));
        format!("{scheme}://{addr}")
    }

    /// Stops the processing service (as a rolling update does: its workers stop, its
    /// port closes) and starts a new one on the same database and address.
    pub async fn restart_processing(&self) {
        let mut run = self.processing.lock().await;
        run.shutdown.cancel();
        if let Some(task) = run.task.take() {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(run.addr).await {
                Ok(listener) => break listener,
                Err(err) if tokio::time::Instant::now() > deadline => {
                    panic!("cannot bind the processing address again: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        run.shutdown = self.shutdown.child_token();
        run.task = Some(tokio::spawn(atelier_processing::serve_with_clock(
            run.config.clone(),
            run.clock.clone(),
            listener,
            run.shutdown.clone(),
        )));
        drop(run);
        self.wait_ready().await.expect("processing ready again");
    }

    /// The fal simulator the processing service submits to.
    pub fn fal_sim(&self) -> &atelier_fal_sim::SimHandle {
        &self.fal_sim
    }

    /// `service`'s identity on this platform, as a test presents it.
    pub fn identity(&self, service: ServiceName) -> Identity {
        Identity::load(&self.platform.tls, service).expect("a service identity")
    }

    /// A gRPC channel to `url` (one of this platform's services) as `service`.
    pub fn channel_as(&self, service: ServiceName, url: &str) -> tonic_channel::Channel {
        self.identity(service)
            .streaming_channel(url)
            .expect("a service url")
    }

    /// Makes `user` an administrator with the operator certificate, and signs them in
    /// anew: tokens issued before carry the old role.
    pub async fn make_admin(&self, user: &User) -> User {
        use atelier_proto::auth::v1::{SetUserRoleRequest, auth_service_client::AuthServiceClient};
        AuthServiceClient::new(self.channel_as(ServiceName::Operator, &self.auth_url))
            .set_user_role(SetUserRoleRequest {
                user_id: user.id.clone(),
                role: "admin".into(),
                email: String::new(),
            })
            .await
            .expect("role set");
        let refresh = serde_json::json!({"refresh_token": user.refresh_token});
        let (status, body) =
            atelier_testkit::rest::post(self, user, "/api/auth/refresh", refresh).await;
        assert!(status.is_success(), "refresh: {body}");
        assert_eq!(body["user"]["role"], "admin", "{body}");
        let token = |name: &str| body[name].as_str().expect("a token").to_owned();
        User {
            token: token("access_token"),
            refresh_token: token("refresh_token"),
            ..user.clone()
        }
    }

    /// A gRPC channel to the image service, as the gateway.
    pub fn image_channel(&self) -> tonic_channel::Channel {
        self.channel_as(ServiceName::Gateway, &self.image_url)
    }

    /// A gRPC channel to the auth service, as the gateway.
    pub fn auth_channel(&self) -> tonic_channel::Channel {
        self.channel_as(ServiceName::Gateway, &self.auth_url)
    }

    /// A hold on the platform's data directory: it outlives the platform until the
    /// last hold is dropped (a benchmark's runs delete their files after the last one).
    pub fn hold_data_dir(&self) -> Arc<tempfile::TempDir> {
        self._dir.clone()
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

impl atelier_testkit::rest::Gateway for TestPlatform {
    fn gateway_url(&self) -> &str {
        &self.gateway_url
    }
}
