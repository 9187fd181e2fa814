//! The REST calls tests make again and again: sign up, upload, start a job and wait
//! for it, all through a gateway. Each panics with the reply when it fails.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, multipart};
use serde_json::{Value, json};

/// A gateway to call: a spawned platform, or the URL of one the harness did not start
/// (such as an `atelier serve` process).
pub trait Gateway {
    /// `http://<host>:<port>` of the gateway.
    fn gateway_url(&self) -> &str;
}

impl Gateway for str {
    fn gateway_url(&self) -> &str {
        self
    }
}

impl Gateway for String {
    fn gateway_url(&self) -> &str {
        self
    }
}

impl<T: Gateway + ?Sized> Gateway for &T {
    fn gateway_url(&self) -> &str {
        (**self).gateway_url()
    }
}

/// A signed-up user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

pub const PASSWORD: &str = "correct horse battery";

/// `GET <path>` as `user`: the status and the JSON answer (`null` when there is none).
pub async fn get(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    path: impl AsRef<str>,
) -> (StatusCode, Value) {
    let request = Client::new().get(format!("{}{}", gateway.gateway_url(), path.as_ref()));
    json_reply(request.bearer_auth(&user.token)).await
}

/// `POST <path>` with the JSON `body` as `user`: the status and the JSON answer
/// (`null` when there is none).
pub async fn post(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    path: impl AsRef<str>,
    body: Value,
) -> (StatusCode, Value) {
    let request = Client::new().post(format!("{}{}", gateway.gateway_url(), path.as_ref()));
    json_reply(request.bearer_auth(&user.token).json(&body)).await
}

async fn json_reply(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers `email` and returns the signed-in user.
pub async fn sign_up(gateway: &(impl Gateway + ?Sized), email: &str) -> User {
    let response = Client::new()
        .post(format!("{}/api/auth/register", gateway.gateway_url()))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), StatusCode::CREATED, "register {email}");
    let body: Value = response.json().await.expect("tokens");
    User {
        id: body["user"]["id"].as_str().expect("user id").to_owned(),
        email: email.to_owned(),
        token: body["access_token"].as_str().expect("token").to_owned(),
        refresh_token: body["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned(),
    }
}

/// Uploads `bytes` as `input.png`; the raw reply.
pub async fn try_upload(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    bytes: Vec<u8>,
) -> reqwest::Response {
    try_upload_as(gateway, user, "input.png", bytes).await
}

/// Uploads `bytes` under the file name `name`; the raw reply.
pub async fn try_upload_as(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = multipart::Part::bytes(bytes).file_name(name.to_owned());
    Client::new()
        .post(format!("{}/api/images/upload", gateway.gateway_url()))
        .bearer_auth(&user.token)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
}

/// Uploads `bytes` and returns the new image's id.
pub async fn upload(gateway: &(impl Gateway + ?Sized), user: &User, bytes: Vec<u8>) -> String {
    let response = try_upload(gateway, user, bytes).await;
    let status = response.status();
    let image: Value = response.json().await.expect("image");
    assert_eq!(status, StatusCode::CREATED, "upload: {image}");
    image["id"].as_str().expect("id").to_owned()
}

/// `POST /api/processing/start` with `body`, and an `Idempotency-Key` when given.
pub async fn start(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = Client::new()
        .post(format!("{}/api/processing/start", gateway.gateway_url()))
        .bearer_auth(&user.token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("start")
}

/// Starts `workflow` on `image` with `parameters`; the job's id.
pub async fn start_job(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    image: &str,
    workflow: &str,
    parameters: Value,
) -> String {
    let response = start(
        gateway,
        user,
        json!({"image_id": image, "workflow_id": workflow, "parameters": parameters}),
        None,
    )
    .await;
    let status = response.status();
    let body: Value = response.json().await.expect("started");
    assert_eq!(status, StatusCode::ACCEPTED, "start: {body}");
    body["job_id"].as_str().expect("job id").to_owned()
}

/// A job's status: the HTTP status and the body.
pub async fn status(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    job: &str,
) -> (StatusCode, Value) {
    let response = Client::new()
        .get(format!(
            "{}/api/processing/{job}/status",
            gateway.gateway_url()
        ))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("status");
    let code = response.status();
    (code, response.json().await.expect("json"))
}

/// Waits (at most a minute) until the job is in one of `statuses`; its status.
pub async fn reached(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    job: &str,
    statuses: &[&str],
) -> Value {
    reached_within(gateway, user, job, statuses, Duration::from_secs(60)).await
}

/// Waits at most `within` until the job is in one of `statuses`; its status.
pub async fn reached_within(
    gateway: &(impl Gateway + ?Sized),
    user: &User,
    job: &str,
    statuses: &[&str],
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = status(gateway, user, job).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        if body["status"]
            .as_str()
            .is_some_and(|now| statuses.contains(&now))
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "job never reached {statuses:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(if within > Duration::from_secs(60) {
            500
        } else {
            50
        }))
        .await;
    }
}

/// Waits (at most a minute) for a job to finish, whatever the outcome; its status.
pub async fn finished(gateway: &(impl Gateway + ?Sized), user: &User, job: &str) -> Value {
    reached(gateway, user, job, &["completed", "failed", "cancelled"]).await
}

/// The gRPC status of a gRPC-web reply: in its headers (trailers-only) or in the
/// trailer frame at the end of its body.
pub async fn grpc_web_status(response: reqwest::Response) -> Option<String> {
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().ok().map(str::to_owned);
    }
    let body = response.bytes().await.ok()?;
    let text = String::from_utf8_lossy(&body).to_lowercase();
    let at = text.find("grpc-status:")? + "grpc-status:".len();
    Some(
        text[at..]
            .chars()
            .skip_while(|c| c.is_whitespace())
            .take_while(char::is_ascii_digit)
            .collect(),
    )
}
