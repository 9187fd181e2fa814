//! The gRPC server every service runs, built one way: HTTP/1 accepted for
//! gRPC-web, health and reflection served, RED metrics and a span per call,
//! access tokens verified for every method not declared public, and a graceful
//! stop on shutdown. Also the client channel services call each other with.

use std::{
    collections::HashSet,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::{Endpoint, Server},
};
use tonic_health::ServingStatus;
use tower::{Layer, Service, ServiceBuilder};

pub use tonic::transport::Channel;
use tracing::Instrument;

use crate::token::{Caller, JwtVerifier};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The header carrying the request id from the gateway through every service.
pub const REQUEST_ID: &str = "x-request-id";

/// A gRPC server under construction.
pub struct GrpcServer {
    name: &'static str,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    public: HashSet<String>,
    verifier: Option<Arc<JwtVerifier>>,
}

impl GrpcServer {
    /// `name` is the service's short name, used in logs.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            public: HashSet::new(),
            verifier: None,
        }
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Methods that need no caller, as `Service/Method` names of `S`
    /// (e.g. `"Login"`). Every other method needs a valid access token.
    pub fn public<S: NamedService>(mut self, methods: &[&str]) -> Self {
        self.public.extend(
            methods
                .iter()
                .map(|method| format!("/{}/{method}", S::NAME)),
        );
        self
    }

    /// Verifies access tokens with `verifier` for every non-public method.
    pub fn authenticate(mut self, verifier: Arc<JwtVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        crate::telemetry::metrics();
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(atelier_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;
        let mut routes = self.routes;
        routes.add_service(health_service).add_service(reflection);
        let routes: Routes = routes.routes();

        let addr = listener.local_addr()?;
        for service in &self.services {
            health
                .set_service_status(*service, ServingStatus::Serving)
                .await;
        }
        tracing::info!(service = self.name, %addr, "grpc server listening");

        let mut public = self.public;
        public.insert("/grpc.health.v1.Health/Check".into());
        public.insert("/grpc.health.v1.Health/Watch".into());
        let layers = ServiceBuilder::new()
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(ObserveLayer)
            .layer(AuthLayer {
                verifier: self.verifier,
                public: Arc::new(public),
            })
            .into_inner();

        let stopping = shutdown.clone();
        let services = self.services.clone();
        let signal = async move {
            stopping.cancelled().await;
            for service in services {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
        };
        Server::builder()
            .accept_http1(true)
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(no_delay(listener), signal)
            .await
            .with_context(|| format!("{} grpc server", self.name))?;
        tracing::info!(service = self.name, "grpc server stopped");
        Ok(())
    }
}

/// The connections `listener` accepts, with Nagle's algorithm off: a reply written
/// in several pieces must not wait for the peer's delayed ACK (40 ms on Linux).
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::warn!(error = %err, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// A lazily connecting channel to another service, every call bounded by `timeout`.
pub fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service url {url:?}"))?
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// The verified caller of a request to a non-public method.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

/// `message` as a request on the caller's behalf: carries `incoming`'s access token and
/// request id on to the next service, which verifies the token itself.
pub fn on_behalf<T, M>(incoming: &tonic::Request<T>, message: M) -> tonic::Request<M> {
    let mut outgoing = tonic::Request::new(message);
    for key in ["authorization", REQUEST_ID] {
        if let Some(value) = incoming.metadata().get(key) {
            outgoing.metadata_mut().insert(key, value.clone());
        }
    }
    outgoing
}

/// Records RED metrics and opens a span with the request id for every call.
#[derive(Clone, Copy)]
struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

#[derive(Clone)]
struct Observe<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let span = tracing::info_span!("grpc", %service, %method, %request_id);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(request).await;
                // Errors are sent trailers-only, so the status is in the headers; a
                // response without it carries its status in the trailers, which is
                // OK for every unary call that did not fail.
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok())
                        .map(tonic::Code::from_i32)
                        .unwrap_or(tonic::Code::Ok),
                    Err(_) => tonic::Code::Unavailable,
                };
                let code = format!("{code:?}");
                let elapsed = started.elapsed().as_secs_f64();
                tracing::debug!(%code, elapsed, "grpc call finished");
                let labels = [("service", service), ("method", method), ("code", code)];
                metrics::counter!("atelier_grpc_server_handled_total", &labels).increment(1);
                metrics::histogram!("atelier_grpc_server_handling_seconds", &labels[..2])
                    .record(elapsed);
                result
            }
            .instrument(span),
        )
    }
}

fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// Rejects calls to non-public methods without a valid access token and puts the
/// verified [`Caller`] in the request's extensions.
#[derive(Clone)]
struct AuthLayer {
    verifier: Option<Arc<JwtVerifier>>,
    public: Arc<HashSet<String>>,
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
        }
    }
}

#[derive(Clone)]
struct Authenticate<S> {
    inner: S,
    verifier: Option<Arc<JwtVerifier>>,
    public: Arc<HashSet<String>>,
}

impl<S, B, R> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        let Some(verifier) = self.verifier.clone() else {
            return Box::pin(inner.call(request));
        };
        if self.public.contains(path) || path.starts_with("/grpc.reflection.") {
            return Box::pin(inner.call(request));
        }
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            match verifier.verify_header(header.as_deref()).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(err) => Ok(Status::unauthenticated(err.to_string()).into_http()),
            }
        })
    }
}

/// Asks `channel`'s health service whether `service` is serving.
pub async fn check_health(channel: Channel, service: &str) -> Result<(), String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus as Status,
        health_client::HealthClient,
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| status.message().to_owned())?;
    match reply.into_inner().status() {
        Status::Serving => Ok(()),
        other => Err(format!("{service} is {}", other.as_str_name())),
    }
}

/// A lazily connecting channel for calls that stream for as long as they take
/// (uploads, downloads, event streams): no overall deadline, only a connect
/// timeout and keep-alives that notice a dead peer.
pub fn streaming_channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service url {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect_lazy())
}
