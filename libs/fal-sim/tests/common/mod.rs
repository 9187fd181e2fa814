//! What the simulator's tests share: a simulator on a free loopback port, stopped when
//! the test ends, and a client that talks to it as fal's clients do.

#![allow(dead_code)] // each test binary uses its own part of this

use std::{io::Cursor, time::Duration};

use atelier_fal_sim::{SimConfig, SimHandle};
use base64::Engine as _;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, HeaderMap, HeaderValue},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How long a request may take before a test gives up on it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running simulator, stopped on drop.
pub struct Sim {
    pub handle: SimHandle,
    /// Sends `Authorization: Key test`.
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The default configuration with a short processing time, as most tests want.
pub fn quick() -> SimConfig {
    SimConfig {
        processing_time: Duration::from_millis(20),
        ..SimConfig::default()
    }
}

impl Sim {
    pub async fn start(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let shutdown = CancellationToken::new();
        let tls = config.tls;
        let handle = atelier_fal_sim::start(config, listener, shutdown.clone())
            .await
            .expect("starting the simulator");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Key test"));
        let mut http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(PATIENCE);
        if tls {
            let pem = handle
                .tls_certificate_pem()
                .expect("a certificate with tls");
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate"),
            );
        }
        Self {
            handle,
            http: http.build().expect("building the client"),
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.handle.base_url(),
            path.trim_start_matches('/')
        )
    }

    /// Submits and returns the raw answer.
    pub async fn submit_raw(&self, endpoint: &str, input: &Value) -> reqwest::Response {
        self.http
            .post(self.url(endpoint))
            .json(input)
            .send()
            .await
            .expect("submitting")
    }

    /// Submits, expecting the request to be queued, and returns the reply.
    pub async fn submit(&self, endpoint: &str, input: &Value) -> Value {
        let response = self.submit_raw(endpoint, input).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "submitting to {endpoint}"
        );
        response.json().await.expect("a JSON reply")
    }

    /// Polls the status URL of a submission until it completes; returns the last status.
    pub async fn wait(&self, submitted: &Value) -> Value {
        let url = submitted["status_url"].as_str().expect("a status_url");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let response = self
                .http
                .get(url)
                .query(&[("logs", "1")])
                .send()
                .await
                .expect("reading the status");
            let code = response.status();
            let status: Value = response.json().await.expect("a JSON status");
            match code {
                StatusCode::OK => {
                    assert_eq!(status["status"], "COMPLETED", "{status}");
                    return status;
                }
                StatusCode::ACCEPTED => {}
                other => panic!("status answered {other}: {status}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request did not complete: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The result of a submission, waiting for it to complete first.
    pub async fn result(&self, submitted: &Value) -> reqwest::Response {
        self.wait(submitted).await;
        self.http
            .get(submitted["response_url"].as_str().expect("a response_url"))
            .send()
            .await
            .expect("reading the result")
    }

    /// Submits, waits, and returns the output, which must be a success.
    pub async fn run(&self, endpoint: &str, input: &Value) -> Value {
        let submitted = self.submit(endpoint, input).await;
        let response = self.result(&submitted).await;
        let status = response.status();
        let output: Value = response.json().await.expect("a JSON result");
        assert_eq!(status, StatusCode::OK, "{endpoint}: {output}");
        output
    }

    /// Downloads a fal `Image` object's URL and decodes it, checking what the object says.
    pub async fn image(&self, file: &Value) -> DynamicImage {
        let url = file["url"].as_str().expect("an image url");
        let response = self.http.get(url).send().await.expect("downloading");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            content_type.as_deref(),
            file["content_type"].as_str(),
            "{url}"
        );
        let bytes = response.bytes().await.expect("the image bytes");
        assert_eq!(
            Some(bytes.len() as u64),
            file["file_size"].as_u64(),
            "{url}"
        );
        let image = image::load_from_memory(&bytes).expect("a decodable image");
        assert_eq!(
            (
                Some(u64::from(image.width())),
                Some(u64::from(image.height()))
            ),
            (file["width"].as_u64(), file["height"].as_u64()),
            "{url}"
        );
        image
    }

    /// Sets failures through `PUT /_sim/knobs`.
    pub async fn set_knobs(&self, knobs: &Value) -> Value {
        let response = self
            .http
            .put(self.url("_sim/knobs"))
            .json(knobs)
            .send()
            .await
            .expect("setting knobs");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("the knobs")
    }
}

/// A test picture: a dark red disc on a light, slightly noisy background.
pub fn picture(width: u32, height: u32) -> DynamicImage {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let r = width.min(height) as f32 / 3.0;
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        if (x as f32 - cx).hypot(y as f32 - cy) < r {
            Rgba([150, 20, 30, 255])
        } else {
            let n = ((x * 7 + y * 13) % 5) as u8;
            Rgba([225 + n, 228 + n, 222 + n, 255])
        }
    }))
}

/// The picture as a PNG `data:` URI.
pub fn png_data_uri(width: u32, height: u32) -> String {
    let mut png = Cursor::new(Vec::new());
    picture(width, height)
        .write_to(&mut png, ImageFormat::Png)
        .expect("encoding a PNG");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    )
}
