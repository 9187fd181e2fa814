//! Uploads through the gateway (REST multipart) and the image service (gRPC
//! client streaming), against real storage: every check an upload must pass,
//! and what is left behind when one fails.

use std::time::Duration;

use atelier_proto::image::v1::{
    self as pb, image_service_client::ImageServiceClient, upload_image_request::Data,
};
use atelier_testbed::{Backend, Options, Storage, TestPlatform};
use atelier_testkit::{backends, fixtures};
use reqwest::{Client, StatusCode, header, multipart};
use serde_json::{Value, json};

struct User {
    token: String,
}

async fn sign_up(platform: &TestPlatform, email: &str) -> User {
    let response = Client::new()
        .post(format!("{}/api/auth/register", platform.gateway_url))
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("tokens");
    User {
        token: body["access_token"].as_str().expect("token").to_owned(),
    }
}

async fn upload(
    platform: &TestPlatform,
    user: &User,
    name: &str,
    bytes: Vec<u8>,
    declared: &str,
) -> reqwest::Response {
    let part = multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(declared)
        .expect("mime");
    Client::new()
        .post(format!("{}/api/images/upload", platform.gateway_url))
        .bearer_auth(&user.token)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload")
}

async fn uploaded(platform: &TestPlatform, user: &User, name: &str, bytes: Vec<u8>) -> Value {
    let response = upload(platform, user, name, bytes, "application/octet-stream").await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap_or_default()
    );
    response.json().await.expect("image")
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    response.json().await.expect("problem")
}

async fn get(url: &str, user: Option<&User>) -> reqwest::Response {
    let mut request = Client::new().get(url);
    if let Some(user) = user {
        request = request.bearer_auth(&user.token);
    }
    request.send().await.expect("get")
}

async fn list(platform: &TestPlatform, user: &User) -> Vec<Value> {
    let response = get(&format!("{}/api/images", platform.gateway_url), Some(user)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("list");
    body["images"].as_array().expect("images").clone()
}

/// Files under `dir`, recursively (the local object store and upload spool).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_format_is_stored_with_a_thumbnail() {
    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let user = sign_up(&platform, "formats@example.com").await;
    for (name, bytes, mime) in fixtures::every_format(1200, 800) {
        let size = bytes.len() as i64;
        // The declared type is wrong on purpose: only the content counts.
        let response = upload(&platform, &user, name, bytes.clone(), "text/plain").await;
        assert_eq!(response.status(), StatusCode::CREATED, "{name}");
        let image: Value = response.json().await.expect("image");
        assert_eq!(image["mime_type"], mime, "{name}");
        assert_eq!(image["original_filename"], name);
        assert_eq!(
            (image["width"].as_u64(), image["height"].as_u64()),
            (Some(1200), Some(800)),
            "{name}"
        );
        assert_eq!(image["file_size"].as_i64(), Some(size));
        assert_eq!(image["kind"], "original");
        let id = image["id"].as_str().expect("id");
        assert!(
            image["filename"]
                .as_str()
                .expect("filename")
                .starts_with(id)
        );
        assert_eq!(image["sha256"].as_str().expect("sha").len(), 64);

        let original = get(image["url"].as_str().expect("url"), None).await;
        assert_eq!(original.status(), StatusCode::OK, "{name}");
        assert_eq!(original.headers()[header::CONTENT_TYPE], mime);
        assert_eq!(
            original.bytes().await.expect("bytes").to_vec(),
            bytes,
            "{name} served as stored"
        );

        let thumbnail = get(image["thumbnail_url"].as_str().expect("thumbnail"), None).await;
        assert_eq!(thumbnail.status(), StatusCode::OK);
        let thumb = image::load_from_memory(&thumbnail.bytes().await.expect("thumb"))
            .expect("decode thumbnail");
        assert_eq!((thumb.width(), thumb.height()), (512, 341), "{name}");
    }
    let transparent = uploaded(
        &platform,
        &user,
        "alpha.png",
        fixtures::png_with_alpha(600, 600),
    )
    .await;
    let thumbnail = get(transparent["thumbnail_url"].as_str().expect("thumb"), None).await;
    assert_eq!(
        thumbnail.headers()[header::CONTENT_TYPE],
        "image/webp",
        "transparency is kept"
    );
}

/// An image already within a thumbnail's size, and no larger in bytes than a
/// thumbnail, is its own thumbnail: one object, served as itself, deleted once.
/// (One turned by its EXIF orientation still gets an upright thumbnail of its own:
/// `exif_orientation_is_honoured_and_location_stripped`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_image_is_its_own_thumbnail() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "small@example.com").await;
    let objects = platform.data_dir.join("objects/objects");
    let bytes = fixtures::png(64, 48);
    let image = uploaded(&platform, &user, "small.png", bytes.clone()).await;
    let thumbnail = get(image["thumbnail_url"].as_str().expect("thumbnail"), None).await;
    assert_eq!(thumbnail.status(), StatusCode::OK);
    assert_eq!(thumbnail.headers()[header::CONTENT_TYPE], "image/png");
    assert_eq!(thumbnail.bytes().await.expect("bytes").to_vec(), bytes);
    assert_eq!(files_under(&objects).len(), 1, "the original only");

    // A large one keeps a thumbnail of its own.
    let large = uploaded(&platform, &user, "large.png", fixtures::png(900, 600)).await;
    let thumbnail = get(large["thumbnail_url"].as_str().expect("thumbnail"), None).await;
    assert_eq!(thumbnail.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(
        files_under(&objects).len(),
        3,
        "and an original and a thumbnail"
    );

    for image in [&image, &large] {
        let delete = Client::new()
            .delete(format!(
                "{}/api/images/{}",
                platform.gateway_url,
                image["id"].as_str().expect("id")
            ))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("delete");
        assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(files_under(&objects), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_and_leave_nothing() {
    let mut options = Options::new(Backend::Sqlite);
    options.max_file_bytes = 1024 * 1024;
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "bad@example.com").await;

    let html = upload(
        &platform,
        &user,
        "page.png",
        b"<html><body>hi</body></html>".to_vec(),
        "image/png",
    )
    .await;
    let html = problem(html, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(html["errors"][0]["field"], "file");

    let empty = upload(&platform, &user, "empty.png", Vec::new(), "image/png").await;
    problem(empty, StatusCode::UNPROCESSABLE_ENTITY).await;

    let avif = [&[0, 0, 0, 0x1c][..], b"ftypavif", &[0u8; 20][..]].concat();
    let avif = problem(
        upload(&platform, &user, "a.avif", avif, "image/avif").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert!(
        avif["detail"].as_str().expect("detail").contains("AVIF"),
        "{avif}"
    );

    let mut truncated = fixtures::png(400, 400);
    truncated.truncate(truncated.len() / 2);
    let truncated = problem(
        upload(&platform, &user, "half.png", truncated, "image/png").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        truncated["detail"]
            .as_str()
            .expect("detail")
            .contains("corrupt or truncated"),
        "{truncated}"
    );

    let mut truncated_jpeg = fixtures::jpeg(400, 400);
    truncated_jpeg.truncate(truncated_jpeg.len() / 2);
    problem(
        upload(&platform, &user, "half.jpg", truncated_jpeg, "image/jpeg").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let bomb = fixtures::png_bomb(60_000, 60_000);
    assert!(bomb.len() < 100);
    let bomb = problem(
        upload(&platform, &user, "bomb.png", bomb, "image/png").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        bomb["detail"]
            .as_str()
            .expect("detail")
            .contains("60000x60000"),
        "{bomb}"
    );

    let polyglot = upload(
        &platform,
        &user,
        "x.gif",
        fixtures::gif_script_polyglot(),
        "image/gif",
    )
    .await;
    problem(polyglot, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Over the limit mid-stream, in the service (1.5 MB) and, far over it, already
    // in the gateway (3 MB): refused as soon as the limit is crossed.
    for size in [1536 * 1024, 3 * 1024 * 1024] {
        let mut big_png = fixtures::png(8, 8);
        big_png.resize(size, 0x89);
        let too_big = upload(&platform, &user, "big.png", big_png, "image/png").await;
        let too_big = problem(too_big, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert!(
            too_big["detail"]
                .as_str()
                .expect("detail")
                .contains("limit"),
            "{too_big}"
        );
    }

    assert!(list(&platform, &user).await.is_empty(), "no rows");
    let objects = files_under(&platform.data_dir.join("objects"));
    assert!(objects.is_empty(), "no objects: {objects:?}");
    assert!(
        files_under(&platform.data_dir.join("uploads")).is_empty(),
        "no spooled uploads"
    );

    let anonymous = Client::new()
        .post(format!("{}/api/images/upload", platform.gateway_url))
        .multipart(multipart::Form::new().part(
            "file",
            multipart::Part::bytes(fixtures::png(4, 4)).file_name("a.png"),
        ))
        .send()
        .await
        .expect("upload");
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let no_file = Client::new()
        .post(format!("{}/api/images/upload", platform.gateway_url))
        .bearer_auth(&user.token)
        .multipart(multipart::Form::new().text("other", "x"))
        .send()
        .await
        .expect("upload");
    let no_file = problem(no_file, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(no_file["errors"][0]["field"], "file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polyglots_are_served_as_inert_images_and_filenames_are_only_text() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "names@example.com").await;

    let image = uploaded(
        &platform,
        &user,
        "../../etc/passwd.jpg",
        fixtures::jpeg_with_trailing_html(),
    )
    .await;
    assert_eq!(image["original_filename"], "passwd.jpg");
    assert_eq!(image["mime_type"], "image/jpeg");
    let served = get(image["url"].as_str().expect("url"), None).await;
    let headers = served.headers();
    assert_eq!(headers[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp")
            .contains("sandbox")
    );

    // A NUL and a path in the name, over gRPC where any string may be sent.
    let mut request = tonic::Request::new(futures::stream::iter([
        pb::UploadImageRequest {
            data: Some(Data::Metadata(pb::UploadMetadata {
                filename: "..\\..\\win.ini\0.png".into(),
                mime_type: "image/png".into(),
                size_bytes: None,
            })),
        },
        pb::UploadImageRequest {
            data: Some(Data::Chunk(fixtures::png(10, 10).into())),
        },
    ]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", user.token).parse().expect("header"),
    );
    let stored = ImageServiceClient::new(platform.image_channel())
        .upload_image(request)
        .await
        .expect("grpc upload")
        .into_inner()
        .image
        .expect("image");
    assert_eq!(stored.original_filename, "win.ini.png");
    assert!(!stored.filename.contains(".."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exif_orientation_is_honoured_and_location_stripped() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "exif@example.com").await;

    // Orientation 6: stored 300 wide and 200 high, displayed 200 wide.
    let rotated = uploaded(
        &platform,
        &user,
        "rotated.jpg",
        fixtures::jpeg_with_exif(300, 200, 6, false),
    )
    .await;
    assert_eq!(
        (rotated["width"].as_u64(), rotated["height"].as_u64()),
        (Some(200), Some(300))
    );
    let thumbnail = get(rotated["thumbnail_url"].as_str().expect("thumb"), None).await;
    let thumb = image::load_from_memory(&thumbnail.bytes().await.expect("bytes")).expect("decode");
    assert!(thumb.height() > thumb.width(), "the thumbnail is upright");

    let located_bytes = fixtures::jpeg_with_exif(300, 200, 6, true);
    let located = uploaded(&platform, &user, "located.jpg", located_bytes.clone()).await;
    assert_eq!(
        (located["width"].as_u64(), located["height"].as_u64()),
        (Some(200), Some(300))
    );
    let served = get(located["url"].as_str().expect("url"), None)
        .await
        .bytes()
        .await
        .expect("bytes");
    assert_ne!(served.to_vec(), located_bytes);
    let exif = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(served.to_vec()));
    assert!(
        exif.map_or(true, |exif| exif
            .fields()
            .all(|field| field.tag.context() != exif::Context::Gps)),
        "no GPS field is served"
    );
    let served = image::load_from_memory(&served).expect("decode");
    assert_eq!(
        (served.width(), served.height()),
        (200, 300),
        "re-encoded upright"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_serve_ranges_and_cannot_be_altered() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "ranges@example.com").await;
    let bytes = fixtures::png(64, 64);
    let first = uploaded(&platform, &user, "a.png", bytes.clone()).await;
    let second = uploaded(&platform, &user, "b.png", fixtures::png(32, 32)).await;
    let url = first["url"].as_str().expect("url");

    let partial = Client::new()
        .get(url)
        .header(header::RANGE, "bytes=10-19")
        .send()
        .await
        .expect("range");
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        partial.headers()[header::CONTENT_RANGE],
        format!("bytes 10-19/{}", bytes.len())
    );
    assert_eq!(
        partial.bytes().await.expect("bytes").to_vec(),
        bytes[10..20]
    );
    let suffix = Client::new()
        .get(url)
        .header(header::RANGE, "bytes=-5")
        .send()
        .await
        .expect("suffix");
    assert_eq!(
        suffix.bytes().await.expect("bytes").to_vec(),
        bytes[bytes.len() - 5..]
    );
    let beyond = Client::new()
        .get(url)
        .header(header::RANGE, "bytes=999999-")
        .send()
        .await
        .expect("beyond");
    problem(beyond, StatusCode::RANGE_NOT_SATISFIABLE).await;

    let first_id = first["id"].as_str().expect("id");
    let second_id = second["id"].as_str().expect("id");
    for altered in [
        url.replace(first_id, second_id),
        url.replace("original", "thumbnail"),
        url.replace("expires=", "expires=1"),
        url.replace("signature=", "signature=00"),
        url.split('?').next().expect("path").to_owned(),
    ] {
        let response = get(&altered, None).await;
        problem(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_images_are_not_found_on_every_route() {
    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let alice = sign_up(&platform, "alice@example.com").await;
    let bob = sign_up(&platform, "bob@example.com").await;
    let image = uploaded(&platform, &alice, "mine.png", fixtures::png(600, 400)).await;
    let id = image["id"].as_str().expect("id").to_owned();
    let url = format!("{}/api/images/{id}", platform.gateway_url);

    problem(get(&url, Some(&bob)).await, StatusCode::NOT_FOUND).await;
    let delete = Client::new()
        .delete(&url)
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("delete");
    problem(delete, StatusCode::NOT_FOUND).await;
    assert!(list(&platform, &bob).await.is_empty());
    problem(get(&url, None).await, StatusCode::UNAUTHORIZED).await;
    let malformed = format!("{}/api/images/not-an-id", platform.gateway_url);
    problem(get(&malformed, Some(&bob)).await, StatusCode::NOT_FOUND).await;

    let mut client = ImageServiceClient::new(platform.image_channel());
    fn as_user<T>(user: &User, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", user.token).parse().expect("header"),
        );
        request
    }
    let as_bob = |message| as_user(&bob, message);
    let status = client
        .get_image(as_bob(pb::GetImageRequest {
            image_id: id.clone(),
        }))
        .await
        .expect_err("get");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = client
        .download_image(as_user(
            &bob,
            pb::DownloadImageRequest {
                image_id: id.clone(),
                variant: 0,
            },
        ))
        .await
        .expect_err("download");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let batch = client
        .batch_get_images(as_user(
            &bob,
            pb::BatchGetImagesRequest {
                image_ids: vec![id.clone()],
            },
        ))
        .await
        .expect("batch");
    assert!(batch.into_inner().images.is_empty());

    // Alice still has it, and can delete it: objects first, then the row.
    assert_eq!(get(&url, Some(&alice)).await.status(), StatusCode::OK);
    let prefix = format!("images/{}/", image_owner(&platform, &alice).await);
    let objects_of_it = || async {
        platform
            .objects
            .list(&prefix)
            .await
            .expect("list")
            .into_iter()
            .filter(|key| key.contains(&id))
            .collect::<Vec<String>>()
    };
    assert_eq!(
        objects_of_it().await.len(),
        2,
        "an original and a thumbnail"
    );
    let delete = Client::new()
        .delete(&url)
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    problem(get(&url, Some(&alice)).await, StatusCode::NOT_FOUND).await;
    problem(
        get(image["url"].as_str().expect("url"), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        objects_of_it().await,
        Vec::<String>::new(),
        "its objects are removed"
    );
}

/// The user id behind `user`'s token.
async fn image_owner(platform: &TestPlatform, user: &User) -> String {
    let me: Value = get(&format!("{}/api/auth/me", platform.gateway_url), Some(user))
        .await
        .json()
        .await
        .expect("me");
    me["id"].as_str().expect("id").to_owned()
}

/// For a worker, an original small enough comes inline as a `data:` URI of its
/// bytes; a larger one (or with inlining off) as a signed URL that serves it. Either
/// way, only for the image's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_urls_inline_small_originals_for_workers() {
    use base64::Engine as _;
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "inline@example.com").await;
    let other = sign_up(&platform, "other@example.com").await;
    let bytes = fixtures::png(40, 30);
    let image = uploaded(&platform, &user, "small.png", bytes.clone()).await;
    let (owner, stranger) = (
        image_owner(&platform, &user).await,
        image_owner(&platform, &other).await,
    );
    let mut client = ImageServiceClient::new(platform.channel_as(
        atelier_testbed::ServiceName::Processing,
        &platform.image_url,
    ));
    let request = |user_id: &str, inline_max_bytes: i64| pb::GetDownloadUrlRequest {
        user_id: user_id.to_owned(),
        image_id: image["id"].as_str().expect("id").to_owned(),
        variant: pb::ImageVariant::Original as i32,
        ttl_seconds: 60,
        inline_max_bytes,
    };
    let size = bytes.len() as i64;
    let inline = client
        .get_download_url(request(&owner, size))
        .await
        .expect("inline")
        .into_inner();
    assert_eq!(
        inline.url,
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        )
    );
    for inline_max in [size - 1, 0] {
        let signed = client
            .get_download_url(request(&owner, inline_max))
            .await
            .expect("signed")
            .into_inner();
        assert!(signed.url.starts_with("http"), "{}", signed.url);
        let served = get(&signed.url, None).await;
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(served.bytes().await.expect("bytes").to_vec(), bytes);
    }
    let refused = client
        .get_download_url(request(&stranger, size))
        .await
        .expect_err("another user's image");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_images_newest_first() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "pages@example.com").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let image = uploaded(
            &platform,
            &user,
            &format!("{n}.png"),
            fixtures::png(8 + n, 8),
        )
        .await;
        ids.push(image["id"].as_str().expect("id").to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{}/api/images?page_size=2", platform.gateway_url);
        if let Some(token) = &token {
            url.push_str(&format!("&page_token={token}"));
        }
        let page: Value = get(&url, Some(&user)).await.json().await.expect("page");
        let images = page["images"].as_array().expect("images");
        assert!(images.len() <= 2);
        seen.extend(
            images
                .iter()
                .map(|image| image["id"].as_str().expect("id").to_owned()),
        );
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = get(
        &format!("{}/api/images?page_token=garbage!", platform.gateway_url),
        Some(&user),
    )
    .await;
    let bad = problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(bad["errors"][0]["field"], "page_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "quitter@example.com").await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", user.token).parse().expect("header"),
    );
    let mut client = ImageServiceClient::new(platform.image_channel());
    let call = tokio::spawn(async move { client.upload_image(request).await });
    sender
        .send(pb::UploadImageRequest {
            data: Some(Data::Metadata(pb::UploadMetadata {
                filename: "partial.png".into(),
                mime_type: "image/png".into(),
                size_bytes: None,
            })),
        })
        .await
        .expect("metadata");
    let png = fixtures::png(300, 300);
    sender
        .send(pb::UploadImageRequest {
            data: Some(Data::Chunk(png[..png.len() / 2].to_vec().into())),
        })
        .await
        .expect("chunk");
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    drop(sender);
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(list(&platform, &user).await.is_empty(), "no row");
    assert!(
        files_under(&platform.data_dir.join("objects")).is_empty(),
        "no object"
    );
    assert!(
        files_under(&platform.data_dir.join("uploads")).is_empty(),
        "no spooled upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_urls_are_presigned_and_deletes_reach_the_bucket() {
    let mut options = Options::new(Backend::Postgres);
    options.storage = Storage::S3;
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "s3@example.com").await;
    let bytes = fixtures::jpeg(640, 480);
    let image = uploaded(&platform, &user, "cloud.jpg", bytes.clone()).await;
    let url = image["url"].as_str().expect("url");
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let served = get(url, None).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.expect("bytes").to_vec(), bytes);

    let id = image["id"].as_str().expect("id");
    let owner = image_owner(&platform, &user).await;
    let key = format!("images/{owner}/{id}-original");
    assert_eq!(
        platform.objects.head(&key).await.expect("stored").size,
        bytes.len() as u64
    );
    let delete = Client::new()
        .delete(format!("{}/api/images/{id}", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert!(platform.objects.head(&key).await.is_err(), "object deleted");
    assert!(
        platform
            .objects
            .head(&format!("images/{owner}/{id}-thumbnail"))
            .await
            .is_err()
    );
}

/// Uploads that end together are counted one after the other against the plan's
/// storage: together they never pass it, and those refused leave no object and
/// no row.
async fn concurrent_uploads_never_pass_the_storage_limit(backend: Backend) {
    let bytes = fixtures::noise_jpeg(80, 80);
    let size = bytes.len() as i64;
    let mut options = Options::new(backend);
    let limit = size * 3 + size / 2;
    options
        .tiers
        .get_mut(atelier_user::Tier::Free)
        .storage_bytes = Some(limit);
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "hoarder@example.com").await;

    let answers = futures::future::join_all(
        (0..10).map(|_| upload(&platform, &user, "noise.jpg", bytes.clone(), "image/jpeg")),
    )
    .await;
    let mut stored = 0;
    for answer in answers {
        match answer.status() {
            StatusCode::CREATED => stored += 1,
            status => {
                let problem = problem(answer, status).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
                assert_eq!(problem["limit"], "storage_bytes", "{problem}");
                assert_eq!(problem["allowed"], limit, "{problem}");
            }
        }
    }
    assert_eq!(stored, 3, "three uploads fit");
    let images = list(&platform, &user).await;
    assert_eq!(images.len(), 3, "a row per stored upload only");
    let total: i64 = images
        .iter()
        .map(|image| image["file_size"].as_i64().expect("size"))
        .sum();
    assert!(total <= limit, "{total} stored, {limit} allowed");
    assert_eq!(
        files_under(&platform.data_dir.join("objects/objects")).len(),
        3,
        "an original per stored upload (its own thumbnail at this size), nothing else"
    );
}

backends!(concurrent_uploads_never_pass_the_storage_limit);

/// Decoders run within the service's limits, header reads included: a TIFF of a
/// few hundred bytes that claims 800 MB of pixels is refused from its header by
/// the memory limit (not found corrupt after the memory was taken), an image wider
/// than the pixel limit allows by its dimensions, and a PNG by the memory its rows
/// need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_by_the_decoding_limits() {
    use atelier_image::domain::inspect::{DecodeLimits, Rejection, inspect};

    let inspect_bytes = |bytes: Vec<u8>, limits: DecodeLimits| {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), bytes).expect("write");
        inspect(file.path(), limits, true).err()
    };
    let defaults = DecodeLimits {
        max_pixels: 100_000_000,
        max_alloc: 512 * 1024 * 1024,
    };
    let bomb = fixtures::tiff_bomb(10_000, 10_000);
    assert!(bomb.len() < 1024);
    assert_eq!(
        inspect_bytes(bomb.clone(), defaults),
        Some(Rejection::TooLargeToDecode { limit_mb: 512 })
    );
    // Within the memory limit the header passes, and the missing pixels show.
    assert!(matches!(
        inspect_bytes(fixtures::tiff_bomb(100, 100), defaults),
        Some(Rejection::Corrupt(_))
    ));
    let small = DecodeLimits {
        max_pixels: 1_000_000,
        max_alloc: 1024 * 1024,
    };
    assert_eq!(
        inspect_bytes(fixtures::tiff_bomb(2_000_000, 1), small),
        Some(Rejection::DimensionsOverLimit { limit: 1_000_000 })
    );
    assert_eq!(
        inspect_bytes(
            fixtures::png_bomb(1000, 1000),
            DecodeLimits {
                max_alloc: 1000,
                ..small
            }
        ),
        Some(Rejection::TooLargeToDecode { limit_mb: 0 })
    );

    // Through the API: a clear refusal, and nothing left behind.
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "bomber@example.com").await;
    let refused = problem(
        upload(&platform, &user, "bomb.tiff", bomb, "image/tiff").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["errors"][0]["field"], "file", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("512 MB of memory")),
        "{refused}"
    );
    assert!(list(&platform, &user).await.is_empty());
}

/// `PUT /api/images/upload` with the image as the body: `curl -T`.
async fn put_body(
    platform: &TestPlatform,
    user: &User,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    Client::new()
        .put(format!("{}/api/images/upload", platform.gateway_url))
        .query(&[("filename", name)])
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("upload")
}

/// A gRPC upload declaring `declared` bytes and sending `bytes`.
async fn grpc_upload(
    platform: &TestPlatform,
    user: &User,
    declared: Option<i64>,
    bytes: Vec<u8>,
) -> Result<pb::Image, tonic::Status> {
    let mut messages = vec![pb::UploadImageRequest {
        data: Some(Data::Metadata(pb::UploadMetadata {
            filename: "declared.png".into(),
            mime_type: "image/png".into(),
            size_bytes: declared,
        })),
    }];
    messages.extend(bytes.chunks(64 * 1024).map(|chunk| pb::UploadImageRequest {
        data: Some(Data::Chunk(chunk.to_vec().into())),
    }));
    let mut request = tonic::Request::new(futures::stream::iter(messages));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", user.token).parse().expect("header"),
    );
    ImageServiceClient::new(platform.image_channel())
        .upload_image(request)
        .await
        .map(|reply| reply.into_inner().image.expect("image"))
}

/// A photo-like PNG of a few megabytes whose pixel data is damaged past its
/// middle: only a decoder that reads that far finds out.
fn png_damaged_midway() -> Vec<u8> {
    let mut png = fixtures::encode(&fixtures::photo(1600, 1200), image::ImageFormat::Png);
    let at = png.len() * 3 / 5;
    for byte in &mut png[at..at + 64] {
        *byte ^= 0x5a;
    }
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_upload_streams_to_s3_in_one_piece() {
    let mut options = Options::new(Backend::Postgres);
    options.storage = Storage::S3;
    let platform = TestPlatform::spawn_with(options).await;
    let user = sign_up(&platform, "body@example.com").await;
    // Larger than a multipart part (8 MiB), so a multipart upload would show.
    let bytes = fixtures::encode(&fixtures::photo(2600, 2000), image::ImageFormat::Png);
    assert!(bytes.len() > 9 * 1024 * 1024, "{} bytes", bytes.len());
    let response = put_body(&platform, &user, "../big photo.png", bytes.clone()).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let image: Value = response.json().await.expect("image");
    assert_eq!(image["original_filename"], "big photo.png");
    assert_eq!(image["mime_type"], "image/png");
    assert_eq!(image["file_size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(2600), Some(2000))
    );
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    assert_eq!(image["sha256"].as_str(), Some(hex::encode(digest).as_str()));
    let served = get(image["url"].as_str().expect("url"), None).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert!(served.bytes().await.expect("bytes").to_vec() == bytes);
    let thumbnail = get(image["thumbnail_url"].as_str().expect("thumbnail"), None).await;
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.expect("bytes"))
        .expect("the thumbnail decodes");
    assert_eq!(thumbnail.width(), 512);

    // Over the limit by its declared length: refused before the body is read.
    let mut options = Options::new(Backend::Sqlite);
    options.max_file_bytes = 1024 * 1024;
    let small = TestPlatform::spawn_with(options).await;
    let user = sign_up(&small, "declared@example.com").await;
    let refused = problem(
        put_body(&small, &user, "big.png", bytes).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains("limit"),
        "{refused}"
    );
    // Over gRPC, the declared size is checked against the service's limit, and
    // must be the size sent.
    let status = grpc_upload(&small, &user, Some(2 * 1024 * 1024), fixtures::png(8, 8))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("larger than the limit"),
        "{status:?}"
    );
    let png = fixtures::png(300, 200);
    for declared in [png.len() as i64 - 1, png.len() as i64 + 1, -1] {
        let status = grpc_upload(&small, &user, Some(declared), png.clone())
            .await
            .expect_err("declared size not the size sent");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("invalid fields"),
            "{declared}: {status:?}"
        );
    }
    let stored = grpc_upload(&small, &user, Some(png.len() as i64), png.clone())
        .await
        .expect("declared and sent alike");
    assert_eq!(stored.file_size, png.len() as i64);
    assert_eq!(
        list(&small, &user).await.len(),
        1,
        "only the upload as declared"
    );
    assert_eq!(
        files_under(&small.data_dir.join("objects/objects")).len(),
        1,
        "its original (its own thumbnail at this size), nothing else"
    );
}

/// An image found damaged half-way through is refused as soon as the decoder
/// gets there, and the storage upload that was streaming alongside is cut short:
/// no object, no row, whichever way it came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_midway_leaves_nothing_in_storage() {
    let damaged = png_damaged_midway();
    for storage in [Storage::S3, Storage::Local] {
        let mut options = Options::new(Backend::Sqlite);
        options.storage = storage;
        let platform = TestPlatform::spawn_with(options).await;
        let user = sign_up(&platform, "damaged@example.com").await;
        let by_body = put_body(&platform, &user, "damaged.png", damaged.clone()).await;
        let by_form = upload(
            &platform,
            &user,
            "damaged.png",
            damaged.clone(),
            "image/png",
        )
        .await;
        for (how, refused) in [("body", by_body), ("form", by_form)] {
            let refused = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert!(
                refused["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains("corrupt")),
                "{storage:?} {how}: {refused}"
            );
        }
        assert!(
            list(&platform, &user).await.is_empty(),
            "{storage:?}: no row"
        );
        assert_eq!(
            platform.objects.list("").await.expect("list"),
            Vec::<String>::new(),
            "{storage:?}: no object"
        );
        let spooled = files_under(&platform.data_dir.join("uploads"));
        assert!(spooled.is_empty(), "{storage:?}: spooled {spooled:?}");
        let temp = files_under(&platform.data_dir.join("objects/tmp"));
        assert!(temp.is_empty(), "{storage:?}: temp files {temp:?}");
    }
}
