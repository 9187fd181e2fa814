//! gRPC-web (and plain gRPC) for browsers and programs, through the gateway: the
//! tonic-web layer turns a gRPC-web call into gRPC, which is forwarded to the
//! service that owns it. Only the public methods are forwarded; internal
//! service-to-service methods answer `UNIMPLEMENTED` from outside.

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http::{self, HeaderName, header};
use futures::future::BoxFuture;
use tonic::{Status, body::Body, transport::Channel};
use tower::Service;

/// Forwards calls of a set of public methods to one service.
#[derive(Clone)]
pub struct Forward {
    channel: Channel,
    methods: Arc<HashSet<String>>,
}

impl Forward {
    /// `service` is the full gRPC service name; `methods` its public methods.
    pub fn new(channel: Channel, service: &str, methods: &[&str]) -> Self {
        Self {
            channel,
            methods: Arc::new(
                methods
                    .iter()
                    .map(|method| format!("/{service}/{method}"))
                    .collect(),
            ),
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
