//! The gateway over real HTTP, in front of a spawned auth service on PostgreSQL.

use atelier_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use atelier_testbed::{Backend, LimitConfig, Options, TestPlatform};
use reqwest::{Client, Response, StatusCode, header};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn http() -> Client {
    Client::builder().build().expect("client")
}

async fn post(platform: &TestPlatform, path: &str, body: Value) -> Response {
    http()
        .post(format!("{}{path}", platform.gateway_url))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Asserts an RFC 9457 problem document with `status` and returns it.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let response_id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem lacks {member}: {body}");
    }
    assert!(body["errors"].is_array(), "problem lacks errors: {body}");
    assert_eq!(
        body["request_id"], response_id,
        "the problem names its request"
    );
    body
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field"))
        .collect()
}

async fn register(platform: &TestPlatform, email: &str) -> Value {
    let response = post(
        platform,
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_refresh_logout_shapes() {
    let platform = TestPlatform::spawn(Backend::Postgres).await;

    let tokens = register(&platform, "Ada@Example.com").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["user"]["email"], "ada@example.com");
    assert!(
        tokens["access_token"]
            .as_str()
            .expect("access")
            .split('.')
            .count()
            == 3
    );
    assert!(tokens["refresh_token"].as_str().expect("refresh").len() >= 43);

    let duplicate = post(
        &platform,
        "/api/auth/register",
        json!({"email": "ADA@example.com", "password": PASSWORD}),
    )
    .await;
    problem(duplicate, StatusCode::CONFLICT).await;

    let invalid = post(
        &platform,
        "/api/auth/register",
        json!({"email": "nope", "password": "short"}),
    )
    .await;
    let invalid = problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&invalid), ["email", "password"]);
    assert_eq!(invalid["errors"][0]["pointer"], "#/email");

    let login = post(
        &platform,
        "/api/auth/login",
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(login.status(), StatusCode::OK);
    let login: Value = login.json().await.expect("tokens");
    assert_eq!(login["user"]["id"], tokens["user"]["id"]);

    // Unknown email and wrong password: the same answer.
    let wrong = post(
        &platform,
        "/api/auth/login",
        json!({"email": "ada@example.com", "password": "wrong password!"}),
    )
    .await;
    let mut wrong = problem(wrong, StatusCode::UNAUTHORIZED).await;
    let unknown = post(
        &platform,
        "/api/auth/login",
        json!({"email": "eve@example.com", "password": "wrong password!"}),
    )
    .await;
    let mut unknown = problem(unknown, StatusCode::UNAUTHORIZED).await;
    wrong["request_id"].take();
    unknown["request_id"].take();
    assert_eq!(wrong, unknown);

    let me = http()
        .get(format!("{}/api/auth/me", platform.gateway_url))
        .bearer_auth(login["access_token"].as_str().expect("access"))
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.expect("me json");
    assert_eq!(me["email"], "ada@example.com");
    let anonymous = http()
        .get(format!("{}/api/auth/me", platform.gateway_url))
        .send()
        .await
        .expect("me");
    problem(anonymous, StatusCode::UNAUTHORIZED).await;

    let refreshed = post(
        &platform,
        "/api/auth/refresh",
        json!({"refresh_token": login["refresh_token"]}),
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.expect("tokens");
    // The successor is used: from now on the rotated token is a reuse, even
    // inside the grace for a refresh whose answer was lost.
    let newest = post(
        &platform,
        "/api/auth/refresh",
        json!({"refresh_token": refreshed["refresh_token"]}),
    )
    .await;
    assert_eq!(newest.status(), StatusCode::OK);
    let newest: Value = newest.json().await.expect("tokens");
    let reused = post(
        &platform,
        "/api/auth/refresh",
        json!({"refresh_token": login["refresh_token"]}),
    )
    .await;
    problem(reused, StatusCode::UNAUTHORIZED).await;
    // Reuse revoked the family, the newest token included.
    let revoked = post(
        &platform,
        "/api/auth/refresh",
        json!({"refresh_token": newest["refresh_token"]}),
    )
    .await;
    problem(revoked, StatusCode::UNAUTHORIZED).await;

    let logout = post(
        &platform,
        "/api/auth/logout",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = post(
        &platform,
        "/api/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    problem(after, StatusCode::UNAUTHORIZED).await;
    let missing = post(&platform, "/api/auth/logout", json!({})).await;
    assert_eq!(
        fields(&problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["refresh_token"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_problems_never_500() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let url = format!("{}/api/auth/login", platform.gateway_url);
    let send = |body: &'static str, content_type: &'static str| {
        http()
            .post(&url)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    problem(
        send("{\"email\":", "application/json").await.expect("send"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        send("[1,2]", "application/json").await.expect("send"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        send("{\"email\": 5}", "application/json")
            .await
            .expect("send"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        send("email=a", "application/x-www-form-urlencoded")
            .await
            .expect("send"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let empty = problem(
        send("{}", "application/json").await.expect("send"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&empty), ["email", "password"]);

    let huge = format!(
        "{{\"email\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(200 * 1024)
    );
    let too_large = http()
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(huge)
        .send()
        .await
        .expect("send");
    problem(too_large, StatusCode::PAYLOAD_TOO_LARGE).await;

    let unknown = http()
        .get(format!("{}/api/nothing-here", platform.gateway_url))
        .send()
        .await
        .expect("send");
    problem(unknown, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_ip() {
    let mut options = Options::new(Backend::Sqlite);
    options.limits = LimitConfig {
        per_ip: 1000,
        per_user: 1000,
        credentials_per_ip: 3,
        per_key: 1000,
    };
    let platform = TestPlatform::spawn_with(options).await;
    let body = json!({"email": "a@example.com", "password": "wrong password!"});
    for _ in 0..3 {
        let response = post(&platform, "/api/auth/login", body.clone()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = post(&platform, "/api/auth/login", body).await;
    let retry_after: u64 = limited.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "retry after {retry_after}");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // Other routes have their own, looser budget.
    let health = http()
        .get(format!("{}/api/openapi.json", platform.gateway_url))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_callers_are_rate_limited_per_user() {
    let mut options = Options::new(Backend::Sqlite);
    options.limits = LimitConfig {
        per_ip: 1000,
        per_user: 3,
        credentials_per_ip: 1000,
        per_key: 1000,
    };
    let platform = TestPlatform::spawn_with(options).await;
    let tokens = register(&platform, "busy@example.com").await;
    let token = tokens["access_token"].as_str().expect("access");
    let me = || {
        http()
            .get(format!("{}/api/auth/me", platform.gateway_url))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(me().await.expect("me").status(), StatusCode::OK);
    }
    let limited = me().await.expect("me");
    assert!(limited.headers().contains_key(header::RETRY_AFTER));
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // Anonymous requests from the same address are not charged to that user.
    let anonymous = http()
        .get(format!("{}/api/openapi.json", platform.gateway_url))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_listed_origins_only() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let preflight = |origin: &'static str| {
        http()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/auth/login", platform.gateway_url),
            )
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let methods = allowed.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("methods");
    assert!(methods.contains("POST"), "{methods}");

    let denied = preflight("https://evil.example.net")
        .await
        .expect("preflight");
    assert!(
        !denied
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_request_id_and_security_headers() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let given = http()
        .get(format!("{}/healthz", platform.gateway_url))
        .header("x-request-id", "test-request-42")
        .send()
        .await
        .expect("healthz");
    assert_eq!(given.status(), StatusCode::OK);
    assert_eq!(given.headers()["x-request-id"], "test-request-42");

    let generated = post(&platform, "/api/auth/login", json!({})).await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        4
    );
    let headers = generated.headers();
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp")
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(
        !headers.contains_key(header::STRICT_TRANSPORT_SECURITY),
        "no HSTS over plain http"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_compression() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let get = |path: &str| http().get(format!("{}{path}", platform.gateway_url)).send();
    let admin = |path: &str| http().get(format!("{}{path}", platform.admin_url)).send();
    assert_eq!(
        get("/healthz").await.expect("healthz").status(),
        StatusCode::OK
    );
    // Metrics and readiness are the admin port's, never the public one's.
    for path in ["/metrics", "/readyz"] {
        problem(get(path).await.expect(path), StatusCode::NOT_FOUND).await;
    }
    assert_eq!(
        admin("/readyz").await.expect("readyz").status(),
        StatusCode::OK
    );
    register(&platform, "metrics@example.com").await;

    let metrics = admin("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("atelier_http_requests_total{")
                && line.contains("route=\"/api/auth/register\"")
                && line.contains("status=\"201\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("atelier_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |line| line.starts_with("atelier_grpc_server_handled_total{")
                && line.contains("method=\"Register\"")
                && line.contains("code=\"Ok\"")
        ),
        "{metrics}"
    );

    let compressed = http()
        .get(format!("{}/api/openapi.json", platform.gateway_url))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("openapi");
    assert_eq!(compressed.headers()[header::CONTENT_ENCODING], "gzip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_auth_is_unreachable() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    // A gateway of its own, pointed at an address where nothing listens.
    let mut config_platform = platform.platform.clone();
    config_platform.endpoints.auth.url = "https://127.0.0.1:9".into();
    config_platform.grpc_timeout = std::time::Duration::from_secs(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let readiness = atelier_gateway::readiness(
        &config_platform,
        atelier_common::admin::Readiness::new(),
        &shutdown,
    )
    .expect("readiness");
    readiness.started();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin_addr = admin.local_addr().expect("addr");
    tokio::spawn(atelier_common::admin::serve(
        admin,
        readiness,
        shutdown.clone(),
    ));
    let config = atelier_gateway::GatewayConfig::from_env(config_platform).expect("config");
    tokio::spawn(atelier_gateway::serve(config, listener, shutdown.clone()));
    let readyz = http()
        .get(format!("http://{admin_addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(readyz.text().await.expect("body").starts_with("auth:"));
    // Alive all the same.
    let healthz = http()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), StatusCode::OK);
    let login = http()
        .post(format!("http://{addr}/api/auth/login"))
        .json(&json!({"email": "a@example.com", "password": "whatever long"}))
        .send()
        .await
        .expect("login");
    problem(login, StatusCode::SERVICE_UNAVAILABLE).await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_docs_page() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let document: Value = http()
        .get(format!("{}/api/openapi.json", platform.gateway_url))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    for path in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
    ] {
        assert!(
            document["paths"][path]["post"].is_object(),
            "{path} missing"
        );
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());

    let docs = http()
        .get(format!("{}/api/docs", platform.gateway_url))
        .send()
        .await
        .expect("docs");
    assert_eq!(
        docs.status(),
        StatusCode::OK,
        "run `make web` to build the docs page"
    );
    let html = docs.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    let bundle = http()
        .get(format!(
            "{}/api/docs/swagger-ui-bundle.js",
            platform.gateway_url
        ))
        .send()
        .await
        .expect("bundle");
    assert_eq!(bundle.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_and_grpc_reach_the_auth_service_through_the_gateway() {
    use hyper_util::{client::legacy::Client as HyperClient, rt::TokioExecutor};
    use tonic_web::GrpcWebClientLayer;

    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    register(&platform, "web@example.com").await;

    // gRPC-web over HTTP/1.1, as a browser sends it.
    let http1 = HyperClient::builder(TokioExecutor::new()).build_http();
    let web = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1);
    let mut client =
        AuthServiceClient::with_origin(web, platform.gateway_url.parse().expect("uri"));
    let session = client
        .login(pb::LoginRequest {
            email: "web@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("grpc-web login")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(session.user.expect("user").email, "web@example.com");
    let denied = client
        .login(pb::LoginRequest {
            email: "web@example.com".into(),
            password: "wrong password!".into(),
        })
        .await
        .expect_err("bad password");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    // Plain gRPC over HTTP/2 to the same address.
    let mut native = AuthServiceClient::connect(platform.gateway_url.clone())
        .await
        .expect("connect");
    let jwks = native
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].crv, "Ed25519");
}
