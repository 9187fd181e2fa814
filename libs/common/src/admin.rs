//! The admin endpoint every target serves: `/metrics` (Prometheus), `/healthz`
//! (the process is alive) and `/readyz` (its dependencies answer).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Readiness: latched once start-up finished, then each named check must pass.
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency check run on every `/readyz`.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Marks start-up as finished.
    pub fn started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// `Ok` with the list of checks, or `Err` with the first failure.
    pub async fn probe(&self) -> Result<(), String> {
        if !self.started.load(Ordering::Acquire) {
            return Err("starting".into());
        }
        let results =
            futures::future::join_all(self.checks.iter().map(|(name, check)| async move {
                check().await.map_err(|err| format!("{name}: {err}"))
            }))
            .await;
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }
}

/// The admin routes, for a server of their own or merged into the gateway.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    match readiness.probe().await {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// Serves the admin routes until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
