//! The workflow service: the catalogue of processing workflows, each a fal
//! endpoint with a JSON Schema for its parameters, and the validation every job's
//! parameters pass before it is created.

pub mod api;
pub mod domain;
pub mod error;
pub mod migration;
pub mod peers;
pub mod refresh;
pub mod store;

pub use domain::{catalogue, estimate, schema};

use std::{sync::Arc, time::Duration};

use atelier_common::{
    config::{self, Platform},
    grpc::GrpcServer,
    identity::{Identity, ServiceName},
    token::JwtVerifier,
};
use atelier_proto::workflow::v1::workflow_service_server::WorkflowServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use domain::Catalogue;

/// The workflow service's settings.
#[derive(Clone, Debug)]
pub struct WorkflowConfig {
    pub platform: Platform,
    /// `WORKFLOW_CACHE_TTL_SECS`: how long a listing is served from memory.
    pub cache_ttl: Duration,
    /// Where prices (and, with `FAL_KEY`, parameter schemas) are read from: fal's
    /// platform API, or the simulator's. `None`: workflows have no price.
    pub refresh: Option<refresh::RefreshConfig>,
    /// What a result must fit: `FAL_MAX_RESULT_BYTES` (the processing
    /// service's largest fal result) and `MAX_IMAGE_PIXELS` (the image
    /// service's largest image), read here under the same names so one
    /// setting governs both the estimate and the service that enforces it.
    pub limits: estimate::Limits,
}

impl WorkflowConfig {
    pub fn from_env(platform: Platform) -> anyhow::Result<Self> {
        let every = config::seconds("WORKFLOW_REFRESH_SECS", 3600)?;
        let (fal, schemas) = match atelier_fal::FalConfig::from_env()? {
            Some(fal) => (fal, true),
            // No key: the simulator `atelier serve` runs in-process prices the
            // catalogue.
            None => {
                let sim: std::net::SocketAddr = config::var(
                    "FAL_SIM_ADDR",
                    std::net::SocketAddr::from(([127, 0, 0, 1], 8790)),
                )?;
                let mut fal = atelier_fal::FalConfig::new("local");
                fal.queue_url = format!("http://{sim}");
                fal.api_url = format!("http://{sim}/v1");
                (fal, false)
            }
        };
        let limits = estimate::Limits {
            max_bytes: config::var("FAL_MAX_RESULT_BYTES", fal.max_result_bytes)?,
            max_pixels: config::var("MAX_IMAGE_PIXELS", api::default_limits().max_pixels)?,
        };
        Ok(Self {
            platform,
            cache_ttl: config::seconds("WORKFLOW_CACHE_TTL_SECS", 60)?,
            limits,
            refresh: Some(refresh::RefreshConfig {
                fal,
                every,
                schemas,
            }),
        })
    }
}

/// Applies the workflow schema's migrations.
pub async fn migrate(platform: &Platform) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(platform, "workflow").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "workflow").await
}

/// Runs the workflow service on `listener` until `shutdown`.
pub async fn serve(
    config: WorkflowConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(&config.platform, "workflow").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "workflow").await?;
    let shared = match &config.platform.redis_url {
        Some(url) => Some(
            atelier_common::redis::Redis::connect(
                url.expose(),
                config.platform.redis_prefix.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let catalogue = Catalogue::with_shared_cache(store::Store::new(db), config.cache_ttl, shared);
    catalogue
        .seed(&catalogue::builtin()?, time::OffsetDateTime::now_utc())
        .await
        .map_err(|err| anyhow::anyhow!("seeding the catalogue: {err}"))?;
    let models: Arc<dyn domain::manage::ModelApi> = match &config.refresh {
        Some(refresh) => Arc::new(peers::FalModels(atelier_fal::FalClient::new(
            refresh.fal.clone(),
        )?)),
        None => Arc::new(peers::NoModels),
    };
    if let Some(refresh) = config.refresh {
        refresh::spawn(catalogue.clone(), refresh, shutdown.clone())?;
    }
    let identity = Identity::start(&config.platform.tls, ServiceName::Workflow, &shutdown)?;
    let auth = identity.channel(
        &config.platform.endpoints.auth.url,
        config.platform.grpc_timeout,
    )?;
    let audit = Arc::new(peers::GrpcAudit::new(auth.clone()));
    let verifier = JwtVerifier::for_platform(&config.platform, auth).await?;
    let management = Arc::new(domain::manage::Management::new(
        catalogue.clone(),
        audit,
        models,
    ));
    GrpcServer::new(&identity)
        .add_service(WorkflowServiceServer::new(
            api::WorkflowApi::with_limits(catalogue, config.limits).with_management(management),
        ))
        .authenticate(verifier)
        .serve(listener, shutdown)
        .await
}
