//! A scripted fake of fal's HTTP side: it answers each call with the next scripted
//! reply (or the default one) and records every call, so tests can count them.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use atelier_fal::{BreakerConfig, FalClient, FalConfig, RetryConfig};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
};
use futures::StreamExt;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Sent in pieces, each after its pause (a single piece for a plain body).
    pub chunks: Vec<(Duration, String)>,
    /// Pause before the answer's head.
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            chunks: vec![(Duration::ZERO, body.to_string())],
            delay: Duration::ZERO,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![],
            chunks: vec![(Duration::ZERO, body.to_owned())],
            delay: Duration::ZERO,
        }
    }

    /// A server-sent event stream: each piece after its pause, then the end.
    pub fn sse(pieces: Vec<(Duration, String)>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: pieces,
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A call the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    default: Option<Reply>,
    calls: Vec<Call>,
}

/// A running fake on 127.0.0.1.
#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Fake {
    /// Starts a fake answering `default` once the script runs out.
    pub async fn start(default: Reply) -> Self {
        let script = Arc::new(Mutex::new(Script {
            default: Some(default),
            ..Script::default()
        }));
        let router = Router::new().fallback(handle).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        Self { addr, script }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The breaker key of this fake.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Queues replies, answered in order before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("script").replies.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.script.lock().expect("script").default = Some(reply);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.script.lock().expect("script").calls.clone()
    }

    pub fn count(&self) -> usize {
        self.script.lock().expect("script").calls.len()
    }
}

async fn handle(State(script): State<Arc<Mutex<Script>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let reply = {
        let mut script = script.lock().expect("script");
        script.calls.push(Call {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body,
        });
        script
            .replies
            .pop_front()
            .or_else(|| script.default.clone())
            .unwrap_or_else(|| Reply::text(500, "no reply scripted"))
    };
    tokio::time::sleep(reply.delay).await;
    let single = reply.chunks.len() == 1 && reply.chunks[0].0.is_zero();
    let body = if single {
        Body::from(reply.chunks[0].1.clone())
    } else {
        let pieces = futures::stream::iter(reply.chunks).then(|(pause, piece)| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, std::io::Error>(Bytes::from(piece))
        });
        Body::from_stream(pieces)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("status");
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}

/// Settings for tests: fast retries, a breaker that opens after 3 failures in a row.
pub fn config(queue_url: &str) -> FalConfig {
    let mut config = FalConfig::new("test-id:test-secret");
    config.queue_url = queue_url.to_owned();
    config.http_timeout = Duration::from_secs(2);
    config.retry = RetryConfig {
        max_retries: 3,
        base: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        jitter: 0.25,
    };
    config.breaker = BreakerConfig {
        failure_rate: 0.5,
        min_calls: 1_000,
        window: Duration::from_secs(60),
        consecutive_failures: 3,
        slow_call: Duration::from_secs(1),
        open_duration: Duration::from_millis(300),
        half_open_max_probes: 1,
    };
    config.poll_interval = Duration::from_millis(5);
    config.poll_interval_max = Duration::from_millis(20);
    config.stream_idle_timeout = Duration::from_millis(300);
    config
}

pub fn client(config: FalConfig) -> FalClient {
    FalClient::new(config).expect("client")
}

/// A status object as fal sends it.
pub fn status_body(status: &str, position: Option<u32>) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "request_id": "req-1",
        "queue_position": position,
        "response_url": "http://unused/requests/req-1",
        "logs": null,
    })
}
