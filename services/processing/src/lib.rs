//! The processing service: the job queue, fal dispatch and live events.
//!
//! This crate so far runs the service's gRPC server with health and reflection,
//! so every target of the binary starts and reports readiness; the RPCs of
//! `proto/atelier/processing/v1` are added with the capability that owns them.

use atelier_common::grpc::GrpcServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the processing service on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    GrpcServer::new("processing")
        .serve(listener, shutdown)
        .await
}
