//! The HTTP routes: fal's queue API on `/{endpoint_id...}`, result files, the JWKS, health
//! and the test knobs.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    Failures, Knobs, Timing, catalogue,
    error::{ApiError, FieldError, REQUEST_ID_HEADER, detail_of, error_type_of},
    files::Contents,
    queue::{Cancelled, Priority, ResultView, Shared, Submission},
};

/// The largest request body: a 50 MB image as a base64 `data:` URI, and some.
const MAX_BODY_BYTES: usize = 80 * 1024 * 1024;

/// The first segments that make an endpoint id `namespace/owner/alias/...`.
const NAMESPACES: &[&str] = &["workflows", "comfy"];

type ApiResult = Result<Response, ApiError>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/models", get(models))
        .route("/v1/models/pricing", get(pricing))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/files/{name}", get(file))
        .route("/_sim/stats", get(stats))
        .route("/_sim/knobs", get(knobs).put(set_knobs))
        .route("/{*path}", post(submit).get(read).put(cancel))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// An endpoint id split into its app (`owner/alias` or `namespace/owner/alias`) and the
/// rest (a subpath, or `requests/{id}/...`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AppPath<'a> {
    pub app: String,
    pub rest: Vec<&'a str>,
}

impl<'a> AppPath<'a> {
    pub(crate) fn parse(path: &'a str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let app_len = if NAMESPACES.contains(&segments[0]) {
            3
        } else {
            2
        };
        if segments.len() < app_len {
            return None;
        }
        Some(Self {
            app: segments[..app_len].join("/"),
            rest: segments[app_len..].to_vec(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Guards shared by the queue API

fn check_outage(shared: &Shared) -> Result<(), ApiError> {
    if shared.in_outage() {
        Err(ApiError::Outage)
    } else {
        Ok(())
    }
}

/// `Authorization: Key <key>`: any non-empty key, or exactly the configured one.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("key"))
        .map(|(_, key)| key.trim())
        .filter(|key| !key.is_empty());
    let Some(key) = key else {
        return Err(ApiError::detail(
            StatusCode::UNAUTHORIZED,
            "Missing or invalid Authorization header: expected `Key <FAL_KEY>`",
        ));
    };
    if shared
        .key
        .as_deref()
        .is_some_and(|expected| expected != key)
    {
        return Err(ApiError::detail(
            StatusCode::UNAUTHORIZED,
            "No user found for Key ID and Secret",
        ));
    }
    Ok(())
}

fn bad_request(detail: String) -> ApiError {
    ApiError::request(StatusCode::BAD_REQUEST, "bad_request", detail)
}

/// `scheme://host` of the URLs handed out: the configured public base, else the host the
/// request came in on.
fn base_url(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> String {
    if let Some(base) = &shared.public_base_url {
        return base.clone();
    }
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        });
    match host {
        Some(host) => format!("{}://{host}", shared.scheme),
        None => shared.local_base_url.clone(),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn is_truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

// ---------------------------------------------------------------------------------------
// Submit

async fn submit(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_outage(&shared)?;
    authorize(&shared, &headers)?;
    let failures = shared.knobs().failures;
    if let Some(status) = failures.submit_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error_type = failures
            .error_type
            .clone()
            .unwrap_or_else(|| error_type_of(status).to_owned());
        tracing::info!(%status, error_type, "failing a submission as asked");
        return Err(ApiError::request(
            status,
            &error_type,
            detail_of(&error_type),
        ));
    }

    let endpoint_id = path.trim_matches('/');
    let app_path = AppPath::parse(endpoint_id);
    let (Some(app_path), Some(endpoint)) = (app_path, catalogue::find(endpoint_id)) else {
        return Err(ApiError::detail(
            StatusCode::NOT_FOUND,
            format!("Application '{endpoint_id}' not found"),
        ));
    };

    let priority = match header_str(&headers, "x-fal-queue-priority") {
        None => Priority::Normal,
        Some(p) if p.eq_ignore_ascii_case("normal") => Priority::Normal,
        Some(p) if p.eq_ignore_ascii_case("low") => Priority::Low,
        Some(p) => {
            return Err(bad_request(format!(
                "Invalid X-Fal-Queue-Priority {p:?}: expected normal or low"
            )));
        }
    };
    let start_timeout = match header_str(&headers, "x-fal-request-timeout") {
        None => None,
        Some(t) => match t.parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => {
                Some(Duration::from_secs_f64(seconds))
            }
            _ => {
                return Err(bad_request(format!(
                    "Invalid X-Fal-Request-Timeout {t:?}: expected a positive number of seconds"
                )));
            }
        },
    };
    let no_retry = header_str(&headers, "x-fal-no-retry").is_some_and(is_truthy);
    let webhook = match query.get("fal_webhook") {
        None => None,
        Some(url) => match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(url.clone()),
            _ => {
                return Err(bad_request(format!(
                    "Invalid fal_webhook {url:?}: expected an http(s) URL"
                )));
            }
        },
    };
    let max_queue_length = match query.get("fal_max_queue_length") {
        None => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(bad_request(format!(
                    "Invalid fal_max_queue_length {n:?}: expected a whole number"
                )));
            }
        },
    };

    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::Validation(vec![FieldError {
                loc: vec![json!("body"), json!(e.column())],
                msg: "JSON decode error".to_owned(),
                kind: "json_invalid",
                ctx: Some(Box::new(json!({ "error": e.to_string() }))),
                input: None,
            }])
        })?
    };
    if shared.validate_at_submit {
        endpoint.read(&input).map_err(ApiError::Validation)?;
    }

    let base_url = base_url(&shared, &uri, &headers);
    let submitted = shared.submit(Submission {
        endpoint,
        app: app_path.app.clone(),
        base_url: base_url.clone(),
        input,
        webhook,
        priority,
        no_retry,
        start_timeout,
        max_queue_length,
    })?;
    if !failures.submit_delay.is_zero() {
        tokio::time::sleep(failures.submit_delay).await;
    }
    let request_url = format!(
        "{base_url}/{}/requests/{}",
        app_path.app, submitted.request_id
    );
    let mut response = Json(json!({
        "status": "IN_QUEUE",
        "request_id": submitted.request_id,
        "gateway_request_id": submitted.gateway_request_id,
        "response_url": request_url,
        "status_url": format!("{request_url}/status"),
        "cancel_url": format!("{request_url}/cancel"),
        "queue_position": submitted.queue_position,
    }))
    .into_response();
    if let Ok(id) = HeaderValue::from_str(&submitted.request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Status, stream and result

fn not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "Not Found")
}

fn request_not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "Request not found")
}

fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(id) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    response
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    check_outage(&shared)?;
    authorize(&shared, &headers)?;
    let app_path = AppPath::parse(&path).ok_or_else(not_found)?;
    let with_logs = query.get("logs").is_some_and(|l| is_truthy(l));
    match app_path.rest.as_slice() {
        ["requests", id, "status"] => status(&shared, &app_path.app, id, with_logs),
        ["requests", id, "status", "stream"] => stream(
            shared.clone(),
            app_path.app.clone(),
            (*id).to_owned(),
            with_logs,
        ),
        ["requests", id] | ["requests", id, "response"] => result(&shared, &app_path.app, id),
        _ => Err(not_found()),
    }
}

fn status(shared: &Shared, app: &str, id: &str, with_logs: bool) -> ApiResult {
    let view = shared
        .status(app, id, with_logs, 0)
        .ok_or_else(request_not_found)?;
    let code = if view.completed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_request_id((code, Json(view.json)).into_response(), id))
}

/// The status stream's state between events.
struct StreamState {
    shared: Arc<Shared>,
    app: String,
    id: String,
    with_logs: bool,
    changes: watch::Receiver<u64>,
    logs_sent: usize,
    first: bool,
    done: bool,
}

fn stream(shared: Arc<Shared>, app: String, id: String, with_logs: bool) -> ApiResult {
    let changes = shared.subscribe(&app, &id).ok_or_else(request_not_found)?;
    let heartbeat = shared.heartbeat;
    let state = StreamState {
        shared,
        app,
        id: id.clone(),
        with_logs,
        changes,
        logs_sent: 0,
        first: true,
        done: false,
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        if !state.first {
            tokio::select! {
                changed = state.changes.changed() => changed.ok()?,
                () = state.shared.shutdown.cancelled() => return None,
            }
        }
        state.first = false;
        state.changes.borrow_and_update();
        let view = state
            .shared
            .status(&state.app, &state.id, state.with_logs, state.logs_sent)?;
        state.logs_sent = view.log_count;
        state.done = view.completed;
        let event = Event::default().data(view.json.to_string());
        Some((Ok::<_, Infallible>(event), state))
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("ping"));
    Ok(with_request_id(sse.into_response(), &id))
}

fn result(shared: &Shared, app: &str, id: &str) -> ApiResult {
    match shared.result(app, id) {
        ResultView::NotFound => Err(request_not_found()),
        ResultView::Pending => Err(ApiError::detail(
            StatusCode::BAD_REQUEST,
            "Request is still in progress",
        )),
        ResultView::Done(Ok(output)) => Ok(with_request_id(Json(output).into_response(), id)),
        ResultView::Done(Err(failure)) => Ok(failure.into_response(id)),
    }
}

// ---------------------------------------------------------------------------------------
// Cancel

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    check_outage(&shared)?;
    authorize(&shared, &headers)?;
    let app_path = AppPath::parse(&path).ok_or_else(not_found)?;
    let ["requests", id, "cancel"] = app_path.rest.as_slice() else {
        return Err(not_found());
    };
    let (code, status) = match shared.cancel(&app_path.app, id) {
        Cancelled::Requested => (StatusCode::ACCEPTED, "CANCELLATION_REQUESTED"),
        Cancelled::AlreadyCompleted => (StatusCode::BAD_REQUEST, "ALREADY_COMPLETED"),
        Cancelled::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
    };
    Ok((code, Json(json!({ "status": status }))).into_response())
}

// ---------------------------------------------------------------------------------------
// Files, JWKS, health

async fn file(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    check_outage(&shared)?;
    match shared.files.open(&name).await {
        Ok(Some(opened)) => {
            let body = match opened.contents {
                Contents::Memory(bytes) => axum::body::Body::from(bytes),
                Contents::Disk(file) => axum::body::Body::from_stream(
                    tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
                ),
            };
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(opened.content_type),
                    ),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=86400"),
                    ),
                    (header::CONTENT_LENGTH, HeaderValue::from(opened.size)),
                ],
                body,
            )
                .into_response())
        }
        Ok(None) => Err(ApiError::detail(StatusCode::NOT_FOUND, "File not found")),
        Err(error) => {
            tracing::error!(%error, file = %name, "reading a result file failed");
            Err(ApiError::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ))
        }
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        )],
        Json(shared.signer.jwks()),
    )
        .into_response()
}

/// fal's platform API `GET /v1/models/pricing?endpoint_id=a,b` (also
/// `endpoint_id=a&endpoint_id=b`): the fixed unit price of each catalogue
/// endpoint asked for, 1 to 50 ids. Ids outside the catalogue are left out.
async fn pricing(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    check_outage(&shared)?;
    authorize(&shared, &headers)?;
    let ids = endpoint_ids(&query)?;
    if ids.is_empty() {
        return Err(bad_request(
            "endpoint_id is required: one to 50 endpoint ids, comma-separated".to_owned(),
        ));
    }
    let prices: Vec<Value> = ids
        .iter()
        .filter_map(|id| catalogue::find(id))
        .map(|endpoint| {
            json!({
                "endpoint_id": endpoint.id,
                "unit_price": endpoint.price.0,
                "unit": endpoint.price.1,
                "currency": "USD",
            })
        })
        .collect();
    Ok(Json(json!({"prices": prices, "next_cursor": null, "has_more": false})).into_response())
}

/// fal's platform API `GET /v1/models?endpoint_id=a&endpoint_id=b&expand=openapi-3.0`
/// (ids also comma-separated): the catalogue endpoints asked for, or all of them when
/// none is, each with its OpenAPI document when `expand` asks for `openapi-3.0`. Ids
/// outside the catalogue are left out; there is never a next page.
async fn models(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    check_outage(&shared)?;
    authorize(&shared, &headers)?;
    let ids = endpoint_ids(&query)?;
    let openapi = values(&query, "expand").any(|expand| expand == "openapi-3.0");
    let endpoints: Vec<&catalogue::Endpoint> = if ids.is_empty() {
        catalogue::all().iter().collect()
    } else {
        ids.iter().filter_map(|id| catalogue::find(id)).collect()
    };
    let models: Vec<Value> = endpoints
        .into_iter()
        .map(|endpoint| {
            let mut model = json!({
                "endpoint_id": endpoint.id,
                "metadata": { "display_name": endpoint.id, "status": "active" },
            });
            if openapi {
                model["openapi"] = endpoint.openapi();
            }
            model
        })
        .collect();
    Ok(Json(json!({"models": models, "next_cursor": null, "has_more": false})).into_response())
}

/// The values of the query parameter `name`, given once or more, each maybe a
/// comma-separated list, as fal's platform API takes them.
fn values<'a>(query: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    query
        .iter()
        .filter(move |(key, _)| key == name)
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// The `endpoint_id`s asked for: at most 50, fal's limit.
fn endpoint_ids(query: &[(String, String)]) -> Result<Vec<&str>, ApiError> {
    let ids: Vec<&str> = values(query, "endpoint_id").collect();
    if ids.len() > 50 {
        return Err(bad_request(format!(
            "at most 50 endpoint ids may be asked at once, not {}",
            ids.len()
        )));
    }
    Ok(ids)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

// ---------------------------------------------------------------------------------------
// Test knobs

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut stats = shared.stats.to_json();
    stats["running"] = json!(shared.running());
    Json(stats)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn knobs_json(knobs: &Knobs) -> Value {
    let outage = knobs.failures.outage_until.map_or(Duration::ZERO, |until| {
        until.saturating_duration_since(std::time::Instant::now())
    });
    json!({
        "error_rate": knobs.failures.error_rate,
        "error_type": knobs.failures.error_type,
        "submit_status": knobs.failures.submit_status,
        "hang": knobs.failures.hang,
        "outage_ms": millis(outage),
        "submit_delay_ms": millis(knobs.failures.submit_delay),
        "queue_delay_ms": millis(knobs.timing.queue_delay),
        "processing_time_ms": millis(knobs.timing.processing_time),
    })
}

async fn knobs(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(knobs_json(&shared.knobs()))
}

/// `PUT /_sim/knobs`: the failure fields replace the failures in force (absent is off);
/// the timing fields change only when given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobsInput {
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    submit_status: Option<u16>,
    #[serde(default)]
    hang: bool,
    #[serde(default)]
    outage_ms: u64,
    #[serde(default)]
    submit_delay_ms: u64,
    queue_delay_ms: Option<u64>,
    processing_time_ms: Option<u64>,
}

async fn set_knobs(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let invalid = |detail: String| ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, detail);
    let input: KnobsInput =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("invalid knobs: {e}")))?;
    if !(0.0..=1.0).contains(&input.error_rate) {
        return Err(invalid("error_rate must be between 0 and 1".to_owned()));
    }
    if input
        .submit_status
        .is_some_and(|s| !(400..=599).contains(&s))
    {
        return Err(invalid(
            "submit_status must be an HTTP error status (400 to 599)".to_owned(),
        ));
    }
    let outage_until = (input.outage_ms > 0)
        .then(|| std::time::Instant::now() + Duration::from_millis(input.outage_ms));
    shared.set_failures(Failures {
        error_rate: input.error_rate,
        error_type: input.error_type,
        submit_status: input.submit_status,
        hang: input.hang,
        outage_until,
        submit_delay: Duration::from_millis(input.submit_delay_ms),
    });
    let timing = shared.knobs().timing;
    shared.set_timing(Timing {
        queue_delay: input
            .queue_delay_ms
            .map_or(timing.queue_delay, Duration::from_millis),
        processing_time: input
            .processing_time_ms
            .map_or(timing.processing_time, Duration::from_millis),
    });
    Ok(Json(knobs_json(&shared.knobs())).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_drop_subpaths_and_keep_namespaces() {
        let parsed = AppPath::parse("fal-ai/flux/dev/image-to-image").expect("an id");
        assert_eq!(parsed.app, "fal-ai/flux");
        assert_eq!(parsed.rest, ["dev", "image-to-image"]);
        let parsed = AppPath::parse("workflows/me/flow/requests/abc/status").expect("an id");
        assert_eq!(parsed.app, "workflows/me/flow");
        assert_eq!(parsed.rest, ["requests", "abc", "status"]);
        assert_eq!(AppPath::parse("comfy/me").map(|p| p.app), None);
        assert_eq!(AppPath::parse("fal-ai").map(|p| p.app), None);
        assert_eq!(AppPath::parse("fal-ai//esrgan").map(|p| p.app), None);
    }
}
