//! The admin console's API end to end, through the gateway, on both backends:
//! every administrators' route (read from the OpenAPI document, so a new one is
//! covered the day it is added) and every administrators' gRPC method refuse
//! anyone else as a missing resource; workflows are disabled, edited, added
//! from a fal endpoint and pinned; users change plan and role; dead letters are
//! inspected, retried until their job completes, and discarded; and each
//! change is in the audit log.

use std::time::Duration;

use atelier_proto::access::METHODS;
use atelier_testbed::{Backend, Options, QueueBackend, TestPlatform};
use atelier_testkit::{
    backends, fixtures,
    rest::{User, finished, get, grpc_web_status, post, sign_up, start, start_job, upload},
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// `method path` with a JSON body as `user` (or nobody), with extra headers.
async fn call(
    platform: &TestPlatform,
    user: Option<&User>,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = Client::new().request(method, format!("{}{path}", platform.gateway_url));
    if let Some(user) = user {
        request = request.bearer_auth(&user.token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Every operation of the REST API tagged `admin`: its method and path.
async fn admin_operations(platform: &TestPlatform) -> Vec<(Method, String)> {
    let document: Value = Client::new()
        .get(format!("{}/api/openapi.json", platform.gateway_url))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    let mut found = Vec::new();
    for (path, operations) in document["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let tagged = operation["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|tag| tag == "admin"));
            if tagged {
                found.push((method.to_uppercase().parse().expect("method"), path.clone()));
            }
        }
    }
    found
}

/// `path` with each `{parameter}` filled with a fresh UUID.
fn filled(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str(&uuid::Uuid::new_v4().to_string());
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

backends!(
    admin_routes_refuse_everyone_else,
    workflows_are_managed,
    users_change_plan_and_role,
    dead_letters_are_retried_and_discarded
);

async fn admin_routes_refuse_everyone_else(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    let root = sign_up(&platform, "root@example.com").await;
    let root = platform.make_admin(&root).await;

    let operations = admin_operations(&platform).await;
    for expected in [
        "/api/admin/audit-events",
        "/api/admin/workflows",
        "/api/admin/workflows/{id}",
        "/api/admin/users",
        "/api/admin/users/{id}",
        "/api/admin/queue",
        "/api/admin/dead-letters",
        "/api/admin/dead-letters/{job_id}/retry",
        "/api/admin/dead-letters/{job_id}/discard",
        "/api/admin/fal",
        "/api/admin/failures",
    ] {
        assert!(
            operations.iter().any(|(_, path)| path == expected),
            "{expected} is an administrators' operation: {operations:?}"
        );
    }
    for (method, path) in &operations {
        let path = filled(path);
        let body = (method != Method::GET).then(|| json!({}));
        let (status, _, problem) =
            call(&platform, None, method.clone(), &path, body.clone(), &[]).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {problem}"
        );
        let (status, _, problem) =
            call(&platform, Some(&ada), method.clone(), &path, body, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
        assert_eq!(problem["status"], 404, "{method} {path}: problem+json");
    }
    // The same routes answer an administrator.
    for path in [
        "/api/admin/workflows",
        "/api/admin/users",
        "/api/admin/queue",
        "/api/admin/dead-letters",
        "/api/admin/fal",
        "/api/admin/failures",
    ] {
        let (status, body) = get(&platform, &root, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }

    // gRPC-web through the gateway: every administrators' method answers
    // NOT_FOUND to a signed-in user and UNAUTHENTICATED to nobody.
    let methods: Vec<_> = METHODS.iter().filter(|method| method.admin()).collect();
    assert!(methods.len() >= 14, "{methods:?}");
    for method in methods {
        for (token, expected) in [(Some(&ada.token), "5"), (None, "16")] {
            let mut request = Client::new()
                .post(format!("{}{}", platform.gateway_url, method.path))
                .header("content-type", "application/grpc-web+proto")
                .body(vec![0u8, 0, 0, 0, 0]);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("grpc-web");
            assert_eq!(
                grpc_web_status(response).await.as_deref(),
                Some(expected),
                "{} with token {}",
                method.path,
                token.is_some()
            );
        }
    }
}

/// The audit log's actions starting with `prefix`, oldest first, each with
/// its actor.
async fn audited(platform: &TestPlatform, admin: &User, prefix: &str) -> Vec<(String, String)> {
    let (status, page) = get(
        platform,
        admin,
        format!("/api/admin/audit-events?action={prefix}&page_size=100"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut entries: Vec<(String, String)> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            (
                event["action"].as_str().expect("action").to_owned(),
                event["actor_user_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    entries.reverse();
    entries
}

async fn workflows_are_managed(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let root = sign_up(&platform, "root@example.com").await;
    let root = platform.make_admin(&root).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    let image = upload(&platform, &ada, fixtures::png(16, 16)).await;

    let (status, all) = get(&platform, &root, "/api/admin/workflows").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let lineart = all["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .find(|workflow| workflow["id"] == "lineart")
        .expect("lineart")
        .clone();
    assert_eq!(
        (&lineart["active"], &lineart["pinned"], &lineart["custom"]),
        (&json!(true), &json!(false), &json!(false))
    );
    let version = lineart["version"].as_i64().expect("version");
    assert_eq!(lineart["latest_version"], version);
    let endpoint = lineart["fal_endpoint"]
        .as_str()
        .expect("endpoint")
        .to_owned();
    let path = "/api/admin/workflows/lineart";
    let patch = |body: Value, etag: Option<String>| {
        let headers: Vec<(&str, String)> = etag.into_iter().map(|tag| ("if-match", tag)).collect();
        let platform = &platform;
        let root = &root;
        async move {
            call(
                platform,
                Some(root),
                Method::PATCH,
                path,
                Some(body),
                &headers,
            )
            .await
        }
    };

    // Changes need the version they are based on.
    let (status, _, problem) = patch(json!({"active": false}), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "If-Match");
    let (status, _, problem) = patch(
        json!({"active": false}),
        Some(format!("\"{}\"", version + 7)),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");

    // Disabled: gone from the catalogue, new jobs refused.
    let (status, headers, disabled) =
        patch(json!({"active": false}), Some(format!("\"{version}\""))).await;
    assert_eq!(status, StatusCode::OK, "{disabled}");
    assert_eq!(disabled["active"], false);
    let version = version + 1;
    assert_eq!(headers["etag"], format!("\"{version}\"").as_str());
    let (_, catalogue) = get(&platform, &ada, "/api/workflows").await;
    assert!(
        catalogue["workflows"]
            .as_array()
            .expect("workflows")
            .iter()
            .all(|workflow| workflow["id"] != "lineart"),
        "a disabled workflow is not in the catalogue"
    );
    let refused = start(
        &platform,
        &ada,
        json!({"image_id": image, "workflow_id": "lineart", "parameters": {}}),
        None,
    )
    .await;
    let status = refused.status();
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("not active"),
        "{problem}"
    );

    // Metadata and defaults, the defaults checked against the schema.
    let (status, _, problem) = patch(
        json!({"defaults": {"no_such_parameter": 1}}),
        Some(format!("\"{version}\"")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "defaults.no_such_parameter");
    let (status, _, edited) = patch(
        json!({"name": "Line art (edited)", "description": "Edges only", "category": "utility", "active": true}),
        Some(format!("\"{version}\"")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let version = version + 1;
    let (_, public) = get(&platform, &ada, "/api/workflows/lineart").await;
    assert_eq!(
        (&public["name"], &public["description"], &public["active"]),
        (
            &json!("Line art (edited)"),
            &json!("Edges only"),
            &json!(true)
        )
    );
    let job = start_job(&platform, &ada, &image, "lineart", json!({})).await;
    assert_eq!(finished(&platform, &ada, &job).await["status"], "completed");

    // Pinned: the schema stays as it is.
    let (status, _, pinned) = patch(json!({"pinned": true}), Some(format!("\"{version}\""))).await;
    assert_eq!(status, StatusCode::OK, "{pinned}");
    assert_eq!(
        (&pinned["pinned"], &pinned["version"]),
        (&json!(true), &json!(version + 1))
    );

    // Added from a fal endpoint: the schema read from fal's model API.
    let (status, _, added) = call(
        &platform,
        Some(&root),
        Method::POST,
        "/api/admin/workflows",
        Some(json!({"id": "lineart-copy", "fal_endpoint": endpoint, "name": "Line art copy", "category": "utility", "active": true})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(
        (&added["custom"], &added["version"]),
        (&json!(true), &json!(1))
    );
    assert!(
        added["parameters_schema"]["properties"].is_object(),
        "{added}"
    );
    let copy = start_job(&platform, &ada, &image, "lineart-copy", json!({})).await;
    assert_eq!(
        finished(&platform, &ada, &copy).await["status"],
        "completed"
    );
    for (body, field, expected) in [
        (
            json!({"id": "nowhere", "fal_endpoint": "fal-ai/no-such-model", "name": "x", "category": "utility"}),
            "fal_endpoint",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"id": "broken", "fal_endpoint": endpoint, "name": "x", "category": "utility", "parameters_schema": {"type": "string"}}),
            "parameters_schema",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, _, problem) = call(
            &platform,
            Some(&root),
            Method::POST,
            "/api/admin/workflows",
            Some(body),
            &[],
        )
        .await;
        assert_eq!(status, expected, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, _, problem) = call(
        &platform,
        Some(&root),
        Method::POST,
        "/api/admin/workflows",
        Some(json!({"id": "lineart-copy", "fal_endpoint": endpoint, "name": "x", "category": "utility"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // Every change is in the audit log, with its administrator.
    let entries = audited(&platform, &root, "workflow.").await;
    let actions: Vec<&str> = entries.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "workflow.disabled",
            "workflow.updated",
            "workflow.pinned",
            "workflow.added"
        ]
    );
    assert!(
        entries.iter().all(|(_, actor)| *actor == root.id),
        "{entries:?}"
    );
}

async fn users_change_plan_and_role(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let root = sign_up(&platform, "root@example.com").await;
    let root = platform.make_admin(&root).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    sign_up(&platform, "grace@example.com").await;

    let (status, page) = get(&platform, &root, "/api/admin/users?q=ADA").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let users = page["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{page}");
    assert_eq!(
        (&users[0]["email"], &users[0]["role"], &users[0]["tier"]),
        (&json!("ada@example.com"), &json!("user"), &json!("free"))
    );
    assert!(users[0]["created_at"].is_string());
    let (_, page) = get(&platform, &root, "/api/admin/users?page_size=2").await;
    assert_eq!(page["users"].as_array().expect("users").len(), 2);
    let next = page["next_page_token"].as_str().expect("more");
    let (_, rest) = get(
        &platform,
        &root,
        format!("/api/admin/users?page_size=2&page_token={next}"),
    )
    .await;
    assert_eq!(rest["users"].as_array().expect("users").len(), 1);
    assert!(rest["next_page_token"].is_null());

    let path = format!("/api/admin/users/{}", ada.id);
    let (status, _, changed) = call(
        &platform,
        Some(&root),
        Method::PATCH,
        &path,
        Some(json!({"tier": "pro"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (&changed["tier"], &changed["role"]),
        (&json!("pro"), &json!("user"))
    );
    let (_, profile) = get(&platform, &ada, "/api/users/profile").await;
    assert_eq!(profile["subscription_tier"], "pro", "{profile}");
    let (status, _, changed) = call(
        &platform,
        Some(&root),
        Method::PATCH,
        &path,
        Some(json!({"role": "admin"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["role"], "admin");
    let (status, _, problem) = call(
        &platform,
        Some(&root),
        Method::PATCH,
        &path,
        Some(json!({"tier": "platinum"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "tier");
    let own = format!("/api/admin/users/{}", root.id);
    let (status, _, problem) = call(
        &platform,
        Some(&root),
        Method::PATCH,
        &own,
        Some(json!({"role": "user"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "user_id");

    let entries = audited(&platform, &root, "user.").await;
    let by_root: Vec<&str> = entries
        .iter()
        .filter(|(_, actor)| *actor == root.id)
        .map(|(action, _)| action.as_str())
        .collect();
    assert_eq!(by_root, ["user.tier_changed", "user.role_changed"]);
}

async fn dead_letters_are_retried_and_discarded(backend: Backend) {
    let mut options = Options::new(backend);
    if backend == Backend::Postgres {
        options.queue = QueueBackend::Redis;
    }
    // fal's refusals reach the queue as they come: no retries inside the fal
    // client, and a breaker that never opens (an open breaker makes jobs wait,
    // not fail).
    options.fal_retry.max_retries = 0;
    options.fal_breaker.consecutive_failures = u32::MAX;
    options.fal_breaker.min_calls = u32::MAX;
    let platform = TestPlatform::spawn_with(options).await;
    let root = sign_up(&platform, "root@example.com").await;
    let root = platform.make_admin(&root).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    let image = upload(&platform, &ada, fixtures::png(16, 16)).await;

    platform.fal_sim().set_failures(atelier_fal_sim::Failures {
        submit_status: Some(503),
        error_type: Some("runner_scheduling_failure".into()),
        ..Default::default()
    });
    let retried = start_job(&platform, &ada, &image, "lineart", json!({})).await;
    let discarded = start_job(&platform, &ada, &image, "lineart", json!({})).await;
    for job in [&retried, &discarded] {
        let done = finished(&platform, &ada, job).await;
        assert_eq!(
            (&done["status"], &done["error"]["code"]),
            (&json!("failed"), &json!("attempts_exhausted")),
            "{done}"
        );
    }

    let (status, queue) = get(&platform, &root, "/api/admin/queue").await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    assert_eq!(queue["dead"], 2, "{queue}");
    let (_, letters) = get(&platform, &root, "/api/admin/dead-letters").await;
    let letters = letters["dead_letters"].as_array().expect("letters").clone();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["user_id"], ada.id.as_str());
        assert_eq!(letter["workflow_id"], "lineart");
        assert_eq!(letter["status"], "failed");
        assert_eq!(letter["error_code"], "attempts_exhausted");
        assert_eq!(letter["attempts"], 3);
        assert!(!letter["reason"].as_str().expect("reason").is_empty());
    }
    let (status, one) = get(
        &platform,
        &root,
        format!("/api/admin/dead-letters/{retried}"),
    )
    .await;
    assert_eq!((status, &one["job_id"]), (StatusCode::OK, &json!(retried)));
    let (_, failures) = get(&platform, &root, "/api/admin/failures").await;
    let group = failures["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|group| group["error_type"] == "attempts_exhausted")
        .expect("attempts_exhausted")
        .clone();
    assert_eq!(group["count"], 2, "{failures}");
    assert_eq!(group["examples"].as_array().expect("examples").len(), 2);
    let (_, fal) = get(&platform, &root, "/api/admin/fal").await;
    assert_eq!(fal["recent_failures"], 2, "{fal}");
    assert!(
        fal["breakers"]
            .as_array()
            .expect("breakers")
            .iter()
            .all(|breaker| breaker["state"] == "closed"),
        "{fal}"
    );

    // fal is back: the retried job runs to the end.
    platform
        .fal_sim()
        .set_failures(atelier_fal_sim::Failures::default());
    let (status, outcome) = post(
        &platform,
        &root,
        format!("/api/admin/dead-letters/{retried}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert!(["pending", "queued"].contains(&outcome["status"].as_str().expect("status")));
    let done = finished(&platform, &ada, &retried).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (status, _) = post(
        &platform,
        &root,
        format!("/api/admin/dead-letters/{retried}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "retried once");

    // Discarded: out of the dead letters, the job failed for good.
    let (status, problem) = post(
        &platform,
        &root,
        format!("/api/admin/dead-letters/{discarded}/discard"),
        json!({"reason": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, outcome) = post(
        &platform,
        &root,
        format!("/api/admin/dead-letters/{discarded}/discard"),
        json!({"reason": "the input is corrupt"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["status"], "failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        finished(&platform, &ada, &discarded).await["status"],
        "failed"
    );
    let (_, letters) = get(&platform, &root, "/api/admin/dead-letters").await;
    assert_eq!(letters["dead_letters"], json!([]));
    let (_, queue) = get(&platform, &root, "/api/admin/queue").await;
    assert_eq!(queue["dead"], 0, "{queue}");

    let entries = audited(&platform, &root, "job.").await;
    assert_eq!(
        entries,
        [
            ("job.dead_letter_retried".to_owned(), root.id.clone()),
            ("job.dead_letter_discarded".to_owned(), root.id.clone()),
        ]
    );
}
