//! The processing service: a job the user started is never lost, never charged
//! twice at fal, and its state reaches the browser as it changes. Jobs are rows
//! (the truth); the queue delivers their ids to workers; events are rows too,
//! published to every replica.

pub mod api;
pub mod domain;
pub mod error;
pub mod events;
pub mod migration;
pub mod peers;
pub mod store;

use std::{sync::Arc, time::Duration};

use atelier_common::{
    SystemClock,
    config::{self, Platform},
    grpc::GrpcServer,
    identity::{Identity, ServiceName},
    token::JwtVerifier,
};
use atelier_fal::{FalClient, FalConfig, webhook::WebhookVerifier};
use atelier_proto::{
    operations::v1::operations_service_server::OperationsServiceServer,
    pipeline::v1::pipeline_service_server::PipelineServiceServer,
    processing::v1::processing_service_server::ProcessingServiceServer,
    spend::v1::{
        analytics_service_server::AnalyticsServiceServer, spend_service_server::SpendServiceServer,
    },
    webhook::v1::webhook_service_server::WebhookServiceServer,
};
use atelier_queue::{MemoryQueue, Queue, QueueConfig, RedisQueue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use domain::Jobs;

/// The processing service's settings.
#[derive(Clone, Debug)]
pub struct ProcessingConfig {
    pub platform: Platform,
    pub fal: FalConfig,
    /// fal's webhook keys (`FAL_WEBHOOK_JWKS_URL`).
    pub webhook_jwks_url: String,
    /// `FAL_USER_ID`: the platform's own fal account; webhooks about another
    /// account's requests are refused. `None` accepts any account's.
    pub fal_user_id: Option<String>,
    /// `PUBLIC_URL`: fal posts outcomes to `<PUBLIC_URL>/api/fal/webhook`.
    pub public_url: Option<String>,
    /// `WORKER_CONCURRENCY`: jobs one process holds at once (default: the whole
    /// `FAL_MAX_CONCURRENCY`, so one replica can use the platform's whole bound; how
    /// many run is decided by the bound shared by every replica, not by this).
    pub concurrency: usize,
    /// `RECONCILE_SECS`: how often lost jobs are looked for.
    pub reconcile_every: Duration,
    /// `FAL_INLINE_INPUT_BYTES`: input images up to this size go to fal inside the
    /// request, as `data:` URIs; larger ones as signed URLs fal fetches.
    pub inline_input_bytes: u64,
    pub queue: QueueConfig,
    /// Outgoing webhooks (`WEBHOOK_*`).
    pub webhooks: domain::outbound::WebhookSettings,
    /// Budgets (`BUDGET_*`, `PLATFORM_MONTHLY_BUDGET`).
    pub budgets: domain::spend::BudgetSettings,
    /// `ANALYTICS_REFRESH_SECS`: how often the analytics gauges are read from
    /// the database (0: never).
    pub analytics_every: Duration,
}

/// The `BUDGET_*` settings and `PLATFORM_MONTHLY_BUDGET`.
pub fn budget_settings_from_env() -> anyhow::Result<domain::spend::BudgetSettings> {
    let defaults = domain::spend::BudgetSettings::default();
    let alert_percent: u32 = config::var("BUDGET_ALERT_PERCENT", defaults.alert_percent)?;
    if !(1..=100).contains(&alert_percent) {
        anyhow::bail!("BUDGET_ALERT_PERCENT must be between 1 and 100");
    }
    let platform_monthly: Option<f64> = config::var_opt("PLATFORM_MONTHLY_BUDGET")?;
    if let Some(budget) = platform_monthly
        && !(budget.is_finite() && budget >= 0.0)
    {
        anyhow::bail!("PLATFORM_MONTHLY_BUDGET must be a non-negative amount");
    }
    Ok(domain::spend::BudgetSettings {
        alert_percent,
        hard_stop: config::var("BUDGET_HARD_STOP", defaults.hard_stop)?,
        platform_monthly,
        currency: config::var("BUDGET_CURRENCY", defaults.currency)?,
    })
}

/// The `WEBHOOK_*` settings of outgoing webhooks.
pub fn webhook_settings_from_env() -> anyhow::Result<domain::outbound::WebhookSettings> {
    let mut settings = domain::outbound::WebhookSettings::default();
    if let Some(raw) = config::var_opt::<String>("WEBHOOK_RETRY_SCHEDULE")? {
        settings.schedule = domain::outbound::parse_schedule(&raw)
            .map_err(|err| anyhow::anyhow!("WEBHOOK_RETRY_SCHEDULE={raw:?} is not valid: {err}"))?;
    }
    settings.timeout = config::seconds("WEBHOOK_TIMEOUT_SECS", settings.timeout.as_secs())?
        .max(Duration::from_secs(1));
    let lease_default = settings
        .lease
        .max(settings.timeout + Duration::from_secs(15));
    settings.lease = config::seconds("WEBHOOK_LEASE_SECS", lease_default.as_secs())?;
    if settings.lease <= settings.timeout {
        anyhow::bail!("WEBHOOK_LEASE_SECS must be longer than WEBHOOK_TIMEOUT_SECS");
    }
    settings.poll_every = Duration::from_millis(
        config::var("WEBHOOK_POLL_MS", settings.poll_every.as_millis() as u64)?.max(10),
    );
    settings.concurrency = config::var("WEBHOOK_CONCURRENCY", settings.concurrency)?.max(1);
    settings.disable_after = config::seconds(
        "WEBHOOK_DISABLE_AFTER_SECS",
        settings.disable_after.as_secs(),
    )?;
    settings.disable_after_failed_deliveries = config::var(
        "WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES",
        settings.disable_after_failed_deliveries,
    )?;
    settings.targets.allow_private = config::var("WEBHOOK_ALLOW_PRIVATE_TARGETS", false)?;
    settings.targets.allowed = config::list("WEBHOOK_ALLOWED_CIDRS")
        .iter()
        .map(|net| {
            net.parse::<ipnet::IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| anyhow::anyhow!("WEBHOOK_ALLOWED_CIDRS: {net:?} is not a network"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(settings)
}

impl ProcessingConfig {
    pub fn from_env(platform: Platform) -> anyhow::Result<Self> {
        let (fal, jwks, fal_user_id) = match FalConfig::from_env()? {
            Some(fal) => (
                fal,
                config::var(
                    "FAL_WEBHOOK_JWKS_URL",
                    "https://rest.fal.ai/.well-known/jwks.json".to_owned(),
                )?,
                config::var_opt("FAL_USER_ID")?,
            ),
            // No key: the simulator `atelier serve` runs in-process.
            None => {
                let sim: std::net::SocketAddr = config::var(
                    "FAL_SIM_ADDR",
                    std::net::SocketAddr::from(([127, 0, 0, 1], 8790)),
                )?;
                let mut fal = FalConfig::new("local");
                fal.queue_url = format!("http://{sim}");
                fal.allowed_result_hosts = vec![format!("http://{sim}")];
                fal.max_result_bytes = config::var("FAL_MAX_RESULT_BYTES", fal.max_result_bytes)?;
                // The simulator signs for this id too, so the pin is exercised locally.
                let user_id = config::var(
                    "FAL_USER_ID",
                    atelier_fal::webhook::SIMULATOR_USER_ID.to_owned(),
                )?;
                (
                    fal,
                    format!("http://{sim}/.well-known/jwks.json"),
                    Some(user_id),
                )
            }
        };
        let mut queue = QueueConfig::default();
        // fal limits how many of the account's requests run at once (2 for new accounts,
        // up to 40 self-serve), never how many start per minute: the queue keeps at most
        // this many jobs at fal, over every replica. 40 is what a self-serve account may
        // run; set it to the account's own limit so waiting jobs wait here, where
        // priorities and each user's fair share apply, rather than in fal's queue. A 429
        // lowers it for a while anyway.
        let max_in_flight: u32 = config::var("FAL_MAX_CONCURRENCY", 40)?;
        if max_in_flight == 0 {
            anyhow::bail!("FAL_MAX_CONCURRENCY must be at least 1");
        }
        queue.max_in_flight = Some(max_in_flight);
        // Off unless set: an extra brake for accounts fal limits by rate too.
        queue.rate_limit = config::var_opt::<u32>("QUEUE_RATE_LIMIT_PER_MINUTE")?
            .filter(|jobs| *jobs > 0)
            .map(atelier_queue::RateLimit::per_minute);
        queue.max_attempts = config::var("QUEUE_MAX_ATTEMPTS", queue.max_attempts)?;
        // Workers extend their deliveries every 10 s, so a shorter timeout would
        // hand running jobs to a second worker.
        queue.visibility_timeout =
            config::seconds("QUEUE_VISIBILITY_SECS", queue.visibility_timeout.as_secs())?
                .max(Duration::from_secs(30));
        Ok(Self {
            platform,
            fal,
            webhook_jwks_url: jwks,
            fal_user_id,
            public_url: config::var_opt("PUBLIC_URL")?,
            concurrency: config::var("WORKER_CONCURRENCY", max_in_flight as usize)?.max(1),
            reconcile_every: config::seconds("RECONCILE_SECS", 30)?,
            inline_input_bytes: config::var("FAL_INLINE_INPUT_BYTES", 256 * 1024)?,
            queue,
            webhooks: webhook_settings_from_env()?,
            budgets: budget_settings_from_env()?,
            analytics_every: config::seconds("ANALYTICS_REFRESH_SECS", 60)?,
        })
    }
}

/// Runs [`Jobs::backfill_search`] in the background until it has nothing left
/// to do, trying again a while later when the image service is not reachable
/// yet (it may start after this one).
fn spawn_search_backfill(jobs: Arc<Jobs>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            match jobs.backfill_search().await {
                Ok(0) => return,
                Ok(updated) => {
                    tracing::info!(updated, "history search backfilled with input file names");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_secs = wait.as_secs(), "history search backfill paused");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    });
}

/// Applies the processing schema's migrations.
pub async fn migrate(platform: &Platform) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(platform, "processing").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "processing").await
}

/// Runs the processing service (RPCs, workers and the reconciler) on `listener`
/// until `shutdown`.
pub async fn serve(
    config: ProcessingConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_clock(config, Arc::new(SystemClock), listener, shutdown).await
}

/// [`serve`] with the clock jobs and budget periods are read from (tests move it).
pub async fn serve_with_clock(
    config: ProcessingConfig,
    clock: Arc<dyn atelier_common::Clock>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(&config.platform, "processing").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "processing").await?;
    let identity = Identity::start(&config.platform.tls, ServiceName::Processing, &shutdown)?;
    let (endpoints, timeout) = (&config.platform.endpoints, config.platform.grpc_timeout);
    let grpc = peers::GrpcPeers::new(
        identity.streaming_channel(&endpoints.image.url)?,
        identity.channel(&endpoints.workflow.url, timeout)?,
        identity.channel(&endpoints.user.url, timeout)?,
    );
    let quotas = domain::Quotas::new(grpc.clone());
    let user_limit: atelier_queue::UserLimit = {
        let quotas = quotas.clone();
        Arc::new(move |user_id| quotas.parallel(user_id))
    };
    let (queue, bus): (Arc<dyn Queue>, events::Bus) = match &config.platform.redis_url {
        Some(url) => {
            let redis = atelier_common::redis::Redis::connect(
                url.expose(),
                config.platform.redis_prefix.clone(),
            )
            .await?;
            let queue = RedisQueue::new(redis.clone(), config.queue.clone(), user_limit).await?;
            (Arc::new(queue), events::Bus::redis(redis).await?)
        }
        None => (
            Arc::new(MemoryQueue::new(config.queue.clone(), user_limit)),
            events::Bus::local(),
        ),
    };
    let peers = domain::Peers {
        images: grpc.clone(),
        workflows: grpc.clone(),
    };
    let fal = FalClient::new(config.fal.clone())?;
    let webhook_store = store::webhooks::WebhookStore::new(db.clone());
    let pipeline_store = store::pipelines::PipelineStore::new(db.clone());
    let job_store = store::Store::new(db);
    let jobs = Jobs::new(
        job_store.clone(),
        queue.clone(),
        bus.clone(),
        clock.clone(),
        peers.clone(),
        quotas,
        fal.clone(),
    );
    jobs.spend().configure(config.budgets.clone());
    let storage: Arc<dyn peers::StorageSource> = grpc.clone();
    if !config.analytics_every.is_zero() {
        domain::spend::spawn_gauges(
            jobs.spend().clone(),
            Some(storage.clone()),
            config.analytics_every,
            shutdown.clone(),
        );
    }
    let worker = domain::Worker::new(
        jobs.clone(),
        queue.clone(),
        peers.images,
        fal,
        domain::WorkerConfig {
            webhook_url: config
                .public_url
                .as_ref()
                .map(|url| format!("{}/api/fal/webhook", url.trim_end_matches('/'))),
            concurrency: config.concurrency,
            inline_input_bytes: config.inline_input_bytes,
            consumer: format!("worker-{}", uuid::Uuid::new_v4().simple()),
        },
    );
    domain::reconciler::spawn_reconciler(
        jobs.clone(),
        queue,
        config.reconcile_every,
        shutdown.clone(),
    );
    spawn_search_backfill(jobs.clone(), shutdown.clone());
    let pipelines = domain::pipelines::Pipelines::new(
        pipeline_store,
        jobs.clone(),
        grpc.clone(),
        grpc,
        bus,
        clock.clone(),
    );
    domain::pipelines::runs::spawn_driver(
        pipelines.clone(),
        config.reconcile_every,
        shutdown.clone(),
    );
    let webhooks = domain::Webhooks::new(jobs.clone(), worker.results());
    let workers = tokio::spawn(worker.run(shutdown.clone()));
    // Outgoing webhooks: the user's side, and the worker that delivers.
    let webhook_settings = Arc::new(config.webhooks.clone());
    let wake = Arc::new(tokio::sync::Notify::new());
    let outbound = domain::outbound::Webhooks::new(
        webhook_store.clone(),
        Arc::new(SystemClock),
        webhook_settings.clone(),
        wake.clone(),
    );
    let deliverer = domain::outbound::Deliverer::new(
        webhook_store,
        job_store,
        Arc::new(SystemClock),
        webhook_settings,
        wake,
    );
    let deliveries = tokio::spawn(deliverer.run(shutdown.clone()));
    if config.public_url.is_some() && config.fal_user_id.is_none() {
        tracing::warn!(
            "FAL_USER_ID is not set: fal webhooks about any fal account's requests are accepted"
        );
    }
    let fal_webhooks = Arc::new(
        WebhookVerifier::new(config.webhook_jwks_url.clone(), reqwest::Client::new())
            .with_user_id(config.fal_user_id.clone()),
    );
    let auth = identity.channel(&endpoints.auth.url, timeout)?;
    let audit = Arc::new(peers::GrpcAudit::new(auth.clone()));
    let verifier = JwtVerifier::for_platform(&config.platform, auth).await?;
    let spend = jobs.spend().clone();
    type Server = ProcessingServiceServer<api::ProcessingApi>;
    let served = GrpcServer::new(&identity)
        .add_service(OperationsServiceServer::new(
            api::operations::OperationsApi::new(jobs.clone(), audit),
        ))
        .add_service(Server::new(
            api::ProcessingApi::new(jobs, webhooks, Some(fal_webhooks))
                .with_outbound(outbound.clone())
                .with_pipelines(pipelines.clone()),
        ))
        .add_service(PipelineServiceServer::new(
            api::pipelines::PipelineApi::new(pipelines),
        ))
        .add_service(WebhookServiceServer::new(api::webhooks::WebhookApi::new(
            outbound,
        )))
        .add_service(SpendServiceServer::new(api::spend::SpendApi::new(
            spend.clone(),
            Some(storage.clone()),
        )))
        .add_service(AnalyticsServiceServer::new(api::spend::SpendApi::new(
            spend,
            Some(storage),
        )))
        .authenticate(verifier)
        .serve(listener, shutdown)
        .await;
    let _ = workers.await;
    let _ = deliveries.await;
    served
}
