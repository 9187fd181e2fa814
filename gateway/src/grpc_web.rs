//! gRPC-web (and plain gRPC) for browsers and programs, through the gateway: the
//! tonic-web layer turns a gRPC-web call into gRPC, which is forwarded to the
//! service that owns it. Only the methods the contract routes are forwarded;
//! internal service-to-service methods answer `UNIMPLEMENTED` from outside.

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http::{self, HeaderName, header};
use futures::future::BoxFuture;
use tonic::{Status, body::Body, transport::Channel};
use tower::{Layer, Service};

use crate::state::AppState;

/// Forwards calls of the routed methods of one service (`service`, its full gRPC
/// name) to it.
#[derive(Clone)]
pub struct Forward {
    channel: Channel,
    methods: Arc<HashSet<&'static str>>,
}

impl Forward {
    pub fn new(channel: Channel, service: &str) -> Self {
        let methods = atelier_proto::access::METHODS
            .iter()
            .filter(|method| method.service() == service && method.routed())
            .map(|method| method.path)
            .collect();
        Self {
            channel,
            methods: Arc::new(methods),
        }
    }
}

/// Headers that belong to one HTTP/1 hop and are forbidden in HTTP/2.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    HeaderName::from_static("keep-alive"),
];

impl Service<http::Request<Body>> for Forward {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if !self.methods.contains(request.uri().path()) {
            return Box::pin(async {
                Ok(Status::unimplemented("no such public method").into_http())
            });
        }
        for name in &HOP_BY_HOP {
            request.headers_mut().remove(name);
        }
        let mut channel = self.channel.clone();
        Box::pin(async move {
            let forwarded = match tower::ServiceExt::ready(&mut channel).await {
                Ok(ready) => ready.call(request).await,
                Err(err) => Err(err),
            };
            match forwarded {
                Ok(response) => Ok(response.map(Body::new)),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot reach the service behind a grpc-web call");
                    Ok(Status::unavailable("service unavailable").into_http())
                }
            }
        })
    }
}

/// `router` with the gRPC-web (and gRPC) routes of every service added: each
/// serves the methods the contract routes (see [`atelier_proto::access`]); and
/// server reflection, so tools like grpcurl need no copy of the protos.
pub fn routes(
    router: axum::Router<AppState>,
    state: &AppState,
) -> anyhow::Result<axum::Router<AppState>> {
    use atelier_proto::{
        audit::v1::audit_service_server,
        auth::v1::auth_service_server,
        image::v1::image_service_server,
        operations::v1::operations_service_server,
        pipeline::v1::pipeline_service_server,
        processing::v1::processing_service_server,
        spend::v1::{analytics_service_server, spend_service_server},
        user::v1::user_service_server,
        webhook::v1::webhook_service_server,
        workflow::v1::workflow_service_server,
    };
    let router = [
        (auth_service_server::SERVICE_NAME, &state.auth_channel),
        (audit_service_server::SERVICE_NAME, &state.auth_channel),
        (image_service_server::SERVICE_NAME, &state.image),
        (workflow_service_server::SERVICE_NAME, &state.workflow),
        (processing_service_server::SERVICE_NAME, &state.processing),
        (operations_service_server::SERVICE_NAME, &state.processing),
        (webhook_service_server::SERVICE_NAME, &state.processing),
        (spend_service_server::SERVICE_NAME, &state.processing),
        (analytics_service_server::SERVICE_NAME, &state.processing),
        (pipeline_service_server::SERVICE_NAME, &state.processing),
        (user_service_server::SERVICE_NAME, &state.user),
    ]
    .into_iter()
    .fold(router, |router, (service, channel)| {
        router.route_service(
            &format!("/{service}/{{*method}}"),
            tonic_web::GrpcWebLayer::new().layer(Forward::new(channel.clone(), service)),
        )
    });
    let (v1, v1alpha) = atelier_common::grpc::reflection()?;
    Ok(router
        .route_service(
            "/grpc.reflection.v1.ServerReflection/{*method}",
            tonic_web::GrpcWebLayer::new().layer(v1),
        )
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            tonic_web::GrpcWebLayer::new().layer(v1alpha),
        ))
}
