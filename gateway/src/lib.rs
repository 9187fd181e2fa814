//! The gateway: REST (with its OpenAPI document), gRPC-web, and the web app, in
//! front of the services' gRPC APIs. It holds no data of its own; every request
//! becomes calls to the services that own the data.

pub mod archive;
pub mod auth;
pub mod grpc_web;
pub mod images;
pub mod layers;
pub mod limits;
pub mod live;
pub mod openapi;
pub mod problem;
pub mod processing;
pub mod users;
pub mod web;
pub mod workflows;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use atelier_common::{
    admin::{self, Readiness},
    config::{self, Platform},
    grpc::{REQUEST_ID, check_health},
    identity::{Identity, ServiceName},
    token::{GrpcKeySource, JwtVerifier},
};
use atelier_proto::auth::v1::auth_service_client::AuthServiceClient;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderMap, HeaderValue},
    middleware::{self, Next},
    routing::{get, post},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower::{Layer, ServiceBuilder};
use tower_http::{
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use limits::{LimitConfig, Limits};

/// The gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub platform: Platform,
    /// `PUBLIC_URL`: where users reach the platform; https turns on HSTS.
    pub public_url: Option<String>,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call the API
    /// from other sites. Empty: same-origin only.
    pub cors_origins: Vec<HeaderValue>,
    /// `MAX_REQUEST_BODY_BYTES`: the largest JSON body accepted.
    pub max_body_bytes: usize,
    /// `MAX_FILE_SIZE_MB`: the largest upload accepted.
    pub max_upload_bytes: usize,
    pub limits: LimitConfig,
    /// `TRUST_PROXY_HEADERS`: take the client address from `X-Forwarded-For`.
    pub trust_proxy: bool,
    /// `WEB_DIR`: the built web app and API docs.
    pub web_dir: PathBuf,
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
            cors_origins,
            max_body_bytes: config::var("MAX_REQUEST_BODY_BYTES", 1024 * 1024)?,
            max_upload_bytes: config::var::<usize>("MAX_FILE_SIZE_MB", 50)? * 1024 * 1024,
            limits: LimitConfig {
                per_ip: config::var("RATE_LIMIT_PER_IP", 600)?,
                per_user: config::var("RATE_LIMIT_PER_USER", 600)?,
                credentials_per_ip: config::var("RATE_LIMIT_LOGIN_PER_IP", 10)?,
            },
            trust_proxy: config::var("TRUST_PROXY_HEADERS", false)?,
            web_dir: config::var("WEB_DIR", PathBuf::from("gateway/web/dist"))?,
        })
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthServiceClient<Channel>,
    pub auth_channel: Channel,
    pub image: Channel,
    pub workflow: Channel,
    pub processing: Channel,
    pub user: Channel,
    pub verifier: Arc<JwtVerifier>,
    pub limits: Arc<Limits>,
}

/// A gRPC request carrying the caller's token and the request id onward.
pub fn grpc_request<T>(message: T, headers: &HeaderMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for name in [http::header::AUTHORIZATION.as_str(), REQUEST_ID] {
        if let Some(value) = headers.get(name).and_then(|value| value.to_str().ok())
            && let Ok(value) = value.parse()
        {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

/// Serves the gateway on `listener` until `shutdown`.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    atelier_common::telemetry::metrics();
    let identity = Identity::start(&config.platform.tls, ServiceName::Gateway, &shutdown)?;
    let (endpoints, timeout) = (&config.platform.endpoints, config.platform.grpc_timeout);
    let auth_channel = identity.channel(&endpoints.auth.url, timeout)?;
    // Uploads and downloads stream for as long as they take.
    let image_channel = identity.streaming_channel(&endpoints.image.url)?;
    let workflow_channel = identity.channel(&endpoints.workflow.url, timeout)?;
    let limits = Limits::new(config.limits, config.trust_proxy);
    limits::spawn_pruning(limits.clone(), shutdown.clone());
    let state = AppState {
        auth: AuthServiceClient::new(auth_channel.clone()),
        auth_channel: auth_channel.clone(),
        image: image_channel.clone(),
        workflow: workflow_channel.clone(),
        processing: identity.streaming_channel(&endpoints.processing.url)?,
        user: identity.channel(&endpoints.user.url, timeout)?,
        verifier: JwtVerifier::new(GrpcKeySource::new(auth_channel.clone())),
        limits,
    };
    let (processing_probe, user_probe) = (state.processing.clone(), state.user.clone());
    let (auth_probe, image_probe, workflow_probe) = (
        auth_channel.clone(),
        image_channel.clone(),
        workflow_channel.clone(),
    );
    let readiness = Readiness::new()
        .check("auth", move || {
            check_health(auth_probe.clone(), "atelier.auth.v1.AuthService")
        })
        .check("image", move || {
            check_health(image_probe.clone(), "atelier.image.v1.ImageService")
        })
        .check("workflow", move || {
            check_health(
                workflow_probe.clone(),
                "atelier.workflow.v1.WorkflowService",
            )
        })
        .check("processing", move || {
            check_health(
                processing_probe.clone(),
                "atelier.processing.v1.ProcessingService",
            )
        })
        .check("user", move || {
            check_health(user_probe.clone(), "atelier.user.v1.UserService")
        });
    if !web::on_disk(&config.web_dir) && !web::embedded() {
        tracing::warn!(web_dir = %config.web_dir.display(), "web assets not built; run `make web`");
    }
    let app = router(&config, state, readiness.clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "gateway listening");
    readiness.started();
    // Nagle's algorithm off: a response written in several pieces must not wait for
    // the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// The gateway's routes and layers.
pub fn router(config: &GatewayConfig, state: AppState, readiness: Readiness) -> Router {
    let credentials = Router::new()
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_credentials,
        ));
    // The inner limit wins: uploads may be large, everything else is JSON.
    let uploads = Router::new()
        .route("/api/images/upload", post(images::upload))
        .layer(DefaultBodyLimit::max(config.max_upload_bytes + 1024 * 1024));

    let grpc_web = |channel: Channel, service: &str, methods: &[&str]| {
        tonic_web::GrpcWebLayer::new().layer(grpc_web::Forward::new(channel, service, methods))
    };
    let auth_grpc = grpc_web(
        state.auth_channel.clone(),
        "atelier.auth.v1.AuthService",
        &[
            "Register",
            "Login",
            "Refresh",
            "Logout",
            "GetJwks",
            "GetCurrentUser",
            "LogoutAll",
        ],
    );
    let image_grpc = grpc_web(
        state.image.clone(),
        "atelier.image.v1.ImageService",
        &[
            "UploadImage",
            "GetImage",
            "BatchGetImages",
            "ListImages",
            "DeleteImage",
            "DownloadImage",
        ],
    );
    let workflow_grpc = grpc_web(
        state.workflow.clone(),
        "atelier.workflow.v1.WorkflowService",
        &[
            "ListWorkflows",
            "GetWorkflow",
            "GetWorkflowParameters",
            "ValidateParameters",
            "Estimate",
        ],
    );
    let processing_grpc = grpc_web(
        state.processing.clone(),
        "atelier.processing.v1.ProcessingService",
        &[
            "StartProcessing",
            "GetJob",
            "ListJobs",
            "CancelJob",
            "RetryJob",
            "StreamJobEvents",
            "StartBatch",
            "GetBatch",
            "CancelBatch",
            "RetryBatch",
        ],
    );
    let user_grpc = grpc_web(
        state.user.clone(),
        "atelier.user.v1.UserService",
        &[
            "GetProfile",
            "UpdateProfile",
            "GetSettings",
            "UpdateSettings",
            "GetUsage",
            "GetHistory",
            "DeleteAccount",
        ],
    );

    let api = Router::new()
        .merge(credentials)
        .merge(uploads)
        .route("/api/images", get(images::list))
        .route("/api/images/{id}", get(images::get).delete(images::delete))
        .route("/files/{*rest}", get(images::file))
        .route("/api/processing/start", post(processing::start))
        .route("/api/processing/jobs", get(processing::list))
        .route("/api/processing/{job_id}/status", get(processing::status))
        .route("/api/processing/{job_id}/cancel", post(processing::cancel))
        .route("/api/processing/{job_id}/events", get(processing::events))
        .route("/api/fal/webhook", post(processing::fal_webhook))
        .route("/api/processing/{job_id}/retry", post(processing::retry))
        .route("/api/processing/batch", post(processing::start_batch))
        .route(
            "/api/processing/batch/{batch_id}",
            get(processing::get_batch),
        )
        .route(
            "/api/processing/batch/{batch_id}/cancel",
            post(processing::cancel_batch),
        )
        .route(
            "/api/processing/batch/{batch_id}/retry",
            post(processing::retry_batch),
        )
        .route(
            "/api/processing/batch/{batch_id}/download",
            get(archive::batch),
        )
        .route("/api/processing/{job_id}/download", get(archive::job))
        .route("/api/ws", get(live::upgrade))
        .route("/api/workflows", get(workflows::list))
        .route("/api/workflows/{id}", get(workflows::get))
        .route("/api/workflows/{id}/parameters", get(workflows::parameters))
        .route("/api/workflows/{id}/validate", post(workflows::validate))
        .route("/api/workflows/{id}/estimate", post(workflows::estimate))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/logout-all", post(auth::logout_all))
        .route(
            "/api/users/profile",
            get(users::profile).patch(users::update_profile),
        )
        .route(
            "/api/users/settings",
            get(users::settings).put(users::replace_settings),
        )
        .route("/api/users/history", get(users::history))
        .route(
            "/api/users/me",
            axum::routing::delete(users::delete_account),
        )
        .route("/api/auth/me", get(auth::me))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route("/api/openapi.json", get(openapi::document))
        .route_service("/atelier.auth.v1.AuthService/{*method}", auth_grpc)
        .route_service("/atelier.image.v1.ImageService/{*method}", image_grpc)
        .route_service(
            "/atelier.processing.v1.ProcessingService/{*method}",
            processing_grpc,
        )
        .route_service("/atelier.user.v1.UserService/{*method}", user_grpc)
        .route_service(
            "/atelier.workflow.v1.WorkflowService/{*method}",
            workflow_grpc,
        )
        .route("/api/{*rest}", axum::routing::any(problem::fallback))
        .route_layer(middleware::from_fn(layers::record_metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_requests,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);

    let hsts = config
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"));

    let routes = Router::new()
        .merge(api)
        .merge(admin::router(readiness))
        .route(
            "/api/docs",
            get(|| async { axum::response::Redirect::permanent("/api/docs/") }),
        );
    web::serve(routes, &config.web_dir)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), %request_id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(problem::scope_request_id))
                .layer(middleware::from_fn(move |request: Request, next: Next| {
                    layers::security_headers(hsts, request, next)
                }))
                .layer(layers::cors(&config.cors_origins))
                .layer(CompressionLayer::new()),
        )
}
