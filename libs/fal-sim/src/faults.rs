//! Faults injected at run time, for chaos tests (`GET|PUT /_sim/faults`,
//! [`SimHandle::set_faults`](crate::SimHandle::set_faults)): an outage of fal as a whole,
//! answering 503 or refusing connections, added latency on every call, and a slow factor
//! on how long requests take.
//!
//! Every call to fal's surface (the queue API, result files, the platform API) passes
//! through [`guard`], which adds the latency and answers 503 during an outage, counting
//! each such call by kind (see [`Stats`](crate::stats::Stats)). A refusing outage closes
//! the listening socket and drops every open connection (see `server.rs`), so clients
//! see connections refused, as when fal's ingress is gone; those attempts never reach
//! the simulator and are not counted.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{Timing, error::ApiError, queue::Shared, stats::Call};

/// How fal is out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageKind {
    /// Every call answers 503 with an HTML page, as fal's ingress does.
    Unavailable,
    /// The port is closed and open connections are dropped: connections are refused.
    Refuse,
}

impl OutageKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Refuse => "refuse",
        }
    }
}

/// An outage and when it ends by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    pub kind: OutageKind,
    pub until: Instant,
}

/// The faults in force. The default injects none.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    pub outage: Option<Outage>,
    /// Added to every call to fal's surface before it is answered.
    pub latency: Duration,
    /// Requests queue and run this many times longer than the [`Timing`] in force when
    /// the factor was set (1: as set).
    pub slow_factor: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            outage: None,
            latency: Duration::ZERO,
            slow_factor: 1.0,
        }
    }
}

impl Faults {
    /// The outage in force now, if any.
    pub fn outage_now(&self) -> Option<OutageKind> {
        self.outage
            .filter(|outage| Instant::now() < outage.until)
            .map(|outage| outage.kind)
    }

    /// Until when connections are refused, if they are now.
    pub(crate) fn refusing_until(&self) -> Option<Instant> {
        self.outage
            .filter(|outage| outage.kind == OutageKind::Refuse && Instant::now() < outage.until)
            .map(|outage| outage.until)
    }
}

/// The faults in force and what changing them needs.
pub(crate) struct Injector {
    faults: watch::Sender<Faults>,
    /// The timing before a slow factor other than 1 was set.
    base_timing: Mutex<Option<Timing>>,
}

impl Injector {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            faults: watch::Sender::new(Faults::default()),
            base_timing: Mutex::new(None),
        })
    }

    pub(crate) fn current(&self) -> Faults {
        self.faults.borrow().clone()
    }

    /// Sees every change of the faults (the accept loop waits on it).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Faults> {
        self.faults.subscribe()
    }

    /// Replaces the faults in force; a new slow factor rescales the simulator's timing.
    pub(crate) fn set(&self, shared: &Shared, faults: Faults) {
        {
            let mut base = self
                .base_timing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if faults.slow_factor == 1.0 {
                if let Some(timing) = base.take() {
                    shared.set_timing(timing);
                }
            } else {
                let timing = *base.get_or_insert_with(|| shared.knobs().timing);
                shared.set_timing(Timing {
                    queue_delay: timing.queue_delay.mul_f64(faults.slow_factor),
                    processing_time: timing.processing_time.mul_f64(faults.slow_factor),
                });
            }
        }
        tracing::info!(?faults, "fal simulator faults changed");
        self.faults.send_replace(faults);
    }
}

/// `router` behind [`guard`], with `GET|PUT /_sim/faults` added.
pub(crate) fn wrap(router: Router, shared: Arc<Shared>, injector: Arc<Injector>) -> Router {
    let state = (shared, injector);
    router
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .merge(
            Router::new()
                .route(
                    "/_sim/faults",
                    axum::routing::get(get_faults).put(put_faults),
                )
                .with_state(state),
        )
}

/// Which call to fal's surface a request is; `None` for the simulator's own routes
/// (`/_sim/...`, `/healthz`, the JWKS), which faults never touch.
fn call_of(method: &Method, path: &str) -> Option<Call> {
    if path.starts_with("/_sim/") || path == "/healthz" || path.starts_with("/.well-known/") {
        return None;
    }
    if path.starts_with("/files/") {
        return Some(Call::File);
    }
    if path.starts_with("/v1/") {
        return Some(Call::Platform);
    }
    Some(match *method {
        Method::POST => Call::Submit,
        Method::PUT => Call::Cancel,
        _ if path.ends_with("/status") || path.ends_with("/status/stream") => Call::Status,
        _ => Call::Result,
    })
}

/// The layer every route runs behind: latency, then the outage (the fault's, or the
/// one [`Failures::outage_until`](crate::Failures::outage_until) sets), counted.
pub(crate) async fn guard(
    State((shared, injector)): State<(Arc<Shared>, Arc<Injector>)>,
    request: Request,
    next: Next,
) -> Response {
    let Some(call) = call_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let faults = injector.current();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.outage_now().is_some() || shared.in_outage() {
        shared.stats.count_outage_call(call);
        return ApiError::Outage.into_response();
    }
    next.run(request).await
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn faults_json(faults: &Faults) -> Value {
    let outage = faults.outage.filter(|outage| Instant::now() < outage.until);
    json!({
        "outage": outage.map(|o| o.kind.as_str()),
        "outage_ms": outage.map_or(0, |o| millis(o.until.saturating_duration_since(Instant::now()))),
        "latency_ms": millis(faults.latency),
        "slow_factor": faults.slow_factor,
    })
}

/// `PUT /_sim/faults`: replaces every fault (a field left out is off).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsInput {
    #[serde(default)]
    outage: Option<OutageKind>,
    #[serde(default)]
    outage_ms: u64,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default = "one")]
    slow_factor: f64,
}

fn one() -> f64 {
    1.0
}

pub(crate) async fn get_faults(
    State((_, injector)): State<(Arc<Shared>, Arc<Injector>)>,
) -> Json<Value> {
    Json(faults_json(&injector.current()))
}

pub(crate) async fn put_faults(
    State((shared, injector)): State<(Arc<Shared>, Arc<Injector>)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let invalid = |detail: String| ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, detail);
    let input: FaultsInput =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("invalid faults: {e}")))?;
    if !(input.slow_factor > 0.0 && input.slow_factor <= 1000.0) {
        return Err(invalid(
            "slow_factor must be above 0 and at most 1000".to_owned(),
        ));
    }
    let outage = match (input.outage, input.outage_ms) {
        (None, _) => None,
        (Some(_), 0) => {
            return Err(invalid(
                "an outage needs outage_ms, how long it lasts".to_owned(),
            ));
        }
        (Some(kind), ms) => Some(Outage {
            kind,
            until: Instant::now() + Duration::from_millis(ms),
        }),
    };
    injector.set(
        &shared,
        Faults {
            outage,
            latency: Duration::from_millis(input.latency_ms),
            slow_factor: input.slow_factor,
        },
    );
    Ok(Json(faults_json(&injector.current())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_told_apart_and_the_simulators_own_routes_left_alone() {
        let call = |method: Method, path: &str| call_of(&method, path);
        assert_eq!(call(Method::POST, "/fal-ai/esrgan"), Some(Call::Submit));
        assert_eq!(
            call(Method::GET, "/fal-ai/esrgan/requests/x/status"),
            Some(Call::Status)
        );
        assert_eq!(
            call(Method::GET, "/fal-ai/esrgan/requests/x/status/stream"),
            Some(Call::Status)
        );
        assert_eq!(
            call(Method::GET, "/fal-ai/esrgan/requests/x"),
            Some(Call::Result)
        );
        assert_eq!(
            call(Method::PUT, "/fal-ai/esrgan/requests/x/cancel"),
            Some(Call::Cancel)
        );
        assert_eq!(call(Method::GET, "/files/a.png"), Some(Call::File));
        assert_eq!(
            call(Method::GET, "/v1/models/pricing"),
            Some(Call::Platform)
        );
        assert_eq!(call(Method::GET, "/_sim/stats"), None);
        assert_eq!(call(Method::PUT, "/_sim/faults"), None);
        assert_eq!(call(Method::GET, "/healthz"), None);
        assert_eq!(call(Method::GET, "/.well-known/jwks.json"), None);
    }

    #[test]
    fn an_outage_ends_by_itself() {
        let past = Faults {
            outage: Some(Outage {
                kind: OutageKind::Refuse,
                until: Instant::now() - Duration::from_millis(1),
            }),
            ..Faults::default()
        };
        assert_eq!(past.outage_now(), None);
        assert_eq!(past.refusing_until(), None);
        let now = Faults {
            outage: Some(Outage {
                kind: OutageKind::Refuse,
                until: Instant::now() + Duration::from_secs(60),
            }),
            ..Faults::default()
        };
        assert_eq!(now.outage_now(), Some(OutageKind::Refuse));
        assert!(now.refusing_until().is_some());
    }
}
