//! The gateway: REST (with its OpenAPI document), gRPC-web, and the web app, in
//! front of the services' gRPC APIs. It holds no data of its own; every request
//! becomes calls to the services that own the data.

pub mod admin;
pub mod admin_console;
pub mod admin_workflows;
pub mod archive;
pub mod auth;
pub mod extract;
pub mod forwarded;
pub mod grpc_web;
pub mod images;
pub mod keys;
pub mod layers;
pub mod limits;
pub mod live;
pub mod openapi;
pub mod pipelines;
pub mod problem;
pub mod processing;
pub mod shares;
pub mod spend;
pub mod stall;
pub mod state;
pub mod status_cache;
pub mod tls;
pub mod users;
pub mod views;
pub mod web;
pub mod webhooks;
pub mod workflows;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use atelier_common::{
    admin::Readiness,
    config::{self, Platform},
    grpc::{REQUEST_ID, check_health},
    identity::{Identity, ServiceName},
    redis::Redis,
    token::JwtVerifier,
};
use atelier_proto::auth::v1::auth_service_client::AuthServiceClient;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::HeaderValue,
    middleware::{self, Next},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use forwarded::TrustedProxies;
use limits::{LimitConfig, Limits};
use live::{StreamConfig, StreamSlots};
use state::AppState;
use status_cache::{JobCache, UrlCache};

/// The gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub platform: Platform,
    /// `PUBLIC_URL`: where users reach the platform.
    pub public_url: Option<String>,
    /// `GATEWAY_TLS_CERT_FILE`, `GATEWAY_TLS_KEY_FILE`: serve HTTPS with this
    /// certificate (reloaded when the files change).
    pub tls: Option<tls::EdgeTls>,
    /// `GATEWAY_PLAINTEXT`: serve plain HTTP on an address other than loopback
    /// (a proxy in front terminates TLS). Without TLS and without it, the gateway
    /// refuses to listen anywhere but on loopback.
    pub plaintext: bool,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call the API
    /// from other sites. Empty: same-origin only.
    pub cors_origins: Vec<HeaderValue>,
    /// `MAX_REQUEST_BODY_BYTES`: the largest JSON body accepted.
    pub max_body_bytes: usize,
    /// `MAX_FILE_SIZE_MB`: the largest upload accepted.
    pub max_upload_bytes: usize,
    pub limits: LimitConfig,
    /// `TRUSTED_PROXY_HOPS`, `TRUSTED_PROXIES`: which proxies' `X-Forwarded-For`
    /// entries are believed.
    pub proxies: TrustedProxies,
    pub streams: StreamConfig,
    /// `SEND_TIMEOUT_SECS`: a connection whose client takes nothing of what is
    /// sent for this long is closed.
    pub send_timeout: Duration,
    /// `UPLOAD_IDLE_TIMEOUT_SECS`: a request body that stops arriving for this
    /// long ends the request (`408`).
    pub body_idle_timeout: Duration,
    /// `WEB_DIR`: the built web app and API docs.
    pub web_dir: PathBuf,
    /// `JOB_STATUS_CACHE_MS`: how long a job's status body is answered from memory
    /// at most (dropped at once when the job changes); 0 turns the cache off.
    pub status_cache_ttl: Duration,
}

impl GatewayConfig {
    pub fn from_env(platform: Platform) -> anyhow::Result<Self> {
        let cors_origins = config::list("CORS_ALLOWED_ORIGINS")
            .into_iter()
            .map(|origin| {
                HeaderValue::from_str(&origin).map_err(|_| {
                    anyhow::anyhow!("CORS_ALLOWED_ORIGINS has an invalid origin {origin:?}")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            platform,
            public_url: config::var_opt("PUBLIC_URL")?,
            tls: tls::EdgeTls::from_env()?,
            plaintext: config::var("GATEWAY_PLAINTEXT", false)?,
            cors_origins,
            max_body_bytes: config::var("MAX_REQUEST_BODY_BYTES", 1024 * 1024)?,
            max_upload_bytes: config::var::<usize>("MAX_FILE_SIZE_MB", 50)? * 1024 * 1024,
            limits: LimitConfig {
                per_ip: config::var("RATE_LIMIT_PER_IP", 600)?,
                per_user: config::var("RATE_LIMIT_PER_USER", 600)?,
                credentials_per_ip: config::var("RATE_LIMIT_LOGIN_PER_IP", 10)?,
                per_key: config::var("RATE_LIMIT_PER_KEY", 600)?,
            },
            proxies: TrustedProxies::from_env()?,
            streams: StreamConfig {
                max_per_user: config::var("MAX_STREAMS_PER_USER", 16)?,
                keep_alive: config::seconds("STREAM_KEEPALIVE_SECS", 15)?,
                ws_messages_per_sec: config::var("WS_MESSAGES_PER_SEC", 10)?,
            },
            send_timeout: config::seconds("SEND_TIMEOUT_SECS", 30)?,
            body_idle_timeout: config::seconds("UPLOAD_IDLE_TIMEOUT_SECS", 30)?,
            web_dir: config::var("WEB_DIR", PathBuf::from("gateway/web/dist"))?,
            status_cache_ttl: Duration::from_millis(config::var("JOB_STATUS_CACHE_MS", 1000)?),
        })
    }

    /// The scheme the gateway serves: `https` with a certificate, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Refuses plain HTTP on an address other than loopback unless
    /// `GATEWAY_PLAINTEXT` says a proxy in front terminates TLS.
    pub fn check_listen(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let loopback = match addr.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => ip
                .to_ipv4_mapped()
                .map_or(ip.is_loopback(), |v4| v4.is_loopback()),
        };
        if self.tls.is_none() && !self.plaintext && !loopback {
            anyhow::bail!(
                "the gateway would serve plain HTTP on {addr}, which is not a loopback address: \
                 set GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE to serve HTTPS, or \
                 GATEWAY_PLAINTEXT=true when a proxy in front of it terminates TLS"
            );
        }
        Ok(())
    }
}

/// Serves the gateway on `listener` until `shutdown`.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    atelier_common::telemetry::metrics();
    config.check_listen(listener.local_addr()?)?;
    let certificate = config
        .tls
        .as_ref()
        .map(tls::Certificate::load)
        .transpose()
        .context("the gateway certificate")?;
    let identity = Identity::start(&config.platform.tls, ServiceName::Gateway, &shutdown)?;
    let (endpoints, timeout) = (&config.platform.endpoints, config.platform.grpc_timeout);
    let auth_channel = identity.channel(&endpoints.auth.url, timeout)?;
    // Uploads and downloads stream for as long as they take.
    let image_channel = identity.streaming_channel(&endpoints.image.url)?;
    let workflow_channel = identity.channel(&endpoints.workflow.url, timeout)?;
    // Rate limits shared by every replica when there is a Redis; a Redis that
    // is late or away never keeps the gateway from serving.
    let redis = match &config.platform.redis_url {
        Some(url) => Some(
            Redis::connect_in_background(
                url.expose(),
                config.platform.redis_prefix.clone(),
                Duration::from_secs(5),
            )
            .await?,
        ),
        None => None,
    };
    let statuses = Arc::new(JobCache::new(config.status_cache_ttl));
    statuses.listen(redis.as_ref(), shutdown.clone());
    let limits = Limits::new(config.limits, config.proxies.clone(), redis);
    limits::spawn_pruning(limits.clone(), shutdown.clone());
    let state = AppState {
        auth: AuthServiceClient::new(auth_channel.clone()),
        auth_channel: auth_channel.clone(),
        image: image_channel.clone(),
        workflow: workflow_channel.clone(),
        processing: identity.streaming_channel(&endpoints.processing.url)?,
        user: identity.channel(&endpoints.user.url, timeout)?,
        verifier: JwtVerifier::for_platform(&config.platform, auth_channel.clone()).await?,
        limits,
        streams: StreamSlots::new(config.streams.max_per_user),
        stream_config: config.streams,
        statuses,
        urls: Arc::new(UrlCache::default()),
        origin: Arc::new(shares::PublicOrigin {
            public_url: config.public_url.clone(),
            tls: config.tls.is_some(),
            proxies: config.proxies.clone(),
        }),
    };
    if !web::on_disk(&config.web_dir) && !web::embedded() {
        tracing::warn!(web_dir = %config.web_dir.display(), "web assets not built; run `make web`");
    }
    let app = router(&config, state)?;
    let addr = listener.local_addr()?;
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Some(certificate) = certificate {
        tracing::info!(%addr, "gateway listening (https)");
        certificate.watch(shutdown.clone());
        // Through `tap_io` (which does nothing here) axum gives handlers the peer's
        // `ConnectInfo<SocketAddr>`, as for the plain listener.
        let listener = axum::serve::ListenerExt::tap_io(
            tls::Listener::new(listener, &certificate, config.send_timeout),
            |_| {},
        );
        axum::serve(listener, make_service)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        tracing::info!("gateway stopped");
        return Ok(());
    }
    tracing::info!(%addr, "gateway listening");
    // Nagle's algorithm off: a response written in several pieces must not wait for
    // the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(
        stall::Listener::new(listener, config.send_timeout),
        |conn| {
            if let Err(err) = conn.get_ref().set_nodelay(true) {
                tracing::warn!(error = %err, "cannot set TCP_NODELAY");
            }
        },
    );
    axum::serve(listener, make_service)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// The gateway's readiness: every service it fronts answers its health check.
/// Added to the process's checks on the admin port (`ADMIN_ADDR`); the public
/// port answers only `/healthz`.
pub fn readiness(
    platform: &Platform,
    readiness: Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<Readiness> {
    let identity = Identity::start(&platform.tls, ServiceName::Gateway, shutdown)?;
    let endpoints = &platform.endpoints;
    let mut readiness = readiness;
    for (name, url, service) in [
        ("auth", &endpoints.auth.url, "atelier.auth.v1.AuthService"),
        (
            "image",
            &endpoints.image.url,
            "atelier.image.v1.ImageService",
        ),
        (
            "workflow",
            &endpoints.workflow.url,
            "atelier.workflow.v1.WorkflowService",
        ),
        (
            "processing",
            &endpoints.processing.url,
            "atelier.processing.v1.ProcessingService",
        ),
        ("user", &endpoints.user.url, "atelier.user.v1.UserService"),
    ] {
        let probe = identity.channel(url, platform.grpc_timeout)?;
        readiness = readiness.check(name, move || check_health(probe.clone(), service));
    }
    Ok(readiness)
}

/// The REST API: every route declared once, in the module that handles it, with
/// its OpenAPI operation.
pub fn rest(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(auth::routes())
        .merge(images::routes(max_upload_bytes))
        .merge(shares::routes())
        .merge(workflows::routes())
        .merge(processing::routes())
        .merge(archive::routes())
        .merge(live::routes())
        .merge(users::routes())
        .merge(keys::routes())
        .merge(admin::routes())
        .merge(admin_workflows::routes())
        .merge(admin_console::routes())
        .merge(spend::routes())
        .merge(webhooks::routes())
        .merge(pipelines::routes())
}

/// The gateway's routes and layers.
pub fn router(config: &GatewayConfig, state: AppState) -> anyhow::Result<Router> {
    let (rest, document) = rest(config.max_upload_bytes).split_for_parts();
    let secured = Arc::new(openapi::secured(&document));
    let document = openapi::Document::new(document);
    let api = grpc_web::routes(rest, &state)?
        .route(
            "/api/openapi.json",
            get(move || std::future::ready(document.clone())),
        )
        .route("/api/{*rest}", axum::routing::any(problem::fallback))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), secured),
            layers::require_sign_in,
        ))
        .route_layer(middleware::from_fn(layers::record_metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_requests,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);

    // HSTS where the client came over HTTPS: to us, or to a proxy of ours.
    let hsts = if config.tls.is_some() {
        layers::Hsts::Always
    } else {
        layers::Hsts::Forwarded(config.proxies.clone())
    };

    // Metrics and readiness are on the admin port only; load balancers may probe
    // liveness here.
    let routes = Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", axum::routing::any(problem::fallback))
        .route("/metrics", axum::routing::any(problem::fallback))
        .route(
            "/api/docs",
            get(|| async { axum::response::Redirect::permanent("/api/docs/") }),
        );
    Ok(web::serve(routes, &config.web_dir).layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("http", method = %request.method(), path = %shares::loggable_path(request.uri().path()), %request_id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(problem::scope_request_id))
                .layer(middleware::from_fn(move |request: Request, next: Next| {
                    let hsts = hsts.applies(&request);
                    layers::security_headers(hsts, request, next)
                }))
                .layer(middleware::from_fn(shares::page_headers))
                .layer(layers::cors(&config.cors_origins))
                .layer(CompressionLayer::new())
                .layer(middleware::from_fn_with_state(
                    config.body_idle_timeout,
                    stall::body_idle_timeout,
                )),
    ))
}
