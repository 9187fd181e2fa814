//! The queue API client: submit, status (polled or streamed), result, cancel.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::{RequestBuilder, Url, redirect};
use tokio_retry::RetryIf;

use crate::{
    breaker::{BreakerState, Breakers},
    config::FalConfig,
    download::AllowEntry,
    endpoint::{EndpointId, join},
    error::{FalError, classify},
    retry,
    sse::SseParser,
    types::{
        CancelOutcome, Price, QueueStatus, RequestStatus, SubmitOptions, Submitted, WireModels,
        WirePrices, WireSubmitted,
    },
};

/// Request URLs remembered from submit replies, at most this many.
const MAX_REMEMBERED: usize = 10_000;

/// Atelier's client for fal's queue API. Cheap to clone; clones share the HTTP
/// connection pool, the circuit breakers and the remembered request URLs.
///
/// Every call goes through the circuit breaker of its host and is retried on
/// transient failures (see [`FalError::is_transient`]); validation and other
/// permanent errors are returned at once.
#[derive(Clone)]
pub struct FalClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: FalConfig,
    base: Url,
    api: Url,
    http: reqwest::Client,
    pub(crate) allow: Vec<AllowEntry>,
    pub(crate) breakers: Breakers,
    urls: Mutex<HashMap<String, RequestUrls>>,
}

/// The URLs of one request, from its submit reply.
#[derive(Clone, Debug)]
struct RequestUrls {
    response: Url,
    status: Url,
    cancel: Url,
}

/// A failed attempt, and whether fal may have received the request anyway (a
/// timeout after sending): such a submission is not retried, so as not to run it
/// twice.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: FalError,
    pub(crate) maybe_sent: bool,
}

impl From<FalError> for Failure {
    fn from(error: FalError) -> Self {
        Self {
            error,
            maybe_sent: false,
        }
    }
}

impl std::fmt::Debug for FalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FalClient")
            .field("queue_url", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

impl FalClient {
    /// A client for `config` (checked with [`FalConfig::validate`]).
    pub fn new(config: FalConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let base = Url::parse(&config.queue_url)
            .with_context(|| format!("FAL_QUEUE_URL {:?} is not a url", config.queue_url))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            anyhow::bail!("FAL_QUEUE_URL must be an http(s) url with a host");
        }
        let api = Url::parse(&config.api_url)
            .with_context(|| format!("FAL_API_URL {:?} is not a url", config.api_url))?;
        if !matches!(api.scheme(), "http" | "https") || api.host_str().is_none() {
            anyhow::bail!("FAL_API_URL must be an http(s) url with a host");
        }
        let mut auth = HeaderValue::from_str(&format!("Key {}", config.key))
            .context("the fal key holds characters a header cannot")?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("atelier-fal/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.http_timeout)
            .redirect(redirect::Policy::none())
            .build()
            .context("building the fal http client")?;
        let allow = config
            .allowed_result_hosts
            .iter()
            .map(|entry| AllowEntry::parse(entry))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                breakers: Breakers::new(config.breaker.clone()),
                config,
                base,
                api,
                http,
                allow,
                urls: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings the client runs with.
    pub fn config(&self) -> &FalConfig {
        &self.inner.config
    }

    /// The state of the circuit breaker for `host`, as URLs name it (`queue.fal.run`,
    /// or `127.0.0.1:4010` with a non-default port). Closed for a host not yet called.
    pub fn breaker_state(&self, host: &str) -> BreakerState {
        self.inner.breakers.state(host)
    }

    /// The breaker state of every host called so far, sorted by host (for a health
    /// detail).
    pub fn breaker_states(&self) -> Vec<(String, BreakerState)> {
        self.inner.breakers.states()
    }

    /// The breaker key of the queue host (what [`FalClient::breaker_state`] takes).
    pub fn queue_host(&self) -> String {
        host_key(&self.inner.base)
    }

    /// Submits `input` to `endpoint`'s queue.
    ///
    /// Retried when fal refused it transiently (503, 504, ...) or the connection
    /// failed, but not after a timeout once the request may have been sent: fal
    /// could have queued it, and a second submission would run (and bill) it twice.
    /// A 429 ([`FalError::is_throttled`]) is returned at once: the caller backs off
    /// for every worker (the queue's bound), which retrying here would not.
    pub async fn submit(
        &self,
        endpoint: &EndpointId,
        input: &serde_json::Value,
        options: &SubmitOptions,
    ) -> Result<Submitted, FalError> {
        let mut url = endpoint.submit_url(&self.inner.base);
        if let Some(webhook) = &options.webhook_url {
            url.query_pairs_mut().append_pair("fal_webhook", webhook);
        }
        let body = Bytes::from(
            serde_json::to_vec(input)
                .map_err(|err| FalError::Protocol(format!("input is not json: {err}")))?,
        );
        let host = host_key(&url);
        let submitted = self
            .with_retry(&host, "submit", false, || {
                self.submit_once(endpoint, &url, body.clone(), options)
            })
            .await?;
        tracing::debug!(
            endpoint = %endpoint,
            request_id = %submitted.request_id,
            queue_position = ?submitted.queue_position,
            "submitted to fal"
        );
        Ok(submitted)
    }

    async fn submit_once(
        &self,
        endpoint: &EndpointId,
        url: &Url,
        body: Bytes,
        options: &SubmitOptions,
    ) -> Result<Submitted, Failure> {
        let mut request = self.inner.http.post(url.clone()).body(body);
        if let Some(timeout) = self.inner.config.request_timeout {
            request = request.header("x-fal-request-timeout", timeout.as_secs().to_string());
        }
        if let Some(priority) = options.priority {
            request = request.header("x-fal-queue-priority", priority.as_str());
        }
        if options.no_retry {
            request = request.header("x-fal-no-retry", "1");
        }
        let (status, headers, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(classify(status, &headers, &body).into());
        }
        let wire: WireSubmitted = serde_json::from_slice(&body)
            .map_err(|err| FalError::Protocol(format!("submit reply is not valid json: {err}")))?;
        let request_id = wire
            .request_id
            .filter(|id| valid_request_id(id))
            .ok_or_else(|| FalError::Protocol("submit reply has no request_id".into()))?;
        let urls = RequestUrls {
            response: self
                .same_origin(wire.response_url.as_deref())
                .unwrap_or_else(|| endpoint.request_url(&self.inner.base, &request_id)),
            status: self
                .same_origin(wire.status_url.as_deref())
                .unwrap_or_else(|| endpoint.status_url(&self.inner.base, &request_id)),
            cancel: self
                .same_origin(wire.cancel_url.as_deref())
                .unwrap_or_else(|| endpoint.cancel_url(&self.inner.base, &request_id)),
        };
        self.remember(&request_id, urls.clone());
        Ok(Submitted {
            request_id,
            response_url: urls.response.into(),
            status_url: urls.status.into(),
            cancel_url: urls.cancel.into(),
            queue_position: wire.queue_position,
            gateway_request_id: wire.gateway_request_id,
        })
    }

    /// The request's status. `logs` asks fal to include the request's logs so far.
    /// Answers 200 and 202 carry a status; any other is an error, and a status value
    /// other than `IN_QUEUE`, `IN_PROGRESS` or `COMPLETED` is [`FalError::Protocol`].
    pub async fn status(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
        logs: bool,
    ) -> Result<RequestStatus, FalError> {
        let mut url = self.urls(endpoint, request_id)?.status;
        url.set_query(None);
        url.query_pairs_mut()
            .append_pair("logs", if logs { "1" } else { "0" });
        let host = host_key(&url);
        self.with_retry(&host, "status", true, || self.status_once(&url))
            .await
    }

    async fn status_once(&self, url: &Url) -> Result<RequestStatus, Failure> {
        let (status, headers, body) = self.send(self.inner.http.get(url.clone())).await?;
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => Ok(RequestStatus::from_json(&body)?),
            _ => Err(classify(status, &headers, &body).into()),
        }
    }

    /// Follows the request's status over fal's event stream
    /// (`.../status/stream?logs=1`): one item per event, logs incremental, ending
    /// after `COMPLETED`. An error ends the stream: a refused connection, a stream
    /// silent (not even a keep-alive) for `stream_idle_timeout`, or one that closes
    /// before `COMPLETED` (both [`FalError::Transient`]: fall back to polling).
    pub fn status_stream(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> impl Stream<Item = Result<RequestStatus, FalError>> + Send + 'static {
        let start = match self.urls(endpoint, request_id) {
            Ok(urls) => {
                let mut url = join(&urls.status, ["stream"]);
                url.query_pairs_mut().append_pair("logs", "1");
                StreamState::Connect(self.clone(), url)
            }
            Err(err) => StreamState::Failed(err),
        };
        stream::unfold(start, |state| async move { state.next().await })
    }

    async fn open_stream(&self, url: &Url) -> Result<ByteStream, Failure> {
        let host = host_key(url);
        let timeout = self.inner.config.http_timeout;
        self.guarded(&host, "status_stream", async {
            let request = self
                .inner
                .http
                .get(url.clone())
                .header(header::ACCEPT, "text/event-stream");
            let response = tokio::time::timeout(timeout, request.send())
                .await
                .map_err(|_| Failure {
                    error: FalError::transient("status stream timed out"),
                    maybe_sent: true,
                })?
                .map_err(transport_failure)?;
            let status = response.status();
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
                return Err(classify(status, &headers, &body).into());
            }
            Ok(response.bytes_stream().boxed())
        })
        .await
    }

    /// Polls the request's status until it is `COMPLETED`, calling `on_status` with
    /// every status seen. Polls every `poll_interval` at first, half as long again
    /// each time nothing changed, up to `poll_interval_max`; a change starts over.
    ///
    /// Returns the final status, or [`FalError::RequestFailed`] when the request
    /// completed with an error. Errors of a poll (after its retries) are returned:
    /// the caller decides whether to watch again later.
    pub async fn wait(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
        mut on_status: impl FnMut(&RequestStatus),
    ) -> Result<RequestStatus, FalError> {
        let config = &self.inner.config;
        let mut delay = config.poll_interval;
        let mut last: Option<(QueueStatus, Option<u32>)> = None;
        loop {
            let status = self.status(endpoint, request_id, false).await?;
            on_status(&status);
            if status.is_completed() {
                return match status.error {
                    Some(error) => Err(FalError::RequestFailed {
                        error,
                        error_type: status.error_type,
                    }),
                    None => Ok(status),
                };
            }
            let seen = Some((status.status, status.queue_position));
            if seen == last {
                delay = delay.mul_f64(1.5).min(config.poll_interval_max);
            } else {
                delay = config.poll_interval;
                last = seen;
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The request's output. [`FalError::NotReady`] while it is still queued or
    /// running (fal answers it with something other than 200); a request that failed
    /// on its input answers [`FalError::Validation`].
    pub async fn result(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<serde_json::Value, FalError> {
        let url = self.urls(endpoint, request_id)?.response;
        let host = host_key(&url);
        let outcome = self
            .with_retry(&host, "result", true, || self.result_once(&url))
            .await;
        match outcome {
            // Newer fal docs read results at `.../requests/{id}/response`.
            Err(FalError::Permanent {
                status: 404 | 405, ..
            }) => {
                let url = join(&url, ["response"]);
                self.with_retry(&host, "result", true, || self.result_once(&url))
                    .await
                    .map_err(|err| match err {
                        FalError::Permanent {
                            status: 404 | 405, ..
                        } => FalError::NotReady,
                        other => other,
                    })
            }
            other => other,
        }
    }

    async fn result_once(&self, url: &Url) -> Result<serde_json::Value, Failure> {
        let (status, headers, body) = self.send(self.inner.http.get(url.clone())).await?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|err| {
                FalError::Protocol(format!("result is not valid json: {err}")).into()
            });
        }
        match classify(status, &headers, &body) {
            FalError::Permanent {
                status: 202 | 400 | 409 | 425,
                ..
            } => Err(FalError::NotReady.into()),
            other => Err(other.into()),
        }
    }

    /// The unit prices of `endpoints` from fal's platform API
    /// (`GET {FAL_API_URL}/models/pricing?endpoint_id=a,b`), asked 50 ids at a
    /// time (fal's limit), through the platform host's breaker and retries.
    /// Endpoints fal has no price for are missing from the answer.
    pub async fn pricing(&self, endpoints: &[EndpointId]) -> Result<Vec<Price>, FalError> {
        let mut prices = Vec::with_capacity(endpoints.len());
        for chunk in endpoints.chunks(50) {
            let mut url = join(&self.inner.api, ["models", "pricing"]);
            let ids = chunk
                .iter()
                .map(EndpointId::as_str)
                .collect::<Vec<_>>()
                .join(",");
            url.query_pairs_mut().append_pair("endpoint_id", &ids);
            let host = host_key(&url);
            let page = self
                .with_retry(&host, "pricing", true, || self.pricing_once(&url))
                .await?;
            prices.extend(page);
        }
        Ok(prices)
    }

    async fn pricing_once(&self, url: &Url) -> Result<Vec<Price>, Failure> {
        let wire: WirePrices = self.platform_get(url, "pricing").await?;
        Ok(wire.into_prices()?)
    }

    /// One GET of the platform API, its JSON answer read as `T` (`what` names the
    /// reply in errors).
    async fn platform_get<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        what: &str,
    ) -> Result<T, Failure> {
        let (status, headers, body) = self.send(self.inner.http.get(url.clone())).await?;
        if status != StatusCode::OK {
            return Err(classify(status, &headers, &body).into());
        }
        serde_json::from_slice(&body).map_err(|err| {
            FalError::Protocol(format!("the {what} reply is not valid: {err}")).into()
        })
    }

    /// The OpenAPI document fal's model API publishes for `endpoint`
    /// (`GET {FAL_API_URL}/models?endpoint_id=<id>&expand=openapi-3.0`), through the
    /// platform host's breaker and retries. `None` when fal knows no such endpoint, or
    /// has no document for it.
    pub async fn openapi(
        &self,
        endpoint: &EndpointId,
    ) -> Result<Option<serde_json::Value>, FalError> {
        let mut url = join(&self.inner.api, ["models"]);
        url.query_pairs_mut()
            .append_pair("endpoint_id", endpoint.as_str())
            .append_pair("expand", "openapi-3.0");
        let host = host_key(&url);
        self.with_retry(&host, "models", true, || self.openapi_once(&url, endpoint))
            .await
    }

    async fn openapi_once(
        &self,
        url: &Url,
        endpoint: &EndpointId,
    ) -> Result<Option<serde_json::Value>, Failure> {
        let wire: WireModels = self.platform_get(url, "models").await?;
        Ok(wire
            .models
            .into_iter()
            .find(|model| model.endpoint_id == endpoint.as_str())
            .and_then(|model| model.openapi))
    }

    /// Cancels the request: dropped when queued, signalled when running.
    pub async fn cancel(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<CancelOutcome, FalError> {
        let url = self.urls(endpoint, request_id)?.cancel;
        let host = host_key(&url);
        self.with_retry(&host, "cancel", true, || self.cancel_once(&url))
            .await
    }

    async fn cancel_once(&self, url: &Url) -> Result<CancelOutcome, Failure> {
        let (status, headers, body) = self.send(self.inner.http.put(url.clone())).await?;
        let reported = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
        match (status, reported.as_deref()) {
            (StatusCode::OK | StatusCode::ACCEPTED, _) => Ok(CancelOutcome::Requested),
            (StatusCode::BAD_REQUEST, Some("ALREADY_COMPLETED")) => {
                Ok(CancelOutcome::AlreadyCompleted)
            }
            (StatusCode::NOT_FOUND, _) => Ok(CancelOutcome::NotFound),
            _ => Err(classify(status, &headers, &body).into()),
        }
    }

    /// The URLs of a request: from its submit reply when this client saw it, else
    /// built the fal way from the app id.
    fn urls(&self, endpoint: &EndpointId, request_id: &str) -> Result<RequestUrls, FalError> {
        if !valid_request_id(request_id) {
            return Err(FalError::InvalidRequestId(request_id.to_owned()));
        }
        let remembered = self
            .inner
            .urls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(request_id)
            .cloned();
        Ok(remembered.unwrap_or_else(|| RequestUrls {
            response: endpoint.request_url(&self.inner.base, request_id),
            status: endpoint.status_url(&self.inner.base, request_id),
            cancel: endpoint.cancel_url(&self.inner.base, request_id),
        }))
    }

    fn remember(&self, request_id: &str, urls: RequestUrls) {
        let mut map = self
            .inner
            .urls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REMEMBERED {
            // Crude but bounded: forgotten URLs are built again from the endpoint id.
            map.clear();
        }
        map.insert(request_id.to_owned(), urls);
    }

    /// `raw` when it is a URL on the queue's own origin. URLs on any other origin are
    /// ignored: the client would send its key there.
    fn same_origin(&self, raw: Option<&str>) -> Option<Url> {
        let url = Url::parse(raw?).ok()?;
        let base = &self.inner.base;
        (url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default())
        .then_some(url)
    }

    /// Sends one request to the queue API and reads the whole answer.
    async fn send(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Failure> {
        let response = request
            .timeout(self.inner.config.http_timeout)
            .send()
            .await
            .map_err(transport_failure)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, self.inner.config.max_result_bytes)
            .await
            .map_err(|error| Failure {
                error,
                maybe_sent: true,
            })?;
        Ok((status, headers, body))
    }

    /// Runs `attempt` through `host`'s breaker, retrying transient failures on the
    /// jittered schedule. With `idempotent` false, a failure that may have reached
    /// fal is not retried.
    pub(crate) async fn with_retry<T, F, Fut>(
        &self,
        host: &str,
        operation: &'static str,
        idempotent: bool,
        mut attempt: F,
    ) -> Result<T, FalError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.retrying(host, operation, idempotent, || {
            self.guarded(host, operation, attempt())
        })
        .await
    }

    /// Retries `attempt` on transient failures, without a breaker of its own: for
    /// attempts that guard each of their calls themselves (a download's hops).
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        host: &str,
        operation: &'static str,
        idempotent: bool,
        attempt: F,
    ) -> Result<T, FalError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let condition = |failure: &Failure| {
            let retry = failure.error.is_retried()
                && (idempotent || !failure.maybe_sent)
                && !(operation == "submit" && failure.error.is_throttled());
            if retry {
                tracing::warn!(host, operation, error = %failure.error, "fal call failed, retrying");
            }
            retry
        };
        RetryIf::start(
            retry::jittered(&self.inner.config.retry),
            attempt,
            condition,
        )
        .await
        .map_err(|failure| match failure.error {
            FalError::Transient { message, .. } if !idempotent && failure.maybe_sent => {
                FalError::MaybeSent { message }
            }
            error => error,
        })
    }

    /// Runs one call through `host`'s circuit breaker and counts it.
    pub(crate) async fn guarded<T>(
        &self,
        host: &str,
        operation: &'static str,
        call: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let breaker = self.inner.breakers.get(host);
        let admission = match breaker.admit() {
            Ok(admission) => admission,
            Err(error) => {
                count(host, operation, error.outcome());
                return Err(error.into());
            }
        };
        let result = call.await;
        let failed = matches!(&result, Err(failure) if failure.error.is_retried());
        breaker.record(admission, failed);
        count(
            host,
            operation,
            match &result {
                Ok(_) => "ok",
                Err(failure) => failure.error.outcome(),
            },
        );
        result
    }
}

fn count(host: &str, operation: &'static str, outcome: &'static str) {
    metrics::counter!(
        "atelier_fal_requests_total",
        "host" => host.to_owned(),
        "operation" => operation,
        "outcome" => outcome
    )
    .increment(1);
}

/// The breaker key of a URL: its host, with the port when it is not the scheme's
/// default (`queue.fal.run`, `127.0.0.1:4010`, `[::1]:8080`).
pub(crate) fn host_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.chars().any(char::is_control)
}

/// A transport error as a transient failure. Only a failed connection is known not
/// to have reached fal.
pub(crate) fn transport_failure(err: reqwest::Error) -> Failure {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    Failure {
        maybe_sent: !err.is_connect(),
        error: FalError::transient(format!("{what}: {}", error_chain(&err.without_url()))),
    }
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a body of at most `max` bytes (checked against `Content-Length` first, then
/// as it arrives).
pub(crate) async fn read_limited(response: reqwest::Response, max: u64) -> Result<Bytes, FalError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(FalError::TooLarge);
    }
    let mut body = BytesMut::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| {
            FalError::transient(format!(
                "reading the answer failed: {}",
                error_chain(&err.without_url())
            ))
        })?;
        if (body.len() + chunk.len()) as u64 > max {
            return Err(FalError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Where [`FalClient::status_stream`] is.
enum StreamState {
    Connect(FalClient, Url),
    Reading {
        idle: Duration,
        body: ByteStream,
        parser: SseParser,
        pending: std::collections::VecDeque<String>,
    },
    Failed(FalError),
    Done,
}

impl StreamState {
    async fn next(self) -> Option<(Result<RequestStatus, FalError>, Self)> {
        let (idle, mut body, mut parser, mut pending) = match self {
            Self::Done => return None,
            Self::Failed(err) => return Some((Err(err), Self::Done)),
            Self::Connect(client, url) => match client.open_stream(&url).await {
                Ok(body) => (
                    client.inner.config.stream_idle_timeout,
                    body,
                    SseParser::default(),
                    Default::default(),
                ),
                Err(failure) => return Some((Err(failure.error), Self::Done)),
            },
            Self::Reading {
                idle,
                body,
                parser,
                pending,
            } => (idle, body, parser, pending),
        };
        loop {
            if let Some(data) = pending.pop_front() {
                return Some(match RequestStatus::from_json(data.as_bytes()) {
                    Ok(status) if status.is_completed() => (Ok(status), Self::Done),
                    Ok(status) => (
                        Ok(status),
                        Self::Reading {
                            idle,
                            body,
                            parser,
                            pending,
                        },
                    ),
                    Err(err) => (Err(err), Self::Done),
                });
            }
            match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Some((
                        Err(FalError::transient(format!(
                            "status stream silent for {} s",
                            idle.as_secs_f64()
                        ))),
                        Self::Done,
                    ));
                }
                Ok(Some(Ok(chunk))) => match parser.push(&chunk) {
                    Ok(events) => pending.extend(events),
                    Err(_) => {
                        return Some((
                            Err(FalError::Protocol("status stream event too large".into())),
                            Self::Done,
                        ));
                    }
                },
                Ok(Some(Err(err))) => {
                    return Some((
                        Err(FalError::transient(format!(
                            "status stream broke: {}",
                            error_chain(&err.without_url())
                        ))),
                        Self::Done,
                    ));
                }
                Ok(None) => match parser.finish() {
                    Some(data) => pending.push_back(data),
                    None => {
                        return Some((
                            Err(FalError::transient("status stream ended before completion")),
                            Self::Done,
                        ));
                    }
                },
            }
        }
    }
}
