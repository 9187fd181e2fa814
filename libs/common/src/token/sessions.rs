//! Revoked sessions. Auth keeps, per user, a "not before" instant (set when the user
//! signs out everywhere) and knows which accounts exist; every verifier refuses a
//! token issued before its user's instant, or of an account that is gone.
//!
//! The answer is cached per verifier for [`SESSION_TTL`], so the hot path costs a map
//! lookup. Auth announces every change on the event bus (Redis pub/sub when
//! `REDIS_URL` is set, an in-process broadcast otherwise) and verifiers drop the
//! user's entry at once; a verifier that missed the announcement is still right once
//! its entry expires.
//!
//! API keys are cached the same way, by their hash: revoking one is announced
//! as a change to its owner, which drops the owner's keys from every cache.

use std::{
    collections::HashMap,
    sync::{
        LazyLock, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use atelier_proto::auth::v1::{
    GetSessionStateRequest, VerifyApiKeyRequest, auth_service_client::AuthServiceClient,
};
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::TokenError;
use crate::{config::Platform, redis::Redis};

/// How long a verifier trusts what it was told about a user's sessions: the longest
/// a revoked token keeps working where the announcement did not arrive.
pub const SESSION_TTL: Duration = Duration::from_secs(30);
/// While auth cannot be reached, an expired entry is still used this long.
/// Entries dropped by an announcement are never used again.
pub const STALE_IF_UNREACHABLE: Duration = Duration::from_secs(300);
/// The Redis channel (under the platform's prefix) changes are announced on.
const CHANNEL: &str = "session-events";
/// Entries kept at most; expired ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

/// What auth says about a user's access tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Tokens issued (`iat`, unix seconds) before this are refused.
    pub not_before: Option<i64>,
    /// The account does not exist: every token is refused.
    pub deleted: bool,
}

impl SessionState {
    /// Whether a token issued at `issued_at` (unix seconds) still holds.
    pub fn admits(&self, issued_at: i64) -> bool {
        !self.deleted
            && self
                .not_before
                .is_none_or(|not_before| issued_at >= not_before)
    }
}

/// What auth says about an API key (see `atelier.auth.v1.VerifyApiKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub scopes: Vec<String>,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub rate_limit_per_minute: Option<u32>,
}

/// Where the state of a user's sessions, and of API keys, comes from.
#[async_trait]
pub trait SessionSource: Send + Sync {
    async fn state(&self, user_id: Uuid) -> anyhow::Result<SessionState>;

    /// The API key whose SHA-256 (lowercase hex) is `hash`; `None` when there is
    /// none. A source that knows no keys answers `None` for every one.
    async fn api_key(&self, hash: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        let _ = hash;
        Ok(None)
    }
}

/// Session state asked of the auth service over gRPC.
pub struct GrpcSessionSource {
    client: AuthServiceClient<tonic::transport::Channel>,
}

impl GrpcSessionSource {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

#[async_trait]
impl SessionSource for GrpcSessionSource {
    async fn state(&self, user_id: Uuid) -> anyhow::Result<SessionState> {
        let reply = self
            .client
            .clone()
            .get_session_state(GetSessionStateRequest {
                user_id: user_id.to_string(),
            })
            .await?
            .into_inner();
        Ok(SessionState {
            not_before: reply.not_before.map(|at| at.seconds),
            deleted: reply.deleted,
        })
    }

    async fn api_key(&self, hash: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        let reply = match self
            .client
            .clone()
            .verify_api_key(VerifyApiKeyRequest {
                hash: hash.to_owned(),
            })
            .await
        {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(status.into()),
        };
        Ok(Some(ApiKeyRecord {
            key_id: Uuid::parse_str(&reply.key_id)?,
            user_id: Uuid::parse_str(&reply.user_id)?,
            email: reply.email,
            scopes: reply.scopes,
            expires_at: reply.expires_at.map(|at| at.seconds),
            revoked: reply.revoked_at.is_some(),
            rate_limit_per_minute: reply.rate_limit_per_minute,
        }))
    }
}

/// Every verifier in this process hears the in-process announcements.
static LOCAL: LazyLock<broadcast::Sender<Uuid>> = LazyLock::new(|| broadcast::channel(1024).0);

/// Where changes to a user's sessions are announced: Redis pub/sub, reaching every
/// replica, or an in-process broadcast for a platform running in one process.
#[derive(Clone)]
pub struct SessionEvents {
    redis: Option<Redis>,
}

impl SessionEvents {
    /// Announcements within this process only.
    pub fn local() -> Self {
        Self { redis: None }
    }

    /// Announcements through Redis, to every process subscribed under its prefix.
    pub fn redis(redis: Redis) -> Self {
        Self { redis: Some(redis) }
    }

    /// Redis when the platform has `REDIS_URL`, in-process otherwise. Redis is not
    /// waited for: until it answers, verifiers rely on [`SESSION_TTL`].
    pub async fn for_platform(platform: &Platform) -> anyhow::Result<Self> {
        Ok(match &platform.redis_url {
            Some(url) => Self::redis(
                Redis::connect_in_background(
                    url.expose(),
                    platform.redis_prefix.clone(),
                    Duration::from_secs(5),
                )
                .await?,
            ),
            None => Self::local(),
        })
    }

    /// Tells every verifier to forget what it knows about `user_id`'s sessions.
    /// Call it once the change is stored.
    pub async fn publish(&self, user_id: Uuid) {
        match &self.redis {
            Some(redis) => {
                let published = redis
                    .client
                    .publish::<i64, _, _>(redis.key(CHANNEL), user_id.to_string())
                    .await;
                if let Err(err) = published {
                    tracing::warn!(error = %err, %user_id, ttl_secs = SESSION_TTL.as_secs(), "cannot announce a session change; verifiers see it when their cache expires");
                }
            }
            None => {
                let _ = LOCAL.send(user_id);
            }
        }
    }

    /// Drops `cache` entries as changes are announced, until `stop`.
    pub(super) async fn listen(
        &self,
        cache: std::sync::Arc<SessionCache>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        match &self.redis {
            None => {
                let mut announced = LOCAL.subscribe();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            received = announced.recv() => match received {
                                Ok(user_id) => cache.forget(user_id),
                                Err(RecvError::Lagged(_)) => cache.forget_all(),
                                Err(RecvError::Closed) => break,
                            },
                        }
                    }
                });
            }
            Some(redis) => {
                // Connects (and reconnects) in the background; every connection,
                // the first included, subscribes anew.
                let subscriber = redis.client.clone_new();
                let mut messages = subscriber.message_rx();
                let mut reconnects = subscriber.reconnect_rx();
                drop(subscriber.connect());
                let channel = redis.key(CHANNEL);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            received = messages.recv() => match received {
                                Ok(message) => {
                                    let user = message.value.as_str().and_then(|text| Uuid::parse_str(&text).ok());
                                    match user {
                                        Some(user_id) => cache.forget(user_id),
                                        None => tracing::debug!("ignoring a malformed session announcement"),
                                    }
                                }
                                Err(RecvError::Lagged(_)) => cache.forget_all(),
                                Err(RecvError::Closed) => break,
                            },
                            connected = reconnects.recv() => {
                                if matches!(connected, Err(RecvError::Closed)) {
                                    break;
                                }
                                // Announcements made while disconnected are lost.
                                cache.forget_all();
                                if let Err(err) = subscriber.subscribe(channel.clone()).await {
                                    tracing::warn!(error = %err, "cannot subscribe to session announcements");
                                }
                            }
                        }
                    }
                    let _ = subscriber.quit().await;
                });
            }
        }
        Ok(())
    }

    /// Closes the connection this was made with (the listeners keep their own).
    pub(super) async fn close(self) {
        if let Some(redis) = self.redis {
            let _ = redis.client.quit().await;
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    state: SessionState,
    fetched: Instant,
}

/// An API key as last fetched; `None` when auth knows no such key.
#[derive(Clone)]
struct KeyEntry {
    record: Option<ApiKeyRecord>,
    fetched: Instant,
}

/// What one verifier knows about users' sessions.
pub(super) struct SessionCache {
    source: Box<dyn SessionSource>,
    ttl: Duration,
    entries: RwLock<HashMap<Uuid, Entry>>,
    /// API keys by their hash.
    keys: RwLock<HashMap<String, KeyEntry>>,
    /// Bumped whenever an entry is dropped, so an answer fetched before the drop is
    /// not cached after it.
    generation: AtomicU64,
}

impl SessionCache {
    pub(super) fn new(source: Box<dyn SessionSource>, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            entries: RwLock::new(HashMap::new()),
            keys: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The API key whose SHA-256 is `hash`, if it holds now (`now`, unix seconds):
    /// known, not revoked, not expired, of an account that exists.
    pub(super) async fn check_key(&self, hash: &str, now: i64) -> Result<ApiKeyRecord, TokenError> {
        let record = self.key(hash).await?.ok_or(TokenError::Invalid)?;
        if record.revoked {
            return Err(TokenError::Revoked);
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(TokenError::Expired);
        }
        if self.state(record.user_id).await?.deleted {
            return Err(TokenError::Revoked);
        }
        Ok(record)
    }

    async fn key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, TokenError> {
        let cached = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned();
        if let Some(entry) = &cached
            && entry.fetched.elapsed() < self.ttl
        {
            return Ok(entry.record.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        match self.source.api_key(hash).await {
            Ok(record) => {
                let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                if self.generation.load(Ordering::SeqCst) == generation {
                    if keys.len() >= MAX_ENTRIES {
                        let ttl = self.ttl;
                        keys.retain(|_, entry| entry.fetched.elapsed() < ttl);
                        if keys.len() >= MAX_ENTRIES {
                            keys.clear();
                        }
                    }
                    keys.insert(
                        hash.to_owned(),
                        KeyEntry {
                            record: record.clone(),
                            fetched: Instant::now(),
                        },
                    );
                }
                Ok(record)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot verify an api key");
                match cached {
                    Some(entry) if entry.fetched.elapsed() < STALE_IF_UNREACHABLE => {
                        Ok(entry.record)
                    }
                    _ => Err(TokenError::SessionsUnavailable),
                }
            }
        }
    }

    /// Refuses a token of `user_id` issued at `issued_at` if its session was revoked.
    pub(super) async fn check(&self, user_id: Uuid, issued_at: i64) -> Result<(), TokenError> {
        if self.state(user_id).await?.admits(issued_at) {
            Ok(())
        } else {
            Err(TokenError::Revoked)
        }
    }

    async fn state(&self, user_id: Uuid) -> Result<SessionState, TokenError> {
        let cached = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user_id)
            .copied();
        if let Some(entry) = cached
            && entry.fetched.elapsed() < self.ttl
        {
            return Ok(entry.state);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        match self.source.state(user_id).await {
            Ok(state) => {
                let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
                if self.generation.load(Ordering::SeqCst) == generation {
                    if entries.len() >= MAX_ENTRIES {
                        let ttl = self.ttl;
                        entries.retain(|_, entry| entry.fetched.elapsed() < ttl);
                        if entries.len() >= MAX_ENTRIES {
                            entries.clear();
                        }
                    }
                    entries.insert(
                        user_id,
                        Entry {
                            state,
                            fetched: Instant::now(),
                        },
                    );
                }
                Ok(state)
            }
            Err(err) => {
                tracing::warn!(error = %err, %user_id, "cannot fetch session state");
                match cached {
                    Some(entry) if entry.fetched.elapsed() < STALE_IF_UNREACHABLE => {
                        Ok(entry.state)
                    }
                    _ => Err(TokenError::SessionsUnavailable),
                }
            }
        }
    }

    /// Drops what is known of `user_id`'s sessions and API keys.
    fn forget(&self, user_id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        entries.remove(&user_id);
        keys.retain(|_, entry| {
            entry
                .record
                .as_ref()
                .is_none_or(|record| record.user_id != user_id)
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn forget_all(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        entries.clear();
        keys.clear();
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A session source whose answer tests change, counting the questions.
    #[derive(Clone, Default)]
    struct Fake {
        state: Arc<Mutex<SessionState>>,
        asked: Arc<AtomicU64>,
    }

    impl Fake {
        fn set(&self, state: SessionState) {
            *self.state.lock().expect("state") = state;
        }
        fn asked(&self) -> u64 {
            self.asked.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl SessionSource for Fake {
        async fn state(&self, _user_id: Uuid) -> anyhow::Result<SessionState> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(*self.state.lock().expect("state"))
        }
    }

    const ISSUED: i64 = 1_700_000_000;

    fn revoked_after_issue() -> SessionState {
        SessionState {
            not_before: Some(ISSUED + 1),
            deleted: false,
        }
    }

    #[test]
    fn tokens_issued_before_not_before_or_of_deleted_accounts_are_refused() {
        let open = SessionState::default();
        assert!(open.admits(ISSUED));
        assert!(!revoked_after_issue().admits(ISSUED));
        assert!(revoked_after_issue().admits(ISSUED + 1));
        let deleted = SessionState {
            not_before: None,
            deleted: true,
        };
        assert!(!deleted.admits(ISSUED));
    }

    #[tokio::test]
    async fn answers_are_cached_until_the_ttl_even_when_a_change_is_missed() {
        let fake = Fake::default();
        let cache = SessionCache::new(Box::new(fake.clone()), Duration::from_millis(300));
        let user = Uuid::new_v4();
        assert_eq!(cache.check(user, ISSUED).await, Ok(()));
        assert_eq!(cache.check(user, ISSUED).await, Ok(()));
        assert_eq!(
            fake.asked(),
            1,
            "the second check is answered from the cache"
        );

        fake.set(revoked_after_issue());
        assert_eq!(
            cache.check(user, ISSUED).await,
            Ok(()),
            "without an announcement the cached answer holds until it expires"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(cache.check(user, ISSUED).await, Err(TokenError::Revoked));
        assert_eq!(cache.check(user, ISSUED + 1).await, Ok(()));
    }

    #[tokio::test]
    async fn an_announcement_drops_the_entry_at_once() {
        let fake = Fake::default();
        let cache = Arc::new(SessionCache::new(Box::new(fake.clone()), SESSION_TTL));
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        SessionEvents::local()
            .listen(cache.clone(), stop)
            .await
            .expect("listening");
        let user = Uuid::new_v4();
        assert_eq!(cache.check(user, ISSUED).await, Ok(()));

        fake.set(revoked_after_issue());
        SessionEvents::local().publish(user).await;
        let deadline = Instant::now() + Duration::from_secs(1);
        while cache.check(user, ISSUED).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "still admitted 1 s after the announcement"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(cache.check(user, ISSUED).await, Err(TokenError::Revoked));
    }

    /// A source whose answers wait until the test lets them go.
    struct Gated {
        fake: Fake,
        release: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl SessionSource for Gated {
        async fn state(&self, user_id: Uuid) -> anyhow::Result<SessionState> {
            let answer = self.fake.state(user_id).await;
            self.release.acquire().await?.forget();
            answer
        }
    }

    #[tokio::test]
    async fn an_answer_fetched_before_an_announcement_is_not_cached() {
        let fake = Fake::default();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let cache = Arc::new(SessionCache::new(
            Box::new(Gated {
                fake: fake.clone(),
                release: release.clone(),
            }),
            SESSION_TTL,
        ));
        let user = Uuid::new_v4();
        let racing = tokio::spawn({
            let cache = cache.clone();
            async move { cache.check(user, ISSUED).await }
        });
        while fake.asked() == 0 {
            tokio::task::yield_now().await;
        }
        // The session is revoked and announced while the old answer is on its way.
        fake.set(revoked_after_issue());
        cache.forget(user);
        release.add_permits(2);
        assert_eq!(racing.await.expect("check"), Ok(()));
        assert_eq!(
            cache.check(user, ISSUED).await,
            Err(TokenError::Revoked),
            "the answer from before the announcement was not kept"
        );
        assert_eq!(fake.asked(), 2);
    }

    /// A source knowing one API key, counting the questions about it.
    #[derive(Clone)]
    struct OneKey {
        record: Arc<Mutex<ApiKeyRecord>>,
        asked: Arc<AtomicU64>,
    }

    #[async_trait]
    impl SessionSource for OneKey {
        async fn state(&self, _user_id: Uuid) -> anyhow::Result<SessionState> {
            Ok(SessionState::default())
        }

        async fn api_key(&self, hash: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok((hash == "known").then(|| self.record.lock().expect("record").clone()))
        }
    }

    #[tokio::test]
    async fn api_keys_are_cached_dropped_with_their_owner_and_refused_when_revoked_or_expired() {
        let user_id = Uuid::new_v4();
        let source = OneKey {
            record: Arc::new(Mutex::new(ApiKeyRecord {
                key_id: Uuid::new_v4(),
                user_id,
                email: "a@example.com".into(),
                scopes: vec!["images:read".into()],
                expires_at: Some(ISSUED + 60),
                revoked: false,
                rate_limit_per_minute: None,
            })),
            asked: Arc::new(AtomicU64::new(0)),
        };
        let cache = SessionCache::new(Box::new(source.clone()), SESSION_TTL);
        let held = cache.check_key("known", ISSUED).await.expect("holds");
        assert_eq!(held.scopes, ["images:read"]);
        assert_eq!(
            cache.check_key("unknown", ISSUED).await,
            Err(TokenError::Invalid)
        );
        assert_eq!(
            cache.check_key("known", ISSUED + 60).await,
            Err(TokenError::Expired),
            "expiry is checked against the time of the request, cached or not"
        );
        assert_eq!(source.asked.load(Ordering::SeqCst), 2, "the key was cached");

        source.record.lock().expect("record").revoked = true;
        assert!(
            cache.check_key("known", ISSUED).await.is_ok(),
            "cached until told"
        );
        cache.forget(Uuid::new_v4());
        assert!(
            cache.check_key("known", ISSUED).await.is_ok(),
            "another user's change"
        );
        cache.forget(user_id);
        assert_eq!(
            cache.check_key("known", ISSUED).await,
            Err(TokenError::Revoked)
        );
    }

    /// A source that cannot be reached.
    struct Down;

    #[async_trait]
    impl SessionSource for Down {
        async fn state(&self, _user_id: Uuid) -> anyhow::Result<SessionState> {
            anyhow::bail!("auth is down")
        }
    }

    #[tokio::test]
    async fn without_auth_an_unknown_user_is_refused() {
        let cache = SessionCache::new(Box::new(Down), SESSION_TTL);
        assert_eq!(
            cache.check(Uuid::new_v4(), ISSUED).await,
            Err(TokenError::SessionsUnavailable)
        );
    }

    #[test]
    fn unreachable_state_is_unavailable_not_a_bad_token() {
        // A client told UNAUTHENTICATED takes its session for ended (the web app signs
        // out); state that cannot be fetched is a reason to try again instead.
        assert_eq!(
            TokenError::SessionsUnavailable.status().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            TokenError::KeysUnavailable.status().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            TokenError::Revoked.status().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            TokenError::Expired.status().code(),
            tonic::Code::Unauthenticated
        );
    }
}
