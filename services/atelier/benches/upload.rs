//! A 50 MB PNG uploaded through the gateway of an `atelier serve` process storing
//! in S3 (the s3s-fs test server, as `make test` runs it) or in local files, against
//! `vipsthumbnail` doing on the same file what the image service does to check an
//! upload (decode every row, make the thumbnail); measured in the same run, with, for
//! context, `curl -T` of the file into a bare streaming sink (a server in this process
//! that reads the body and drops it), the `png` crate decoding the file alone, and
//! `curl -T` straight into the S3 server. Also: the peak RSS the uploads add to the
//! `atelier` process.
//!
//! Targets: no slower than libvips; peak RSS growth under 64 MB. Not half the sink's
//! rate, as first planned: an upload is answered once it is checked, and checking a
//! PNG decodes all of it, which alone runs at about a quarter of the sink's rate here
//! (the decode row says how fast). Answering before the check would trade a clear
//! refusal of a broken file for speed. `make bench` runs the full measurement;
//! `cargo test` a smoke run on a 5 MB PNG.
//!
//! | variable | default |
//! |---|---|
//! | `TEST_S3_ENDPOINT` | `http://127.0.0.1:9000` |
//! | `TEST_S3_ACCESS_KEY` | `atelier-test` |
//! | `TEST_S3_SECRET_KEY` | `atelier-test-secret` |

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use atelier_bench::{Mode, Report, Row, Spread, peak_rss, version_of};
use atelier_storage::ObjectStore;
use atelier_testkit::free_port;
use axum::{body::Body, http::StatusCode, routing::put};
use futures::StreamExt;
use serde_json::Value;

const MB: f64 = 1e6;

/// The `atelier serve` process, killed when dropped.
struct Server {
    child: Child,
    gateway: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every service in one process, storing in `bucket` on the test S3 server, or
/// in files under `dir` without one.
fn serve(dir: &Path, bucket: Option<&str>) -> (Server, String) {
    let gateway = free_port();
    let admin = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
    match bucket {
        Some(bucket) => {
            let s3 = atelier_testkit::s3_config(bucket);
            command
                .env("S3_BUCKET", bucket)
                .env("S3_ENDPOINT", s3.endpoint.clone().unwrap_or_default())
                .env(
                    "S3_ACCESS_KEY_ID",
                    s3.access_key_id.clone().unwrap_or_default(),
                )
                .env(
                    "S3_SECRET_ACCESS_KEY",
                    s3.secret_access_key.clone().unwrap_or_default(),
                );
        }
        None => {
            command.env_remove("S3_BUCKET");
        }
    }
    let child = command
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
        .env("MAX_FILE_SIZE_MB", "64")
        .env("TIER_FREE_MAX_FILE_SIZE_BYTES", "unlimited")
        .env("TIER_FREE_STORAGE_BYTES", "unlimited")
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("FAL_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn atelier");
    (
        Server {
            child,
            gateway: format!("http://127.0.0.1:{gateway}"),
        },
        format!("http://127.0.0.1:{admin}"),
    )
}

/// A running `atelier serve` with a signed-in user.
struct Platform {
    server: Server,
    token: String,
}

impl Platform {
    async fn start(client: &reqwest::Client, dir: &Path, bucket: Option<&str>) -> Self {
        let (server, admin) = serve(dir, bucket);
        ready(client, &format!("{admin}/readyz")).await;
        let token = atelier_testkit::rest::sign_up(&server.gateway, "bench@example.com")
            .await
            .token;
        Self { server, token }
    }

    /// Uploads `file` with `curl -T`: how long it took.
    fn upload(&self, file: &Path) -> Duration {
        let url = format!(
            "{}/api/images/upload?filename=upload.png",
            self.server.gateway
        );
        let auth = [
            "-H".to_owned(),
            format!("Authorization: Bearer {}", self.token),
            "-H".to_owned(),
            "Content-Type: image/png".to_owned(),
        ];
        curl_put(file, &url, &auth, 201)
    }

    fn peak_rss(&self) -> u64 {
        peak_rss(self.server.child.id()).expect("the server's peak RSS")
    }

    /// Every upload was stored whole: `count` images, the newest `size` bytes and
    /// `width` pixels wide each (the oldest is the warm-up).
    async fn assert_stored(&self, client: &reqwest::Client, count: usize, size: f64, width: u32) {
        let images: Value = client
            .get(format!("{}/api/images?page_size=100", self.server.gateway))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("images");
        let stored = images["images"].as_array().expect("images");
        assert_eq!(stored.len(), count, "every upload stored");
        assert!(
            stored[..count - 1]
                .iter()
                .all(|image| image["file_size"].as_f64() == Some(size)
                    && image["width"].as_u64() == Some(u64::from(width))),
            "stored as sent"
        );
    }
}

async fn ready(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(client.get(url).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "{url} not ready within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server that reads request bodies and drops them: the most any upload
/// endpoint could do on this machine.
async fn sink() -> String {
    async fn discard(body: Body) -> StatusCode {
        let mut body = body.into_data_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                return StatusCode::BAD_REQUEST;
            }
        }
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let addr = listener.local_addr().expect("sink address");
    let app = axum::Router::new().route("/{*path}", put(discard));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `curl -T file url` with `args`; the time it took, after checking the status.
fn curl_put(file: &Path, url: &str, args: &[String], expect: u16) -> Duration {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
        .args(args)
        .arg("-T")
        .arg(file)
        .arg(url)
        .output()
        .expect("curl runs");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fields = written.split_whitespace();
    let code: u16 = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    assert_eq!(
        code,
        expect,
        "curl -T {url}: {written} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = fields
        .next()
        .and_then(|t| t.parse().ok())
        .expect("curl's time");
    Duration::from_secs_f64(secs)
}

/// How long decoding `png` whole takes, in memory.
fn decode_png(png: &[u8]) -> Duration {
    use image::ImageDecoder;
    let started = Instant::now();
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(png)).expect("a PNG");
    let mut pixels = vec![0; decoder.total_bytes() as usize];
    decoder.read_image(&mut pixels).expect("decode");
    std::hint::black_box(&pixels);
    started.elapsed()
}

/// How long libvips takes to thumbnail the PNG at `path` as the image service does
/// (the whole file decoded, shrunk to 512 px, encoded as JPEG q82), from spawn to exit.
fn vips_thumbnail(path: &Path, out: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("vipsthumbnail")
        .arg(path)
        .args(["--size", "512", "-o"])
        .arg(format!("{}[Q=82]", out.display()))
        .status()
        .expect("vipsthumbnail runs (apt-get install libvips-tools)");
    let took = started.elapsed();
    assert!(status.success(), "vipsthumbnail failed: {status}");
    took
}

/// A PNG of about `target` bytes: a photo-like picture (smooth fields with grain,
/// as a camera's), deterministic.
fn png_of_about(target: usize) -> (Vec<u8>, u32, u32) {
    // The grain makes such a PNG about 2.3 bytes a pixel; one trial sets the size.
    let trial = atelier_testkit::fixtures::encode(
        &atelier_testkit::fixtures::photo(600, 400),
        image::ImageFormat::Png,
    );
    let per_pixel = trial.len() as f64 / (600.0 * 400.0);
    let pixels = target as f64 / per_pixel;
    let width = (pixels * 1.5).sqrt().round() as u32;
    let height = (pixels / f64::from(width)).round() as u32;
    let png = atelier_testkit::fixtures::encode(
        &atelier_testkit::fixtures::photo(width, height),
        image::ImageFormat::Png,
    );
    (png, width, height)
}

fn main() {
    let mode = Mode::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(mode));
}

async fn run(mode: Mode) {
    let runs = mode.pick(5, 2);
    let target = mode.pick(50_000_000, 5_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (png, width, height) = png_of_about(target);
    let file = dir.path().join("upload.png");
    std::fs::write(&file, &png).expect("write the PNG");
    let size = png.len() as f64;
    println!(
        "{width}x{height} PNG, {:.1} MB, {runs} runs each",
        size / MB
    );

    let bucket = format!("atelier-bench-{}", uuid::Uuid::new_v4().simple());
    let s3 = atelier_testkit::s3_config(&bucket);
    let store = atelier_storage::S3Store::new(s3.clone())
        .await
        .expect("S3 client");
    store.create_bucket_if_missing().await.expect(
        "the S3 test server answers at TEST_S3_ENDPOINT (make test starts it through .ci/deps.sh)",
    );
    let client = reqwest::Client::new();
    let local_dir = dir.path().join("local");
    std::fs::create_dir_all(&local_dir).expect("local data dir");
    let on_s3 = Platform::start(&client, dir.path(), Some(&bucket)).await;
    let local = Platform::start(&client, &local_dir, None).await;
    let sink = sink().await;
    let s3_url = format!(
        "{}/{bucket}/direct.png",
        s3.endpoint.clone().unwrap_or_default()
    );
    let s3_args = vec![
        "--aws-sigv4".to_owned(),
        format!("aws:amz:{}:s3", s3.region),
        "--user".to_owned(),
        format!(
            "{}:{}",
            s3.access_key_id.clone().unwrap_or_default(),
            s3.secret_access_key.clone().unwrap_or_default()
        ),
        "-H".to_owned(),
        "x-amz-content-sha256: UNSIGNED-PAYLOAD".to_owned(),
    ];

    // Warm every path once (connections, pools, codecs, the page cache).
    let warm_file = dir.path().join("warm.png");
    std::fs::write(
        &warm_file,
        atelier_testkit::fixtures::encode(
            &atelier_testkit::fixtures::photo(1200, 800),
            image::ImageFormat::Png,
        ),
    )
    .expect("write the warm-up PNG");
    on_s3.upload(&warm_file);
    local.upload(&warm_file);
    curl_put(&file, &format!("{sink}/upload.png"), &[], 200);
    curl_put(&file, &s3_url, &s3_args, 200);
    let before = [on_s3.peak_rss(), local.peak_rss()];

    let (mut ours, mut ours_local, mut bare, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(size / MB / on_s3.upload(&file).as_secs_f64());
        ours_local.push(size / MB / local.upload(&file).as_secs_f64());
        bare.push(
            size / MB / curl_put(&file, &format!("{sink}/upload.png"), &[], 200).as_secs_f64(),
        );
        direct.push(size / MB / curl_put(&file, &s3_url, &s3_args, 200).as_secs_f64());
    }
    // The check's own ceiling: decoding the PNG alone, in this process, on one core;
    // and libvips doing what the check does (decode, thumbnail) from the file.
    let decode: Vec<f64> = (0..runs)
        .map(|_| size / MB / decode_png(&png).as_secs_f64())
        .collect();
    let thumbnail = dir.path().join("thumbnail.jpg");
    vips_thumbnail(&file, &thumbnail);
    let vips: Vec<f64> = (0..runs)
        .map(|_| size / MB / vips_thumbnail(&file, &thumbnail).as_secs_f64())
        .collect();
    let grown = [on_s3.peak_rss(), local.peak_rss()]
        .iter()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before) as f64 / (1024.0 * 1024.0))
        .fold(0.0, f64::max);

    // Every upload was stored whole: an original and a thumbnail each.
    for platform in [&on_s3, &local] {
        platform.assert_stored(&client, runs + 1, size, width).await;
    }

    let curl = version_of("curl", &["--version"]);
    let curl = curl
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let mut report = Report::new("upload", "Upload through the gateway");
    let sink_peer = format!("`curl -T` into a bare streaming sink ({curl})");
    report.row(
        Row::new(format!(
            "{:.0} MB PNG upload, local storage (the embedded default), MB/s",
            size / MB
        ))
        .ours_spread(Spread::of(&ours_local), "MB/s")
        .peer_spread(sink_peer.clone(), Spread::of(&bare))
        .note("context: a check that decodes every byte cannot come near it, see below"),
    );
    let vips_version = version_of("vipsthumbnail", &["--vips-version"]);
    report.row(
        Row::new("same upload, against libvips thumbnailing the file, MB/s")
            .ours_spread(Spread::of(&ours_local), "MB/s")
            .peer_spread(
                format!("`vipsthumbnail upload.png --size 512` ({vips_version})"),
                Spread::of(&vips),
            )
            .at_least_ratio(1.0),
    );
    report.row(
        Row::new("same upload, against decoding the PNG alone, MB/s")
            .ours_spread(Spread::of(&ours_local), "MB/s")
            .peer_spread(
                "the `png` crate decoding the file in memory, one core",
                Spread::of(&decode),
            )
            .note("context: every byte is decoded to check it, on one core: the ceiling of a checked upload"),
    );
    report.row(
        Row::new(format!("{:.0} MB PNG upload, S3 storage, MB/s", size / MB))
            .ours_spread(Spread::of(&ours), "MB/s")
            .peer_spread(sink_peer, Spread::of(&bare))
            .note("context: bounded by the S3 server, next row"),
    );
    report.row(
        Row::new("same upload, against the store alone, MB/s")
            .ours_spread(Spread::of(&ours), "MB/s")
            .peer_spread("`curl -T` straight into the S3 server", Spread::of(&direct))
            .note("context: the S3 server's own ceiling here"),
    );
    report.row(
        Row::new("peak RSS growth of an atelier process over the uploads (the larger), MB")
            .ours(grown, "MB")
            .at_most(64.0),
    );
    report.note(format!(
        "{}. Ours: `curl -T upload.png '<gateway>/api/images/upload?filename=upload.png'` into \
         `atelier serve` (every service but fal's simulator; release, SQLite; objects in files \
         under the data directory, or in S3 on the s3s-fs server at TEST_S3_ENDPOINT, one \
         process each); the gateway streams the body over gRPC (mTLS) to the image service, \
         which hashes it, checks it as a PNG row by row and makes its thumbnail from the rows as \
         they pass, while streaming it into its object (a file, or one S3 PutObject) completed \
         once the check passed. \
         Peers: `vipsthumbnail` (libvips) doing the same check and thumbnail on the file, the \
         process timed from spawn to exit; the same `curl -T` into a server that reads the body \
         and drops it. Rates are file size over the time taken; medians of {runs} runs, interleaved, after a warm-up. \
         Peak RSS: VmHWM of each atelier process after the uploads less before them. The PNG: \
         {width}×{height} `fixtures::photo`, {:.1} MB.",
        atelier_bench::machine(),
        size / MB
    ));
    drop((on_s3, local));
    // The bucket goes: its objects, then itself.
    if let Ok(keys) = store.list("").await {
        for key in keys {
            let _ = store.delete(&key).await;
        }
    }
    let _ = store.client().delete_bucket().bucket(&bucket).send().await;
    report.finish(mode);
}
