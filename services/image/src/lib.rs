//! The image service: owns every stored image, originals and results alike.
//! Uploads stream in (gRPC client streaming; the gateway turns REST multipart
//! into it), are checked by content, get a thumbnail, and are served through
//! signed URLs that expire. A sweeper deletes images past their retention.

pub mod api;
pub mod domain;
pub mod error;
pub mod migration;
pub mod peers;
pub mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use atelier_common::{
    Clock, SystemClock,
    config::{self, Platform},
    grpc::GrpcServer,
    identity::{Identity, ServiceName},
    token::JwtVerifier,
};
use atelier_proto::image::v1::image_service_server::ImageServiceServer;
use atelier_storage::ObjectStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use domain::signing::UrlSigner;
pub use domain::{Images, Settings, ShareSettings};

/// The image service's settings.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub platform: Platform,
    pub settings: Settings,
    /// `URL_SIGNING_KEY`: the key of gateway-served signed URLs; generated under
    /// `DATA_DIR` when unset.
    pub url_signing_key: Option<config::Secret>,
    /// How often the retention sweeper runs (`RETENTION_SWEEP_SECS`).
    pub sweep_every: Duration,
    /// The malware scanner every upload and result passes (`SCANNER`).
    pub scanner: ScannerConfig,
    /// How long share links live (`SHARE_DEFAULT_DAYS`, `SHARE_MAX_DAYS`).
    pub shares: ShareSettings,
}

/// Which malware scanner uploads and results pass.
#[derive(Clone, Debug, Default)]
pub enum ScannerConfig {
    /// `SCANNER=none` (the default): nothing is scanned; images are recorded as
    /// not scanned.
    #[default]
    None,
    /// `SCANNER=clamd`: ClamAV's daemon at `CLAMD_ADDRESS` (`host:port` or
    /// `unix:/path`); `SCAN_UNAVAILABLE=refuse` refuses uploads at once while it
    /// is away, `wait` waits up to `SCAN_WAIT_SECONDS` for it first;
    /// `CLAMD_TIMEOUT_SECONDS` bounds each write and the wait for a verdict.
    Clamd(atelier_scan::ClamdConfig),
}

impl ScannerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let scanner: String = config::var("SCANNER", "none".to_owned())?;
        match scanner.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Self::None),
            "clamd" => {
                let address: String = config::var("CLAMD_ADDRESS", "127.0.0.1:3310".to_owned())?;
                let address = address
                    .parse()
                    .map_err(|err| anyhow::anyhow!("CLAMD_ADDRESS: {err}"))?;
                let mut clamd = atelier_scan::ClamdConfig::new(address);
                clamd.io_timeout = config::seconds("CLAMD_TIMEOUT_SECONDS", 60)?;
                let unavailable: String = config::var("SCAN_UNAVAILABLE", "refuse".to_owned())?;
                clamd.unavailable = match unavailable.trim().to_ascii_lowercase().as_str() {
                    "refuse" => atelier_scan::Unavailable::Refuse,
                    "wait" => {
                        atelier_scan::Unavailable::Wait(config::seconds("SCAN_WAIT_SECONDS", 30)?)
                    }
                    other => {
                        anyhow::bail!("SCAN_UNAVAILABLE must be `refuse` or `wait`, not `{other}`")
                    }
                };
                Ok(Self::Clamd(clamd))
            }
            other => anyhow::bail!("SCANNER must be `none` or `clamd`, not `{other}`"),
        }
    }

    /// The scanner this configuration names.
    pub fn scanner(&self) -> Arc<dyn atelier_scan::Scanner> {
        match self {
            Self::None => Arc::new(atelier_scan::NoScanner),
            Self::Clamd(clamd) => Arc::new(atelier_scan::Clamd::new(clamd.clone())),
        }
    }
}

impl ImageConfig {
    pub fn from_env(platform: Platform) -> anyhow::Result<Self> {
        let public_base = match config::var_opt::<String>("PUBLIC_URL")? {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", platform.endpoints.gateway),
        };
        let max_file_mb: u64 = config::var("MAX_FILE_SIZE_MB", 50)?;
        let retention_days: u64 = config::var("RETENTION_DAYS", 30)?;
        let settings = Settings {
            max_file_bytes: max_file_mb * 1024 * 1024,
            max_result_bytes: config::var("FAL_MAX_RESULT_BYTES", 512 * 1024 * 1024)?,
            max_pixels: config::var("MAX_IMAGE_PIXELS", 100_000_000)?,
            max_decode_bytes: config::var("MAX_DECODE_BYTES", 512 * 1024 * 1024)?,
            max_parallel_decodes: config::var(
                "MAX_PARALLEL_DECODES",
                std::thread::available_parallelism().map_or(2, usize::from),
            )?,
            strip_location: config::var("STRIP_LOCATION_METADATA", true)?,
            retention: Duration::from_secs(retention_days * 24 * 60 * 60),
            url_ttl: config::seconds("SIGNED_URL_TTL", 15 * 60)?,
            public_base,
            tmp_dir: config::var("UPLOAD_TMP_DIR", std::env::temp_dir())?,
        };
        let url_signing_key =
            config::var_opt::<String>("URL_SIGNING_KEY")?.map(config::Secret::new);
        if let Some(key) = &url_signing_key {
            check_signing_key(key.expose().as_bytes(), "URL_SIGNING_KEY")?;
        }
        Ok(Self {
            platform,
            settings,
            url_signing_key,
            sweep_every: config::seconds("RETENTION_SWEEP_SECS", 3600)?,
            scanner: ScannerConfig::from_env()?,
            shares: share_settings()?,
        })
    }
}

/// `SHARE_DEFAULT_DAYS` (7) and `SHARE_MAX_DAYS` (90): a link's lifetime when its
/// creator names none, and the longest allowed.
fn share_settings() -> anyhow::Result<ShareSettings> {
    let default_days: u64 = config::var("SHARE_DEFAULT_DAYS", 7)?;
    let max_days: u64 = config::var("SHARE_MAX_DAYS", 90)?;
    if max_days == 0 || max_days > 3650 {
        anyhow::bail!("SHARE_MAX_DAYS must be between 1 and 3650, not {max_days}");
    }
    if default_days == 0 || default_days > max_days {
        anyhow::bail!(
            "SHARE_DEFAULT_DAYS must be between 1 and SHARE_MAX_DAYS ({max_days}), not {default_days}"
        );
    }
    let day = 24 * 60 * 60;
    Ok(ShareSettings {
        default_ttl: Duration::from_secs(default_days * day),
        max_ttl: Duration::from_secs(max_days * day),
    })
}

/// The shortest URL-signing key accepted: HMAC-SHA256 is only as strong as its key.
pub const MIN_SIGNING_KEY_BYTES: usize = 32;

/// Refuses a URL-signing key shorter than [`MIN_SIGNING_KEY_BYTES`], naming where it
/// came from.
fn check_signing_key(key: &[u8], source: &str) -> anyhow::Result<()> {
    if key.len() < MIN_SIGNING_KEY_BYTES {
        anyhow::bail!(
            "{source} must be at least {MIN_SIGNING_KEY_BYTES} bytes long (it is {}); generate one with `openssl rand -base64 48`",
            key.len()
        );
    }
    Ok(())
}

/// Applies the image schema's migrations.
pub async fn migrate(platform: &Platform) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(platform, "image").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "image").await
}

/// The object store the configuration names: S3 when `S3_BUCKET` is set,
/// otherwise a directory under `DATA_DIR`, its objects encrypted with the key in
/// `STORAGE_ENCRYPTION_KEY_FILE` when that is set.
pub async fn object_store(platform: &Platform) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let key_file: Option<PathBuf> = config::var_opt("STORAGE_ENCRYPTION_KEY_FILE")?;
    match atelier_storage::S3Config::from_env().map_err(|err| anyhow::anyhow!("{err}"))? {
        Some(s3) => {
            if key_file.is_some() {
                tracing::warn!(
                    "STORAGE_ENCRYPTION_KEY_FILE is for the local store; S3 objects are encrypted by S3 (S3_SSE)"
                );
            }
            let bucket = s3.bucket.clone();
            let store = atelier_storage::S3Store::new(s3)
                .await
                .map_err(|err| anyhow::anyhow!("connecting to S3: {err}"))?;
            tracing::info!(bucket, "objects stored in S3");
            Ok(Arc::new(store))
        }
        None => {
            let root = platform.data_dir.join("objects");
            let mut store = atelier_storage::LocalStore::new(root.clone())
                .map_err(|err| anyhow::anyhow!("opening {}: {err}", root.display()))?;
            if let Some(path) = key_file {
                let key = atelier_storage::EncryptionKey::from_file(&path)
                    .map_err(|err| anyhow::anyhow!("{err}"))?;
                store = store.encrypted(key);
            }
            Ok(Arc::new(store))
        }
    }
}

/// The URL-signing key: `URL_SIGNING_KEY`, or one generated once under `DATA_DIR`
/// (0600, in a 0700 directory).
fn signing_key(config: &ImageConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &config.url_signing_key {
        let key = key.expose().as_bytes().to_vec();
        check_signing_key(&key, "URL_SIGNING_KEY")?;
        return Ok(key);
    }
    let path: PathBuf = config.platform.data_dir.join("url-signing.key");
    let read = |path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        let key = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        check_signing_key(&key, &path.display().to_string())?;
        atelier_common::files::narrow_private(path)?;
        Ok(key)
    };
    if path.exists() {
        return read(&path);
    }
    atelier_common::files::private_dir(&config.platform.data_dir)?;
    let mut key = [0u8; MIN_SIGNING_KEY_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    if atelier_common::files::create_private(&path, &key)? {
        Ok(key.to_vec())
    } else {
        // Another replica sharing the directory wrote it first.
        read(&path)
    }
}

/// Runs the image service on `listener` until `shutdown`.
pub async fn serve(
    config: ImageConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let objects = object_store(&config.platform).await?;
    serve_with_store(config, objects, listener, shutdown).await
}

/// Runs the image service over the given object store.
pub async fn serve_with_store(
    config: ImageConfig,
    objects: Arc<dyn ObjectStore>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(&config.platform, "image").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "image").await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let scanner = config.scanner.scanner();
    match &config.scanner {
        ScannerConfig::None => tracing::info!("malware scanning off (SCANNER=none)"),
        ScannerConfig::Clamd(clamd) => {
            tracing::info!(address = %clamd.address, unavailable = ?clamd.unavailable, "uploads scanned by clamd");
        }
    }
    let images = Images::new(
        store::Store::new(db),
        objects,
        UrlSigner::new(signing_key(&config)?),
        clock,
        scanner,
        config.settings.clone(),
    );
    spawn_sweeper(images.clone(), config.sweep_every, shutdown.clone());
    let identity = Identity::start(&config.platform.tls, ServiceName::Image, &shutdown)?;
    let (endpoints, timeout) = (&config.platform.endpoints, config.platform.grpc_timeout);
    let auth = identity.channel(&endpoints.auth.url, timeout)?;
    let peers = peers::GrpcPeers::new(
        identity.channel(&endpoints.user.url, timeout)?,
        identity.channel(&endpoints.processing.url, timeout)?,
        auth.clone(),
    );
    let intake = domain::Intake::new(images.clone(), peers.clone(), peers.clone());
    let shares = domain::Shares::new(images.clone(), config.shares.clone());
    type Server = ImageServiceServer<api::ImageApi>;
    GrpcServer::new(&identity)
        .add_service(
            Server::new(api::ImageApi::new(images, intake, shares, peers))
                .max_decoding_message_size(8 * 1024 * 1024),
        )
        .authenticate(JwtVerifier::for_platform(&config.platform, auth).await?)
        .serve(listener, shutdown)
        .await
}

/// Runs the retention sweeper every `every` until `shutdown`.
pub fn spawn_sweeper(images: Arc<Images>, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = images.sweep().await {
                        tracing::warn!(error = %err, "retention sweep failed");
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
    });
}
