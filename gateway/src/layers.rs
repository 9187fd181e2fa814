//! Cross-cutting HTTP layers: security headers, CORS and RED metrics.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use atelier_common::Caller;
use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{forwarded::TrustedProxies, problem::Problem, state::AppState};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The policy for everything the gateway serves: only its own scripts, no
/// framing, no plugins.
const CSP: &str = "default-src 'self'; base-uri 'self'; object-src 'none'; frame-ancestors 'none'; \
form-action 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob: https:; \
connect-src 'self'; font-src 'self' data:";

/// When `Strict-Transport-Security` is sent. Browsers ignore it over plain HTTP,
/// and a proxy we do not run may not claim HTTPS for a client, so it goes out only
/// where the client is known to have come over HTTPS.
#[derive(Clone, Debug)]
pub enum Hsts {
    /// The gateway serves TLS itself: every response.
    Always,
    /// Plain HTTP behind proxies: when a trusted proxy says, in
    /// `X-Forwarded-Proto`, that the client came to it over https.
    Forwarded(TrustedProxies),
}

impl Hsts {
    pub fn applies(&self, request: &Request) -> bool {
        match self {
            Self::Always => true,
            Self::Forwarded(proxies) => request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|ConnectInfo(peer)| {
                    proxies.forwarded_https(peer.ip(), request.headers())
                }),
        }
    }
}

/// The HSTS policy: two years, subdomains included.
const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Headers as Helmet sets them, added where a handler did not set its own.
/// HSTS only where the client came over HTTPS (see [`Hsts`]).
pub async fn security_headers(hsts: bool, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(HeaderName::from_static("origin-agent-cluster"), "?1");
    set(HeaderName::from_static("x-dns-prefetch-control"), "off");
    set(
        HeaderName::from_static("x-permitted-cross-domain-policies"),
        "none",
    );
    if hsts {
        set(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    response
}

/// CORS for an explicit list of origins; no origin is allowed unless listed.
pub fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
        ])
        .allow_credentials(true)
        .max_age(std::time::Duration::from_secs(600))
}

/// RED metrics per route: `atelier_http_requests_total` and
/// `atelier_http_request_duration_seconds`, labelled by the route pattern (never
/// the raw path, which would explode the label set).
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("atelier_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("atelier_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed);
    response
}

/// The operations that need a signed-in caller, by route and method, with the
/// scopes an API key needs for each (`None`: no key may call it) (see
/// [`crate::openapi::secured`]).
pub type Secured = HashMap<String, Vec<(Method, Option<&'static [&'static str]>)>>;

/// Refuses an operation that needs a signed-in caller when the request has no valid
/// access token or API key, before anything else of it is read: a request without
/// one learns that first, whatever else is wrong with it. An API key without the
/// scopes the operation needs is refused here too (the services behind check them
/// again). The limits layer, which runs before, leaves the caller it verified; the
/// token is verified again only to say why not. A signed-in caller who is no
/// administrator gets `404` from an administrators' operation, before its body
/// is read.
pub async fn require_sign_in(
    State((state, secured)): State<(AppState, Arc<Secured>)>,
    request: Request,
    next: Next,
) -> Response {
    let needed = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| secured.get(path.as_str()))
        .and_then(|methods| {
            methods
                .iter()
                .find(|(method, _)| method == request.method())
                .map(|(_, scopes)| *scopes)
        });
    let Some(scopes) = needed else {
        return next.run(request).await;
    };
    let caller = match request.extensions().get::<Caller>() {
        Some(caller) => caller.clone(),
        None => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            match state.verifier.verify_header(header).await {
                Ok(caller) => caller,
                Err(err) => return Problem::from(err.status()).into_response(),
            }
        }
    };
    let operation = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| format!("{} {}", request.method(), path.as_str()))
        .unwrap_or_default();
    match scopes {
        None if caller.api_key.is_some() => {
            return Problem::from(atelier_common::error::insufficient_scope(&operation, ""))
                .into_response();
        }
        Some(scopes) => {
            if let Some(missing) = scopes.iter().find(|scope| !caller.may(scope)) {
                return Problem::from(atelier_common::error::insufficient_scope(
                    &operation, missing,
                ))
                .into_response();
            }
        }
        // Only the administrators' operations need no scope (see
        // `openapi::SCOPES`): anyone else learns nothing of them, not even
        // what is wrong with their request.
        None if !caller.admin => return Problem::not_found().into_response(),
        None => {}
    }
    next.run(request).await
}
