//! The gRPC server every service runs, built one way: TLS with the service's
//! certificate, HTTP/1 accepted for gRPC-web, health and reflection served, RED
//! metrics and a span per call, callers checked (a service certificate for every
//! method but health, the allowed services for internal methods, a user's access
//! token or API key for every method not declared public or internal, and for an
//! API key coming through the gateway, the scope the method declares), and a
//! graceful stop on shutdown.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use atelier_proto::access::Method;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::Server,
};
use tonic_health::ServingStatus;
use tower::{Layer, Service, ServiceBuilder};

pub use tonic::transport::Channel;
use tracing::Instrument;

use crate::{
    identity::{Identity, ServiceName},
    token::{Caller, JwtVerifier},
    transport::{self, Connection, PeerInfo},
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The header carrying the request id from the gateway through every service.
pub const REQUEST_ID: &str = "x-request-id";

/// The client's address as the gateway found it (from trusted proxies only); the
/// gateway drops any value a client sent.
pub const CLIENT_IP: &str = "x-atelier-client-ip";
/// The client's `User-Agent` as the gateway received it.
pub const CLIENT_USER_AGENT: &str = "x-atelier-user-agent";

/// Where a request came from, as the gateway saw it and passed it on: what an
/// audit entry records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOrigin {
    pub client_ip: String,
    pub user_agent: String,
    pub request_id: String,
}

impl RequestOrigin {
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        let get = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            client_ip: get(CLIENT_IP),
            user_agent: get(CLIENT_USER_AGENT),
            request_id: get(REQUEST_ID),
        }
    }
}

/// How long a caller has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The health service's methods: the only ones open to a caller without a service
/// certificate.
const HEALTH: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The service whose certificate a caller presented, put in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub ServiceName);

/// A gRPC server under construction.
pub struct GrpcServer {
    identity: Identity,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    /// Who may call which method (see [`GrpcServer::contract`]).
    contract: &'static [Method],
    verifier: Option<Arc<JwtVerifier>>,
}

/// Which methods need which caller, as the contract declares it (see
/// [`atelier_proto::access`]): every method neither public nor internal needs a
/// valid access token, and like every method a service certificate, so only the
/// platform's services (the gateway for the outside world) call them.
#[derive(Default)]
struct Policy {
    /// Methods that need no user token.
    public: HashSet<&'static str>,
    /// Methods only some services may call.
    internal: HashMap<&'static str, Internal>,
    /// Methods only an administrator may call: a user whose token carries the
    /// admin role, or the operator certificate.
    admin: HashSet<&'static str>,
    /// The scope an API key needs for each method (absent: no key may call it).
    scopes: HashMap<&'static str, &'static str>,
}

struct Internal {
    callers: Vec<ServiceName>,
    /// Whether the call carries the user's token too (else it names the user).
    user_token: bool,
}

impl Policy {
    fn new(contract: &'static [Method]) -> Self {
        let mut policy = Self::default();
        for method in contract {
            if method.public {
                policy.public.insert(method.path);
            }
            if method.admin() {
                policy.admin.insert(method.path);
            }
            if !method.scope.is_empty() {
                policy.scopes.insert(method.path, method.scope);
            }
            if !method.internal_callers.is_empty() {
                let callers = method
                    .internal_callers
                    .iter()
                    .filter_map(|name| match name.parse() {
                        Ok(caller) => Some(caller),
                        Err(err) => {
                            tracing::error!(method = method.path, error = %err, "unknown caller in the contract");
                            None
                        }
                    })
                    .collect();
                policy.internal.insert(
                    method.path,
                    Internal {
                        callers,
                        user_token: method.user_token,
                    },
                );
            }
        }
        policy
    }
}

impl GrpcServer {
    /// A server with `identity`'s certificate.
    pub fn new(identity: &Identity) -> Self {
        Self {
            identity: identity.clone(),
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            contract: atelier_proto::access::METHODS,
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

    /// Who may call which method: the platform's contract (the default), or for a
    /// test of the rules themselves, a contract of its own.
    pub fn contract(mut self, contract: &'static [Method]) -> Self {
        self.contract = contract;
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
        let (reflection_v1, reflection_v1alpha) = reflection()?;
        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let routes: Routes = routes.routes();

        let name = self.identity.name();
        let addr = listener.local_addr()?;
        for service in &self.services {
            health
                .set_service_status(*service, ServingStatus::Serving)
                .await;
        }
        tracing::info!(service = %name, %addr, "grpc server listening");

        let layers = ServiceBuilder::new()
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(ObserveLayer)
            .layer(AuthLayer {
                verifier: self.verifier,
                policy: Arc::new(Policy::new(self.contract)),
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
        let incoming = incoming(listener, self.identity, shutdown.clone());
        Server::builder()
            .accept_http1(true)
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .with_context(|| format!("{name} grpc server"))?;
        tracing::info!(service = %name, "grpc server stopped");
        Ok(())
    }
}

/// The TLS connections `listener` accepts, with Nagle's algorithm off (a reply written
/// in several pieces must not wait for the peer's delayed ACK, 40 ms on Linux), and
/// the pipes callers in this process open to it (see [`crate::transport`]). Each
/// handshake runs on its own task, bounded in time, so a slow caller holds up no other.
fn incoming(
    listener: TcpListener,
    identity: Identity,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<Connection>> {
    let (accepted, incoming) = tokio::sync::mpsc::channel(64);
    let registration = listener
        .local_addr()
        .ok()
        .and_then(|addr| transport::register(addr, &identity, accepted.clone()));
    tokio::spawn(async move {
        let _registration = registration;
        loop {
            let (tcp, peer) = tokio::select! {
                result = listener.accept() => match result {
                    Ok(connection) => connection,
                    Err(err) => {
                        // Out of file descriptors, most likely: let some close.
                        tracing::warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::warn!(error = %err, "cannot set TCP_NODELAY");
            }
            let acceptor = identity.acceptor();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = accepted.send(Ok(Connection::accepted(tls))).await;
                    }
                    Ok(Err(err)) => {
                        metrics::counter!("atelier_tls_handshake_failures_total").increment(1);
                        tracing::debug!(%peer, error = %err, "tls handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("atelier_tls_handshake_failures_total").increment(1);
                        tracing::debug!(%peer, "tls handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// The verified caller of a request to a non-public method.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

/// `message` as a request on the caller's behalf: carries `incoming`'s access token,
/// request id and client address on to the next service, which verifies the token
/// itself.
pub fn on_behalf<T, M>(incoming: &tonic::Request<T>, message: M) -> tonic::Request<M> {
    let mut outgoing = tonic::Request::new(message);
    for key in ["authorization", REQUEST_ID, CLIENT_IP, CLIENT_USER_AGENT] {
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

/// What a method for administrators answers anyone else: that it exists is no
/// one else's business, so it answers as a missing resource would.
fn not_for_you() -> Status {
    Status::not_found("not found")
}

fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// Checks the caller of every call against the server's [`Policy`]: the [`Peer`]
/// service and, where a user is needed, the verified [`Caller`] are put in the
/// request's extensions.
#[derive(Clone)]
struct AuthLayer {
    verifier: Option<Arc<JwtVerifier>>,
    policy: Arc<Policy>,
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            verifier: self.verifier.clone(),
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
struct Authenticate<S> {
    inner: S,
    verifier: Option<Arc<JwtVerifier>>,
    policy: Arc<Policy>,
}

/// The service named by the certificate the caller presented on this connection.
fn peer_of<B>(request: &http::Request<B>) -> Option<ServiceName> {
    request.extensions().get::<PeerInfo>()?.service
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
        let path = request.uri().path().to_owned();
        let path = path.as_str();
        if HEALTH.contains(&path) {
            return Box::pin(inner.call(request));
        }
        let refuse = |status: Status| -> Self::Future {
            metrics::counter!("atelier_grpc_callers_refused_total", "code" => format!("{:?}", status.code()))
                .increment(1);
            Box::pin(async move { Ok(status.into_http()) })
        };
        let Some(peer) = peer_of(&request) else {
            return refuse(Status::unauthenticated(
                "this port serves the platform's services only: present a service certificate",
            ));
        };
        if let Some(internal) = self.policy.internal.get(path) {
            if !internal.callers.contains(&peer) {
                let method = split_path(path).1;
                return refuse(Status::permission_denied(format!(
                    "the {peer} service may not call {method}"
                )));
            }
            if !internal.user_token {
                request.extensions_mut().insert(Peer(peer));
                return Box::pin(inner.call(request));
            }
        }
        request.extensions_mut().insert(Peer(peer));
        let admin_only = self.policy.admin.contains(path);
        if admin_only && peer == ServiceName::Operator {
            return Box::pin(inner.call(request));
        }
        let Some(verifier) = self.verifier.clone() else {
            if admin_only {
                return refuse(not_for_you());
            }
            return Box::pin(inner.call(request));
        };
        if self.policy.public.contains(path) || path.starts_with("/grpc.reflection.") {
            return Box::pin(inner.call(request));
        }
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        // An API key's scopes are checked where the call enters the platform: from
        // the gateway (or an operator's tool). A service calling another on the
        // user's behalf passes on a call whose own method's scope was checked.
        let check_scope = matches!(peer, ServiceName::Gateway | ServiceName::Operator);
        let scope = self.policy.scopes.get(path).copied().unwrap_or_default();
        let method = split_path(path).1;
        Box::pin(async move {
            match verifier.verify_header(header.as_deref()).await {
                Ok(caller) if check_scope && !caller.may(scope) => {
                    metrics::counter!("atelier_grpc_callers_refused_total", "code" => "PermissionDenied")
                        .increment(1);
                    tracing::debug!(%method, scope, "api key without the method's scope refused");
                    Ok(crate::error::insufficient_scope(&method, scope).into_http())
                }
                Ok(caller) if admin_only && !caller.admin => {
                    metrics::counter!("atelier_grpc_callers_refused_total", "code" => "NotFound")
                        .increment(1);
                    Ok(not_for_you().into_http())
                }
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(err) => Ok(err.status().into_http()),
            }
        })
    }
}

/// Server reflection of the platform's contracts and of health, in both versions:
/// grpcurl and grpcui ask v1, older tools (Postman, evans) v1alpha.
pub fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(atelier_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((
        builder()
            .build_v1()
            .context("building the reflection service")?,
        builder()
            .build_v1alpha()
            .context("building the reflection service")?,
    ))
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

#[cfg(test)]
mod tests {
    use atelier_proto::access::{METHODS, method};

    use super::*;

    #[test]
    fn the_contract_names_only_services_as_callers() {
        for method in METHODS {
            for name in method.internal_callers {
                assert!(
                    name.parse::<ServiceName>().is_ok(),
                    "{} names {name:?}, which is no service",
                    method.path
                );
            }
        }
    }

    #[test]
    fn policy_follows_the_contract() {
        let policy = Policy::new(METHODS);
        assert!(policy.public.contains("/atelier.auth.v1.AuthService/Login"));
        assert!(
            !policy
                .public
                .contains("/atelier.auth.v1.AuthService/GetCurrentUser")
        );
        let state = &policy.internal["/atelier.auth.v1.AuthService/GetSessionState"];
        assert!(state.callers.contains(&ServiceName::Gateway) && !state.user_token);
        let delete = &policy.internal["/atelier.auth.v1.AuthService/DeleteCurrentUser"];
        assert_eq!(delete.callers, [ServiceName::User]);
        assert!(delete.user_token);
        assert_eq!(
            policy.internal["/atelier.user.v1.UserService/GetQuota"].callers,
            [ServiceName::Processing, ServiceName::Image]
        );
        let routed = method("/atelier.user.v1.UserService/GetProfile").expect("a method");
        assert!(routed.routed() && !routed.public);
        assert!(
            policy
                .admin
                .contains("/atelier.audit.v1.AuditService/ListAuditEvents")
        );
        assert_eq!(
            policy.scopes["/atelier.image.v1.ImageService/GetImage"],
            "images:read"
        );
        assert!(
            !policy
                .scopes
                .contains_key("/atelier.audit.v1.AuditService/ListAuditEvents"),
            "no API key is an administrator"
        );
        let listing = method("/atelier.audit.v1.AuditService/ListAuditEvents").expect("a method");
        assert!(
            listing.routed() && listing.admin(),
            "admins reach it from outside"
        );
    }
}
