//! `GET /api/ws`: one WebSocket for the live events of several jobs.
//!
//! Sign in with `Authorization: Bearer <token>` or, since browsers cannot set
//! headers on a WebSocket, `?access_token=<token>`. Then send
//! `{"subscribe": ["<job id>", ...], "after": {"<job id>": <seq>}}` and
//! `{"unsubscribe": [...]}`; each event arrives as
//! `{"type": "event", "job_id", "seq", "kind", ...}`, and a job that is not yours
//! as `{"type": "error", "job_id", "status": 404}`.
//!
//! Live streams (these sockets and the SSE event streams) are bounded: so many
//! open per user (`MAX_STREAMS_PER_USER`), a ping every `STREAM_KEEPALIVE_SECS`
//! (a socket that answers nothing for three of them is closed), a bounded send
//! buffer, and so many messages a second from the client (then the socket is
//! closed with 1008, policy violation).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use atelier_common::token::TokenError;
use atelier_proto::processing::v1::{
    StreamJobEventsRequest, processing_service_client::ProcessingServiceClient,
};
use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use uuid::Uuid;

use utoipa_axum::router::OpenApiRouter;

use crate::{
    problem::Problem,
    state::{AppState, grpc_request},
    views::{event_json, event_kind},
};

/// Bounds on live event streams.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    /// `MAX_STREAMS_PER_USER`: SSE streams and WebSockets one user may hold open
    /// on one gateway.
    pub max_per_user: usize,
    /// `STREAM_KEEPALIVE_SECS`: how often a quiet stream sends a keep-alive
    /// comment (SSE) or a ping (WebSocket).
    pub keep_alive: Duration,
    /// `WS_MESSAGES_PER_SEC`: messages a second a WebSocket client may send,
    /// in bursts of twice as many.
    pub ws_messages_per_sec: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_per_user: 16,
            keep_alive: Duration::from_secs(15),
            ws_messages_per_sec: 10,
        }
    }
}

/// Messages waiting for a slow WebSocket client; past this it is closed.
const SEND_BUFFER: usize = 256;
/// Jobs one WebSocket follows at once.
const MAX_SUBSCRIPTIONS: usize = 100;

/// The live streams each user has open on this gateway.
pub struct StreamSlots {
    max_per_user: usize,
    open: Mutex<HashMap<Uuid, usize>>,
}

/// One open stream; the slot frees when this is dropped.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    user: Uuid,
}

impl StreamSlots {
    pub fn new(max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_user,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more stream of `user`, or the `429` saying there is none.
    pub fn take(self: &Arc<Self>, user: Uuid) -> Result<StreamSlot, Problem> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(user).or_default();
        if *count >= self.max_per_user {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                format!(
                    "{} live streams are open already; close one first",
                    self.max_per_user
                ),
            )
            .retry_after(1));
        }
        *count += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            user,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Params {
    pub access_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Command {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    unsubscribe: Vec<String>,
    #[serde(default)]
    after: HashMap<String, i64>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.access_token.map(|token| format!("Bearer {token}")));
    let caller = match state.verifier.verify_header(bearer.as_deref()).await {
        Ok(caller) => caller,
        Err(err @ (TokenError::KeysUnavailable | TokenError::SessionsUnavailable)) => {
            return Problem::from(err.status()).into_response();
        }
        Err(_) => {
            return Problem::from(tonic::Status::unauthenticated(
                "missing or invalid access token",
            ))
            .into_response();
        }
    };
    let slot = match state.streams.take(caller.user_id) {
        Ok(slot) => slot,
        Err(problem) => return problem.into_response(),
    };
    let mut forwarded = HeaderMap::new();
    if let Some(value) = bearer.and_then(|bearer| HeaderValue::from_str(&bearer).ok()) {
        forwarded.insert(header::AUTHORIZATION, value);
    }
    upgrade.on_upgrade(move |socket| serve(state, forwarded, socket, slot))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn serve(state: AppState, headers: HeaderMap, socket: WebSocket, slot: StreamSlot) {
    let config = state.stream_config;
    let (mut sink, mut incoming) = socket.split();
    let (outgoing, mut queued) = mpsc::channel::<Message>(SEND_BUFFER);
    let mut writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
    });
    let rate = NonZeroU32::new(config.ws_messages_per_sec).unwrap_or(NonZeroU32::MIN);
    let messages = RateLimiter::direct(
        Quota::per_second(rate)
            .allow_burst(rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN))),
    );
    let mut ping = tokio::time::interval_at(Instant::now() + config.keep_alive, config.keep_alive);
    let mut last_heard = Instant::now();
    let mut subscriptions: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let message = tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(message)) => message,
                _ => break,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= config.keep_alive * 3 {
                    tracing::debug!("websocket client answers nothing, closing");
                    break;
                }
                // A full send buffer: the client does not read; let it go.
                if outgoing.try_send(Message::Ping(Default::default())).is_err() {
                    tracing::debug!("websocket client does not read, closing");
                    break;
                }
                continue;
            }
            _ = &mut writer => break,
        };
        last_heard = Instant::now();
        let text = match message {
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
            _ if messages.check().is_err() => {
                tracing::info!("websocket client sends too many messages, closing");
                let _ = outgoing.try_send(close(close_code::POLICY, "too many messages"));
                break;
            }
            Message::Text(text) => text,
            Message::Binary(_) => continue,
        };
        let Ok(command) = serde_json::from_str::<Command>(&text) else {
            let _ = outgoing
                .send(text_message(&json!({"type": "error", "status": 400, "detail": "expected {\"subscribe\": [...]} or {\"unsubscribe\": [...]}"})))
                .await;
            continue;
        };
        for job_id in command.unsubscribe {
            if let Some(task) = subscriptions.remove(&job_id) {
                task.abort();
            }
        }
        // A job that reached its final state has sent everything; its slot is free.
        subscriptions.retain(|_, task| !task.is_finished());
        for job_id in command.subscribe {
            if subscriptions.contains_key(&job_id) || subscriptions.len() >= MAX_SUBSCRIPTIONS {
                continue;
            }
            let after_seq = command.after.get(&job_id).copied().unwrap_or(0);
            let task = tokio::spawn(forward(
                state.clone(),
                headers.clone(),
                job_id.clone(),
                after_seq,
                outgoing.clone(),
            ));
            subscriptions.insert(job_id, task);
        }
    }
    for task in subscriptions.into_values() {
        task.abort();
    }
    // Let a closing frame out, but never wait long for a client that does not read.
    drop(outgoing);
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    drop(slot);
}

fn text_message(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Forwards one job's events into the socket until the job is finished.
async fn forward(
    state: AppState,
    headers: HeaderMap,
    job_id: String,
    after_seq: i64,
    outgoing: mpsc::Sender<Message>,
) {
    let stream = ProcessingServiceClient::new(state.processing.clone())
        .stream_job_events(grpc_request(
            StreamJobEventsRequest {
                job_id: job_id.clone(),
                after_seq,
            },
            &headers,
        ))
        .await;
    let mut stream = match stream {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            let problem = Problem::from(status);
            let _ = outgoing
                .send(text_message(&json!({"type": "error", "job_id": job_id, "status": problem.status, "detail": problem.detail})))
                .await;
            return;
        }
    };
    while let Some(Ok(message)) = stream.next().await {
        let Some(event) = message.event else { continue };
        let mut data = event_json(&event);
        if let Value::Object(object) = &mut data {
            object.insert("type".into(), "event".into());
            object.insert("kind".into(), event_kind(event.kind).into());
        }
        if outgoing.send(text_message(&data)).await.is_err() {
            return;
        }
    }
}

/// The WebSocket route (not part of the OpenAPI document: it is no REST call):
/// `GET` with `Upgrade` over HTTP/1.1, extended `CONNECT` over HTTP/2 (RFC 8441),
/// which browsers use on an h2 connection to an HTTPS gateway.
pub fn routes() -> OpenApiRouter<AppState> {
    use axum::routing::{MethodFilter, on};
    OpenApiRouter::new().route(
        "/api/ws",
        on(MethodFilter::GET.or(MethodFilter::CONNECT), upgrade),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_user_and_freed_on_drop() {
        let slots = StreamSlots::new(2);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = slots.take(ada).expect("first");
        let _second = slots.take(ada).expect("second");
        let refused = slots.take(ada).err().expect("third is over the cap");
        assert_eq!(refused.status, 429);
        let _other = slots
            .take(bob)
            .expect("another user has slots of their own");
        drop(first);
        let _again = slots.take(ada).expect("a freed slot is taken again");
    }
}
