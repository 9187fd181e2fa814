//! Full-size photos end to end, through REST on PostgreSQL, Redis, S3 and the fal
//! simulator: every catalogue workflow on a 24-megapixel JPEG and on a
//! 12-megapixel PNG with transparency, results streamed into storage (well over
//! the 8 MiB a single gRPC message may carry) and named after their input.

use std::time::Duration;

use atelier_testbed::{Backend, Options, QueueBackend, Storage, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{reached_within, sign_up, start, try_upload_as},
};
use image::ImageFormat;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const MB: u64 = 1024 * 1024;

async fn upload_as(
    platform: &TestPlatform,
    user: &atelier_testkit::rest::User,
    name: &str,
    bytes: Vec<u8>,
) -> String {
    let response = try_upload_as(platform, user, name, bytes).await;
    let status = response.status();
    let body: Value = response.json().await.expect("image");
    assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    body["id"].as_str().expect("id").to_owned()
}

/// The pixel size a workflow's defaults give for a `width`x`height` input.
fn expected_size(workflow: &Value, width: u64, height: u64) -> (u64, u64) {
    let schema = &workflow["parameters_schema"]["properties"];
    let factor = ["scale", "upscale_factor"]
        .iter()
        .find_map(|name| schema[name]["default"].as_f64())
        .unwrap_or(1.0);
    let scale = |n: u64| (n as f64 * factor).round() as u64;
    (scale(width), scale(height))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_workflow_completes_on_full_size_photos() {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    options.storage = Storage::S3;
    options.max_file_bytes = 100 * MB;
    options.worker_concurrency = 2;
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "photographer@example.com").await;
    let client = Client::new();

    let jpeg = fixtures::encode(&fixtures::photo(6000, 4000), ImageFormat::Jpeg);
    let png = fixtures::png_with_alpha(4000, 3000);
    let inputs = [
        (
            "IMG_2041.jpg",
            upload_as(&platform, &user, "IMG_2041.jpg", jpeg).await,
            6000,
            4000,
        ),
        (
            "cutout.png",
            upload_as(&platform, &user, "cutout.png", png).await,
            4000,
            3000,
        ),
    ];

    let catalogue: Value = client
        .get(format!("{}/api/workflows", platform.gateway_url))
        .send()
        .await
        .expect("workflows")
        .json()
        .await
        .expect("json");
    let mut jobs = Vec::new();
    for workflow in catalogue["workflows"].as_array().expect("list") {
        let id = workflow["id"].as_str().expect("id");
        let needs_prompt = workflow["parameters_schema"]["required"]
            .as_array()
            .is_some_and(|required| required.iter().any(|name| name == "prompt"));
        let parameters = if needs_prompt {
            json!({"prompt": "a watercolour painting"})
        } else {
            json!({})
        };
        for (name, image, width, height) in &inputs {
            let (out_w, out_h) = expected_size(workflow, *width, *height);
            let response = start(
                &platform,
                &user,
                json!({"image_id": image, "workflow_id": id, "parameters": parameters}),
                None,
            )
            .await;
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            if out_w * out_h > 100_000_000 {
                // Over the largest result: refused before anything runs, with the reason.
                assert_eq!(
                    status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{id} on {name}: {body}"
                );
                continue;
            }
            assert_eq!(status, StatusCode::ACCEPTED, "{id} on {name}: {body}");
            jobs.push((
                id.to_owned(),
                name.to_owned(),
                body["job_id"].as_str().expect("job").to_owned(),
                (out_w, out_h),
            ));
        }
    }
    assert!(jobs.len() >= 16, "{} jobs ran", jobs.len());

    let mut largest = 0;
    for (workflow, input, job, (out_w, out_h)) in jobs {
        let done = reached_within(
            &platform,
            &user,
            &job,
            &["completed", "failed", "cancelled"],
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(done["status"], "completed", "{workflow} on {input}: {done}");
        let result_id = done["result_image_id"].as_str().expect("result");
        let image: Value = client
            .get(format!("{}/api/images/{result_id}", platform.gateway_url))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("result image")
            .json()
            .await
            .expect("json");
        let stem = input.rsplit_once('.').map_or(input, |(stem, _)| stem);
        let named = image["original_filename"].as_str().expect("name");
        assert!(
            named.starts_with(&format!("{stem}_{workflow}.")),
            "{workflow} on {input}: named {named}"
        );
        let extension = match image["mime_type"].as_str().expect("type") {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            other => panic!("{workflow}: unexpected type {other}"),
        };
        assert!(named.ends_with(&format!(".{extension}")), "{named}");
        if workflow.contains("upscale") {
            assert_eq!(
                (image["width"].as_u64(), image["height"].as_u64()),
                (Some(out_w), Some(out_h)),
                "{workflow} on {input}"
            );
        }
        // The stored bytes are whole: their size is what the image says.
        let url = image["url"].as_str().expect("url");
        let served = client.get(url).send().await.expect("download");
        assert_eq!(served.status(), StatusCode::OK);
        let bytes = served.bytes().await.expect("bytes");
        assert_eq!(
            bytes.len() as u64,
            image["file_size"].as_u64().expect("size")
        );
        let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .expect("format")
            .into_dimensions()
            .expect("a real image");
        assert_eq!(
            (Some(u64::from(w)), Some(u64::from(h))),
            (image["width"].as_u64(), image["height"].as_u64())
        );
        largest = largest.max(bytes.len());
    }
    assert!(
        largest as u64 > 8 * MB,
        "the largest result, {} MB, must be over a gRPC message's 8 MiB",
        largest as u64 / MB
    );
}
