//! `GET /api/ws`: one WebSocket for the live events of several jobs.
//!
//! Sign in with `Authorization: Bearer <token>` or, since browsers cannot set
//! headers on a WebSocket, `?access_token=<token>`. Then send
//! `{"subscribe": ["<job id>", ...], "after": {"<job id>": <seq>}}` and
//! `{"unsubscribe": [...]}`; each event arrives as
//! `{"type": "event", "job_id", "seq", "kind", ...}`, and a job that is not yours
//! as `{"type": "error", "job_id", "status": 404}`.

use std::collections::HashMap;

use atelier_proto::processing::v1::{
    StreamJobEventsRequest, processing_service_client::ProcessingServiceClient,
};
use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{Message, WebSocket},
    },
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{AppState, grpc_request, problem::Problem, processing::event_json};

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
    if state
        .verifier
        .verify_header(bearer.as_deref())
        .await
        .is_err()
    {
        return Problem::from(tonic::Status::unauthenticated(
            "missing or invalid access token",
        ))
        .into_response();
    }
    let mut forwarded = HeaderMap::new();
    if let Some(value) = bearer.and_then(|bearer| HeaderValue::from_str(&bearer).ok()) {
        forwarded.insert(header::AUTHORIZATION, value);
    }
    upgrade.on_upgrade(move |socket| serve(state, forwarded, socket))
}

async fn serve(state: AppState, headers: HeaderMap, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let (outgoing, mut queued) = mpsc::channel::<Value>(256);
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink
                .send(Message::Text(message.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut subscriptions: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(Ok(message)) = incoming.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(command) = serde_json::from_str::<Command>(&text) else {
            let _ = outgoing
                .send(json!({"type": "error", "status": 400, "detail": "expected {\"subscribe\": [...]} or {\"unsubscribe\": [...]}"}))
                .await;
            continue;
        };
        for job_id in command.unsubscribe {
            if let Some(task) = subscriptions.remove(&job_id) {
                task.abort();
            }
        }
        for job_id in command.subscribe {
            if subscriptions.contains_key(&job_id) || subscriptions.len() >= 100 {
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
    writer.abort();
}

/// Forwards one job's events into the socket.
async fn forward(
    state: AppState,
    headers: HeaderMap,
    job_id: String,
    after_seq: i64,
    outgoing: mpsc::Sender<Value>,
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
                .send(json!({"type": "error", "job_id": job_id, "status": problem.status, "detail": problem.detail}))
                .await;
            return;
        }
    };
    while let Some(Ok(message)) = stream.next().await {
        let Some(event) = message.event else { continue };
        let mut data = event_json(&event);
        if let Value::Object(object) = &mut data {
            object.insert("type".into(), "event".into());
            object.insert(
                "kind".into(),
                crate::processing::event_kind(event.kind).into(),
            );
        }
        if outgoing.send(data).await.is_err() {
            return;
        }
    }
}
