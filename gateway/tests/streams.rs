//! Live streams and slow clients: a cap on each user's open streams, pings on quiet
//! sockets, sockets that answer nothing closed, finished subscriptions freed, a
//! bound on WebSocket messages, and connections cut when the client stops
//! sending its body or stops reading the answer.

use std::time::{Duration, Instant};

use atelier_testbed::{Backend, Options, StreamConfig, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{User, finished, sign_up, start_job, upload},
};
use futures::{SinkExt, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn options(streams: StreamConfig) -> Options {
    let mut options = Options::new(Backend::Sqlite);
    options.streams = streams;
    options
}

fn ws_url(platform: &TestPlatform, user: &User) -> String {
    format!(
        "{}/api/ws?access_token={}",
        platform.gateway_url.replace("http://", "ws://"),
        user.token
    )
}

async fn socket(platform: &TestPlatform, user: &User) -> Result<Socket, String> {
    tokio_tungstenite::connect_async(ws_url(platform, user))
        .await
        .map(|(socket, _)| socket)
        .map_err(|err| err.to_string())
}

async fn events(platform: &TestPlatform, user: &User, job: &str) -> reqwest::Response {
    Client::new()
        .get(format!(
            "{}/api/processing/{job}/events",
            platform.gateway_url
        ))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("events")
}

/// The job's event stream, once a slot is free: the slot of a stream that just
/// ended comes back when the server has dropped it, a moment after its last byte.
async fn free_slot(platform: &TestPlatform, user: &User, job: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = events(platform, user, job).await;
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.status(), StatusCode::OK);
            return response;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message within `within`; `None` when the socket ended.
async fn next(socket: &mut Socket, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, socket.next())
        .await
        .expect("a message in time")
        .and_then(Result::ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_holds_so_many_live_streams_at_once() {
    let platform = TestPlatform::spawn_with(options(StreamConfig {
        max_per_user: 2,
        ..StreamConfig::default()
    }))
    .await;
    let ada = sign_up(&platform, "ada@example.com").await;
    let bob = sign_up(&platform, "bob@example.com").await;
    let first = socket(&platform, &ada).await.expect("first");
    let _second = socket(&platform, &ada).await.expect("second");
    let third = socket(&platform, &ada).await.expect_err("over the cap");
    assert!(third.contains("429"), "{third}");
    // SSE streams count too; the cap is answered before the job is looked up.
    let unknown = uuid::Uuid::now_v7().to_string();
    let refused = events(&platform, &ada, &unknown).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("problem");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("too-many-streams")
    );
    // Another user is not held back by this one.
    socket(&platform, &bob).await.expect("bob's own slots");

    // A closed socket frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = events(&platform, &ada, &unknown).await;
        if response.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_sockets_are_pinged_and_silent_ones_closed() {
    let platform = TestPlatform::spawn_with(options(StreamConfig {
        keep_alive: Duration::from_secs(1),
        ..StreamConfig::default()
    }))
    .await;
    let user = sign_up(&platform, "quiet@example.com").await;

    // A client that reads answers pings (tungstenite does) and stays.
    let mut listening = socket(&platform, &user).await.expect("connect");
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(4500) {
        match next(&mut listening, Duration::from_secs(3)).await {
            Some(Message::Ping(_)) => pings += 1,
            other => panic!("a ping, not {other:?}"),
        }
    }
    assert!(pings >= 3, "{pings} pings");

    // A client that reads nothing never answers: closed after three pings.
    let mut silent = socket(&platform, &user).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mut ended = false;
    for _ in 0..10 {
        match next(&mut silent, Duration::from_secs(3)).await {
            Some(Message::Ping(_)) => continue,
            Some(Message::Close(_)) | None => {
                ended = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ended, "the silent socket is still open");
    // The one that answered is still there.
    listening
        .send(Message::Text(json!({"subscribe": []}).to_string().into()))
        .await
        .expect("still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_sending_too_much_is_closed_for_policy() {
    let platform = TestPlatform::spawn_with(options(StreamConfig {
        ws_messages_per_sec: 5,
        ..StreamConfig::default()
    }))
    .await;
    let user = sign_up(&platform, "chatty@example.com").await;
    let mut chatty = socket(&platform, &user).await.expect("connect");
    // A burst of twice the rate is answered: each line of nonsense gets its error.
    for _ in 0..10 {
        chatty
            .send(Message::Text("nonsense".into()))
            .await
            .expect("send");
    }
    for _ in 0..10 {
        let Some(Message::Text(text)) = next(&mut chatty, Duration::from_secs(5)).await else {
            panic!("an error reply");
        };
        let reply: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(reply["status"], 400, "{reply}");
    }
    // Then more than the rate: the socket is closed (sends may fail once it is).
    for _ in 0..30 {
        let _ = chatty.send(Message::Text("nonsense".into())).await;
    }
    let mut closed = None;
    while let Some(message) = next(&mut chatty, Duration::from_secs(5)).await {
        if let Message::Close(frame) = message {
            closed = frame;
            break;
        }
    }
    let frame = closed.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
}

/// Reads `socket` until `job` reports a final status; the events' sequence numbers.
async fn until_final(socket: &mut Socket, job: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    loop {
        let text = match next(socket, Duration::from_secs(10)).await {
            Some(Message::Text(text)) => text,
            Some(_) => continue,
            None => panic!("the socket ended before {job} finished"),
        };
        let event: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["job_id"], job);
        seqs.push(event["seq"].as_i64().expect("seq"));
        if ["completed", "failed", "cancelled"]
            .contains(&event["status"].as_str().unwrap_or_default())
        {
            return seqs;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_free_their_subscriptions_and_streams() {
    let platform = TestPlatform::spawn_with(options(StreamConfig {
        max_per_user: 1,
        ..StreamConfig::default()
    }))
    .await;
    let user = sign_up(&platform, "watcher@example.com").await;
    let image = upload(&platform, &user, fixtures::png(16, 16)).await;
    let job = start_job(&platform, &user, &image, "lineart", json!({})).await;
    finished(&platform, &user, &job).await;

    // An SSE stream of a finished job ends, and gives its slot back.
    for _ in 0..2 {
        let stream = free_slot(&platform, &user, &job).await;
        let body = tokio::time::timeout(Duration::from_secs(10), stream.text())
            .await
            .expect("the stream ends")
            .expect("body");
        assert!(body.contains("event: status"), "{body}");
    }

    let mut socket = socket(&platform, &user).await.expect("connect");
    let subscribe = json!({"subscribe": [job]}).to_string();
    socket
        .send(Message::Text(subscribe.clone().into()))
        .await
        .expect("send");
    let first = until_final(&mut socket, &job).await;
    // Its subscription ended with the job: subscribing again replays it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
        .send(Message::Text(subscribe.into()))
        .await
        .expect("send");
    let again = until_final(&mut socket, &job).await;
    assert_eq!(first, again);
}

/// A raw HTTP/1.1 connection to the gateway.
async fn raw(platform: &TestPlatform, receive_buffer: Option<u32>) -> TcpStream {
    let addr = platform
        .gateway_url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("buffer size");
    }
    socket.connect(addr).await.expect("connect")
}

/// What the server sent until it closed the connection, or `within` passed.
async fn read_all(conn: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(within, conn.read_to_end(&mut received)).await;
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_ends_the_request() {
    let mut options = Options::new(Backend::Sqlite);
    options.body_idle_timeout = Duration::from_secs(1);
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "slow@example.com").await;

    let mut conn = raw(&platform, None).await;
    let head = format!(
        "POST /api/images/upload HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 100000\r\n\r\n\
         --XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n",
        user.token
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    conn.write_all(b"\x89PNG").await.expect("write");
    let started = Instant::now();
    let answer = read_all(&mut conn, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A body that keeps coming, however slowly, is not cut off.
    let mut conn = raw(&platform, None).await;
    let body = json!({"email": "slow@example.com", "password": "wrong password!"}).to_string();
    let (first, rest) = body.split_at(10);
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    for byte in rest.as_bytes().chunks(rest.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(600)).await;
        conn.write_all(byte).await.expect("write");
    }
    let answer = read_all(&mut conn, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let mut options = Options::new(Backend::Sqlite);
    options.send_timeout = Duration::from_secs(1);
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "reader@example.com").await;
    let photo = fixtures::noise_jpeg(2400, 2400);
    let size = photo.len();
    let image = upload(&platform, &user, photo).await;
    let info: Value = Client::new()
        .get(format!("{}/api/images/{image}", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("image")
        .json()
        .await
        .expect("json");
    let url = info["url"].as_str().expect("signed url");
    let path = url
        .split_once("/files/")
        .map(|(_, rest)| rest)
        .expect("path");

    let mut conn = raw(&platform, Some(4096)).await;
    let request = format!("GET /files/{path} HTTP/1.1\r\nHost: gateway\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("write");
    // Not reading: the server's writes stop moving once the buffers are full.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let received = read_all(&mut conn, Duration::from_secs(20)).await;
    assert!(
        received.len() < size,
        "{} of {size} bytes: the connection was never cut",
        received.len()
    );
}
