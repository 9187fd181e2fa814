//! A fal.ai-compatible queue server that runs the workflow catalogue locally, on real
//! images: `make run` processes images end to end with no network, and tests use it as
//! the fal they talk to.
//!
//! It speaks fal's queue protocol as `/work/shared/fal-protocol.md` sets it down (submit,
//! status, the status stream, result, cancel, signed webhooks, fal's error shapes), with
//! the platform API's prices and models (`/v1/models/pricing`, and `/v1/models` whose
//! OpenAPI documents describe each endpoint's input as the simulator reads it), and the
//! official clients work against it: the Python `fal-client` does, given
//! `FAL_QUEUE_RUN_HOST=127.0.0.1:PORT`, when the simulator serves HTTPS (`tls: true`).
//!
//! Each catalogue endpoint fetches its `image_url` (an http(s) URL, loopback included, or a
//! `data:` URI), runs an image operation with the `image` crate and serves the result from
//! `/files/` (see [the catalogue](crate#the-catalogue)).
//!
//! Besides fal's routes it serves:
//! - `GET /.well-known/jwks.json`: the public key its webhooks are signed with;
//! - `GET /healthz`;
//! - `GET /_sim/stats`: `{"submissions", "by_endpoint", "cancellations",
//!   "distinct_inputs", "repeated_submissions", "completed", "failed", "outage_calls"}`:
//!   accepted submissions; how many distinct (endpoint, input) pairs were submitted and
//!   how many submissions repeated one (URLs are compared without their query string, so
//!   an input URL signed anew still counts as the same input); requests that ended with
//!   an output or an error; and calls answered 503 during an outage, by kind (`submit`,
//!   `status`, `result`, `cancel`, `file`, `platform`); also `running` and `peak_running`:
//!   requests `IN_PROGRESS` now and at most so far (never above `max_concurrency`);
//! - `GET|PUT /_sim/knobs`: the [`Failures`] and [`Timing`] in force, as JSON (see
//!   [`Knobs`]);
//! - `GET|PUT /_sim/faults`: the [`Faults`] in force, for chaos tests:
//!   `{"outage": "unavailable"|"refuse"|null, "outage_ms", "latency_ms", "slow_factor"}`.
//!   An `unavailable` outage answers every call to fal's surface 503 (as fal's ingress
//!   does) for `outage_ms`; a `refuse` outage closes the port and drops open connections
//!   for that long. `latency_ms` delays every call; `slow_factor` makes requests queue
//!   and run that many times longer than the timing in force when it was set. A `PUT`
//!   replaces every fault (a field left out is off). The `/_sim/` routes, `/healthz` and
//!   the JWKS are never faulted.
//!
//! # The catalogue
//! | endpoint | does | output |
//! |---|---|---|
//! | `fal-ai/clarity-upscaler` | Lanczos upscale by `upscale_factor` (2) and a mild sharpen | `{image, seed, timings}` |
//! | `fal-ai/esrgan` | Lanczos upscale by `scale` (2), `output_format` png or jpeg | `{image}` |
//! | `fal-ai/aura-sr` | Lanczos upscale by `upscale_factor` (4) | `{image, timings}` |
//! | `fal-ai/birefnet` | background removal (see below), `output_mask` adds `mask_image` | `{image, mask_image?}` |
//! | `fal-ai/imageutils/rembg` | the same background removal, `crop_to_bbox` | `{image}` |
//! | `fal-ai/flux/dev/image-to-image` | a filter picked from words in `prompt`, blended by `strength`, `num_images` variants | `{images, seed, prompt, has_nsfw_concepts, timings}` |
//! | `fal-ai/image-preprocessors/canny` | Canny edges (`low_threshold`, `high_threshold`) | `{image}` |
//! | `fal-ai/imageutils/depth` | pseudo-depth: blurred, stretched luminance | `{image}` |
//! | `fal-ai/image-preprocessors/lineart` | dark lines on white: inverted edges | `{image}` |
//! | `workflows/atelier/upscale-cutout` | upscale by `scale` (2), then background removal | `{image}` |
//!
//! Background removal estimates the background colour from the border pixels, floods the
//! pixels close to it from the border inwards and makes them transparent, with a soft edge.
//!
//! # Where it differs from fal on purpose
//! - As on fal, a submission is queued whatever its input, and a bad input makes the
//!   *request* fail: it completes with `error: "Invalid status code: 422"` and no
//!   `error_type` (model errors are typed in their `detail` list), its result answers 422
//!   with fal's `detail` list and its webhook says `ERROR`. An input image that cannot be
//!   fetched or decoded, or is too large (50 MB, 100 megapixels), fails the same way. With
//!   [`SimConfig::validate_at_submit`] the submission itself answers 422 instead.
//! - fal retries a request itself after a retryable runner error (503, 504, 429) unless it
//!   was sent with `X-Fal-No-Retry: 1`; the simulator does so [`INTERNAL_RETRIES`] times,
//!   each attempt with a new `gateway_request_id`.
//! - A cancelled request completes with `error_type: client_cancelled` (its result answers
//!   499) rather than vanishing, so pollers learn that it ended.
//! - Requests are kept in memory, and result files in a temp directory, for the
//!   simulator's lifetime.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod catalogue;
mod error;
mod faults;
mod files;
mod imaging;
mod input;
mod params;
mod queue;
mod routes;
mod server;
mod stats;
mod tls;
mod webhook;

pub use faults::{Faults, Outage, OutageKind};
pub use webhook::WEBHOOK_USER_ID;

/// How many times the simulator retries a request itself after a retryable runner error,
/// as fal does unless the submission carried `X-Fal-No-Retry: 1`.
pub const INTERNAL_RETRIES: u32 = 2;

/// How the simulator is set up at start. [`Default`] suits tests and `make run`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The API key clients must send (`Authorization: Key <key>`). `None` accepts any
    /// non-empty key.
    pub key: Option<String>,
    /// How long a request waits in the queue before it may start (changeable at run time,
    /// see [`Timing`]).
    pub queue_delay: Duration,
    /// The least time a request takes once it started (changeable at run time).
    pub processing_time: Duration,
    /// The account's concurrency limit, as fal has one: how many requests run
    /// (`IN_PROGRESS`) at once. Only running requests count: a submission is never
    /// refused for it, it waits `IN_QUEUE` with a `queue_position` and starts when a
    /// slot frees (`FAL_SIM_MAX_CONCURRENCY` for `atelier fal-sim` and the embedded
    /// simulator; 10).
    pub max_concurrency: usize,
    /// How often the status stream sends a comment line while nothing changes (fal: 15 s).
    pub heartbeat: Duration,
    /// The base of the URLs the simulator hands out (`response_url`, result file URLs),
    /// e.g. `http://fal-sim:8085`. `None` builds them from the `Host` each request came in
    /// on.
    pub public_base_url: Option<String>,
    /// Serve HTTPS with a certificate made at start (see [`SimHandle::tls_certificate_pem`]).
    pub tls: bool,
    /// Check a submission's input at once and answer 422 rather than queueing it (fal
    /// queues it and fails the request).
    pub validate_at_submit: bool,
    /// Seeds the randomness: injected failures and the seeds of models called without one.
    pub seed: u64,
    /// The fal user the simulator's webhooks are signed for (`X-Fal-Webhook-User-Id`):
    /// the platform's `FAL_USER_ID`, which it pins webhooks to.
    pub webhook_user_id: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            key: None,
            queue_delay: Duration::ZERO,
            processing_time: Duration::from_millis(200),
            max_concurrency: 10,
            heartbeat: Duration::from_secs(15),
            public_base_url: None,
            tls: false,
            validate_at_submit: false,
            seed: 0,
            webhook_user_id: WEBHOOK_USER_ID.to_owned(),
        }
    }
}

/// Failures to inject, changeable while the simulator runs ([`SimHandle::set_failures`],
/// `PUT /_sim/knobs`). The default injects none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Failures {
    /// The share of requests (0 to 1) that fail while running, drawn from the seeded RNG.
    pub error_rate: f64,
    /// The fal `error_type` of injected failures (default `internal_error`): it picks the
    /// HTTP status, e.g. `runner_scheduling_failure` → 503, `request_timeout` → 504,
    /// `internal_error` → 500, `bad_request` → 400. It also types `submit_status` failures.
    pub error_type: Option<String>,
    /// Make every submission fail with this HTTP status (e.g. 429 or 503), with fal's
    /// `X-Fal-Error-Type` and, when retryable, `X-Fal-Needs-Retry: 1`. Nothing is queued.
    pub submit_status: Option<u16>,
    /// Requests that start never complete while this is set (they do once it is cleared,
    /// and can still be cancelled).
    pub hang: bool,
    /// Until then every call to the queue API and `/files/` answers 503, as fal's ingress
    /// does (an HTML body, no fal headers).
    pub outage_until: Option<Instant>,
    /// Answer submissions this much later (the submission is queued first, as a slow fal
    /// would).
    pub submit_delay: Duration,
}

/// Timing knobs changeable while the simulator runs ([`SimHandle::set_timing`]); they
/// start as [`SimConfig::queue_delay`] and [`SimConfig::processing_time`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a request waits in the queue before it may start.
    pub queue_delay: Duration,
    /// The least time a request takes once it started.
    pub processing_time: Duration,
}

/// Everything changeable at run time: what `GET /_sim/knobs` shows. `PUT /_sim/knobs`
/// takes `{"error_rate", "error_type", "submit_status", "hang", "outage_ms",
/// "submit_delay_ms", "queue_delay_ms", "processing_time_ms"}`: the failure fields replace
/// the [`Failures`] in force (a field left out is off), the timing fields change only when
/// given.
#[derive(Clone, Debug, PartialEq)]
pub struct Knobs {
    /// The failures injected.
    pub failures: Failures,
    /// The queue and processing times.
    pub timing: Timing,
}

/// A running simulator: where it listens and what it has seen. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<queue::Shared>,
    injector: Arc<faults::Injector>,
    base_url: String,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Starts the simulator on `listener` and returns once it accepts connections. It runs
/// until `shutdown` is cancelled; requests in flight are then dropped.
pub async fn start(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<SimHandle> {
    anyhow::ensure!(
        config.max_concurrency > 0,
        "max_concurrency must be at least 1"
    );
    if let Some(url) = &config.public_base_url {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "public_base_url must be an http(s) URL, got {url:?}"
        );
    }
    let local_addr = listener
        .local_addr()
        .context("reading the listener address")?;
    let tls = if config.tls {
        Some(tls::TlsMaterial::generate().context("making the TLS certificate")?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = match local_addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        addr => addr.to_string(),
    };
    let base_url = format!("{scheme}://{host}");

    let shared = queue::Shared::new(config, tls.as_ref(), base_url.clone(), shutdown.clone())
        .context("setting up the simulator")?;
    queue::spawn_dispatcher(shared.clone());
    let injector = faults::Injector::new();
    let router = faults::wrap(
        routes::router(shared.clone()),
        shared.clone(),
        injector.clone(),
    );
    server::spawn(
        listener,
        tls.map(|t| t.server_config),
        router,
        shutdown.clone(),
        injector.clone(),
    );
    tracing::info!(%base_url, "fal simulator listening");
    Ok(SimHandle {
        shared,
        injector,
        base_url,
        local_addr,
    })
}

impl SimHandle {
    /// Where the simulator listens, e.g. `http://127.0.0.1:PORT` (`https://` with TLS): the
    /// queue base URL for clients.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The JWKS with the key webhooks are signed with.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.base_url)
    }

    /// How many submissions were accepted (given a request id), all endpoints together.
    pub fn submissions(&self) -> u64 {
        self.shared.stats.submissions()
    }

    /// How many submissions to exactly this endpoint id were accepted.
    pub fn submissions_to(&self, endpoint_id: &str) -> u64 {
        self.shared.stats.submissions_to(endpoint_id)
    }

    /// Accepted submissions by endpoint id.
    pub fn submissions_by_endpoint(&self) -> BTreeMap<String, u64> {
        self.shared.stats.by_endpoint()
    }

    /// How many cancellations were accepted (answered 202).
    pub fn cancellations(&self) -> u64 {
        self.shared.stats.cancellations()
    }

    /// How many submissions repeated an endpoint and input submitted before (URLs
    /// compared without their query string, see `GET /_sim/stats`).
    pub fn repeated_submissions(&self) -> u64 {
        self.shared.stats.repeated()
    }

    /// How many requests ended with an output.
    pub fn completed(&self) -> u64 {
        self.shared.stats.completed()
    }

    /// How many requests ended with an error, cancellations and timeouts included.
    pub fn failed(&self) -> u64 {
        self.shared.stats.failed()
    }

    /// How many calls were answered 503 because of an outage.
    pub fn outage_calls(&self) -> u64 {
        self.shared.stats.outage_calls()
    }

    /// Requests running (`IN_PROGRESS`) now.
    pub fn running(&self) -> usize {
        self.shared.running()
    }

    /// The most requests that ever ran at once: never above
    /// [`SimConfig::max_concurrency`].
    pub fn peak_running(&self) -> u64 {
        self.shared.stats.peak_running()
    }

    /// Replaces the faults injected from now on (see [`Faults`]).
    pub fn set_faults(&self, faults: Faults) {
        self.injector.set(&self.shared, faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.injector.current()
    }

    /// Replaces the failures injected from now on.
    pub fn set_failures(&self, failures: Failures) {
        self.shared.set_failures(failures);
    }

    /// Changes the queue and processing times of requests from now on.
    pub fn set_timing(&self, timing: Timing) {
        self.shared.set_timing(timing);
    }

    /// Appends `trailer` to every result file made from now on (after the image's
    /// own end, where decoders do not look), as a compromised model or CDN might;
    /// `None` stops. For tests of what the platform does with such results.
    pub fn set_result_trailer(&self, trailer: Option<Vec<u8>>) {
        self.shared
            .files
            .set_trailer(trailer.map(bytes::Bytes::from));
    }

    /// The knobs in force.
    pub fn knobs(&self) -> Knobs {
        self.shared.knobs()
    }

    /// With TLS, the certificate clients should trust, PEM-encoded: the simulator's own
    /// CA, made at start, which signed the server certificate (SANs `localhost`,
    /// `127.0.0.1` and `::1`).
    pub fn tls_certificate_pem(&self) -> Option<String> {
        self.shared.ca_pem.clone()
    }

    /// The public half of the Ed25519 key webhooks are signed with.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.signer.public_key()
    }
}
