//! The queue: requests, their lifecycle (`IN_QUEUE` → `IN_PROGRESS` → `COMPLETED`), the
//! dispatcher that starts them (normal priority before low, at most `max_concurrency` at
//! once, after the queue delay), injected failures, cancellation and webhooks.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::Ordering},
    time::Duration,
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Failures, INTERNAL_RETRIES, Knobs, SimConfig, Timing,
    catalogue::{self, Endpoint, Runner},
    error::{ApiError, Failure},
    files::Files,
    stats::Stats,
    tls::TlsMaterial,
    webhook::{self, Signer},
};

/// How long fetching an input may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `X-Fal-Queue-Priority`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    Normal,
    Low,
}

/// A submission the routes accepted, to queue.
pub(crate) struct Submission {
    pub endpoint: &'static Endpoint,
    /// The app part of the endpoint id (`owner/alias` or `namespace/owner/alias`).
    pub app: String,
    /// The base of the URLs handed out for this request.
    pub base_url: String,
    pub input: Value,
    pub webhook: Option<String>,
    pub priority: Priority,
    pub no_retry: bool,
    /// `X-Fal-Request-Timeout`: the request must start within this.
    pub start_timeout: Option<Duration>,
    /// `fal_max_queue_length`.
    pub max_queue_length: Option<usize>,
}

/// A queued submission.
pub(crate) struct Submitted {
    pub request_id: String,
    pub gateway_request_id: String,
    pub queue_position: usize,
}

/// What a status read shows.
pub(crate) struct StatusView {
    pub json: Value,
    pub completed: bool,
    /// How many log lines the request has, for the next incremental read.
    pub log_count: usize,
}

/// A request's result, as far as there is one.
pub(crate) enum ResultView {
    NotFound,
    Pending,
    Done(Result<Value, Failure>),
}

/// What a cancellation did.
pub(crate) enum Cancelled {
    Requested,
    AlreadyCompleted,
    NotFound,
}

enum Phase {
    Queued,
    Running { cancel: CancellationToken },
    Done(Result<Value, Failure>),
}

struct Record {
    gateway_id: String,
    endpoint: &'static Endpoint,
    app: String,
    base_url: String,
    input: Value,
    webhook: Option<String>,
    no_retry: bool,
    ready_at: Instant,
    start_by: Option<Instant>,
    phase: Phase,
    logs: Vec<Value>,
    inference_time: Option<f64>,
    /// Bumped on every change a status reader could see.
    changes: watch::Sender<u64>,
}

impl Record {
    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn response_url(&self, id: &str) -> String {
        format!("{}/{}/requests/{id}", self.base_url, self.app)
    }
}

#[derive(Default)]
struct Queue {
    requests: HashMap<String, Record>,
    normal: VecDeque<String>,
    low: VecDeque<String>,
    running: usize,
}

impl Queue {
    fn get(&self, app: &str, id: &str) -> Option<&Record> {
        self.requests.get(id).filter(|r| r.app == app)
    }

    fn queued(&self) -> impl Iterator<Item = &String> {
        self.normal.iter().chain(&self.low)
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.queued().position(|q| q == id)
    }

    fn remove_queued(&mut self, id: &str) {
        self.normal.retain(|q| q != id);
        self.low.retain(|q| q != id);
    }

    /// Tells every queued request's readers that positions changed.
    fn bump_queued(&self) {
        for id in self.queued() {
            if let Some(record) = self.requests.get(id) {
                record.bump();
            }
        }
    }
}

/// Everything the simulator's tasks share.
pub(crate) struct Shared {
    pub key: Option<String>,
    pub heartbeat: Duration,
    pub public_base_url: Option<String>,
    pub validate_at_submit: bool,
    pub scheme: &'static str,
    /// `scheme://host:port` of the listener, when a request carries no usable `Host`.
    pub local_base_url: String,
    pub ca_pem: Option<String>,
    pub signer: Signer,
    pub stats: Stats,
    pub files: Files,
    pub shutdown: CancellationToken,
    /// Fetches inputs and delivers webhooks; trusts the simulator's own CA.
    http: reqwest::Client,
    max_concurrency: usize,
    knobs: watch::Sender<Knobs>,
    queue: Mutex<Queue>,
    wake: Notify,
    rng: Mutex<StdRng>,
}

impl Shared {
    pub(crate) fn new(
        config: SimConfig,
        tls: Option<&TlsMaterial>,
        local_base_url: String,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .timeout(FETCH_TIMEOUT);
        if let Some(tls) = tls {
            http = http.add_root_certificate(reqwest::Certificate::from_der(&tls.ca_der)?);
        }
        let knobs = Knobs {
            failures: Failures::default(),
            timing: Timing {
                queue_delay: config.queue_delay,
                processing_time: config.processing_time,
            },
        };
        Ok(Arc::new(Self {
            key: config.key,
            heartbeat: config.heartbeat,
            public_base_url: config
                .public_base_url
                .map(|u| u.trim_end_matches('/').to_owned()),
            validate_at_submit: config.validate_at_submit,
            scheme: if tls.is_some() { "https" } else { "http" },
            local_base_url,
            ca_pem: tls.map(|t| t.ca_pem.clone()),
            signer: Signer::generate(config.webhook_user_id),
            stats: Stats::default(),
            files: Files::new()?,
            shutdown,
            http: http.build()?,
            max_concurrency: config.max_concurrency,
            knobs: watch::Sender::new(knobs),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
        }))
    }

    // -----------------------------------------------------------------------------------
    // Knobs

    pub(crate) fn knobs(&self) -> Knobs {
        self.knobs.borrow().clone()
    }

    pub(crate) fn set_failures(&self, failures: Failures) {
        tracing::info!(?failures, "fal simulator failures changed");
        self.knobs.send_modify(|k| k.failures = failures);
    }

    pub(crate) fn set_timing(&self, timing: Timing) {
        tracing::info!(?timing, "fal simulator timing changed");
        self.knobs.send_modify(|k| k.timing = timing);
        self.wake.notify_one();
    }

    pub(crate) fn in_outage(&self) -> bool {
        self.knobs
            .borrow()
            .failures
            .outage_until
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn random_seed(&self) -> u64 {
        lock(&self.rng).gen_range(0..=u64::from(u32::MAX))
    }

    // -----------------------------------------------------------------------------------
    // The queue API

    /// Queues a submission, or refuses it when the app's queue is at `fal_max_queue_length`.
    pub(crate) fn submit(&self, submission: Submission) -> Result<Submitted, ApiError> {
        let timing = self.knobs.borrow().timing;
        let now = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut queue = lock(&self.queue);
        if let Some(max) = submission.max_queue_length {
            let queued = queue
                .queued()
                .filter(|id| {
                    queue
                        .requests
                        .get(*id)
                        .is_some_and(|r| r.app == submission.app)
                })
                .count();
            if queued >= max {
                return Err(ApiError::detail(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Queue is full: {queued} requests are waiting (fal_max_queue_length={max})"
                    ),
                ));
            }
        }
        let record = Record {
            gateway_id: request_id.clone(),
            endpoint: submission.endpoint,
            app: submission.app,
            base_url: submission.base_url,
            input: submission.input,
            webhook: submission.webhook,
            no_retry: submission.no_retry,
            ready_at: now + timing.queue_delay,
            start_by: submission.start_timeout.map(|t| now + t),
            phase: Phase::Queued,
            logs: Vec::new(),
            inference_time: None,
            changes: watch::Sender::new(0),
        };
        self.stats
            .count_submission(record.endpoint.id, &record.input);
        tracing::info!(%request_id, endpoint = record.endpoint.id, "request queued");
        queue.requests.insert(request_id.clone(), record);
        match submission.priority {
            Priority::Normal => queue.normal.push_back(request_id.clone()),
            Priority::Low => queue.low.push_back(request_id.clone()),
        }
        let queue_position = queue.position(&request_id).unwrap_or(0);
        drop(queue);
        self.wake.notify_one();
        Ok(Submitted {
            gateway_request_id: request_id.clone(),
            request_id,
            queue_position,
        })
    }

    /// The request's status; `logs_since` skips the log lines already sent.
    pub(crate) fn status(
        &self,
        app: &str,
        id: &str,
        with_logs: bool,
        logs_since: usize,
    ) -> Option<StatusView> {
        let queue = lock(&self.queue);
        let record = queue.get(app, id)?;
        let logs = if with_logs {
            Value::Array(record.logs.iter().skip(logs_since).cloned().collect())
        } else {
            Value::Null
        };
        let mut json = json!({
            "request_id": id,
            "response_url": record.response_url(id),
            "logs": logs,
        });
        let completed = match &record.phase {
            Phase::Queued => {
                json["status"] = json!("IN_QUEUE");
                json["queue_position"] = json!(queue.position(id).unwrap_or(0));
                false
            }
            Phase::Running { .. } => {
                json["status"] = json!("IN_PROGRESS");
                false
            }
            Phase::Done(outcome) => {
                json["status"] = json!("COMPLETED");
                json["metrics"] = match record.inference_time {
                    Some(seconds) => json!({ "inference_time": seconds }),
                    None => json!({}),
                };
                if let Err(failure) = outcome {
                    json["error"] = json!(failure.message());
                    if let Some(error_type) = failure.error_type() {
                        json["error_type"] = json!(error_type);
                    }
                }
                true
            }
        };
        Some(StatusView {
            json,
            completed,
            log_count: record.logs.len(),
        })
    }

    /// Requests `IN_PROGRESS` now.
    pub(crate) fn running(&self) -> usize {
        lock(&self.queue).running
    }

    /// A receiver that sees every change of the request's status.
    pub(crate) fn subscribe(&self, app: &str, id: &str) -> Option<watch::Receiver<u64>> {
        lock(&self.queue)
            .get(app, id)
            .map(|r| r.changes.subscribe())
    }

    pub(crate) fn result(&self, app: &str, id: &str) -> ResultView {
        match lock(&self.queue).get(app, id) {
            None => ResultView::NotFound,
            Some(Record {
                phase: Phase::Done(outcome),
                ..
            }) => ResultView::Done(outcome.clone()),
            Some(_) => ResultView::Pending,
        }
    }

    /// Cancels a request: a queued one is dropped at once, a running one is signalled.
    pub(crate) fn cancel(self: &Arc<Self>, app: &str, id: &str) -> Cancelled {
        let mut queue = lock(&self.queue);
        let Some(record) = queue.get(app, id) else {
            return Cancelled::NotFound;
        };
        match &record.phase {
            Phase::Done(_) => return Cancelled::AlreadyCompleted,
            Phase::Running { cancel } => {
                tracing::info!(request_id = %id, "cancelling a running request");
                cancel.cancel();
            }
            Phase::Queued => {
                tracing::info!(request_id = %id, "cancelling a queued request");
                queue.remove_queued(id);
                queue.bump_queued();
                drop(queue);
                self.finish(id, Err(Failure::request("client_cancelled")), None);
            }
        }
        self.stats.cancellations.fetch_add(1, Ordering::SeqCst);
        Cancelled::Requested
    }

    // -----------------------------------------------------------------------------------
    // Running requests

    fn log(&self, id: &str, level: &str, message: &str) {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut queue = lock(&self.queue);
        if let Some(record) = queue.requests.get_mut(id) {
            record.logs.push(json!({
                "message": message,
                "level": level,
                "source": "USER",
                "timestamp": timestamp,
            }));
            record.bump();
        }
    }

    /// Starts what may start, times out what waited too long, and says when to look again.
    fn dispatch(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let mut queue = lock(&self.queue);
        let expired: Vec<String> = queue
            .queued()
            .filter(|id| {
                queue
                    .requests
                    .get(*id)
                    .and_then(|r| r.start_by)
                    .is_some_and(|t| t <= now)
            })
            .cloned()
            .collect();
        for id in &expired {
            queue.remove_queued(id);
        }
        let mut started = Vec::new();
        while queue.running < self.max_concurrency {
            let ready = queue
                .queued()
                .find(|id| queue.requests.get(*id).is_some_and(|r| r.ready_at <= now))
                .cloned();
            let Some(id) = ready else { break };
            queue.remove_queued(&id);
            let cancel = self.shutdown.child_token();
            if let Some(record) = queue.requests.get_mut(&id) {
                record.phase = Phase::Running {
                    cancel: cancel.clone(),
                };
                record.bump();
            }
            queue.running += 1;
            self.stats
                .peak_running
                .fetch_max(queue.running as u64, Ordering::SeqCst);
            started.push(id);
        }
        if !expired.is_empty() || !started.is_empty() {
            queue.bump_queued();
        }
        let next = queue
            .queued()
            .filter_map(|id| queue.requests.get(id))
            .flat_map(|r| [Some(r.ready_at).filter(|t| *t > now), r.start_by])
            .flatten()
            .min();
        drop(queue);

        for id in expired {
            tracing::info!(request_id = %id, "request timed out in the queue");
            let failure = Failure::Request {
                error_type: "request_timeout".to_owned(),
                detail: "Request timed out before processing started".to_owned(),
                user_timeout: true,
            };
            self.finish(&id, Err(failure), None);
        }
        for id in started {
            tokio::spawn(self.clone().run(id));
        }
        next
    }

    /// Runs a started request to its end, retrying retryable failures as fal does.
    async fn run(self: Arc<Self>, id: String) {
        let job = {
            let queue = lock(&self.queue);
            queue.requests.get(&id).and_then(|r| match &r.phase {
                Phase::Running { cancel } => Some((
                    r.endpoint,
                    r.input.clone(),
                    r.base_url.clone(),
                    r.no_retry,
                    cancel.clone(),
                )),
                _ => None,
            })
        };
        let Some((endpoint, input, base_url, no_retry, cancel)) = job else {
            return;
        };
        tracing::info!(request_id = %id, endpoint = endpoint.id, "request started");
        self.log(&id, "INFO", &format!("starting {}", endpoint.id));
        let started = Instant::now();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let outcome = tokio::select! {
                () = cancel.cancelled() => Err(Failure::request("client_cancelled")),
                outcome = self.attempt(&id, endpoint, &input, &base_url) => outcome,
            };
            match &outcome {
                Err(failure)
                    if failure.is_retryable()
                        && !no_retry
                        && attempt <= INTERNAL_RETRIES
                        && !cancel.is_cancelled() =>
                {
                    let error_type = failure.error_type().unwrap_or_default();
                    tracing::info!(request_id = %id, attempt, error_type, "retrying the request");
                    self.log(
                        &id,
                        "WARN",
                        &format!("attempt {attempt} failed with {error_type}, retrying"),
                    );
                    if let Some(record) = lock(&self.queue).requests.get_mut(&id) {
                        record.gateway_id = uuid::Uuid::new_v4().to_string();
                    }
                }
                _ => break outcome,
            }
        };
        let inference = outcome.is_ok().then(|| started.elapsed().as_secs_f64());
        self.finish(&id, outcome, inference);
    }

    /// One attempt at a request: an injected failure or the real operation, taking at
    /// least the processing time, and not ending while `hang` is set.
    async fn attempt(
        &self,
        id: &str,
        endpoint: &'static Endpoint,
        input: &Value,
        base_url: &str,
    ) -> Result<Value, Failure> {
        let knobs = self.knobs();
        let started = Instant::now();
        let rate = knobs.failures.error_rate;
        let inject = rate > 0.0 && lock(&self.rng).gen_bool(rate.clamp(0.0, 1.0));
        let outcome = if inject {
            let error_type = knobs
                .failures
                .error_type
                .as_deref()
                .unwrap_or("internal_error");
            tracing::info!(request_id = %id, error_type, "injecting a failure");
            Err(Failure::request(error_type))
        } else {
            match endpoint.read(input) {
                Err(errors) => Err(Failure::Model(errors)),
                Ok(spec) => {
                    let seed = spec.job.seed.unwrap_or_else(|| self.random_seed());
                    let log = |message: &str| self.log(id, "INFO", message);
                    let runner = Runner {
                        http: &self.http,
                        files: &self.files,
                        base_url,
                        log: &log,
                    };
                    catalogue::run(&runner, spec, seed).await
                }
            }
        };
        tokio::time::sleep_until(started + knobs.timing.processing_time).await;
        let mut knobs = self.knobs.subscribe();
        if knobs.borrow().failures.hang {
            tracing::info!(request_id = %id, "request hangs");
        }
        let _ = knobs.wait_for(|k| !k.failures.hang).await;
        outcome
    }

    /// Records a request's end, frees its slot and sends its webhook.
    fn finish(self: &Arc<Self>, id: &str, outcome: Result<Value, Failure>, inference: Option<f64>) {
        let webhook = {
            let mut queue = lock(&self.queue);
            let Some(record) = queue.requests.get_mut(id) else {
                return;
            };
            let was_running = matches!(record.phase, Phase::Running { .. });
            let timestamp = time::OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            let (level, message) = match &outcome {
                Ok(_) => ("INFO", "request completed".to_owned()),
                Err(failure) => ("ERROR", format!("request failed: {}", failure.message())),
            };
            record.logs.push(json!({
                "message": message,
                "level": level,
                "source": "USER",
                "timestamp": timestamp,
            }));
            let webhook = record.webhook.clone().map(|url| {
                let body = match &outcome {
                    Ok(payload) => webhook::body(id, &record.gateway_id, Ok(payload)),
                    Err(failure) => webhook::body(
                        id,
                        &record.gateway_id,
                        Err((&failure.message(), failure.body())),
                    ),
                };
                (url, body)
            });
            match &outcome {
                Ok(_) => tracing::info!(request_id = %id, "request completed"),
                Err(failure) => {
                    tracing::info!(request_id = %id, error = %failure.message(), "request failed");
                }
            }
            self.stats.count_end(outcome.is_ok());
            record.phase = Phase::Done(outcome);
            record.inference_time = inference;
            record.bump();
            if was_running {
                queue.running = queue.running.saturating_sub(1);
            }
            webhook
        };
        self.wake.notify_one();
        if let Some((url, body)) = webhook.filter(|_| !self.shutdown.is_cancelled()) {
            let shared = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let shutdown = shared.shutdown.clone();
                webhook::deliver(shared.http.clone(), &shared.signer, url, id, body, shutdown)
                    .await;
            });
        }
    }
}

/// Runs the dispatcher until shutdown.
pub(crate) fn spawn_dispatcher(shared: Arc<Shared>) {
    tokio::spawn(async move {
        loop {
            let next = shared.dispatch();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shared.shutdown.cancelled() => break,
                () = shared.wake.notified() => {}
                () = due => {}
            }
        }
    });
}
