//! Large images cost bounded memory. A 50 MB upload through the gateway raises
//! the peak RSS of the process that runs the gateway and the image service by less
//! than 64 MB: uploads stream, and a JPEG's thumbnail is decoded at reduced scale.
//! A result of over 100 MB raises the peak RSS of the process running every
//! service by less than 256 MB: results stream from fal into storage, and a PNG is
//! previewed row by row. fal is the simulator in a process of its own, as fal is
//! not part of ours. A 50 MB PNG put into S3, as production stores, raises it by
//! less than 64 MB too: it streams into one PutObject while it is checked.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use atelier_storage::ObjectStore;
use atelier_testkit::free_port;
use reqwest::{Client, StatusCode, multipart};
use serde_json::{Value, json};

const MB: u64 = 1024 * 1024;

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

/// `atelier serve` with every service, on free ports in `dir`; with `fal_sim`,
/// fal is the simulator running there (else the one built in). Returns the
/// process, the gateway's URL and the admin endpoint's (readiness, metrics).
fn serve(
    dir: &std::path::Path,
    fal_sim: Option<&str>,
    env: &[(&str, &str)],
) -> (Stop, String, String) {
    let gateway = free_port();
    let admin = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
    command
        .args([
            "serve",
            "--target",
            "auth,image,workflow,processing,user,gateway",
        ])
        .current_dir(dir)
        .env("DATA_DIR", dir.join("data"))
        .env("UPLOAD_TMP_DIR", dir)
        .env("GATEWAY_ADDR", format!("127.0.0.1:{gateway}"))
        .envs(atelier_testkit::service_addresses())
        .env("FAL_SIM_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("S3_BUCKET")
        .env_remove("FAL_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(sim) = fal_sim {
        // Configured as for fal itself, with the simulator at fal's addresses.
        command
            .env("FAL_KEY", "memory-test")
            .env("FAL_QUEUE_URL", format!("http://{sim}"))
            .env("FAL_API_URL", format!("http://{sim}/v1"))
            .env("FAL_RESULT_HOSTS", format!("http://{sim}"));
    }
    for (name, value) in env {
        command.env(name, value);
    }
    (
        Stop(command.spawn().expect("spawn")),
        format!("http://127.0.0.1:{gateway}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

async fn ready(client: &Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(client.get(url).send().await, Ok(r) if r.status() == StatusCode::OK) {
        assert!(Instant::now() < deadline, "{url} not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    let (server, base, admin) = serve(
        dir.path(),
        None,
        &[
            ("MAX_FILE_SIZE_MB", "64"),
            ("TIER_FREE_MAX_FILE_SIZE_BYTES", "unlimited"),
        ],
    );
    let client = Client::new();
    ready(&client, &format!("{admin}/readyz")).await;
    let token = atelier_testkit::rest::sign_up(&base, "big@example.com")
        .await
        .token;
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

/// Uploads `bytes` as `name`; the new image.
async fn upload(client: &Client, base: &str, token: &str, name: &str, bytes: Vec<u8>) -> Value {
    let part = multipart::Part::stream_with_length(bytes.clone(), bytes.len() as u64)
        .file_name(name.to_owned())
        .mime_str("image/jpeg")
        .expect("mime");
    let response = client
        .post(format!("{base}/api/images/upload"))
        .bearer_auth(token)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("image")
}

/// Runs ESRGAN (×2, PNG) on `image` and waits for it; the finished job.
async fn upscale(client: &Client, base: &str, token: &str, image: &str) -> Value {
    let started: Value = client
        .post(format!("{base}/api/processing/start"))
        .bearer_auth(token)
        .json(&json!({
            "image_id": image,
            "workflow_id": "esrgan-upscale",
            "parameters": {"scale": 2, "output_format": "png"},
        }))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("started");
    let job = started["job_id"].as_str().expect("job id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status: Value = client
            .get(format!("{base}/api/processing/{job}/status"))
            .bearer_auth(token)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if ["completed", "failed", "cancelled"].contains(&status["status"].as_str().unwrap_or("")) {
            return status;
        }
        assert!(Instant::now() < deadline, "job not finished: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_100_mb_raises_peak_rss_by_less_than_256_mb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim_addr = format!("127.0.0.1:{}", free_port());
    let _sim = Stop(
        Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["fal-sim", "--addr", &sim_addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fal-sim"),
    );
    let (server, base, admin) = serve(
        dir.path(),
        Some(&sim_addr),
        &[("TIER_FREE_STORAGE_BYTES", "unlimited")],
    );
    let client = Client::new();
    ready(&client, &format!("http://{sim_addr}/healthz")).await;
    ready(&client, &format!("{admin}/readyz")).await;
    let token = atelier_testkit::rest::sign_up(&base, "results@example.com")
        .await
        .token;

    // Warm up every path of a result (download, store, preview) with a small one.
    let photo = |width, height| {
        atelier_testkit::fixtures::encode(
            &atelier_testkit::fixtures::photo(width, height),
            image::ImageFormat::Jpeg,
        )
    };
    let small = upload(&client, &base, &token, "small.jpg", photo(600, 400)).await;
    let warm = upscale(&client, &base, &token, small["id"].as_str().expect("id")).await;
    assert_eq!(warm["status"], "completed", "{warm}");
    let input = upload(&client, &base, &token, "IMG_2041.jpg", photo(6000, 4000)).await;
    let before = peak_rss(&server.0);

    let done = upscale(&client, &base, &token, input["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let after = peak_rss(&server.0);
    let result: Value = client
        .get(format!(
            "{base}/api/images/{}",
            done["result_image_id"].as_str().expect("result")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("result")
        .json()
        .await
        .expect("json");
    let size = result["file_size"].as_u64().expect("size");
    let grown = after.saturating_sub(before);
    println!(
        "result {} MB ({}x{}); peak rss before {} MB, after {} MB, grown {} MB",
        size / MB,
        result["width"],
        result["height"],
        before / MB,
        after / MB,
        grown / MB
    );
    assert!(size > 100 * MB, "the result is only {} MB", size / MB);
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(12_000), Some(8_000))
    );
    assert!(grown < 256 * MB, "peak RSS grew by {} MB", grown / MB);
}

/// A 50 MB PNG put as the request body (`curl -T`) into a platform storing in S3,
/// as production does: the gateway streams it to the image service, which checks
/// it row by row and streams it into one S3 PutObject at the same time. The
/// process's peak RSS grows by less than 64 MB, and the object is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_png_put_into_s3_raises_peak_rss_by_less_than_64_mb() {
    let png = atelier_testkit::fixtures::encode(
        &atelier_testkit::fixtures::photo(4700, 4700),
        image::ImageFormat::Png,
    );
    let size = png.len() as u64;
    assert!(
        (50 * MB..64 * MB).contains(&size),
        "fixture is {} MB",
        size / MB
    );
    let bucket = format!("atelier-test-{}", uuid::Uuid::new_v4().simple());
    let s3 = atelier_testkit::s3_config(&bucket);
    let store = atelier_storage::S3Store::new(s3.clone())
        .await
        .expect("S3 client");
    store
        .create_bucket_if_missing()
        .await
        .expect("the S3 test server answers at TEST_S3_ENDPOINT");

    let dir = tempfile::tempdir().expect("tempdir");
    let (server, base, admin) = serve(
        dir.path(),
        None,
        &[
            ("MAX_FILE_SIZE_MB", "64"),
            ("TIER_FREE_MAX_FILE_SIZE_BYTES", "unlimited"),
            ("S3_BUCKET", &bucket),
            ("S3_ENDPOINT", s3.endpoint.as_deref().unwrap_or_default()),
            (
                "S3_ACCESS_KEY_ID",
                s3.access_key_id.as_deref().unwrap_or_default(),
            ),
            (
                "S3_SECRET_ACCESS_KEY",
                s3.secret_access_key.as_deref().unwrap_or_default(),
            ),
        ],
    );
    let client = Client::new();
    ready(&client, &format!("{admin}/readyz")).await;
    let token = atelier_testkit::rest::sign_up(&base, "s3-png@example.com")
        .await
        .token;
    let put = |bytes: Vec<u8>| {
        client
            .put(format!("{base}/api/images/upload"))
            .query(&[("filename", "big.png")])
            .bearer_auth(&token)
            .body(bytes)
            .send()
    };
    // Warm up every path (connections, pools, codecs) with a small one first.
    let warm = put(atelier_testkit::fixtures::encode(
        &atelier_testkit::fixtures::photo(800, 800),
        image::ImageFormat::Png,
    ))
    .await
    .expect("upload");
    assert_eq!(warm.status(), StatusCode::CREATED);
    let before = peak_rss(&server.0);

    let response = put(png).await.expect("upload");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let after = peak_rss(&server.0);
    let image: Value = response.json().await.expect("image");
    assert_eq!(image["width"], 4700);
    let key = store
        .list("images/")
        .await
        .expect("list")
        .into_iter()
        .find(|key| key.contains(image["id"].as_str().expect("id")) && key.ends_with("-original"))
        .expect("the original is in the bucket");
    assert_eq!(store.head(&key).await.expect("head").size, size);
    let grown = after.saturating_sub(before);
    println!(
        "peak rss before {} MB, after {} MB, grown {} MB",
        before / MB,
        after / MB,
        grown / MB
    );
    drop(server);
    for key in store.list("").await.unwrap_or_default() {
        let _ = store.delete(&key).await;
    }
    let _ = store.client().delete_bucket().bucket(&bucket).send().await;
    assert!(grown < 64 * MB, "peak RSS grew by {} MB", grown / MB);
}
