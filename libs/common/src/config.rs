//! Configuration read from environment variables, each with a documented default
//! (the table in the README). Values are parsed and checked at start-up so a typo
//! fails fast with the variable's name, never later at first use.

use std::{fmt::Display, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context, bail};

pub use crate::identity::TlsSettings;

/// Reads `name`, or `default` when it is unset or empty.
pub fn var<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    Ok(var_opt(name)?.unwrap_or(default))
}

/// Reads `name` if it is set and not empty.
pub fn var_opt<T>(name: &str) -> anyhow::Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|err| anyhow::anyhow!("{name}={raw:?} is not valid: {err}")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(err) => bail!("{name} is not valid: {err}"),
    }
}

/// Reads a duration given in whole seconds.
pub fn seconds(name: &str, default: u64) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs(var(name, default)?))
}

/// Reads a comma-separated list; unset means empty.
pub fn list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where the platform keeps its data and how its processes find each other.
/// Shared by every target; each service adds its own settings on top.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Root for SQLite files, local objects and generated keys (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: PostgreSQL in production; unset means one SQLite file per
    /// service under `data_dir`.
    pub database_url: Option<Secret>,
    /// `REDIS_URL`: Redis for the queue, events and caches; unset means the
    /// in-process equivalents.
    pub redis_url: Option<Secret>,
    /// `REDIS_KEY_PREFIX`: every Redis key starts with it.
    pub redis_prefix: String,
    pub endpoints: Endpoints,
    /// Deadline for one call between services (`GRPC_TIMEOUT_SECS`).
    pub grpc_timeout: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`ADMIN_ADDR`).
    pub admin_addr: SocketAddr,
    /// The services' certificates (`SERVICE_TLS_*`).
    pub tls: TlsSettings,
}

/// The gRPC listen address and client URL of every service.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub auth: Endpoint,
    pub image: Endpoint,
    pub processing: Endpoint,
    pub workflow: Endpoint,
    pub user: Endpoint,
    /// The gateway's HTTP listen address (`GATEWAY_ADDR`).
    pub gateway: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Where this service listens (`<NAME>_GRPC_ADDR`).
    pub listen: SocketAddr,
    /// How other services reach it (`<NAME>_URL`).
    pub url: String,
}

impl Endpoint {
    fn from_env(name: &str, port: u16) -> anyhow::Result<Self> {
        let listen: SocketAddr = var(
            &format!("{name}_GRPC_ADDR"),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )?;
        let url = var(&format!("{name}_URL"), format!("https://{listen}"))?;
        Ok(Self { listen, url })
    }

    /// An endpoint on an address already bound (tests bind port 0 first).
    pub fn bound(listen: SocketAddr) -> Self {
        Self {
            listen,
            url: format!("https://{listen}"),
        }
    }
}

impl Endpoints {
    /// The host names and addresses services are reached at, for generated
    /// certificates.
    fn hosts(&self) -> Vec<String> {
        [
            &self.auth,
            &self.image,
            &self.processing,
            &self.workflow,
            &self.user,
        ]
        .into_iter()
        .flat_map(|endpoint| {
            let host = endpoint.url.parse::<http::Uri>().ok().and_then(|uri| {
                uri.host()
                    .map(|host| host.trim_matches(['[', ']']).to_owned())
            });
            let listen = endpoint.listen.ip();
            [host, (!listen.is_unspecified()).then(|| listen.to_string())]
        })
        .flatten()
        .collect()
    }
}

impl Platform {
    pub fn from_env() -> anyhow::Result<Self> {
        let endpoints = Endpoints {
            auth: Endpoint::from_env("AUTH", 50051)?,
            image: Endpoint::from_env("IMAGE", 50052)?,
            processing: Endpoint::from_env("PROCESSING", 50053)?,
            workflow: Endpoint::from_env("WORKFLOW", 50054)?,
            user: Endpoint::from_env("USER", 50055)?,
            gateway: var("GATEWAY_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
        };
        let database_url: Option<String> = var_opt("DATABASE_URL")?;
        if let Some(url) = &database_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            bail!(
                "DATABASE_URL must be a postgres:// URL; leave it unset for the embedded SQLite files"
            );
        }
        let data_dir: PathBuf = var("DATA_DIR", PathBuf::from("./data"))?;
        let tls = TlsSettings {
            dir: var("SERVICE_TLS_DIR", data_dir.join("tls"))?,
            generate: var("SERVICE_TLS_GENERATE", true)?,
            reload_every: seconds("SERVICE_TLS_RELOAD_SECS", 30)?,
            hosts: endpoints.hosts(),
        };
        Ok(Self {
            data_dir,
            database_url: database_url.map(Secret::new),
            redis_url: var_opt::<String>("REDIS_URL")?.map(Secret::new),
            redis_prefix: var("REDIS_KEY_PREFIX", "atelier:".to_owned())?,
            endpoints,
            grpc_timeout: seconds("GRPC_TIMEOUT_SECS", 10)?,
            admin_addr: var("ADMIN_ADDR", SocketAddr::from(([127, 0, 0, 1], 9464)))
                .context("ADMIN_ADDR")?,
            tls,
        })
    }
}
