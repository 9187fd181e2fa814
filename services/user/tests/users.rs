//! The user service through the gateway: profile, settings (validation and ETag
//! conflicts), quotas at their limits and their daily reset, history (filters,
//! search, pagination stable while jobs arrive), signing out everywhere and account
//! deletion (old access tokens refused at once, nothing recreated afterwards).

use std::time::{Duration, Instant};

use atelier_processing::store::jobs;
use atelier_proto::{
    image::v1::{ListImagesRequest, image_service_client::ImageServiceClient},
    user::v1::{GetQuotaRequest, user_service_client::UserServiceClient},
};
use atelier_testbed::{Backend, Options, QueueBackend, ServiceName, Storage, TestPlatform, seed};
use atelier_testkit::{
    backends, fixtures,
    rest::{self, User, get},
};
use reqwest::{Client, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

async fn send(
    platform: &TestPlatform,
    user: &User,
    method: reqwest::Method,
    path: &str,
    body: Value,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = Client::new()
        .request(method, format!("{}{path}", platform.gateway_url))
        .bearer_auth(&user.token)
        .json(&body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.expect("request")
}

/// Whether `token` is still accepted: over REST (the profile, through the gateway)
/// and over gRPC straight to a service (the image service's ListImages).
async fn token_accepted(platform: &TestPlatform, token: &str) -> (bool, bool) {
    let rest = Client::new()
        .get(format!("{}/api/users/profile", platform.gateway_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("profile");
    let rest = match rest.status() {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("profile answered {other}"),
    };
    let mut request = tonic::Request::new(ListImagesRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let grpc = match ImageServiceClient::new(platform.image_channel())
        .list_images(request)
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == tonic::Code::Unauthenticated => false,
        Err(status) => panic!("ListImages answered {status:?}"),
    };
    (rest, grpc)
}

/// Asserts that `token`, accepted until just now, is refused over REST (401) and
/// gRPC (UNAUTHENTICATED) within a second of `since`.
async fn refused_within_a_second(platform: &TestPlatform, token: &str, since: Instant) {
    loop {
        let accepted = token_accepted(platform, token).await;
        if accepted == (false, false) {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "the old token is still accepted (REST, gRPC) = {accepted:?} a second later"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

async fn profile_and_its_errors(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;

    let (status, profile) = get(&platform, &ada, "/api/users/profile").await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["id"], ada.id.as_str());
    assert_eq!(profile["email"], "ada@example.com");
    assert_eq!(profile["display_name"], "");
    assert_eq!(profile["subscription_tier"], "free");
    assert!(profile["created_at"].is_string(), "{profile}");
    assert_eq!(profile["usage"]["jobs_today"], 0);
    assert_eq!(profile["usage"]["storage_bytes"], 0);
    assert!(profile["usage"]["jobs_reset_at"].is_string(), "{profile}");
    assert_eq!(profile["limits"]["parallel_jobs"], 4, "{profile}");

    rest::upload(&platform, &ada, fixtures::png(64, 48)).await;
    let renamed = send(
        &platform,
        &ada,
        reqwest::Method::PATCH,
        "/api/users/profile",
        json!({"display_name": "  Ada Lovelace "}),
        None,
    )
    .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Value = renamed.json().await.expect("profile");
    assert_eq!(renamed["display_name"], "Ada Lovelace");
    assert_eq!(renamed["usage"]["image_count"], 1);
    assert!(renamed["usage"]["storage_bytes"].as_i64() > Some(0));

    for (body, field) in [
        (json!({"display_name": "x".repeat(101)}), "display_name"),
        (json!({"display_name": "bell\u{7}"}), "display_name"),
    ] {
        let refused = send(
            &platform,
            &ada,
            reqwest::Method::PATCH,
            "/api/users/profile",
            body,
            None,
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = refused.json().await.expect("problem");
        assert_eq!(fields(&problem), [field], "{problem}");
    }
    let unknown = send(
        &platform,
        &ada,
        reqwest::Method::PATCH,
        "/api/users/profile",
        json!({"tier": "enterprise"}),
        None,
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, still) = get(&platform, &ada, "/api/users/profile").await;
    assert_eq!(still["subscription_tier"], "free");

    let anonymous = Client::new()
        .get(format!("{}/api/users/profile", platform.gateway_url))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn settings_are_validated_and_guarded_by_etags(backend: Backend) {
    let mut options = Options::new(backend);
    options
        .tiers
        .get_mut(atelier_user::Tier::Free)
        .max_retention_days = Some(30);
    let platform = TestPlatform::spawn_with(options).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;

    let read = Client::new()
        .get(format!("{}/api/users/settings", platform.gateway_url))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("settings");
    assert_eq!(read.status(), StatusCode::OK);
    let etag = read.headers()["etag"].to_str().expect("etag").to_owned();
    let first: Value = read.json().await.expect("settings");
    assert_eq!(first["revision"], 0);
    assert_eq!(first["settings"]["theme"], "system");
    assert_eq!(first["settings"]["notifications"]["job_completed"], true);

    let document = json!({
        "theme": "dark",
        "retention_days": 14,
        "notifications": {"job_completed": false, "job_failed": true},
        "default_workflow_id": "esrgan-upscale",
        "workflow_defaults": {"esrgan-upscale": {"scale": 4}},
    });
    let written = send(
        &platform,
        &ada,
        reqwest::Method::PUT,
        "/api/users/settings",
        document.clone(),
        Some(&etag),
    )
    .await;
    assert_eq!(written.status(), StatusCode::OK);
    let new_etag = written.headers()["etag"].to_str().expect("etag").to_owned();
    assert_ne!(new_etag, etag);
    let written: Value = written.json().await.expect("settings");
    assert_eq!(written["revision"], 1);
    assert_eq!(written["settings"]["theme"], "dark");
    assert_eq!(written["settings"]["retention_days"], 14);
    assert_eq!(written["settings"]["notifications"]["job_completed"], false);
    assert_eq!(
        written["settings"]["workflow_defaults"]["esrgan-upscale"]["scale"],
        4
    );

    // A second writer still holding the first ETag loses, and changes nothing.
    let stale = send(
        &platform,
        &ada,
        reqwest::Method::PUT,
        "/api/users/settings",
        json!({"theme": "light"}),
        Some(&etag),
    )
    .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let (_, now) = get(&platform, &ada, "/api/users/settings").await;
    assert_eq!(now["settings"]["theme"], "dark");
    assert_eq!(now["revision"], 1);

    for (body, expected) in [
        (json!({"theme": "sepia"}), vec!["theme"]),
        (
            json!({"colour": "red", "notifications": {"sms": true}}),
            vec!["colour", "notifications.sms"],
        ),
        (json!({"retention_days": 31}), vec!["retention_days"]),
        (json!({"retention_days": "forever"}), vec!["retention_days"]),
        (
            json!({"default_workflow_id": "no-such-workflow"}),
            vec!["default_workflow_id"],
        ),
        (
            json!({"workflow_defaults": {"esrgan-upscale": {"scale": 99}}}),
            vec!["workflow_defaults.esrgan-upscale.scale"],
        ),
        (
            json!({"workflow_defaults": {"nope": {}}}),
            vec!["workflow_defaults.nope"],
        ),
    ] {
        let refused = send(
            &platform,
            &ada,
            reqwest::Method::PUT,
            "/api/users/settings",
            body.clone(),
            Some(&new_etag),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: Value = refused.json().await.expect("problem");
        let mut got = fields(&problem);
        got.sort_unstable();
        assert_eq!(got, expected, "{problem}");
    }
    let (_, unchanged) = get(&platform, &ada, "/api/users/settings").await;
    assert_eq!(
        unchanged["revision"], 1,
        "refused writes must change nothing"
    );

    // Without If-Match the write is unconditional.
    let blind = send(
        &platform,
        &ada,
        reqwest::Method::PUT,
        "/api/users/settings",
        json!({}),
        None,
    )
    .await;
    let status = blind.status();
    let blind: Value = blind.json().await.expect("settings");
    assert_eq!(status, StatusCode::OK, "{blind}");
    assert_eq!(blind["revision"], 2);
    assert_eq!(blind["settings"]["theme"], "system");
}

async fn quotas_hold_at_their_limits_and_reset_daily(backend: Backend) {
    let mut options = Options::new(backend);
    let free = options.tiers.get_mut(atelier_user::Tier::Free);
    free.jobs_per_day = Some(3);
    free.concurrent_jobs = Some(2);
    free.max_file_size_bytes = Some(40_000);
    free.storage_bytes = Some(60_000);
    let platform = TestPlatform::spawn_with(options).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;
    let image = rest::upload(&platform, &ada, fixtures::png(32, 32)).await;
    let upscale = |scale| json!({"image_id": image, "workflow_id": "esrgan-upscale", "parameters": {"scale": scale}});

    // A batch larger than the concurrency limit starts nothing.
    let batch = Client::new()
        .post(format!("{}/api/processing/batch", platform.gateway_url))
        .bearer_auth(&ada.token)
        .json(&json!({"image_ids": [image, image, image], "workflow_id": "esrgan-upscale"}))
        .send()
        .await
        .expect("batch");
    assert_eq!(batch.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: Value = batch.json().await.expect("problem");
    assert_eq!(problem["limit"], "concurrent_jobs", "{problem}");
    assert_eq!(problem["allowed"], 2);
    assert_eq!(problem["requested"], 3);
    assert!(problem.get("resets_at").is_none(), "{problem}");

    for scale in [2, 3, 4] {
        let job = rest::start_job(
            &platform,
            &ada,
            &image,
            "esrgan-upscale",
            json!({"scale": scale}),
        )
        .await;
        rest::finished(&platform, &ada, &job).await;
    }
    let refused = rest::start(&platform, &ada, upscale(2), None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["limit"], "jobs_per_day", "{problem}");
    assert_eq!(
        (problem["allowed"].as_i64(), problem["used"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(problem["tier"], "free");
    let resets_at = problem["resets_at"].as_str().expect("resets_at");
    assert!(resets_at.ends_with("T00:00:00Z"), "{resets_at}");
    let (_, profile) = get(&platform, &ada, "/api/users/profile").await;
    assert_eq!(profile["usage"]["jobs_today"], 3);
    assert_eq!(profile["usage"]["jobs_reset_at"], resets_at);

    // The next UTC day the count starts again.
    platform
        .user_clock
        .advance(Duration::from_secs(24 * 60 * 60));
    let job = rest::start_job(
        &platform,
        &ada,
        &image,
        "esrgan-upscale",
        json!({"scale": 2}),
    )
    .await;
    rest::finished(&platform, &ada, &job).await;
    let (_, profile) = get(&platform, &ada, "/api/users/profile").await;
    assert_eq!(profile["usage"]["jobs_today"], 0, "{profile}");

    // Uploads: one file over the tier's size limit, then storage filling up.
    let big = fixtures::noise_jpeg(300, 300);
    assert!(big.len() > 40_000, "the fixture must exceed the file limit");
    let refused = rest::try_upload(&platform, &ada, big).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["limit"], "max_file_size_bytes", "{problem}");
    assert_eq!(problem["allowed"], 40_000, "{problem}");
    assert_eq!(problem["tier"], "free", "{problem}");
    assert!(problem["requested"].as_i64() > Some(40_000), "{problem}");
    assert_eq!(fields(&problem), ["file"], "{problem}");
    let (_, before) = get(&platform, &ada, "/api/users/profile").await;
    let mut refused_for_storage = None;
    for _ in 0..20 {
        let response = rest::try_upload(&platform, &ada, fixtures::noise_jpeg(80, 80)).await;
        if response.status() != StatusCode::CREATED {
            refused_for_storage = Some((
                response.status(),
                response.json::<Value>().await.expect("problem"),
            ));
            break;
        }
    }
    let (status, problem) = refused_for_storage.expect("storage never filled up");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["limit"], "storage_bytes", "{problem}");
    let (_, after) = get(&platform, &ada, "/api/users/profile").await;
    assert!(
        after["usage"]["storage_bytes"].as_i64() <= Some(60_000),
        "{after}"
    );
    assert!(after["usage"]["image_count"].as_i64() > before["usage"]["image_count"].as_i64());
}

async fn history_filters_searches_and_pages_stably(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;
    let eve = rest::sign_up(&platform, "eve@example.com").await;
    let image = rest::upload(&platform, &ada, fixtures::png(40, 30)).await;
    let eve_image = rest::upload(&platform, &eve, fixtures::png(40, 30)).await;
    let base = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    seed::finished_jobs(&platform, &ada.id, &image, 600, base).await;
    seed::finished_jobs(&platform, &eve.id, &eve_image, 50, base).await;
    // A real job, with a stored result.
    let real = rest::start_job(
        &platform,
        &ada,
        &image,
        "esrgan-upscale",
        json!({"scale": 2}),
    )
    .await;
    assert_eq!(
        rest::finished(&platform, &ada, &real).await["status"],
        "completed"
    );

    let (status, first) = get(&platform, &ada, "/api/users/history?page_size=10").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let newest = &first["items"][0];
    assert_eq!(newest["job_id"], real.as_str(), "newest first");
    assert_eq!(newest["workflow_name"], "ESRGAN upscaler");
    assert_eq!(newest["input_image"]["id"], image.as_str());
    assert!(
        newest["input_image"]["thumbnail_url"].is_string(),
        "{newest}"
    );
    let result_url = newest["result_image"]["url"].as_str().expect("result url");
    let served = Client::new()
        .get(if result_url.starts_with("http") {
            result_url.to_owned()
        } else {
            format!("{}{result_url}", platform.gateway_url)
        })
        .send()
        .await
        .expect("result");
    assert_eq!(served.status(), StatusCode::OK);

    // Walk every page while new jobs keep arriving: each job once, newest first.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(token) => format!("/api/users/history?page_size=50&page_token={token}"),
            None => "/api/users/history?page_size=50".to_owned(),
        };
        let (status, page) = get(&platform, &ada, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["job_id"].as_str().expect("id").to_owned());
        }
        rest::start_job(
            &platform,
            &ada,
            &image,
            "esrgan-upscale",
            json!({"scale": 2}),
        )
        .await;
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 601, "every job exactly once");
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first (ids are time-ordered)");
    sorted.dedup();
    assert_eq!(sorted.len(), 601);

    // Filters.
    let (_, failed) = get(
        &platform,
        &ada,
        "/api/users/history?status=failed&page_size=100",
    )
    .await;
    let failed = failed["items"].as_array().expect("items").clone();
    assert_eq!(failed.len(), 100);
    assert!(failed.iter().all(|item| item["status"] == "failed"));
    let (_, two) = get(
        &platform,
        &ada,
        "/api/users/history?status=failed,cancelled&workflow_id=flux-image-to-image&page_size=100",
    )
    .await;
    let two = two["items"].as_array().expect("items");
    // Odd jobs are image-to-image; two of every three of them failed or were cancelled.
    assert_eq!(two.len(), 100, "a full page of matches");
    assert!(two.iter().all(|item| {
        item["workflow_id"] == "flux-image-to-image"
            && (item["status"] == "failed" || item["status"] == "cancelled")
    }));
    let since = base + time::Duration::seconds(590 * 60 - 30);
    let since = since
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let until = (time::OffsetDateTime::now_utc() - time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let (_, window) = get(
        &platform,
        &ada,
        &format!("/api/users/history?from={since}&to={until}&page_size=100"),
    )
    .await;
    assert_eq!(
        window["items"].as_array().expect("items").len(),
        10,
        "{window}"
    );

    // Search over workflow names and prompts.
    let (_, sunsets) = get(&platform, &ada, "/api/users/history?q=sunset&page_size=100").await;
    let found = sunsets["items"].as_array().expect("items");
    assert!(!found.is_empty());
    for item in found {
        let prompt = item["parameters"]["prompt"].as_str().unwrap_or_default();
        assert!(prompt.contains("sunset"), "{item}");
    }
    // "sunset" and "sunsets": stemmed on PostgreSQL, a substring on SQLite.
    let expected = 200;
    let mut total = found.len();
    let mut next = sunsets["next_page_token"].as_str().map(str::to_owned);
    while let Some(token) = next {
        let (_, page) = get(
            &platform,
            &ada,
            &format!("/api/users/history?q=sunset&page_size=100&page_token={token}"),
        )
        .await;
        total += page["items"].as_array().expect("items").len();
        next = page["next_page_token"].as_str().map(str::to_owned);
    }
    assert_eq!(total, expected, "both sunset prompts match");
    let (_, by_name) = get(&platform, &ada, "/api/users/history?q=esrgan&page_size=5").await;
    let by_name = by_name["items"].as_array().expect("items");
    assert_eq!(by_name.len(), 5, "a full page of matches");
    assert!(
        by_name
            .iter()
            .all(|item| item["workflow_id"] == "esrgan-upscale")
    );

    // Bad filters are named.
    let (status, problem) = get(
        &platform,
        &ada,
        "/api/users/history?status=done&from=yesterday",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut got = fields(&problem);
    got.sort_unstable();
    assert_eq!(got, ["from", "status"], "{problem}");

    // Eve sees only hers.
    let (_, theirs) = get(&platform, &eve, "/api/users/history?page_size=100").await;
    let theirs = theirs["items"].as_array().expect("items");
    assert_eq!(theirs.len(), 50);
    assert!(
        theirs
            .iter()
            .all(|item| item["image_id"] == eve_image.as_str())
    );
}

async fn account_deletion_leaves_nothing_behind(storage: Storage) {
    let mut options = Options::new(Backend::Postgres);
    options.storage = storage;
    let platform = TestPlatform::spawn_with(options).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;
    let eve = rest::sign_up(&platform, "eve@example.com").await;
    let image = rest::upload(&platform, &ada, fixtures::png(64, 64)).await;
    let job = rest::start_job(
        &platform,
        &ada,
        &image,
        "esrgan-upscale",
        json!({"scale": 2}),
    )
    .await;
    assert_eq!(
        rest::finished(&platform, &ada, &job).await["status"],
        "completed"
    );
    send(
        &platform,
        &ada,
        reqwest::Method::PUT,
        "/api/users/settings",
        json!({"theme": "dark"}),
        None,
    )
    .await;
    let eve_image = rest::upload(&platform, &eve, fixtures::png(64, 64)).await;

    let prefix = format!("images/{}/", ada.id);
    assert!(
        !platform
            .objects
            .list(&prefix)
            .await
            .expect("list")
            .is_empty()
    );

    // Every verifier on the way has seen (and cached) the token as good.
    assert_eq!(token_accepted(&platform, &ada.token).await, (true, true));
    let deleted = Client::new()
        .delete(format!("{}/api/users/me", platform.gateway_url))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    refused_within_a_second(&platform, &ada.token, Instant::now()).await;
    // An internal call naming the deleted user does not bring a profile back.
    let mut users =
        UserServiceClient::new(platform.channel_as(ServiceName::Processing, &platform.user_url));
    let quota = users
        .get_quota(GetQuotaRequest {
            user_id: ada.id.clone(),
        })
        .await
        .expect_err("no quota for a deleted account");
    assert_eq!(quota.code(), tonic::Code::NotFound, "{quota:?}");

    // No object, and no row in any service's schema.
    assert!(
        platform
            .objects
            .list(&prefix)
            .await
            .expect("list")
            .is_empty()
    );
    let user_id: uuid::Uuid = ada.id.parse().expect("id");
    let processing = atelier_common::db::connect(&platform.platform, "processing")
        .await
        .expect("db");
    assert_eq!(
        jobs::Entity::find()
            .filter(jobs::Column::UserId.eq(user_id))
            .count(&processing)
            .await
            .expect("count"),
        0
    );
    let job_id: uuid::Uuid = job.parse().expect("job id");
    assert_eq!(
        atelier_processing::store::job_events::Entity::find()
            .filter(atelier_processing::store::job_events::Column::JobId.eq(job_id))
            .count(&processing)
            .await
            .expect("count"),
        0
    );
    for (schema, sql) in [
        (
            "image",
            format!("SELECT count(*) AS n FROM images WHERE user_id = '{user_id}'"),
        ),
        (
            "auth",
            format!("SELECT count(*) AS n FROM users WHERE id = '{user_id}'"),
        ),
        (
            "auth",
            format!("SELECT count(*) AS n FROM refresh_tokens WHERE user_id = '{user_id}'"),
        ),
        (
            "user",
            format!("SELECT count(*) AS n FROM profiles WHERE user_id = '{user_id}'"),
        ),
    ] {
        use sea_orm::ConnectionTrait;
        let db = atelier_common::db::connect(&platform.platform, schema)
            .await
            .expect("db");
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql.clone(),
            ))
            .await
            .expect(&sql)
            .expect("a row");
        let n: i64 = row.try_get("", "n").expect("n");
        assert_eq!(n, 0, "{schema}: {sql}");
    }
    // Signed out everywhere, and the account is gone.
    let login = Client::new()
        .post(format!("{}/api/auth/login", platform.gateway_url))
        .json(&json!({"email": "ada@example.com", "password": rest::PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    let refresh = Client::new()
        .post(format!("{}/api/auth/refresh", platform.gateway_url))
        .json(&json!({"refresh_token": ada.refresh_token}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);

    // Eve keeps everything of hers.
    let (status, _) = get(&platform, &eve, &format!("/api/images/{eve_image}")).await;
    assert_eq!(status, StatusCode::OK);
}

async fn sign_out_everywhere(backend: Backend) {
    sign_out_everywhere_with(Options::new(backend)).await;
}

/// With Redis, the revocation reaches the verifiers over Redis pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_everywhere_through_redis() {
    let mut options = Options::new(Backend::Postgres);
    options.queue = QueueBackend::Redis;
    sign_out_everywhere_with(options).await;
}

/// Signing out everywhere ends every refresh token, and every access token issued
/// so far is refused by the gateway and by the services within a second; signing in
/// again at once gives a token that works.
async fn sign_out_everywhere_with(options: Options) {
    let platform = TestPlatform::spawn_with(options).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;
    let other_session: Value = Client::new()
        .post(format!("{}/api/auth/login", platform.gateway_url))
        .json(&json!({"email": "ada@example.com", "password": rest::PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("session");
    let other_token = other_session["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // Every verifier on the way has seen (and cached) both tokens as good.
    assert_eq!(token_accepted(&platform, &ada.token).await, (true, true));
    assert_eq!(token_accepted(&platform, &other_token).await, (true, true));
    let out = Client::new()
        .post(format!("{}/api/auth/logout-all", platform.gateway_url))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("logout-all");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let signed_out = Instant::now();
    refused_within_a_second(&platform, &ada.token, signed_out).await;
    refused_within_a_second(&platform, &other_token, signed_out).await;

    // Signing in again, at once (within the same second), works.
    let again: Value = Client::new()
        .post(format!("{}/api/auth/login", platform.gateway_url))
        .json(&json!({"email": "ada@example.com", "password": rest::PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("session");
    let fresh = again["access_token"].as_str().expect("token");
    assert_eq!(token_accepted(&platform, fresh).await, (true, true));
    for token in [
        ada.refresh_token.as_str(),
        other_session["refresh_token"].as_str().expect("token"),
    ] {
        let refresh = Client::new()
            .post(format!("{}/api/auth/refresh", platform.gateway_url))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .expect("refresh");
        assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    }
}

backends!(
    profile_and_its_errors,
    settings_are_validated_and_guarded_by_etags,
    quotas_hold_at_their_limits_and_reset_daily,
    history_filters_searches_and_pages_stably,
    sign_out_everywhere,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_deletion_leaves_nothing_behind_on_s3() {
    account_deletion_leaves_nothing_behind(Storage::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_deletion_leaves_nothing_behind_locally() {
    account_deletion_leaves_nothing_behind(Storage::Local).await;
}

/// A workflow service that accepts every parameter set, counting the checks and
/// how many ran at once.
#[derive(Clone, Default)]
struct CountingWorkflows(std::sync::Arc<Checks>);

#[derive(Default)]
struct Checks {
    made: std::sync::atomic::AtomicUsize,
    running: std::sync::atomic::AtomicUsize,
    most_at_once: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl atelier_proto::workflow::v1::workflow_service_server::WorkflowService for CountingWorkflows {
    async fn list_workflows(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::ListWorkflowsRequest>,
    ) -> Result<tonic::Response<atelier_proto::workflow::v1::ListWorkflowsResponse>, tonic::Status>
    {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn get_workflow(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::GetWorkflowRequest>,
    ) -> Result<tonic::Response<atelier_proto::workflow::v1::GetWorkflowResponse>, tonic::Status>
    {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn get_workflow_parameters(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::GetWorkflowParametersRequest>,
    ) -> Result<
        tonic::Response<atelier_proto::workflow::v1::GetWorkflowParametersResponse>,
        tonic::Status,
    > {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn validate_parameters(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::ValidateParametersRequest>,
    ) -> Result<
        tonic::Response<atelier_proto::workflow::v1::ValidateParametersResponse>,
        tonic::Status,
    > {
        use std::sync::atomic::Ordering::SeqCst;
        let checks = &self.0;
        checks.made.fetch_add(1, SeqCst);
        let running = checks.running.fetch_add(1, SeqCst) + 1;
        checks.most_at_once.fetch_max(running, SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        checks.running.fetch_sub(1, SeqCst);
        Ok(tonic::Response::new(
            atelier_proto::workflow::v1::ValidateParametersResponse {
                valid: true,
                ..Default::default()
            },
        ))
    }

    async fn estimate(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::EstimateRequest>,
    ) -> Result<tonic::Response<atelier_proto::workflow::v1::EstimateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn admin_list_workflows(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::AdminListWorkflowsRequest>,
    ) -> Result<
        tonic::Response<atelier_proto::workflow::v1::AdminListWorkflowsResponse>,
        tonic::Status,
    > {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn admin_update_workflow(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::AdminUpdateWorkflowRequest>,
    ) -> Result<
        tonic::Response<atelier_proto::workflow::v1::AdminUpdateWorkflowResponse>,
        tonic::Status,
    > {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn admin_add_workflow(
        &self,
        _: tonic::Request<atelier_proto::workflow::v1::AdminAddWorkflowRequest>,
    ) -> Result<tonic::Response<atelier_proto::workflow::v1::AdminAddWorkflowResponse>, tonic::Status>
    {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

/// A settings document with thousands of workflow defaults is refused by its
/// size alone, before the workflow service is asked anything; a document within
/// the limits has its defaults checked a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_settings_are_refused_before_any_workflow_check() {
    use atelier_proto::user::v1::{self as pb, user_service_client::UserServiceClient};

    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let ada = rest::sign_up(&platform, "ada@example.com").await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();

    let workflows = CountingWorkflows::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let workflow_addr = listener.local_addr().expect("address");
    tokio::spawn(
        atelier_common::grpc::GrpcServer::new(&platform.identity(ServiceName::Workflow))
            .add_service(
                atelier_proto::workflow::v1::workflow_service_server::WorkflowServiceServer::new(
                    workflows.clone(),
                ),
            )
            .serve(listener, shutdown.clone()),
    );
    // A user service of its own that asks the counting workflow service.
    let mut config = platform.platform.clone();
    config.endpoints.workflow = atelier_common::config::Endpoint::bound(workflow_addr);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let user_url = format!("https://{}", listener.local_addr().expect("address"));
    tokio::spawn(atelier_user::serve(
        atelier_user::UserConfig {
            platform: config,
            tiers: atelier_user::Tiers::default(),
        },
        listener,
        shutdown.clone(),
    ));
    let channel = platform.channel_as(ServiceName::Gateway, &user_url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while atelier_common::grpc::check_health(channel.clone(), "atelier.user.v1.UserService")
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "user service not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let update = |count: usize| {
        let mut request = tonic::Request::new(pb::UpdateSettingsRequest {
            settings: Some(pb::Settings {
                workflow_defaults: (0..count)
                    .map(|i| {
                        (
                            format!("workflow-{i}"),
                            atelier_common::json::map_to_struct(
                                json!({"prompt": "a lighthouse"}).as_object().expect("map"),
                            ),
                        )
                    })
                    .collect(),
                ..Default::default()
            }),
            etag: String::new(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", ada.token).parse().expect("header"),
        );
        let mut client = UserServiceClient::new(channel.clone());
        async move { client.update_settings(request).await }
    };

    let refused = update(5_000)
        .await
        .expect_err("5,000 defaults are too many");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let violations = atelier_common::error::field_violations(&refused);
    assert_eq!(
        violations
            .iter()
            .map(|v| v.field.as_str())
            .collect::<Vec<_>>(),
        ["workflow_defaults"],
        "{violations:?}"
    );
    assert_eq!(
        workflows.0.made.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no workflow was checked"
    );

    update(100)
        .await
        .expect("100 defaults are within the limit");
    assert_eq!(
        workflows.0.made.load(std::sync::atomic::Ordering::SeqCst),
        100
    );
    let most = workflows
        .0
        .most_at_once
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} checks ran at once");
}
