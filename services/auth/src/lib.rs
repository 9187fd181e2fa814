//! The auth service: accounts (argon2id), sessions (EdDSA access tokens and
//! rotating refresh tokens) and the public keys every service verifies tokens with.

pub mod api;
pub mod audit_api;
pub mod domain;
pub mod error;
pub mod migration;
pub mod store;

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use atelier_common::{
    SystemClock,
    config::{self, Platform},
    grpc::GrpcServer,
    identity::{Identity, ServiceName},
    token::{
        ApiKeyRecord, JwtVerifier, SessionEvents, SessionSource, SessionState, StaticKeySource,
    },
};
use atelier_proto::{
    audit::v1::audit_service_server::AuditServiceServer,
    auth::v1::auth_service_server::AuthServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use domain::keys::KeyRing;
pub use domain::{Auth, Lifetimes, backoff::Backoff};

/// The auth service's settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub platform: Platform,
    /// `JWT_KEYS_DIR`: PKCS#8 PEM Ed25519 keys; default `$DATA_DIR/keys`.
    pub keys_dir: PathBuf,
    pub lifetimes: Lifetimes,
    /// How failed sign-ins slow the next ones down.
    pub backoff: Backoff,
    /// `AUDIT_RETENTION_DAYS`: how long audit entries are kept; `None` (0) keeps
    /// them forever.
    pub audit_retention: Option<std::time::Duration>,
}

impl AuthConfig {
    pub fn from_env(platform: Platform) -> anyhow::Result<Self> {
        let keys_dir = config::var("JWT_KEYS_DIR", platform.data_dir.join("keys"))?;
        let lifetimes = Lifetimes {
            access: config::seconds("ACCESS_TOKEN_TTL_SECS", 15 * 60)?,
            refresh: config::seconds("REFRESH_TOKEN_TTL_SECS", 7 * 24 * 60 * 60)?,
            reuse_grace: config::seconds("REFRESH_REUSE_GRACE_SECS", 15)?,
        };
        let defaults = Backoff::default();
        let backoff = Backoff {
            free_failures: config::var("LOGIN_BACKOFF_AFTER", defaults.free_failures)?,
            base: defaults.base,
            max: config::seconds("LOGIN_BACKOFF_MAX_SECS", defaults.max.as_secs())?,
            reset_after: config::seconds(
                "LOGIN_BACKOFF_RESET_SECS",
                defaults.reset_after.as_secs(),
            )?,
        };
        let retention_days: u64 = config::var("AUDIT_RETENTION_DAYS", 365)?;
        Ok(Self {
            platform,
            keys_dir,
            lifetimes,
            backoff,
            audit_retention: (retention_days > 0)
                .then(|| std::time::Duration::from_secs(retention_days * 24 * 60 * 60)),
        })
    }
}

/// Applies the auth schema's migrations.
pub async fn migrate(platform: &Platform) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(platform, "auth").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "auth").await
}

/// Runs the auth service on `listener` until `shutdown`.
pub async fn serve(
    config: AuthConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = atelier_common::db::connect(&config.platform, "auth").await?;
    atelier_common::db::migrate::<migration::Migrator>(&db, "auth").await?;
    let keys = Arc::new(KeyRing::load_or_create(&config.keys_dir)?);
    let identity = Identity::start(&config.platform.tls, ServiceName::Auth, &shutdown)?;
    let events = SessionEvents::for_platform(&config.platform).await?;
    let auth = Auth::new(
        store::Store::new(db),
        keys,
        Arc::new(SystemClock),
        config.lifetimes,
        events.clone(),
    )?
    .with_backoff(config.backoff);
    let auth = Arc::new(auth);
    spawn_audit_purge(Arc::clone(&auth), config.audit_retention, shutdown.clone());
    serve_with(auth, events, &identity, listener, shutdown).await
}

/// Runs the auth service over `auth`, hearing its revoked sessions on `events`.
pub async fn serve_with(
    auth: Arc<Auth>,
    events: SessionEvents,
    identity: &Identity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let jwks = api::jwks(auth.keys());
    spawn_forgetting(Arc::clone(&auth), shutdown.clone());
    let verifier = JwtVerifier::new(StaticKeySource(jwks), OwnSessions(auth.clone()));
    verifier.listen(&events).await?;
    type Server = AuthServiceServer<api::AuthApi>;
    GrpcServer::new(identity)
        .add_service(Server::new(api::AuthApi::new(Arc::clone(&auth))))
        .add_service(AuditServiceServer::new(audit_api::AuditApi::new(auth)))
        .authenticate(verifier)
        .serve(listener, shutdown)
        .await
}

/// Forgets failed sign-ins that hold nothing back any more, every ten minutes.
fn spawn_forgetting(auth: Arc<Auth>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10 * 60));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = auth.forget_old_failures().await {
                        tracing::warn!(error = %err, "cannot forget old failed sign-ins");
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
    });
}

/// Purges audit entries older than `retention` once an hour (none when `None`).
fn spawn_audit_purge(
    auth: Arc<Auth>,
    retention: Option<std::time::Duration>,
    shutdown: CancellationToken,
) {
    if retention.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60 * 60));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = auth.purge_audit(retention).await {
                        tracing::warn!(error = %err, "cannot purge old audit entries");
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
    });
}

/// The auth service verifies its own callers' sessions and API keys from its own
/// tables.
struct OwnSessions(Arc<Auth>);

#[async_trait]
impl SessionSource for OwnSessions {
    async fn state(&self, user_id: uuid::Uuid) -> anyhow::Result<SessionState> {
        Ok(self.0.session_state(user_id).await?)
    }

    async fn api_key(&self, hash: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        match self.0.verify_api_key(hash).await {
            Ok(verified) => Ok(Some(ApiKeyRecord {
                key_id: verified.key.id,
                user_id: verified.key.user_id,
                email: verified.email,
                scopes: verified.key.scopes,
                expires_at: verified
                    .key
                    .expires_at
                    .map(time::OffsetDateTime::unix_timestamp),
                revoked: verified.key.revoked_at.is_some(),
                rate_limit_per_minute: verified.key.rate_limit_per_minute,
            })),
            Err(error::AuthError::ApiKeyNotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}
