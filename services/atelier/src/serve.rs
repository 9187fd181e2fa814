//! Targets: which services one process runs.

use std::{collections::BTreeSet, net::SocketAddr};

use anyhow::Context;
use atelier_common::{
    admin::{self, Readiness},
    config::Platform,
    grpc::check_health,
    identity::{Identity, ServiceName},
};
use clap::ValueEnum;
use tokio::{net::TcpListener, task::JoinSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Target {
    /// Every service and the gateway
    All,
    /// REST, gRPC-web and the web app
    Gateway,
    Auth,
    Image,
    Processing,
    Workflow,
    User,
}

impl Target {
    const SERVICES: [Target; 6] = [
        Target::Auth,
        Target::Image,
        Target::Processing,
        Target::Workflow,
        Target::User,
        Target::Gateway,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Gateway => "gateway",
            Self::Auth => "auth",
            Self::Image => "image",
            Self::Processing => "processing",
            Self::Workflow => "workflow",
            Self::User => "user",
        }
    }

    /// The identity this target holds; `None` for `all`.
    fn identity(self) -> Option<ServiceName> {
        Some(match self {
            Self::All => return None,
            Self::Gateway => ServiceName::Gateway,
            Self::Auth => ServiceName::Auth,
            Self::Image => ServiceName::Image,
            Self::Processing => ServiceName::Processing,
            Self::Workflow => ServiceName::Workflow,
            Self::User => ServiceName::User,
        })
    }

    /// The gRPC service this target answers health checks for.
    fn health_name(self) -> &'static str {
        match self {
            Self::Auth => "atelier.auth.v1.AuthService",
            Self::Image => "atelier.image.v1.ImageService",
            Self::Workflow => "atelier.workflow.v1.WorkflowService",
            Self::Processing => "atelier.processing.v1.ProcessingService",
            // The other services report overall health until their RPCs land.
            _ => "",
        }
    }
}

fn expand(targets: &[Target]) -> BTreeSet<Target> {
    if targets.contains(&Target::All) {
        Target::SERVICES.into_iter().collect()
    } else {
        targets.iter().copied().collect()
    }
}

async fn bind(target: Target, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{}: cannot listen on {addr}", target.name()))
}

pub async fn migrate(targets: &[Target]) -> anyhow::Result<()> {
    let platform = Platform::from_env()?;
    for target in expand(targets) {
        match target {
            Target::Auth => atelier_auth::migrate(&platform).await?,
            Target::Image => atelier_image::migrate(&platform).await?,
            Target::Workflow => atelier_workflow::migrate(&platform).await?,
            Target::Processing => atelier_processing::migrate(&platform).await?,
            Target::User => atelier_user::migrate(&platform).await?,
            _ => {}
        }
    }
    Ok(())
}

/// `FAL_SIM_MAX_CONCURRENCY`: the simulated account's concurrency limit (how many
/// requests run at once; the rest wait in its queue, never refused).
fn sim_max_concurrency() -> anyhow::Result<usize> {
    let max = atelier_common::config::var(
        "FAL_SIM_MAX_CONCURRENCY",
        atelier_fal_sim::SimConfig::default().max_concurrency,
    )?;
    anyhow::ensure!(max > 0, "FAL_SIM_MAX_CONCURRENCY must be at least 1");
    Ok(max)
}

/// Runs the fal simulator alone until SIGTERM or Ctrl-C.
pub async fn fal_sim(
    addr: SocketAddr,
    tls: bool,
    cert_out: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let shutdown = atelier_common::shutdown::on_signal();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("fal-sim: cannot listen on {addr}"))?;
    let config = atelier_fal_sim::SimConfig {
        tls,
        webhook_user_id: sim_user_id()?,
        max_concurrency: sim_max_concurrency()?,
        ..Default::default()
    };
    let handle = atelier_fal_sim::start(config, listener, shutdown.clone()).await?;
    if let (Some(path), Some(pem)) = (cert_out, handle.tls_certificate_pem()) {
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("fal simulator listening at {}", handle.base_url());
    shutdown.cancelled().await;
    Ok(())
}

/// Starts the fal simulator in this process on `FAL_SIM_ADDR`, for a platform
/// without a `FAL_KEY`.
async fn embedded_fal_sim(shutdown: &tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    let addr: SocketAddr =
        atelier_common::config::var("FAL_SIM_ADDR", SocketAddr::from(([127, 0, 0, 1], 8790)))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("fal-sim: cannot listen on {addr} (FAL_SIM_ADDR)"))?;
    let config = atelier_fal_sim::SimConfig {
        webhook_user_id: sim_user_id()?,
        max_concurrency: sim_max_concurrency()?,
        ..Default::default()
    };
    let handle = atelier_fal_sim::start(config, listener, shutdown.clone()).await?;
    tracing::info!(
        url = handle.base_url(),
        "no FAL_KEY: jobs run on the built-in fal simulator"
    );
    Ok(())
}

/// The fal account the simulator signs webhooks for: the platform's `FAL_USER_ID`,
/// which the processing service pins webhooks to.
fn sim_user_id() -> anyhow::Result<String> {
    atelier_common::config::var("FAL_USER_ID", atelier_fal_sim::WEBHOOK_USER_ID.to_owned())
}

/// `https://` and a loopback address for `addr`, which may be a wildcard (`0.0.0.0`).
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

pub async fn serve(targets: &[Target]) -> anyhow::Result<()> {
    let platform = Platform::from_env()?;
    let targets = expand(targets);
    let shutdown = atelier_common::shutdown::on_signal();
    let mut tasks = JoinSet::new();
    let mut readiness = Readiness::new();
    if platform.tls.generate {
        // Administration tools (grpcurl, scripts) present the operator's certificate.
        Identity::load(&platform.tls, ServiceName::Operator)?;
    }
    let endpoints = platform.endpoints.clone();
    // The gateway's settings first: one that would serve plain HTTP where it must
    // not stops the start before anything listens.
    let gateway_config = if targets.contains(&Target::Gateway) {
        let config = atelier_gateway::GatewayConfig::from_env(platform.clone())?;
        config.check_listen(endpoints.gateway)?;
        Some(config)
    } else {
        None
    };
    let fal_key: Option<String> = atelier_common::config::var_opt("FAL_KEY")?;
    if targets.contains(&Target::Processing) && fal_key.is_none() {
        embedded_fal_sim(&shutdown).await?;
    }

    for &target in &targets {
        let endpoint = match target {
            Target::Auth => &endpoints.auth,
            Target::Image => &endpoints.image,
            Target::Processing => &endpoints.processing,
            Target::Workflow => &endpoints.workflow,
            Target::User => &endpoints.user,
            Target::Gateway | Target::All => continue,
        };
        let listener = bind(target, endpoint.listen).await?;
        let listen_addr = listener.local_addr().unwrap_or(endpoint.listen);
        let stop = shutdown.clone();
        let name = target.name();
        match target {
            Target::Auth => {
                let config = atelier_auth::AuthConfig::from_env(platform.clone())?;
                tasks.spawn(
                    async move { (name, atelier_auth::serve(config, listener, stop).await) },
                );
            }
            Target::Image => {
                let config = atelier_image::ImageConfig::from_env(platform.clone())?;
                tasks.spawn(
                    async move { (name, atelier_image::serve(config, listener, stop).await) },
                );
            }
            Target::Processing => {
                let config = atelier_processing::ProcessingConfig::from_env(platform.clone())?;
                tasks.spawn(async move {
                    (
                        name,
                        atelier_processing::serve(config, listener, stop).await,
                    )
                });
            }
            Target::Workflow => {
                let config = atelier_workflow::WorkflowConfig::from_env(platform.clone())?;
                tasks.spawn(async move {
                    (name, atelier_workflow::serve(config, listener, stop).await)
                });
            }
            Target::User => {
                let config = atelier_user::UserConfig::from_env(platform.clone())?;
                tasks.spawn(
                    async move { (name, atelier_user::serve(config, listener, stop).await) },
                );
            }
            Target::Gateway | Target::All => {}
        }
        // Readiness asks the listener itself, not the address others use: behind a
        // Kubernetes Service that address has no endpoint until this pod is ready.
        let identity = target.identity().context("a service target")?;
        let own = Identity::start(&platform.tls, identity, &shutdown)?
            .channel(&local_url(listen_addr), platform.grpc_timeout)?;
        let service = target.health_name();
        readiness = readiness.check(name, move || check_health(own.clone(), service));
    }

    if let Some(config) = gateway_config {
        readiness = atelier_gateway::readiness(&platform, readiness, &shutdown)?;
        let listener = bind(Target::Gateway, endpoints.gateway).await?;
        let bound = listener.local_addr().unwrap_or(endpoints.gateway);
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{bound}", config.scheme()));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            (
                "gateway",
                atelier_gateway::serve(config, listener, stop).await,
            )
        });
        println!("Atelier is running at {url}  (API docs: {url}/api/docs)");
    }

    let admin_listener = TcpListener::bind(platform.admin_addr)
        .await
        .with_context(|| {
            format!(
                "admin: cannot listen on {} (ADMIN_ADDR)",
                platform.admin_addr
            )
        })?;
    readiness.started();
    tasks.spawn({
        let stop = shutdown.clone();
        async move { ("admin", admin::serve(admin_listener, readiness, stop).await) }
    });

    // The first target to stop takes the others down with it.
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(err))) => {
                tracing::error!(target = name, error = format!("{err:#}"), "target failed");
                failure.get_or_insert(err.context(format!("{name} failed")));
            }
            Err(err) => {
                failure.get_or_insert(anyhow::anyhow!("a target panicked: {err}"));
            }
        }
        shutdown.cancel();
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_service_and_the_gateway() {
        assert_eq!(expand(&[Target::All]).len(), 6);
        assert_eq!(
            expand(&[Target::Auth, Target::Gateway]),
            BTreeSet::from([Target::Auth, Target::Gateway])
        );
    }

    #[test]
    fn readiness_reaches_a_wildcard_listener_on_loopback() {
        let url = |addr: &str| local_url(addr.parse().expect("address"));
        assert_eq!(url("0.0.0.0:50051"), "https://127.0.0.1:50051");
        assert_eq!(url("[::]:50051"), "https://[::1]:50051");
        assert_eq!(url("10.0.0.7:50052"), "https://10.0.0.7:50052");
    }
}
