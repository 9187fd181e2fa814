//! The user service: profiles, settings, history, usage and quotas. It owns the
//! profiles (tier and settings); usage and history it reads from the services that
//! own jobs and images, and account deletion goes through them too.

pub mod api;
pub mod domain;
pub mod error;
pub mod migration;
pub mod peers;
pub mod store;

use std::sync::Arc;

use atelier_common::{
    Clock, SystemClock,
    config::Platform,
    grpc::GrpcServer,
    identity::{Identity, ServiceName},
    token::JwtVerifier,
};
use atelier_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use domain::{Limits, Tier, Tiers};

/// The user service's settings.
#[derive(Clone, Debug)]
pub struct UserConfig {
    pub platform: Platform,
    /// What each subscription tier allows (`TIER_<TIER>_<LIMIT>`).
    pub tiers: Tiers,
}

impl UserConfig {
    pub fn from_env(platform: Platform) -> anyhow::Result<Self> {
        Ok(Self {
            platform,
            tiers: Tiers::from_env()?,
        })
    }
}

/// Applies the user schema's migrations.
pub async fn migrate(platform: &Platform) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(platform, "user").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "user").await
}

/// Runs the user service on `listener` until `shutdown`.
pub async fn serve(
    config: UserConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_clock(config, Arc::new(SystemClock), listener, shutdown).await
}

/// [`serve`] with the time from `clock` (tests move it to see quotas reset).
pub async fn serve_with_clock(
    config: UserConfig,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(&config.platform, "user").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "user").await?;
    let endpoints = &config.platform.endpoints;
    let timeout = config.platform.grpc_timeout;
    let identity = Identity::start(&config.platform.tls, ServiceName::User, &shutdown)?;
    let auth = identity.channel(&endpoints.auth.url, timeout)?;
    let grpc = peers::GrpcPeers::new(
        auth.clone(),
        identity.channel(&endpoints.image.url, timeout)?,
        identity.channel(&endpoints.processing.url, timeout)?,
        identity.channel(&endpoints.workflow.url, timeout)?,
    );
    let verifier = JwtVerifier::for_platform(&config.platform, auth).await?;
    let users = domain::Users::new(
        store::Store::new(db),
        config.tiers,
        clock,
        domain::Peers {
            accounts: grpc.clone(),
            jobs: grpc.clone(),
            images: grpc.clone(),
            workflows: grpc.clone(),
            audit: grpc.clone(),
        },
    );
    let api = api::UserApi::new(users, grpc);
    type Server = UserServiceServer<api::UserApi>;
    GrpcServer::new(&identity)
        .add_service(Server::new(api))
        .authenticate(verifier)
        .serve(listener, shutdown)
        .await
}
