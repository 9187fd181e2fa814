//! The REST additions for full-size photos, end to end on the fal simulator:
//! every output of a job, image search and paging, history search by file name,
//! prices, estimates and the refusal of results over the limits, estimated costs
//! per job and per batch.

use std::time::{Duration, Instant};

use atelier_testbed::{Backend, Options, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{User, finished, get, post, sign_up, start, start_job},
};
use reqwest::{Client, StatusCode, multipart};
use serde_json::{Value, json};

async fn upload_named(platform: &TestPlatform, user: &User, name: &str, bytes: Vec<u8>) -> String {
    let part = multipart::Part::bytes(bytes).file_name(name.to_owned());
    let response = Client::new()
        .post(format!("{}/api/images/upload", platform.gateway_url))
        .bearer_auth(&user.token)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    let status = response.status();
    let body: Value = response.json().await.expect("image");
    assert_eq!(status, StatusCode::CREATED, "upload: {body}");
    body["id"].as_str().expect("id").to_owned()
}

fn names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| {
            image["original_filename"]
                .as_str()
                .expect("name")
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_output_is_listed_with_its_image_in_jobs_batches_and_history() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "outputs@example.com").await;
    let image = upload_named(&platform, &user, "harbour.png", fixtures::png(64, 48)).await;

    let flux = start_job(
        &platform,
        &user,
        &image,
        "flux-image-to-image",
        json!({"prompt": "a watercolour harbour", "num_images": 3, "output_format": "png"}),
    )
    .await;
    let mask = start_job(
        &platform,
        &user,
        &image,
        "birefnet-background-removal",
        json!({"output_mask": true}),
    )
    .await;
    let flux = finished(&platform, &user, &flux).await;
    assert_eq!(flux["status"], "completed", "{flux}");
    let outputs = flux["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 3, "{flux}");
    let mut ids = std::collections::HashSet::new();
    for output in outputs {
        assert!(ids.insert(output["image_id"].as_str().expect("id")));
        assert_eq!(output["role"], "image");
        assert_eq!(output["mime_type"], "image/png");
        assert_eq!(
            (output["width"].as_u64(), output["height"].as_u64()),
            (Some(64), Some(48))
        );
        assert!(output["file_size"].as_i64().expect("size") > 0);
        let filename = output["filename"].as_str().expect("filename");
        assert!(
            filename.starts_with("harbour_flux-image-to-image") && filename.ends_with(".png"),
            "{filename}"
        );
        let bytes = Client::new()
            .get(output["url"].as_str().expect("url"))
            .send()
            .await
            .expect("download")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(
            bytes.len() as i64,
            output["file_size"].as_i64().expect("size")
        );
    }
    assert_eq!(
        flux["result_image_id"], outputs[0]["image_id"],
        "the first output stays the result"
    );
    // The same object, though signed by two calls that may straddle a second.
    let path = |url: &Value| {
        url.as_str()
            .expect("url")
            .split('?')
            .next()
            .map(str::to_owned)
    };
    assert_eq!(path(&flux["result_url"]), path(&outputs[0]["url"]));

    let mask = finished(&platform, &user, &mask).await;
    assert_eq!(mask["status"], "completed", "{mask}");
    let outputs = mask["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 2, "the cut-out and its mask: {mask}");
    assert_eq!(outputs[0]["role"], "image");
    assert_eq!(outputs[1]["role"], "mask", "{mask}");
    assert_ne!(outputs[0]["filename"], outputs[1]["filename"]);

    // Listings, the batch view and history show the same outputs.
    let (status, list) = get(&platform, &user, "/api/processing/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<usize> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["outputs"].as_array().expect("outputs").len())
        .collect();
    assert_eq!(listed, [2, 3], "newest first: {list}");
    let (status, history) = get(&platform, &user, "/api/users/history").await;
    assert_eq!(status, StatusCode::OK);
    let items = history["items"].as_array().expect("items");
    // The same outputs; their signed URLs may have been signed a second apart.
    assert_eq!(unsigned(&items[1]["outputs"]), unsigned(&flux["outputs"]));
    assert_eq!(
        items[1]["result_images"].as_array().expect("results").len(),
        3
    );

    let (status, batch) = post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [image], "workflow_id": "flux-image-to-image",
               "parameters": {"prompt": "a lighthouse", "num_images": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let batch_id = batch["batch_id"].as_str().expect("batch").to_owned();
    let job = batch["job_ids"][0].as_str().expect("job").to_owned();
    finished(&platform, &user, &job).await;
    let (status, batch) = get(
        &platform,
        &user,
        &format!("/api/processing/batch/{batch_id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(batch["jobs"][0]["job_id"], job.as_str());
    assert_eq!(
        batch["jobs"][0]["outputs"]
            .as_array()
            .expect("outputs")
            .len(),
        2,
        "{batch}"
    );
}

/// Image search and paging on one backend.
async fn images_are_searched_by_name_and_kind_and_paged(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let user = sign_up(&platform, "library@example.com").await;
    let other = sign_up(&platform, "other@example.com").await;
    for name in [
        "IMG_2041.jpg",
        "img_2042.png",
        "Holiday 50%_off.png",
        "sunset.png",
    ] {
        let bytes = if name.ends_with(".jpg") {
            fixtures::jpeg(16, 16)
        } else {
            fixtures::png(16, 16)
        };
        upload_named(&platform, &user, name, bytes).await;
    }
    upload_named(&platform, &other, "IMG_9999.png", fixtures::png(16, 16)).await;
    let sunset = {
        let (_, page) = get(&platform, &user, "/api/images?q=sunset").await;
        page["images"][0]["id"].as_str().expect("id").to_owned()
    };
    let job = start_job(&platform, &user, &sunset, "canny-edges", json!({})).await;
    assert_eq!(
        finished(&platform, &user, &job).await["status"],
        "completed"
    );

    let (status, page) = get(&platform, &user, "/api/images?q=img_20").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        names(&page),
        ["IMG_2041.jpg", "img_2042.png"],
        "any case, only yours"
    );
    let (_, page) = get(&platform, &user, "/api/images?q=50%25_off").await;
    assert_eq!(names(&page), ["Holiday 50%_off.png"]);
    let (_, page) = get(&platform, &user, "/api/images?q=5_%25").await;
    assert_eq!(
        names(&page),
        Vec::<String>::new(),
        "% and _ are not wildcards"
    );
    let (_, page) = get(&platform, &user, "/api/images?q=IMG_9999").await;
    assert_eq!(
        names(&page),
        Vec::<String>::new(),
        "another user's images stay invisible"
    );

    let (_, originals) = get(&platform, &user, "/api/images?kind=original&page_size=100").await;
    assert_eq!(originals["images"].as_array().expect("images").len(), 4);
    let (_, results) = get(&platform, &user, "/api/images?kind=result").await;
    let results = results["images"].as_array().expect("images");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["kind"], "result");
    let (status, problem) = get(&platform, &user, "/api/images?kind=thumbnail").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&problem), ["kind"]);
    let long = "x".repeat(201);
    let (status, problem) = get(&platform, &user, &format!("/api/images?q={long}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&problem), ["query"]);

    // Every image is reached page by page, the search kept across pages.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) = get(
            &platform,
            &user,
            &format!("/api/images?q=.PNG&kind=original&page_size=1&page_token={token}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for image in page["images"].as_array().expect("images") {
            seen.push(
                image["original_filename"]
                    .as_str()
                    .expect("name")
                    .to_owned(),
            );
        }
        match page["next_page_token"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["Holiday 50%_off.png", "img_2042.png", "sunset.png"]);

    // History finds jobs by their input's file name, however it is typed.
    let image = {
        let (_, page) = get(&platform, &user, "/api/images?q=IMG_2041").await;
        page["images"][0]["id"].as_str().expect("id").to_owned()
    };
    let job = start_job(&platform, &user, &image, "canny-edges", json!({})).await;
    finished(&platform, &user, &job).await;
    for query in ["IMG_2041", "img_2041.jpg", "2041"] {
        let (status, history) =
            get(&platform, &user, &format!("/api/users/history?q={query}")).await;
        assert_eq!(status, StatusCode::OK, "{history}");
        let found: Vec<&str> = history["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["job_id"].as_str().expect("job"))
            .collect();
        assert_eq!(
            found,
            [job.as_str()],
            "{query:?} finds the job on IMG_2041.jpg"
        );
    }
    let (_, history) = get(&platform, &user, "/api/users/history?q=9999").await;
    assert!(history["items"].as_array().expect("items").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_are_searched_by_name_and_kind_and_paged_on_postgres() {
    images_are_searched_by_name_and_kind_and_paged(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_are_searched_by_name_and_kind_and_paged_on_sqlite() {
    images_are_searched_by_name_and_kind_and_paged(Backend::Sqlite).await;
}

/// Waits (at most 30 s) until the workflow service has read its prices.
async fn priced_workflows(platform: &TestPlatform, user: &User) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, list) = get(platform, user, "/api/workflows").await;
        assert_eq!(status, StatusCode::OK);
        if list["workflows"]
            .as_array()
            .expect("workflows")
            .iter()
            .all(|workflow| workflow["pricing"].is_object())
        {
            return list;
        }
        assert!(Instant::now() < deadline, "never priced: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prices_estimates_and_refusals_over_the_limits() {
    let mut options = Options::new(Backend::Postgres);
    options.max_pixels = 2_000_000;
    options.pricing_every = Duration::from_secs(1);
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "estimates@example.com").await;
    let other = sign_up(&platform, "stranger@example.com").await;

    let list = priced_workflows(&platform, &user).await;
    let workflow = |id: &str| {
        list["workflows"]
            .as_array()
            .expect("workflows")
            .iter()
            .find(|workflow| workflow["id"] == id)
            .cloned()
            .expect("workflow")
    };
    assert_eq!(
        workflow("flux-image-to-image")["pricing"],
        json!({"unit_price": 0.025, "unit": "megapixels", "currency": "USD"})
    );
    assert_eq!(
        workflow("birefnet-background-removal")["pricing"]["unit"],
        "image"
    );
    for property in workflow("esrgan-upscale")["parameters_schema"]["properties"]
        .as_object()
        .expect("properties")
        .values()
    {
        assert!(property["title"].is_string() && property["description"].is_string());
    }

    // fal unreachable: the last good prices stay.
    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        outage_until: Some(Instant::now() + Duration::from_secs(3600)),
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, kept) = get(&platform, &user, "/api/workflows/flux-image-to-image").await;
    assert_eq!(kept["pricing"]["unit_price"], 0.025, "{kept}");
    platform
        .fal_sim()
        .set_failures(atelier_fal_sim::Failures::default());

    let photo = upload_named(&platform, &user, "photo.png", fixtures::png(1000, 800)).await;
    let small = upload_named(&platform, &user, "small.png", fixtures::png(100, 50)).await;
    let foreign = upload_named(&platform, &other, "theirs.png", fixtures::png(10, 10)).await;

    let (status, estimate) = post(
        &platform,
        &user,
        "/api/workflows/flux-image-to-image/estimate",
        json!({"image_ids": [photo, small], "parameters": {"prompt": "a fox", "num_images": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{estimate}");
    assert_eq!(estimate["workflow_id"], "flux-image-to-image");
    assert_eq!(estimate["currency"], "USD");
    assert_eq!(estimate["unit"], "megapixels");
    assert_eq!(estimate["max_result_pixels"], 2_000_000);
    assert!(estimate["max_result_bytes"].as_i64().expect("bytes") > 0);
    let jobs = estimate["jobs"].as_array().expect("jobs");
    assert_eq!(jobs[0]["image_id"], photo.as_str());
    assert_eq!(
        (
            jobs[0]["input_width"].as_u64(),
            jobs[0]["input_height"].as_u64()
        ),
        (Some(1000), Some(800))
    );
    assert_eq!(jobs[0]["outputs"].as_array().expect("outputs").len(), 2);
    assert_eq!(
        jobs[0]["outputs"][0],
        json!({"role": "image", "width": 1000, "height": 800,
        "estimated_bytes": jobs[0]["outputs"][0]["estimated_bytes"].clone()})
    );
    // 2 images × 0.8 MP × 0.025, then 2 × 0.005 MP × 0.025.
    assert_eq!(jobs[0]["cost"], 0.04);
    assert_eq!(jobs[1]["cost"], 0.00025);
    assert_eq!(estimate["total_cost"], 0.04025);
    assert_eq!(jobs[0]["allowed"], true);
    assert_eq!(jobs[0]["reason"], Value::Null);

    // Per GPU second: no cost before the run.
    let (_, esrgan) = post(
        &platform,
        &user,
        "/api/workflows/esrgan-upscale/estimate",
        json!({"image_ids": [photo], "parameters": {"scale": 2}}),
    )
    .await;
    assert_eq!(esrgan["jobs"][0]["cost"], Value::Null, "{esrgan}");
    assert_eq!(esrgan["total_cost"], Value::Null);
    assert_eq!(esrgan["jobs"][0]["outputs"][0]["width"], 2000);
    // 2000 × 1600 is over the 2 MP limit of this platform.
    assert_eq!(esrgan["jobs"][0]["allowed"], false);
    let reason = esrgan["jobs"][0]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("the result would be 2000×1600 pixels (about ")
            && reason.ends_with("over the largest result of 2 megapixels"),
        "{reason}"
    );

    // Bad input: the same answers as a start.
    let (status, problem) = post(
        &platform,
        &user,
        "/api/workflows/esrgan-upscale/estimate",
        json!({"image_ids": [photo], "parameters": {"scale": 80}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(fields(&problem), ["parameters.scale"]);
    let (status, problem) = post(
        &platform,
        &user,
        "/api/workflows/esrgan-upscale/estimate",
        json!({"image_ids": []}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&problem), ["image_ids"]);
    let (status, _) = post(
        &platform,
        &user,
        "/api/workflows/esrgan-upscale/estimate",
        json!({"image_ids": [foreign]}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another user's image is not found"
    );
    let (status, _) = post(
        &platform,
        &user,
        "/api/workflows/no-such-workflow/estimate",
        json!({"image_ids": [photo]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A start whose result would not fit is refused with the reason, on the
    // parameter to change; a batch with one such image starts nothing.
    let response = start(
        &platform,
        &user,
        json!({"image_id": photo, "workflow_id": "esrgan-upscale", "parameters": {"scale": 2}}),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(fields(&problem), ["parameters.scale"]);
    assert_eq!(problem["errors"][0]["detail"], reason, "{problem}");
    let (status, problem) = post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [small, photo], "workflow_id": "esrgan-upscale", "parameters": {"scale": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(fields(&problem), ["parameters.scale"]);
    let (_, jobs) = get(&platform, &user, "/api/processing/jobs").await;
    assert!(
        jobs["jobs"].as_array().expect("jobs").is_empty(),
        "nothing started: {jobs}"
    );

    // The estimated cost is kept with each job and added up per batch.
    let job = start_job(
        &platform,
        &user,
        &small,
        "flux-image-to-image",
        json!({"prompt": "a fox"}),
    )
    .await;
    let (_, status_body) = get(&platform, &user, &format!("/api/processing/{job}/status")).await;
    assert_eq!(
        status_body["estimated_cost"],
        json!({"amount": 0.000125, "currency": "USD"})
    );
    let (status, batch) = post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [small, photo], "workflow_id": "birefnet-background-removal"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert_eq!(
        batch["estimated_cost"],
        json!({"amount": 0.004, "currency": "USD"})
    );
    let (_, esrgan_small) = post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [small], "workflow_id": "esrgan-upscale"}),
    )
    .await;
    assert_eq!(
        esrgan_small["estimated_cost"],
        Value::Null,
        "no price per GPU second"
    );
    assert_eq!(esrgan_small["jobs"][0]["estimated_cost"], Value::Null);
}

/// Reads a ZIP response: its entries' names and bytes, in order.
async fn unzip(response: reqwest::Response) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let bytes = response.bytes().await.expect("zip bytes");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a ZIP");
    (0..archive.len())
        .map(|index| {
            let mut file = archive.by_index(index).expect("entry");
            assert_eq!(file.compression(), zip::CompressionMethod::Stored);
            let mut content = Vec::new();
            file.read_to_end(&mut content).expect("read");
            (file.name().to_owned(), content)
        })
        .collect()
}

/// Whether an entry is `expected`, or `expected` made unique (`stem (n).ext`).
fn named_after(name: &str, expected: &str) -> bool {
    if name == expected {
        return true;
    }
    let (stem, extension) = expected.rsplit_once('.').unwrap_or((expected, ""));
    name.strip_prefix(stem)
        .and_then(|rest| rest.strip_prefix(" ("))
        .and_then(|rest| rest.strip_suffix(&format!(").{extension}")))
        .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2))
}

async fn download(platform: &TestPlatform, user: &User, path: &str) -> reqwest::Response {
    Client::new()
        .get(format!("{}{path}", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("download")
}

/// Each output's name and bytes, as the job lists them and its URL serves them.
async fn outputs_of(job: &Value) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for output in job["outputs"].as_array().expect("outputs") {
        let bytes = Client::new()
            .get(output["url"].as_str().expect("url"))
            .send()
            .await
            .expect("output")
            .bytes()
            .await
            .expect("bytes");
        files.push((
            output["filename"].as_str().expect("name").to_owned(),
            bytes.to_vec(),
        ));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_and_batches_download_as_streamed_zips_of_their_outputs() {
    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let user = sign_up(&platform, "zipper@example.com").await;
    let other = sign_up(&platform, "snoop@example.com").await;
    let first = upload_named(&platform, &user, "same.png", fixtures::png(40, 30)).await;
    let second = upload_named(&platform, &user, "same.png", fixtures::png(30, 40)).await;

    let job = start_job(
        &platform,
        &user,
        &first,
        "flux-image-to-image",
        json!({"prompt": "a kite", "num_images": 3, "output_format": "png"}),
    )
    .await;
    let done = finished(&platform, &user, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    let response = download(&platform, &user, &format!("/api/processing/{job}/download")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"atelier-job-")
            && disposition.contains(".zip\"; filename*=UTF-8''atelier-job-")
            && disposition.ends_with(".zip"),
        "{disposition}"
    );
    let files = unzip(response).await;
    let expected = outputs_of(&done).await;
    assert_eq!(files.len(), 3);
    for ((name, bytes), (expected_name, expected_bytes)) in files.iter().zip(&expected) {
        assert!(
            named_after(name, expected_name),
            "{name} for {expected_name}"
        );
        assert!(bytes == expected_bytes, "{name}: the bytes of the output");
        image::load_from_memory(bytes).expect("a real image");
    }
    let names: std::collections::HashSet<_> =
        files.iter().map(|(name, _)| name.to_lowercase()).collect();
    assert_eq!(
        names.len(),
        3,
        "names made unique: {:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );

    // A batch over two inputs of the same name: one entry per output, in order,
    // none overwriting another.
    let (status, batch) = post(
        &platform,
        &user,
        "/api/processing/batch",
        json!({"image_ids": [first, second], "workflow_id": "rembg-background-removal"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let batch_id = batch["batch_id"].as_str().expect("batch").to_owned();
    let mut jobs = Vec::new();
    for id in batch["job_ids"].as_array().expect("ids") {
        jobs.push(finished(&platform, &user, id.as_str().expect("id")).await);
    }
    let response = download(
        &platform,
        &user,
        &format!("/api/processing/batch/{batch_id}/download"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let files = unzip(response).await;
    let names: Vec<&str> = files.iter().map(|file| file.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "same_rembg-background-removal.png",
            "same_rembg-background-removal (2).png"
        ],
        "one entry per output, none overwriting another"
    );
    for (file, job) in files.iter().zip(&jobs) {
        let expected = outputs_of(job).await;
        assert!(
            file.1 == expected[0].1,
            "{}: the bytes of its job's output",
            file.0
        );
    }
    let sizes: Vec<(u32, u32)> = files
        .iter()
        .map(|(_, bytes)| {
            let image = image::load_from_memory(bytes).expect("image");
            (image.width(), image.height())
        })
        .collect();
    assert_eq!(
        sizes,
        [(40, 30), (30, 40)],
        "in the order the batch was started"
    );

    // Another user's job and batch are not found; a job without outputs yet
    // has nothing to download.
    let response = download(
        &platform,
        &other,
        &format!("/api/processing/batch/{batch_id}/download"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = download(
        &platform,
        &other,
        &format!("/api/processing/{job}/download"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    platform.fal_sim().set_timing(atelier_fal_sim::Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::from_secs(30),
    });
    let slow = start_job(&platform, &user, &first, "canny-edges", json!({})).await;
    let response = download(
        &platform,
        &user,
        &format!("/api/processing/{slow}/download"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

/// Outputs without their signed URLs (whose expiry moves with the clock).
fn unsigned(outputs: &Value) -> Value {
    let mut outputs = outputs.clone();
    for output in outputs.as_array_mut().expect("outputs") {
        let output = output.as_object_mut().expect("an output");
        output.remove("url");
        output.remove("thumbnail_url");
    }
    outputs
}
