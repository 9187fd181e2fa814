//! The platform's REST API as the suite's clients use it, and what they saw: every
//! answer that was not a success is kept, with whether it was a clean 503
//! (`application/problem+json` with `status: 503`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reqwest::{StatusCode, multipart};
use serde_json::{Value, json};

/// The workflow every chaos job runs: its `seed` makes each job's input distinct, so
/// the simulator can tell a job submitted twice from two jobs.
pub const WORKFLOW: &str = "clarity-upscale";

/// One answer that was not a success, or a request that got no answer.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    /// `None`: no answer (connection refused or reset, timeout).
    pub status: Option<u16>,
    /// A 503 problem document, as the platform should answer while a dependency is away.
    pub clean_503: bool,
    pub what: String,
}

/// Every failed answer the clients saw, shared by them.
#[derive(Clone, Default)]
pub struct Errors(Arc<Mutex<Vec<Seen>>>);

impl Errors {
    fn push(&self, seen: Seen) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seen);
    }

    /// What was seen since `since`.
    pub fn since(&self, since: Instant) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|seen| seen.at >= since)
            .cloned()
            .collect()
    }
}

/// A signed-in user of the platform.
#[derive(Clone)]
pub struct User {
    pub token: String,
    pub image_id: String,
}

/// The REST API through the gateway.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub errors: Errors,
}

/// A job's state as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    pub status: String,
    pub has_result: bool,
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            errors: Errors::default(),
        })
    }

    /// Sends `request`; a failure is recorded (and returned as an error).
    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                self.errors.push(Seen {
                    at: Instant::now(),
                    status: None,
                    clean_503: false,
                    what: format!("{what}: {err}"),
                });
                return Err(err.into());
            }
        };
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
        let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let clean_503 = status == StatusCode::SERVICE_UNAVAILABLE
            && content_type.starts_with("application/problem+json")
            && problem["status"] == 503;
        self.errors.push(Seen {
            at: Instant::now(),
            status: Some(status.as_u16()),
            clean_503,
            what: format!("{what}: {}", String::from_utf8_lossy(&body)),
        });
        bail!("{what}: {status}: {}", String::from_utf8_lossy(&body))
    }

    /// Tries `f` until it succeeds or `within` passes: a client riding out an outage.
    pub async fn retrying<T, F, Fut>(&self, within: Duration, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            match f().await {
                Ok(value) => return Ok(value),
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Registers a new user and uploads the picture their jobs run on.
    pub async fn user(&self, name: &str) -> anyhow::Result<User> {
        let email = format!("{name}-{}@chaos.example.com", uuid::Uuid::new_v4().simple());
        let session = self
            .send(
                "register",
                self.http
                    .post(format!("{}/api/auth/register", self.base))
                    .json(&json!({"email": email, "password": "correct horse battery staple"})),
            )
            .await?;
        let token = session["access_token"]
            .as_str()
            .context("no access token")?
            .to_owned();
        let png = atelier_testkit::fixtures::png(24, 16);
        let image = self
            .send(
                "upload",
                self.http
                    .post(format!("{}/api/images/upload", self.base))
                    .bearer_auth(&token)
                    .multipart(
                        multipart::Form::new()
                            .part("file", multipart::Part::bytes(png).file_name("chaos.png")),
                    ),
            )
            .await?;
        let image_id = image["id"].as_str().context("no image id")?.to_owned();
        Ok(User { token, image_id })
    }

    /// Starts a job with this `seed` (one per job: see [`WORKFLOW`]); the idempotency
    /// key makes a retried start the same job.
    pub async fn start(&self, user: &User, seed: u64, key: &str) -> anyhow::Result<String> {
        let started = self
            .send(
                "start",
                self.http
                    .post(format!("{}/api/processing/start", self.base))
                    .bearer_auth(&user.token)
                    .header("idempotency-key", key)
                    .json(&json!({
                        "image_id": user.image_id,
                        "workflow_id": WORKFLOW,
                        "parameters": {"seed": seed, "upscale_factor": 1},
                    })),
            )
            .await?;
        Ok(started["job_id"].as_str().context("no job id")?.to_owned())
    }

    /// Starts a job, retrying (same idempotency key) for up to `within`.
    pub async fn start_retrying(
        &self,
        user: &User,
        seed: u64,
        within: Duration,
    ) -> anyhow::Result<String> {
        let key = uuid::Uuid::new_v4().to_string();
        self.retrying(within, || self.start(user, seed, &key)).await
    }

    /// One job's state.
    pub async fn job(&self, user: &User, job_id: &str) -> anyhow::Result<JobState> {
        let job = self
            .send(
                "status",
                self.http
                    .get(format!("{}/api/processing/{job_id}/status", self.base))
                    .bearer_auth(&user.token),
            )
            .await?;
        Ok(JobState {
            status: job["status"].as_str().context("no status")?.to_owned(),
            has_result: job["result_image_id"].is_string(),
        })
    }

    /// Every job of `user`, by id.
    pub async fn jobs(&self, user: &User) -> anyhow::Result<HashMap<String, JobState>> {
        let mut all = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/api/processing/jobs", self.base))
                .query(&[("page_size", "100")])
                .bearer_auth(&user.token);
            if let Some(token) = &token {
                request = request.query(&[("page_token", token)]);
            }
            let page = self.send("list", request).await?;
            for job in page["jobs"].as_array().context("no jobs")? {
                all.insert(
                    job["job_id"].as_str().context("no job id")?.to_owned(),
                    JobState {
                        status: job["status"].as_str().context("no status")?.to_owned(),
                        has_result: job["result_image_id"].is_string(),
                    },
                );
            }
            match page["next_page_token"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(all),
            }
        }
    }
}
