//! Access-token verification, done by every service itself from the auth service's
//! public keys (JWKS), cached and refreshed when an unknown `kid` shows up, so keys
//! can rotate without a restart. A token whose session was revoked (signed out
//! everywhere, account deleted) is refused too: see [`sessions`].
//!
//! API keys (`Bearer atl_live_...`) are accepted wherever an access token is:
//! auth is asked about the key's hash (cached briefly, dropped when a revocation
//! is announced), and the caller carries the key's scopes.

mod sessions;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use atelier_proto::auth::v1::{GetJwksRequest, Jwk, auth_service_client::AuthServiceClient};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use sessions::SessionCache;
pub use sessions::{
    ApiKeyRecord, GrpcSessionSource, SESSION_TTL, STALE_IF_UNREACHABLE, SessionEvents,
    SessionSource, SessionState,
};

/// Issuer and audience of every access token.
pub const ISSUER: &str = "atelier";
pub const AUDIENCE: &str = "atelier";

/// Keys are refetched at least this often, so a removed key stops working.
const KEYS_TTL: Duration = Duration::from_secs(300);
/// An unknown `kid` triggers a refetch at most this often, so forged tokens cannot
/// hammer the auth service.
const REFETCH_BACKOFF: Duration = Duration::from_secs(5);
/// A token whose signature was checked is taken at its word this long (never past
/// its expiry): a client polling with one token costs a map lookup, not an Ed25519
/// verification, per request. Its session is still checked every time.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Verified tokens remembered at most; expired ones are dropped first, then all.
const MAX_VERIFIED: usize = 10_000;

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub email: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The account's role: `user`, or `admin` for an administrator. Absent in
    /// tokens issued before roles existed, which are users'.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
}

/// The role that makes a user an administrator.
pub const ADMIN_ROLE: &str = "admin";

/// Every scope an API key may be granted (the contract's list: see
/// `atelier_proto::access::SCOPES`).
pub use atelier_proto::access::SCOPES;

/// What every API key starts with, so secret scanners can spot one.
pub const API_KEY_PREFIX: &str = "atl_live_";

/// The SHA-256 of an API key, lowercase hex: what auth stores and is asked about.
pub fn api_key_hash(key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// The verified caller of a request, put in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub email: String,
    /// The token carries the admin role (never an API key).
    pub admin: bool,
    /// Set when the caller presented an API key rather than an access token.
    pub api_key: Option<ApiKeyGrant>,
}

/// What an API key lets its bearer do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyGrant {
    pub key_id: Uuid,
    pub scopes: Vec<String>,
    /// Requests a minute allowed with this key; `None` for the platform's default.
    pub rate_limit_per_minute: Option<u32>,
}

impl Caller {
    /// The scopes the caller is limited to: `None` (every scope) for a session's
    /// access token, the key's for an API key.
    pub fn scopes(&self) -> Option<&[String]> {
        self.api_key.as_ref().map(|key| key.scopes.as_slice())
    }

    /// Whether the caller may act within `scope`: always with an access token,
    /// with an API key only if it was granted `scope` (never for an empty one).
    pub fn may(&self, scope: &str) -> bool {
        self.scopes()
            .is_none_or(|scopes| !scope.is_empty() && scopes.iter().any(|held| held == scope))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("signing keys are unavailable")]
    KeysUnavailable,
    #[error("token has been revoked")]
    Revoked,
    #[error("session state is unavailable")]
    SessionsUnavailable,
}

impl TokenError {
    /// The status a caller gets: the token's own faults are `UNAUTHENTICATED`, while keys
    /// or session state that cannot be fetched right now are `UNAVAILABLE`, so a client
    /// tries again rather than taking its session for ended.
    pub fn status(&self) -> tonic::Status {
        match self {
            Self::KeysUnavailable | Self::SessionsUnavailable => {
                tonic::Status::unavailable(self.to_string())
            }
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}

/// Where the public keys come from.
#[async_trait]
pub trait KeySource: Send + Sync {
    async fn fetch(&self) -> anyhow::Result<Vec<Jwk>>;
}

/// Keys fetched from the auth service over gRPC.
pub struct GrpcKeySource {
    client: AuthServiceClient<tonic::transport::Channel>,
}

impl GrpcKeySource {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

#[async_trait]
impl KeySource for GrpcKeySource {
    async fn fetch(&self) -> anyhow::Result<Vec<Jwk>> {
        let reply = self.client.clone().get_jwks(GetJwksRequest {}).await?;
        Ok(reply.into_inner().keys)
    }
}

/// A fixed set of keys (the auth service verifies with its own).
pub struct StaticKeySource(pub Vec<Jwk>);

#[async_trait]
impl KeySource for StaticKeySource {
    async fn fetch(&self) -> anyhow::Result<Vec<Jwk>> {
        Ok(self.0.clone())
    }
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// A token whose signature and claims were checked.
struct Verified {
    caller: Caller,
    issued_at: i64,
    expires_at: i64,
    until: Instant,
}

/// Verifies access tokens: EdDSA only, known `kid`, issuer, audience, expiry, and a
/// session that was not revoked.
pub struct JwtVerifier {
    source: Box<dyn KeySource>,
    cache: RwLock<KeyCache>,
    validation: Validation,
    /// Tokens already verified, by their text.
    verified: std::sync::RwLock<HashMap<String, Verified>>,
    sessions: Arc<SessionCache>,
    /// Stops the announcement listeners when the verifier goes.
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl JwtVerifier {
    /// A verifier with keys from `keys` and session state from `sessions`, cached
    /// for [`SESSION_TTL`]. It hears no announcements until [`JwtVerifier::listen`].
    pub fn new(
        keys: impl KeySource + 'static,
        sessions: impl SessionSource + 'static,
    ) -> Arc<Self> {
        Self::with_session_ttl(keys, sessions, SESSION_TTL)
    }

    /// [`JwtVerifier::new`] caching session state for `ttl`.
    pub fn with_session_ttl(
        keys: impl KeySource + 'static,
        sessions: impl SessionSource + 'static,
        ttl: Duration,
    ) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        let stop = CancellationToken::new();
        Arc::new(Self {
            source: Box::new(keys),
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            validation,
            verified: std::sync::RwLock::new(HashMap::new()),
            sessions: Arc::new(SessionCache::new(Box::new(sessions), ttl)),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        })
    }

    /// The verifier a service uses: keys and session state from the auth service
    /// behind `auth`, announcements from the platform's event bus.
    pub async fn for_platform(
        platform: &crate::config::Platform,
        auth: tonic::transport::Channel,
    ) -> anyhow::Result<Arc<Self>> {
        let verifier = Self::new(
            GrpcKeySource::new(auth.clone()),
            GrpcSessionSource::new(auth),
        );
        let events = SessionEvents::for_platform(platform).await?;
        verifier.listen(&events).await?;
        events.close().await;
        Ok(verifier)
    }

    /// Forgets a user's cached session state as soon as `events` announces a change
    /// to it, for as long as this verifier lives.
    pub async fn listen(self: &Arc<Self>, events: &SessionEvents) -> anyhow::Result<()> {
        events
            .listen(self.sessions.clone(), self.stop.child_token())
            .await
    }

    /// Verifies the value of an `authorization` header (`Bearer <token>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Caller, TokenError> {
        let token = header
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(TokenError::Missing)?;
        self.verify(token).await
    }

    /// Verifies an access token, or an API key (`atl_live_...`).
    pub async fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        if token.starts_with(API_KEY_PREFIX) {
            return self.verify_api_key(token).await;
        }
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .filter(|verified| {
                verified.until > Instant::now()
                    && verified.expires_at > time::OffsetDateTime::now_utc().unix_timestamp()
            })
            .map(|verified| (verified.caller.clone(), verified.issued_at));
        if let Some((caller, issued_at)) = remembered {
            self.sessions.check(caller.user_id, issued_at).await?;
            return Ok(caller);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let data =
            decode::<Claims>(token, &key, &self.validation).map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::Invalid)?;
        self.sessions.check(user_id, data.claims.iat).await?;
        let caller = Caller {
            user_id,
            email: data.claims.email,
            admin: data.claims.role == ADMIN_ROLE,
            api_key: None,
        };
        self.remember(token, &caller, data.claims.iat, data.claims.exp);
        Ok(caller)
    }

    /// An API key holds while auth knows it, unrevoked and unexpired; the answer
    /// is cached like session state and dropped when a revocation is announced.
    async fn verify_api_key(&self, key: &str) -> Result<Caller, TokenError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let record = self.sessions.check_key(&api_key_hash(key), now).await?;
        Ok(Caller {
            user_id: record.user_id,
            email: record.email,
            admin: false,
            api_key: Some(ApiKeyGrant {
                key_id: record.key_id,
                scopes: record.scopes,
                rate_limit_per_minute: record.rate_limit_per_minute,
            }),
        })
    }

    fn remember(&self, token: &str, caller: &Caller, issued_at: i64, expires_at: i64) {
        let now = Instant::now();
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, entry| entry.until > now);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(
            token.to_owned(),
            Verified {
                caller: caller.clone(),
                issued_at,
                expires_at,
                until: now + VERIFIED_TTL,
            },
        );
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < KEYS_TTL);
            if fresh && let Some(key) = cache.keys.get(kid) {
                return Ok(key.clone());
            }
            let recently = cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < REFETCH_BACKOFF);
            if recently {
                return cache.keys.get(kid).cloned().ok_or(TokenError::UnknownKey);
            }
        }
        let mut cache = self.cache.write().await;
        // Another task may have refreshed while this one waited for the lock.
        let recently = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < REFETCH_BACKOFF);
        if !recently {
            match self.source.fetch().await {
                Ok(jwks) => {
                    cache.keys = jwks
                        .iter()
                        .filter(|jwk| jwk.kty == "OKP" && jwk.crv == "Ed25519")
                        // An Ed25519 public key is 32 bytes: 43 base64url characters.
                        .filter(|jwk| jwk.x.len() == 43)
                        .filter_map(|jwk| {
                            DecodingKey::from_ed_components(&jwk.x)
                                .ok()
                                .map(|key| (jwk.kid.clone(), key))
                        })
                        .collect();
                    cache.fetched_at = Some(Instant::now());
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot fetch signing keys");
                    // Keep serving with the keys already known.
                    return cache
                        .keys
                        .get(kid)
                        .cloned()
                        .ok_or(TokenError::KeysUnavailable);
                }
            }
        }
        cache.keys.get(kid).cloned().ok_or(TokenError::UnknownKey)
    }
}
