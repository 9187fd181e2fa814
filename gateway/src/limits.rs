//! Rate limits: per client IP on every route, per user for signed-in callers, and a
//! stricter one per IP on the credential routes (login, register, refresh).
//! Generic cell-rate limiters (GCRA) from `governor`; over the limit the answer is
//! `429` with `Retry-After`.

use std::{
    hash::Hash,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use uuid::Uuid;

use crate::{AppState, problem::Problem};

/// Requests allowed per minute for each kind of key; bursts up to the same count.
#[derive(Clone, Copy, Debug)]
pub struct LimitConfig {
    pub per_ip: u32,
    pub per_user: u32,
    pub credentials_per_ip: u32,
}

pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<Uuid>,
    credentials: DefaultKeyedRateLimiter<IpAddr>,
    trust_proxy: bool,
}

fn per_minute(count: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(config: LimitConfig, trust_proxy: bool) -> Arc<Self> {
        Arc::new(Self {
            per_ip: RateLimiter::keyed(per_minute(config.per_ip)),
            per_user: RateLimiter::keyed(per_minute(config.per_user)),
            credentials: RateLimiter::keyed(per_minute(config.credentials_per_ip)),
            trust_proxy,
        })
    }

    /// Forgets keys that are back to a full budget; run periodically so the maps
    /// do not grow without bound.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_user.retain_recent();
        self.credentials.retain_recent();
    }

    /// The client's address: the peer, or the first `X-Forwarded-For` entry when
    /// the gateway sits behind a trusted proxy (`TRUST_PROXY_HEADERS`).
    fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        if self.trust_proxy
            && let Some(forwarded) = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .and_then(|first| first.trim().parse().ok())
        {
            return Some(forwarded);
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
    }
}

fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), Problem> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Problem::too_many_requests(wait.as_secs_f64().ceil().max(1.0) as u64)
    })
}

/// Every route: the per-IP limit, then, for a caller with a valid access token,
/// the per-user limit. The verified caller is left in the request's extensions.
pub async fn limit_requests(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ip) = state.limits.client_ip(&request)
        && let Err(problem) = check(&state.limits.per_ip, &ip)
    {
        return problem.into_response();
    }
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if authorization.is_some()
        && let Ok(caller) = state.verifier.verify_header(authorization).await
    {
        if let Err(problem) = check(&state.limits.per_user, &caller.user_id) {
            return problem.into_response();
        }
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

/// The credential routes' stricter per-IP limit, against password guessing.
pub async fn limit_credentials(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ip) = state.limits.client_ip(&request)
        && let Err(problem) = check(&state.limits.credentials, &ip)
    {
        return problem.into_response();
    }
    next.run(request).await
}

/// Prunes the limiters every minute until `shutdown`.
pub fn spawn_pruning(limits: Arc<Limits>, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => limits.prune(),
                () = shutdown.cancelled() => break,
            }
        }
    });
}
