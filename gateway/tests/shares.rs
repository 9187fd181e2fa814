//! Share links end to end, on PostgreSQL with the S3 server and on SQLite with the
//! local store: a link to a result (with its original beside it) opens without an
//! account, says nothing of its owner, and hands out URLs that open only its
//! images; expired, revoked, tampered and unknown tokens get one and the same
//! `404`; another user can neither list, revoke nor make links to your images.

use atelier_testbed::{Backend, Options, Storage, TestPlatform};
use atelier_testkit::{
    fixtures,
    rest::{User, finished, get, post, sign_up, start_job, try_upload_as},
};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};

async fn upload_named(platform: &TestPlatform, user: &User, name: &str) -> String {
    let response = try_upload_as(platform, user, name, fixtures::png(64, 48)).await;
    let status = response.status();
    let body: Value = response.json().await.expect("image");
    assert_eq!(status, StatusCode::CREATED, "upload: {body}");
    body["id"].as_str().expect("id").to_owned()
}

/// `GET /api/shared/<token>` without credentials: status, headers and JSON.
async fn open(platform: &TestPlatform, token: &str) -> (StatusCode, header::HeaderMap, Value) {
    let response = Client::new()
        .get(format!("{}/api/shared/{token}", platform.gateway_url))
        .send()
        .await
        .expect("shared");
    let (status, headers) = (response.status(), response.headers().clone());
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A refusal's body without what differs per request.
fn refusal(mut body: Value) -> Value {
    body.as_object_mut().expect("problem").remove("request_id");
    body
}

async fn delete(platform: &TestPlatform, user: &User, path: &str) -> StatusCode {
    Client::new()
        .delete(format!("{}{path}", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("delete")
        .status()
}

/// Moves a link's expiry into the past, behind the service's back.
async fn expire(platform: &TestPlatform, share_id: &str) {
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    let db = atelier_common::db::connect(&platform.platform, "image")
        .await
        .expect("db");
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => "UPDATE share_links SET expires_at = $1 WHERE id = $2",
        _ => "UPDATE share_links SET expires_at = ? WHERE id = ?",
    };
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let id = uuid::Uuid::parse_str(share_id).expect("id");
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [past.into(), id.into()],
        ))
        .await
        .expect("expire");
    assert_eq!(done.rows_affected(), 1);
}

async fn share_links_open_without_an_account_and_only_their_images(
    backend: Backend,
    storage: Storage,
) {
    let platform = TestPlatform::spawn_with(Options {
        storage,
        ..Options::new(backend)
    })
    .await;
    let owner = sign_up(&platform, "sharer@example.com").await;
    let stranger = sign_up(&platform, "stranger@example.com").await;
    let original = upload_named(&platform, &owner, "secret-holiday.png").await;
    let theirs = upload_named(&platform, &stranger, "strangers-own.png").await;
    let job = start_job(
        &platform,
        &owner,
        &original,
        "flux-image-to-image",
        json!({"prompt": "a watercolour harbour", "num_images": 1, "output_format": "png"}),
    )
    .await;
    let job = finished(&platform, &owner, &job).await;
    assert_eq!(job["status"], "completed", "{job}");
    let result = job["outputs"][0]["image_id"]
        .as_str()
        .expect("result")
        .to_owned();

    // Created with the original beside it; the token is handed out once, never cached.
    let response = Client::new()
        .post(format!(
            "{}/api/images/{result}/shares",
            platform.gateway_url
        ))
        .bearer_auth(&owner.token)
        .json(&json!({"before_after": true, "expires_in_seconds": 3600}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let created: Value = response.json().await.expect("created");
    let token = created["token"].as_str().expect("token").to_owned();
    let share_id = created["link"]["id"].as_str().expect("id").to_owned();
    assert_eq!(token.len(), 43, "{created}");
    let host = platform.gateway_url.trim_start_matches("http://");
    assert_eq!(
        created["url"],
        format!("http://{host}/s/{token}"),
        "the request's origin without PUBLIC_URL"
    );
    assert_eq!(created["link"]["image_id"], result.as_str());
    assert_eq!(created["link"]["before_image_id"], original.as_str());
    assert_eq!(created["link"]["state"], "active");

    // Anyone opens it: the minimum, nothing of the owner.
    let (status, headers, shared) = open(&platform, &token).await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert!(
        headers["x-robots-tag"]
            .to_str()
            .expect("robots")
            .contains("noindex")
    );
    assert_eq!(shared["image"]["mime_type"], "image/png");
    assert_eq!(
        (
            shared["image"]["width"].as_u64(),
            shared["image"]["height"].as_u64()
        ),
        (Some(64), Some(48))
    );
    assert!(shared["expires_at"].is_string() && shared["url_expires_at"].is_string());
    let text = shared.to_string();
    for secret in [
        owner.id.as_str(),
        owner.email.as_str(),
        "secret-holiday",
        "user",
        "filename",
        "email",
        share_id.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // Its URLs serve its images without credentials, under a neutral name.
    let image_url = shared["image"]["url"].as_str().expect("url").to_owned();
    let before_url = shared["before"]["url"].as_str().expect("before").to_owned();
    assert!(image_url.starts_with(&platform.gateway_url), "{image_url}");
    for (url, size_of) in [(&image_url, "image"), (&before_url, "before")] {
        let response = Client::new().get(url).send().await.expect("file");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let disposition = response.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("disposition")
            .to_owned();
        assert!(
            !disposition.contains("secret") && disposition.contains("shared."),
            "{disposition}"
        );
        let bytes = response.bytes().await.expect("bytes");
        assert_eq!(
            bytes.len() as u64,
            shared[size_of]["file_size"].as_u64().expect("size")
        );
    }
    // Bent towards another image (its original, another user's), another variant,
    // or without its mark: refused.
    for bent in [
        image_url.replace(&result, &original),
        image_url.replace(&result, &theirs),
        image_url.replace("/original?", "/thumbnail?"),
        image_url.replace("shared=1&", ""),
        before_url.replace(&original, &theirs),
    ] {
        let status = Client::new()
            .get(&bent)
            .send()
            .await
            .expect("bent")
            .status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{bent}");
    }

    // Unknown, tampered and malformed tokens: one refusal.
    let (status, headers, unknown) = open(&platform, &"A".repeat(43)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let unknown = refusal(unknown);
    let mut tampered = token.clone().into_bytes();
    tampered[20] = if tampered[20] == b'x' { b'y' } else { b'x' };
    for token in [
        String::from_utf8(tampered).expect("ascii"),
        "short".to_owned(),
        format!("{token}A"),
    ] {
        let (status, _, body) = open(&platform, &token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(refusal(body), unknown, "{token}");
    }

    // Another user: no list, no revoke, no links to your images, nor yours as before.
    let (status, list) = get(&platform, &stranger, "/api/shares").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["links"], json!([]));
    assert_eq!(
        delete(&platform, &stranger, &format!("/api/shares/{share_id}")).await,
        StatusCode::NOT_FOUND
    );
    let (status, _) = post(
        &platform,
        &stranger,
        &format!("/api/images/{result}/shares"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        &platform,
        &stranger,
        &format!("/api/images/{theirs}/shares"),
        json!({"before_image_id": original}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An upload has no source to show beside it; bounds are checked.
    let (status, problem) = post(
        &platform,
        &owner,
        &format!("/api/images/{original}/shares"),
        json!({"before_after": true}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "before_after");
    let (status, problem) = post(
        &platform,
        &owner,
        &format!("/api/images/{result}/shares"),
        json!({"expires_in_seconds": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "expires_in_seconds");

    // The owner sees the view.
    let (status, list) = get(&platform, &owner, "/api/shares").await;
    assert_eq!(status, StatusCode::OK);
    let link = &list["links"][0];
    assert_eq!(link["id"], share_id.as_str());
    assert_eq!(link["view_count"], 1, "{list}");
    assert_eq!(link["state"], "active");

    // Expired: the same refusal.
    let (_, short) = post(
        &platform,
        &owner,
        &format!("/api/images/{result}/shares"),
        json!({}),
    )
    .await;
    let short_token = short["token"].as_str().expect("token");
    assert_eq!(open(&platform, short_token).await.0, StatusCode::OK);
    expire(&platform, short["link"]["id"].as_str().expect("id")).await;
    let (status, _, body) = open(&platform, short_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(refusal(body), unknown);

    // Revoked: the same refusal, at once.
    assert_eq!(
        delete(&platform, &owner, &format!("/api/shares/{share_id}")).await,
        StatusCode::NO_CONTENT
    );
    let (status, _, body) = open(&platform, &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(refusal(body), unknown);
    let (_, list) = get(&platform, &owner, "/api/shares").await;
    let states: Vec<&str> = list["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|link| link["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["expired", "revoked"], "newest first: {list}");

    // The page itself is never indexed nor cached.
    let page = Client::new()
        .get(format!("{}/s/{token}", platform.gateway_url))
        .send()
        .await
        .expect("page");
    assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
    assert!(page.headers().contains_key("x-robots-tag"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn share_links_on_postgres_and_s3() {
    share_links_open_without_an_account_and_only_their_images(Backend::Postgres, Storage::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn share_links_on_sqlite_and_the_local_store() {
    share_links_open_without_an_account_and_only_their_images(Backend::Sqlite, Storage::Local)
        .await;
}
