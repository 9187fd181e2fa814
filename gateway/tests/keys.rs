//! API keys end to end on PostgreSQL and Redis: every operation of the REST API
//! and every method of the gRPC contract refuses a key without its scope and
//! lets one with exactly that scope through; revoked, expired and unknown keys are
//! refused, on every replica within seconds of a revocation; another user's key
//! is not found; the key is shown once and never listed; a key has its own rate
//! limit on top of its user's.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use atelier_proto::access::{METHODS, SCOPES};
use atelier_testbed::{Backend, LimitConfig, Options, QueueBackend, TestPlatform};
use atelier_testkit::rest::{User, get, post, sign_up};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const INSUFFICIENT_SCOPE: &str = "https://atelier.dev/problems/insufficient-scope";

/// PostgreSQL with Redis (revocations announced through Redis pub/sub), as in
/// production; or SQLite with the in-process bus, as the embedded default.
fn options_on(backend: Backend) -> Options {
    let mut options = Options::new(backend);
    if backend == Backend::Postgres {
        options.queue = QueueBackend::Redis;
    }
    options
}

fn options() -> Options {
    options_on(Backend::Postgres)
}

/// Creates a key of `user`'s with `scopes` (and `extra` fields); the answer.
async fn create_key(platform: &TestPlatform, user: &User, scopes: &[&str], extra: Value) -> Value {
    let name: String = format!("key {}", scopes.join(" "))
        .chars()
        .take(100)
        .collect();
    let mut body = json!({"name": name, "scopes": scopes});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let (status, created) = post(platform, user, "/api/keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// `user` signed in with `key` instead of their access token.
fn with_key(user: &User, key: &Value) -> User {
    User {
        token: key["key"].as_str().expect("the key").to_owned(),
        ..user.clone()
    }
}

/// Keys of one user, made once per set of scopes.
struct Keys<'a> {
    platform: &'a TestPlatform,
    user: User,
    made: HashMap<BTreeSet<String>, User>,
}

impl<'a> Keys<'a> {
    async fn new(platform: &'a TestPlatform, email: &str) -> Self {
        Self {
            platform,
            user: sign_up(platform, email).await,
            made: HashMap::new(),
        }
    }

    async fn with(&mut self, scopes: &[&str]) -> User {
        let set: BTreeSet<String> = scopes.iter().map(|scope| (*scope).to_owned()).collect();
        if let Some(user) = self.made.get(&set) {
            return user.clone();
        }
        let key = create_key(self.platform, &self.user, scopes, json!({})).await;
        let user = with_key(&self.user, &key);
        self.made.insert(set, user.clone());
        user
    }

    /// A key with every scope but `missing`.
    async fn without(&mut self, missing: &str) -> User {
        let scopes: Vec<&str> = SCOPES
            .iter()
            .copied()
            .filter(|scope| *scope != missing)
            .collect();
        self.with(&scopes).await
    }
}

/// A REST call as `user`; the status and the problem's `type` (empty when none),
/// or `None` when the answer did not start within a few seconds (a stream that
/// was let through).
async fn call(
    platform: &TestPlatform,
    user: &User,
    method: &Method,
    path: &str,
) -> Option<(StatusCode, String)> {
    let mut request = Client::new()
        .request(method.clone(), format!("{}{path}", platform.gateway_url))
        .bearer_auth(&user.token)
        .timeout(Duration::from_secs(5));
    if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        request = request.json(&json!({}));
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return None,
        Err(err) => panic!("{method} {path}: {err}"),
    };
    let status = response.status();
    let kind = tokio::time::timeout(Duration::from_secs(5), response.json::<Value>())
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|body| body["type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Some((status, kind))
}

/// Every secured operation of the OpenAPI document: path (parameters filled with
/// fresh ids), method, operation id and the scopes it lists. Deleting the
/// account comes last: it ends the user.
fn operations() -> Vec<(String, Method, String, Vec<String>, bool)> {
    let document = atelier_gateway::openapi::document();
    let json = serde_json::to_value(&document).expect("json");
    let mut found = Vec::new();
    for (path, item) in json["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let Some(security) = operation["security"].as_array() else {
                continue;
            };
            let scopes: Vec<String> =
                serde_json::from_value(security[0]["bearer"].clone()).expect("scopes");
            let admin = operation["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|tag| tag == "admin"));
            let mut filled = String::new();
            for segment in path.split('/').skip(1) {
                filled.push('/');
                if segment.starts_with('{') {
                    filled.push_str(&uuid::Uuid::new_v4().to_string());
                } else {
                    filled.push_str(segment);
                }
            }
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            found.push((filled, method, id, scopes, admin));
        }
    }
    found.sort_by_key(|(_, _, id, _, _)| id == "delete_account");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rest_operation_needs_its_scopes_of_a_key() {
    let platform = TestPlatform::spawn_with(options()).await;
    let mut keys = Keys::new(&platform, "rest-scopes@example.com").await;
    let operations = operations();
    assert!(operations.len() > 25, "{} operations", operations.len());
    // Every key first: deleting the account (last) ends the user.
    for (_, _, _, scopes, _) in &operations {
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        if !scopes.is_empty() {
            keys.with(&scopes).await;
        }
        for scope in &scopes {
            keys.without(scope).await;
        }
    }
    let everything = keys.with(SCOPES).await;
    let mut checked = 0;
    for (path, method, id, scopes, admin) in &operations {
        if *admin {
            assert!(scopes.is_empty(), "{id} lists scopes");
            let answer = call(&platform, &everything, method, path).await;
            assert_eq!(
                answer,
                Some((StatusCode::FORBIDDEN, INSUFFICIENT_SCOPE.to_owned())),
                "{method} {path} ({id}): no key is an administrator"
            );
            continue;
        }
        assert!(!scopes.is_empty(), "{id} lists no scope");
        for scope in scopes {
            let lacking = keys.without(scope).await;
            let answer = call(&platform, &lacking, method, path).await;
            assert_eq!(
                answer,
                Some((StatusCode::FORBIDDEN, INSUFFICIENT_SCOPE.to_owned())),
                "{method} {path} ({id}) with a key lacking {scope}"
            );
        }
        let exact: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let exact = keys.with(&exact).await;
        if let Some((status, kind)) = call(&platform, &exact, method, path).await {
            assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} ({id}) with a key of {scopes:?}"
            );
            assert_ne!(
                kind, INSUFFICIENT_SCOPE,
                "{method} {path} ({id}) with a key of exactly {scopes:?}: {status}"
            );
        }
        checked += 1;
    }
    assert!(checked > 25, "{checked} operations checked");
}

/// Decodes a `grpc-message` (percent-encoded).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(byte) = text
                .get(at + 1..at + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC-web call of `path` through the gateway with an empty message, as
/// `user`: the status code and message, or `None` when the call was let
/// through and still runs after a few seconds.
async fn grpc_web(base: &str, user: &User, path: &str) -> Option<(i32, String)> {
    let response = Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .bearer_auth(&user.token)
        .body(vec![0u8, 0, 0, 0, 0])
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return None,
        Err(err) => panic!("{path}: {err}"),
    };
    let header = |headers: &reqwest::header::HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(code) = header(response.headers(), "grpc-status") {
        let message = header(response.headers(), "grpc-message").unwrap_or_default();
        return Some((code.parse().expect("code"), percent_decode(&message)));
    }
    let body = match tokio::time::timeout(Duration::from_secs(5), response.bytes()).await {
        Ok(Ok(body)) => body,
        Ok(Err(err)) if err.is_timeout() => return None,
        Ok(Err(err)) => panic!("{path}: {err}"),
        Err(_) => return None,
    };
    // Frames: a flag byte, a length, the payload; trailers have the 0x80 flag.
    let mut at = 0;
    while at + 5 <= body.len() {
        let len =
            u32::from_be_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]) as usize;
        let payload = &body[at + 5..(at + 5 + len).min(body.len())];
        if body[at] & 0x80 != 0 {
            let text = String::from_utf8_lossy(payload);
            let mut code = None;
            let mut message = String::new();
            for line in text.split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "grpc-status" => code = value.trim().parse().ok(),
                        "grpc-message" => message = percent_decode(value.trim()),
                        _ => {}
                    }
                }
            }
            return Some((code.expect("grpc-status in the trailers"), message));
        }
        at += 5 + len;
    }
    Some((0, String::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_grpc_method_needs_its_scope_of_a_key() {
    let platform = TestPlatform::spawn_with(options()).await;
    let mut keys = Keys::new(&platform, "grpc-scopes@example.com").await;
    let mut methods: Vec<_> = METHODS
        .iter()
        .filter(|method| method.routed() && !method.public)
        .collect();
    // Deleting the account ends the user: last.
    methods.sort_by_key(|method| method.path.ends_with("/DeleteAccount"));
    for method in &methods {
        if !method.scope.is_empty() {
            keys.with(&[method.scope]).await;
            keys.without(method.scope).await;
        }
    }
    let everything = keys.with(SCOPES).await;
    let base = platform.gateway_url.clone();
    for method in methods {
        let path = method.path;
        if method.admin() {
            let answer = grpc_web(&base, &everything, path).await;
            assert_eq!(
                answer.map(|(code, _)| code),
                Some(tonic::Code::PermissionDenied as i32),
                "{path}: no key is an administrator"
            );
            continue;
        }
        assert!(!method.scope.is_empty(), "{path} declares no scope");
        let lacking = keys.without(method.scope).await;
        let (code, message) = grpc_web(&base, &lacking, path)
            .await
            .unwrap_or_else(|| panic!("{path} let a key lacking {} through", method.scope));
        assert_eq!(
            code,
            tonic::Code::PermissionDenied as i32,
            "{path} with a key lacking {}: {message}",
            method.scope
        );
        assert!(
            message.contains(method.scope),
            "{path}: the refusal names the scope: {message}"
        );
        let exact = keys.with(&[method.scope]).await;
        if let Some((code, message)) = grpc_web(&base, &exact, path).await {
            assert_ne!(
                code,
                tonic::Code::Unauthenticated as i32,
                "{path}: {message}"
            );
            assert!(
                !(code == tonic::Code::PermissionDenied as i32 && message.contains("scope")),
                "{path} with a key of exactly {}: {message}",
                method.scope
            );
        }
    }
}

/// Polls `check` until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_shown_once_revoked_everywhere_and_expire_on_postgres() {
    keys_are_shown_once_revoked_everywhere_and_expire(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_shown_once_revoked_everywhere_and_expire_on_sqlite() {
    keys_are_shown_once_revoked_everywhere_and_expire(Backend::Sqlite).await;
}

async fn keys_are_shown_once_revoked_everywhere_and_expire(backend: Backend) {
    let platform = TestPlatform::spawn_with(options_on(backend)).await;
    let second = platform
        .spawn_gateway(platform.gateway_config.clone())
        .await;
    let user = sign_up(&platform, "keys@example.com").await;
    let stranger = sign_up(&platform, "stranger@example.com").await;

    let created = create_key(
        &platform,
        &user,
        &["images:read", "keys:read", "keys:write"],
        json!({"rate_limit_per_minute": 1000}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("atl_live_") && key.len() == 52, "{key}");
    assert_eq!(created["prefix"].as_str(), Some(&key[..13]));
    for field in ["id", "created_at"] {
        assert!(created[field].is_string(), "{field}: {created}");
    }
    assert!(created["expires_at"].is_null() && created["last_used_at"].is_null());
    assert_eq!(created["rate_limit_per_minute"], 1000);
    let as_key = with_key(&user, &created);

    // Bad requests are refused with each field named, and create nothing.
    let (status, problem) = post(
        &platform,
        &user,
        "/api/keys",
        json!({"name": "", "scopes": ["images:read", "images:erase"], "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["name", "scopes[1]", "expires_at"], "{problem}");
    let (status, problem) = post(
        &platform,
        &user,
        "/api/keys",
        json!({"name": "x", "expires_at": "tomorrow"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // A key cannot grant what it lacks.
    let (status, problem) = post(
        &platform,
        &as_key,
        "/api/keys",
        json!({"name": "wider", "scopes": ["images:write"]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], INSUFFICIENT_SCOPE);

    // The key works, on both replicas, over REST and gRPC-web; the list has its
    // prefix and when it was used, never the key.
    for base in [platform.gateway_url.as_str(), second.as_str()] {
        let (status, body) = get(base, &as_key, "/api/images").await;
        assert_eq!(status, StatusCode::OK, "{base}: {body}");
        let answer = grpc_web(base, &as_key, "/atelier.image.v1.ImageService/ListImages").await;
        assert_eq!(answer.map(|(code, _)| code), Some(0), "{base}");
    }
    let (status, problem) = get(&platform, &as_key, "/api/users/profile").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], INSUFFICIENT_SCOPE);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("account:read"),
        "{problem}"
    );
    let response = Client::new()
        .get(format!("{}/api/keys", platform.gateway_url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("list");
    assert!(!text.contains(&key) && !text.contains(&key[13..]), "{text}");
    let listed: Value = serde_json::from_str(&text).expect("json");
    let mine = &listed["keys"][0];
    assert_eq!(mine["id"], created["id"]);
    assert_eq!(mine["prefix"], created["prefix"]);
    assert_eq!(
        mine["scopes"],
        json!(["images:read", "keys:read", "keys:write"])
    );
    assert!(mine["key"].is_null(), "{mine}");
    assert!(mine["last_used_at"].is_string(), "marked used: {mine}");
    let (status, theirs) = get(&platform, &stranger, "/api/keys").await;
    assert_eq!(
        (status, theirs["keys"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );

    // Another user's key is not found, and stays working.
    let id = created["id"].as_str().expect("id");
    let revoke = |who: &User, id: &str| {
        Client::new()
            .delete(format!("{}/api/keys/{id}", platform.gateway_url))
            .bearer_auth(&who.token)
            .send()
    };
    let response = revoke(&stranger, id).await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = revoke(&user, "not-an-id").await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, _) = get(&platform, &as_key, "/api/images").await;
    assert_eq!(status, StatusCode::OK);

    // Revoked on the first replica: refused by the second, and by the services
    // behind it, within seconds (the caches would keep it 30 s without the
    // announcement).
    let revoked_at = Instant::now();
    let response = revoke(&user, id).await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    eventually(
        Duration::from_secs(5),
        "refused by the second gateway",
        || {
            let (second, as_key) = (second.clone(), as_key.clone());
            async move { get(&second, &as_key, "/api/images").await.0 == StatusCode::UNAUTHORIZED }
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "refused by the image service",
        || {
            let (second, as_key) = (second.clone(), as_key.clone());
            async move {
                grpc_web(
                    &second,
                    &as_key,
                    "/atelier.image.v1.ImageService/ListImages",
                )
                .await
                .is_some_and(|(code, _)| code == tonic::Code::Unauthenticated as i32)
            }
        },
    )
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(10));
    let (status, problem) = get(&platform, &as_key, "/api/images").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    // Revoking again is no error; the list says when it was revoked.
    let response = revoke(&user, id).await.expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, listed) = get(&platform, &user, "/api/keys").await;
    assert!(listed["keys"][0]["revoked_at"].is_string(), "{listed}");

    // An expired key is refused; an unknown one too.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let expiring = create_key(
        &platform,
        &user,
        &["images:read"],
        json!({"expires_at": soon}),
    )
    .await;
    let expiring = with_key(&user, &expiring);
    let (status, _) = get(&platform, &expiring, "/api/images").await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(10), "the expired key refused", || {
        let expiring = expiring.clone();
        let platform = &platform;
        async move { get(platform, &expiring, "/api/images").await.0 == StatusCode::UNAUTHORIZED }
    })
    .await;
    let unknown = User {
        token: format!("atl_live_{}", "A".repeat(43)),
        ..user.clone()
    };
    let (status, problem) = get(&platform, &unknown, "/api/images").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");

    // Creation and revocation are in the audit log, by the key's prefix, never
    // the key.
    let auditor = platform
        .make_admin(&sign_up(&platform, "auditor@example.com").await)
        .await;
    let (status, log) = get(
        &platform,
        &auditor,
        format!(
            "/api/admin/audit-events?action=api_key.&subject_user_id={}",
            user.id
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let text = log.to_string();
    assert!(!text.contains(&key[13..]), "{text}");
    let actions: Vec<(&str, &str)> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            (
                event["action"].as_str().expect("action"),
                event["target"]["id"].as_str().unwrap_or_default(),
            )
        })
        .filter(|(_, target)| *target == id)
        .collect();
    assert_eq!(
        actions,
        [("api_key.revoked", id), ("api_key.created", id)],
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_has_its_own_rate_limit_on_top_of_its_users() {
    let mut options = options();
    options.limits = LimitConfig {
        per_ip: 10_000,
        per_user: 10_000,
        credentials_per_ip: 10_000,
        per_key: 10_000,
    };
    let platform = TestPlatform::spawn_with(options).await;
    let second = platform
        .spawn_gateway(platform.gateway_config.clone())
        .await;
    let user = sign_up(&platform, "key-limits@example.com").await;
    let slow = create_key(
        &platform,
        &user,
        &["images:read"],
        json!({"rate_limit_per_minute": 3}),
    )
    .await;
    let slow = with_key(&user, &slow);
    // The budget is shared by the replicas (Redis).
    let mut statuses = Vec::new();
    for base in [
        &platform.gateway_url,
        &second,
        &platform.gateway_url,
        &second,
    ] {
        statuses.push(get(base.as_str(), &slow, "/api/images").await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // The user's own budget, and their other keys', are untouched.
    let (status, _) = get(&platform, &user, "/api/images").await;
    assert_eq!(status, StatusCode::OK);
    let other = create_key(&platform, &user, &["images:read"], json!({})).await;
    let (status, _) = get(&platform, &with_key(&user, &other), "/api/images").await;
    assert_eq!(status, StatusCode::OK);
}
