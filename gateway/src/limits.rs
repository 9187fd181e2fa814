//! Rate limits: per client address on every route, per user for signed-in callers,
//! per API key (its own `rate_limit_per_minute`, or the default) on top of its
//! user's, and a stricter one per address on the credential methods (register, login,
//! refresh) whichever way they arrive: REST, gRPC-web or gRPC.
//!
//! Each limit is a generic cell-rate algorithm (GCRA): so many requests a minute,
//! bursts up to the same count. With `REDIS_URL` set every gateway replica checks
//! one shared budget in Redis (one Lua script per check); without it, or while
//! Redis does not answer, each process keeps its own (`governor`). Over the limit
//! the answer is `429` with `Retry-After`, or `RESOURCE_EXHAUSTED` with a
//! `RetryInfo` for gRPC callers.

mod shared;

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use atelier_common::redis::Redis;
use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::{AppState, forwarded::TrustedProxies, problem::Problem};
pub use shared::SharedLimits;

/// Requests allowed per minute for each kind of key; bursts up to the same count.
#[derive(Clone, Copy, Debug)]
pub struct LimitConfig {
    pub per_ip: u32,
    pub per_user: u32,
    pub credentials_per_ip: u32,
    /// Per API key that sets no limit of its own (`RATE_LIMIT_PER_KEY`).
    pub per_key: u32,
}

/// The routes and gRPC methods that take credentials, under the strict limit.
const CREDENTIAL_PATHS: [&str; 8] = [
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/auth/password",
    "/atelier.auth.v1.AuthService/Register",
    "/atelier.auth.v1.AuthService/Login",
    "/atelier.auth.v1.AuthService/Refresh",
    "/atelier.auth.v1.AuthService/ChangePassword",
];

/// One budget: shared through Redis when there is one, else this process's own.
struct Limiter {
    name: &'static str,
    per_minute: u32,
    local: DefaultKeyedRateLimiter<String>,
}

impl Limiter {
    fn new(name: &'static str, per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            name,
            per_minute,
            local: RateLimiter::keyed(quota),
        }
    }

    /// `Err` with how long to wait when `key` is over its budget.
    async fn check(&self, shared: Option<&SharedLimits>, key: String) -> Result<(), Duration> {
        if let Some(shared) = shared
            && let Some(verdict) = shared.check(self.name, &key, self.per_minute).await
        {
            return verdict;
        }
        self.local
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

pub struct Limits {
    per_ip: Limiter,
    per_user: Limiter,
    credentials: Limiter,
    /// Per API key: one limiter per rate, since keys choose their own.
    per_key: std::sync::Mutex<std::collections::HashMap<u32, Arc<Limiter>>>,
    per_key_default: u32,
    shared: Option<SharedLimits>,
    proxies: TrustedProxies,
}

impl Limits {
    /// Limits kept in this process, or in `redis` when given.
    pub fn new(config: LimitConfig, proxies: TrustedProxies, redis: Option<Redis>) -> Arc<Self> {
        Arc::new(Self {
            per_ip: Limiter::new("ip", config.per_ip),
            per_user: Limiter::new("user", config.per_user),
            credentials: Limiter::new("credentials", config.credentials_per_ip),
            per_key: std::sync::Mutex::new(std::collections::HashMap::new()),
            per_key_default: config.per_key,
            shared: redis.map(SharedLimits::new),
            proxies,
        })
    }

    /// Forgets keys that are back to a full budget; run periodically so the maps
    /// do not grow without bound.
    pub fn prune(&self) {
        self.per_ip.local.retain_recent();
        self.per_user.local.retain_recent();
        self.credentials.local.retain_recent();
        for limiter in self
            .per_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            limiter.local.retain_recent();
        }
    }

    /// The budget of keys allowed `per_minute` requests.
    fn per_key(&self, per_minute: Option<u32>) -> Arc<Limiter> {
        let per_minute = per_minute.unwrap_or(self.per_key_default).max(1);
        self.per_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(per_minute)
            .or_insert_with(|| Arc::new(Limiter::new("key", per_minute)))
            .clone()
    }

    /// The client's address: the peer's, or one from `X-Forwarded-For` as far as
    /// the trusted proxies in front vouch for it.
    pub fn client_ip<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        Some(self.proxies.client(peer.ip(), request.headers()))
    }

    async fn check(&self, limiter: &Limiter, key: String) -> Result<(), Duration> {
        limiter.check(self.shared.as_ref(), key).await
    }
}

/// The key of a client address: an IPv6 client is its /64, which one subscriber
/// usually holds whole.
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
    }
}

/// The refusal for a request over its budget: a problem document, or a gRPC status
/// in the caller's own protocol (gRPC or gRPC-web), both saying when to retry.
pub fn refusal(headers: &http::HeaderMap, wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .filter(|value| value.as_bytes().starts_with(b"application/grpc"))
        .cloned();
    let Some(content_type) = content_type else {
        return Problem::too_many_requests(seconds).into_response();
    };
    let status = atelier_common::error::rate_limited(
        format!("too many requests; retry in {seconds} s"),
        Duration::from_secs(seconds),
    );
    let mut response = status.into_http::<axum::body::Body>();
    // A trailers-only answer: gRPC-web clients read it from the headers too.
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Puts the client's address and user agent in headers the services read (for
/// their audit entries), replacing whatever the client sent under those names:
/// REST handlers pass them on in their gRPC calls, and gRPC and gRPC-web calls
/// carry them as they are forwarded.
fn mark_origin(request: &mut Request, client_ip: Option<IpAddr>) {
    use atelier_common::grpc::{CLIENT_IP, CLIENT_USER_AGENT};
    let headers = request.headers_mut();
    headers.remove(CLIENT_IP);
    headers.remove(CLIENT_USER_AGENT);
    if let Some(ip) = client_ip
        && let Ok(value) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert(CLIENT_IP, value);
    }
    // gRPC clients name themselves in `user-agent` too; a gRPC-web client's
    // browser in the same header.
    if let Some(agent) = headers.get(header::USER_AGENT).cloned() {
        headers.insert(CLIENT_USER_AGENT, agent);
    }
}

/// Every route: the per-address limit, the credential methods' stricter one, then,
/// for a caller with a valid access token or API key, the per-user limit, and for
/// an API key its own as well. The verified caller is left in the request's
/// extensions.
pub async fn limit_requests(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let limits = &state.limits;
    let client_ip = limits.client_ip(&request);
    mark_origin(&mut request, client_ip);
    if let Some(ip) = client_ip {
        let key = ip_key(ip);
        if let Err(wait) = limits.check(&limits.per_ip, key.clone()).await {
            return refusal(request.headers(), wait);
        }
        if CREDENTIAL_PATHS.contains(&request.uri().path())
            && let Err(wait) = limits.check(&limits.credentials, key).await
        {
            tracing::info!(client = %ip, path = request.uri().path(), "credential attempts over the limit");
            return refusal(request.headers(), wait);
        }
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if authorization.is_some()
        && let Ok(caller) = state.verifier.verify_header(authorization).await
    {
        if let Some(key) = &caller.api_key {
            let limiter = limits.per_key(key.rate_limit_per_minute);
            if let Err(wait) = limits.check(&limiter, key.key_id.to_string()).await {
                return refusal(request.headers(), wait);
            }
        }
        if let Err(wait) = limits
            .check(&limits.per_user, caller.user_id.to_string())
            .await
        {
            return refusal(request.headers(), wait);
        }
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

/// Prunes the in-process limiters every minute until `shutdown`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let key = |text: &str| ip_key(text.parse().expect("address"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }

    #[tokio::test]
    async fn grpc_callers_get_a_status_with_a_retry_hint() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
        let response = refusal(&headers, Duration::from_millis(1500));
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/grpc-web+proto"
        );
        let status = tonic::Status::from_header_map(response.headers()).expect("grpc-status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            atelier_common::error::retry_after(&status),
            Some(Duration::from_secs(2))
        );
        let rest = refusal(&http::HeaderMap::new(), Duration::from_millis(1500));
        assert_eq!(rest.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rest.headers()[header::RETRY_AFTER], "2");
    }
}
