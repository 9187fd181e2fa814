//! Malware scanning against a real clamd of the test's own (see
//! `atelier_testkit::clamd`): an image carrying the EICAR test string is refused
//! (422 `malware-detected`) through REST, gRPC-web and native gRPC, and nothing
//! of it is kept; clean images are stored as scanned; a clamd that is down fails
//! uploads closed at once (`SCAN_UNAVAILABLE=refuse`) or after waiting for it
//! (`wait`); and a fal result carrying EICAR fails its job.

use std::time::{Duration, Instant};

use atelier_proto::image::v1::{
    self as pb, image_service_client::ImageServiceClient, upload_image_request::Data,
};
use atelier_testbed::{
    Backend, ClamdConfig, Options, ScanUnavailable as Unavailable, ScannerConfig, TestPlatform,
};
use atelier_testkit::{
    clamd::{self, Clamd},
    fixtures,
    rest::{self, User},
};
use hyper_util::{client::legacy::Client as HyperClient, rt::TokioExecutor};
use reqwest::{Client, StatusCode, header, multipart};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use tonic_web::GrpcWebClientLayer;

fn options(clamd: &Clamd, unavailable: Unavailable) -> Options {
    let mut options = Options::new(Backend::Sqlite);
    let mut config = ClamdConfig::new(clamd.address().parse().expect("address"));
    config.connect_timeout = Duration::from_secs(2);
    config.io_timeout = Duration::from_secs(20);
    config.unavailable = unavailable;
    options.scanner = ScannerConfig::Clamd(config);
    // Within clamd's StreamMaxLength, as the README asks.
    options.max_file_bytes = clamd::STREAM_MAX_BYTES;
    options.max_result_bytes = clamd::STREAM_MAX_BYTES;
    options
}

async fn rest_upload(
    platform: &TestPlatform,
    user: &User,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("image/png")
        .expect("mime");
    Client::new()
        .post(format!("{}/api/images/upload", platform.gateway_url))
        .bearer_auth(&user.token)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    let code = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body: Value = response.json().await.expect("problem");
    assert_eq!(code, status, "{body}");
    assert_eq!(
        content_type.expect("content type"),
        "application/problem+json"
    );
    body
}

fn assert_malware_problem(problem: &Value) {
    assert_eq!(
        problem["type"], "https://atelier.dev/problems/malware-detected",
        "{problem}"
    );
    assert_eq!(problem["status"], 422);
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("Eicar-Test-"),
        "names the signature: {detail}"
    );
}

/// The messages of an upload of `bytes`, chunked as a client would send them.
fn upload_messages(bytes: &[u8]) -> Vec<pb::UploadImageRequest> {
    let mut messages = vec![pb::UploadImageRequest {
        data: Some(Data::Metadata(pb::UploadMetadata {
            filename: "eicar.png".into(),
            mime_type: "image/png".into(),
            size_bytes: None,
        })),
    }];
    messages.extend(bytes.chunks(16 * 1024).map(|chunk| pb::UploadImageRequest {
        data: Some(Data::Chunk(chunk.to_vec().into())),
    }));
    messages
}

fn authorized<T>(user: &User, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", user.token).parse().expect("header"),
    );
    request
}

fn assert_malware_status(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "malware-detected");
    assert!(
        info.metadata
            .get("signature")
            .is_some_and(|signature| signature.starts_with(clamd::SIGNATURE)),
        "{info:?}"
    );
}

/// The caller's images, by REST.
async fn images(platform: &TestPlatform, user: &User) -> Vec<Value> {
    let (status, body) = rest::get(platform, user, "/api/images").await;
    assert_eq!(status, StatusCode::OK);
    body["images"].as_array().expect("images").clone()
}

/// Files in the platform's local object store.
fn stored_objects(platform: &TestPlatform) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&platform.data_dir.join("objects"), &mut found);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malware_is_refused_on_every_transport_and_clean_images_are_scanned() {
    let clamd = Clamd::start().expect("clamd");
    let platform = TestPlatform::spawn_with(options(&clamd, Unavailable::Refuse)).await;
    let user = rest::sign_up(&platform, "scanned@example.com").await;
    let infected = clamd::png_with_eicar(320, 240);

    // REST, multipart and raw body.
    let refused = rest_upload(&platform, &user, "eicar.png", infected.clone()).await;
    assert_malware_problem(&problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await);
    let refused = Client::new()
        .put(format!("{}/api/images/upload", platform.gateway_url))
        .query(&[("filename", "eicar.png")])
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(infected.clone())
        .send()
        .await
        .expect("put");
    assert_malware_problem(&problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await);

    // A plain EICAR file is no image, but is named as malware.
    let refused = rest_upload(&platform, &user, "eicar.com", clamd::eicar()).await;
    assert_malware_problem(&problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await);

    // gRPC-web over HTTP/1.1, as a browser sends it.
    let http1 = HyperClient::builder(TokioExecutor::new()).build_http();
    let web = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1);
    let mut web = ImageServiceClient::with_origin(web, platform.gateway_url.parse().expect("uri"));
    let refused = web
        .upload_image(authorized(
            &user,
            futures::stream::iter(upload_messages(&infected)),
        ))
        .await
        .expect_err("gRPC-web upload of malware");
    assert_malware_status(&refused);

    // Native gRPC through the gateway.
    let mut native = ImageServiceClient::connect(platform.gateway_url.clone())
        .await
        .expect("connect");
    let refused = native
        .upload_image(authorized(
            &user,
            futures::stream::iter(upload_messages(&infected)),
        ))
        .await
        .expect_err("gRPC upload of malware");
    assert_malware_status(&refused);

    // Nothing of any of them is kept.
    assert!(images(&platform, &user).await.is_empty());
    assert!(
        stored_objects(&platform).is_empty(),
        "{:?}",
        stored_objects(&platform)
    );

    // A clean image is stored, and says it was scanned.
    let response = rest_upload(&platform, &user, "clean.png", fixtures::png(320, 240)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let image: Value = response.json().await.expect("image");
    assert_eq!(image["scan_status"], "clean", "{image}");
    assert_eq!(image["scanner"], "clamd");
    assert!(image["scanned_at"].is_string(), "{image}");
    let stored = native
        .upload_image(authorized(
            &user,
            futures::stream::iter(upload_messages(&fixtures::jpeg(200, 100))),
        ))
        .await
        .expect("clean gRPC upload")
        .into_inner()
        .image
        .expect("image");
    assert_eq!(stored.scan_status(), pb::ScanStatus::Clean);
    assert_eq!(stored.scanner, "clamd");
    assert!(stored.scanned_at.is_some());
    assert_eq!(images(&platform, &user).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scanner_images_are_recorded_as_not_scanned() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = rest::sign_up(&platform, "unscanned@example.com").await;
    let response = rest_upload(&platform, &user, "clean.png", fixtures::png(64, 64)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let image: Value = response.json().await.expect("image");
    assert_eq!(image["scan_status"], "not_scanned", "{image}");
    assert!(
        image["scanned_at"].is_null() && image["scanner"].is_null(),
        "{image}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clamd_that_is_down_fails_uploads_closed_at_once() {
    let mut clamd = Clamd::start().expect("clamd");
    let platform = TestPlatform::spawn_with(options(&clamd, Unavailable::Refuse)).await;
    let user = rest::sign_up(&platform, "refused@example.com").await;
    clamd.stop();

    let started = Instant::now();
    let refused = rest_upload(&platform, &user, "clean.png", fixtures::png(64, 64)).await;
    let body = problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        body["type"], "https://atelier.dev/problems/scanner-unavailable",
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("malware scanner is unavailable")),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "at once");
    assert!(images(&platform, &user).await.is_empty());
    assert!(stored_objects(&platform).is_empty());

    // Back up: uploads pass again.
    clamd.restart().expect("clamd back");
    let response = rest_upload(&platform, &user, "clean.png", fixtures::png(64, 64)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clamd_that_is_down_is_waited_for_up_to_the_bound() {
    let mut clamd = Clamd::start().expect("clamd");
    let bound = Duration::from_secs(5);
    let platform = TestPlatform::spawn_with(options(&clamd, Unavailable::Wait(bound))).await;
    let user = rest::sign_up(&platform, "waiting@example.com").await;

    // Back within the bound: the upload completes, scanned.
    clamd.stop();
    let back = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(1500));
        clamd.restart().expect("clamd back");
        clamd
    });
    let started = Instant::now();
    let response = rest_upload(&platform, &user, "clean.png", fixtures::png(64, 64)).await;
    let mut clamd = back.await.expect("restart");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it waited"
    );
    let image: Value = response.json().await.expect("image");
    assert_eq!(image["scan_status"], "clean");

    // Not back: fails closed once the bound passed, keeping nothing.
    clamd.stop();
    let started = Instant::now();
    let refused = rest_upload(&platform, &user, "clean.png", fixtures::png(64, 64)).await;
    let body = problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        body["type"],
        "https://atelier.dev/problems/scanner-unavailable"
    );
    assert!(started.elapsed() >= bound, "waited {:?}", started.elapsed());
    assert_eq!(images(&platform, &user).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fal_result_carrying_malware_fails_its_job_and_is_not_kept() {
    let clamd = Clamd::start().expect("clamd");
    let platform = TestPlatform::spawn_with(options(&clamd, Unavailable::Refuse)).await;
    let user = rest::sign_up(&platform, "results@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(64, 48)).await;

    // fal's results now carry the EICAR string after the image's end.
    platform.fal_sim().set_result_trailer(Some(clamd::eicar()));
    let job = rest::start_job(
        &platform,
        &user,
        &image,
        "esrgan-upscale",
        json!({"scale": 2}),
    )
    .await;
    let done = rest::finished(&platform, &user, &job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "result_malware", "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("malware")),
        "{done}"
    );
    let kept = images(&platform, &user).await;
    assert_eq!(kept.len(), 1, "only the input: {kept:?}");

    // Clean results are stored, scanned.
    platform.fal_sim().set_result_trailer(None);
    let job = rest::start_job(
        &platform,
        &user,
        &image,
        "esrgan-upscale",
        json!({"scale": 2}),
    )
    .await;
    let done = rest::finished(&platform, &user, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, results) = rest::get(&platform, &user, "/api/images?kind=result").await;
    let results = results["images"].as_array().expect("images").clone();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["scan_status"], "clean");
}
