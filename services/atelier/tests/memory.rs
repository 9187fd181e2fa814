//! A 50 MB upload through the gateway raises the peak RSS of the process that
//! runs the gateway and the image service by less than 64 MB: uploads stream,
//! and a JPEG's thumbnail is decoded at reduced scale.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, multipart};
use serde_json::{Value, json};

const MB: u64 = 1024 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// The process's peak resident set size, in bytes (`VmHWM`).
fn peak_rss(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number");
    kib * 1024
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_raises_peak_rss_by_less_than_64_mb() {
    let photo = atelier_testkit::fixtures::noise_jpeg(3650, 3650);
    let size = photo.len() as u64;
    assert!(
        (50 * MB..64 * MB).contains(&size),
        "fixture is {} MB",
        size / MB
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
    command
        .args([
            "serve",
            "--target",
            "auth,image,workflow,processing,user,gateway",
        ])
        .current_dir(dir.path())
        .env("DATA_DIR", dir.path().join("data"))
        .env("UPLOAD_TMP_DIR", dir.path())
        .env("GATEWAY_ADDR", format!("127.0.0.1:{gateway}"))
        .env("AUTH_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("IMAGE_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WORKFLOW_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("PROCESSING_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("USER_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("FAL_SIM_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("MAX_FILE_SIZE_MB", "64")
        .env("TIER_FREE_MAX_FILE_SIZE_BYTES", "unlimited")
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("S3_BUCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Stop(command.spawn().expect("spawn"));
    let base = format!("http://127.0.0.1:{gateway}");
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens: Value = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": "big@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("tokens");
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let send = |bytes: Vec<u8>| {
        let part = multipart::Part::stream_with_length(bytes.clone(), bytes.len() as u64)
            .file_name("photo.jpg")
            .mime_str("image/jpeg")
            .expect("mime");
        client
            .post(format!("{base}/api/images/upload"))
            .bearer_auth(&token)
            .multipart(multipart::Form::new().part("file", part))
            .send()
    };
    // Warm up every path (connections, pools, codecs) with a small photo first.
    let warm = send(atelier_testkit::fixtures::noise_jpeg(800, 800))
        .await
        .expect("upload");
    assert_eq!(warm.status(), StatusCode::CREATED);
    let before = peak_rss(&server.0);

    let response = send(photo).await.expect("upload");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let image: Value = response.json().await.expect("image");
    assert_eq!(image["width"], 3650);
    let after = peak_rss(&server.0);
    let grown = after.saturating_sub(before);
    println!(
        "peak rss before {} MB, after {} MB, grown {} MB",
        before / MB,
        after / MB,
        grown / MB
    );
    assert!(grown < 64 * MB, "peak RSS grew by {} MB", grown / MB);
}
