//! Rate limits that hold at the edge: the client address taken only from trusted
//! proxy hops, the credential limit on every transport, and one budget for every
//! gateway replica through Redis.

use std::time::{Duration, Instant};

use atelier_common::config::Secret;
use atelier_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use atelier_testbed::{
    Backend, Backoff, LimitConfig, Options, QueueBackend, TestPlatform, TrustedProxies,
};
use hyper_util::{client::legacy::Client as HyperClient, rt::TokioExecutor};
use reqwest::{Client, StatusCode, header};
use serde_json::json;
use tonic::Code;
use tonic_web::GrpcWebClientLayer;

fn options(credentials_per_ip: u32) -> Options {
    let mut options = Options::new(Backend::Sqlite);
    options.limits = LimitConfig {
        per_ip: 10_000,
        per_user: 10_000,
        credentials_per_ip,
        per_key: 10_000,
    };
    options
}

/// A wrong-password login at `base`, with `X-Forwarded-For` when given.
async fn login(base: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "someone@example.com", "password": "wrong password!"}));
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    request.send().await.expect("login")
}

/// A fresh address a client could claim to have.
fn random_ip() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    format!("{}.{}.{}.{}", bytes[0], bytes[1], bytes[2], bytes[3])
}

/// An address forged by the client, then the one the ingress appended.
fn through_ingress(client: &str) -> String {
    format!("{}, {client}", random_ip())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_for_does_not_escape_the_credential_limit() {
    for proxies in [
        TrustedProxies::none(),
        TrustedProxies::hops(1),
        TrustedProxies::ranges(&["127.0.0.0/8"]).expect("ranges"),
    ] {
        let mut options = options(10);
        options.proxies = proxies.clone();
        let platform = TestPlatform::spawn_with(options).await;
        let mut statuses = Vec::new();
        for _ in 0..25 {
            let forwarded = through_ingress("203.0.113.7");
            statuses.push(
                login(&platform.gateway_url, Some(&forwarded))
                    .await
                    .status(),
            );
        }
        assert_eq!(
            statuses[..10],
            [StatusCode::UNAUTHORIZED; 10],
            "{proxies:?}: {statuses:?}"
        );
        assert_eq!(
            statuses[10..],
            [StatusCode::TOO_MANY_REQUESTS; 15],
            "{proxies:?}: {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_hop_count_tells_clients_behind_one_ingress_apart() {
    let mut options = options(5);
    options.proxies = TrustedProxies::hops(1);
    let platform = TestPlatform::spawn_with(options).await;
    for _ in 0..5 {
        let response = login(&platform.gateway_url, Some(&through_ingress("203.0.113.7"))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = login(&platform.gateway_url, Some(&through_ingress("203.0.113.7"))).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client through the same ingress (the same peer) has its own budget.
    let other = login(
        &platform.gateway_url,
        Some(&through_ingress("198.51.100.9")),
    )
    .await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    // A request that did not come through the ingress is the peer's own.
    let direct = login(&platform.gateway_url, None).await;
    assert_eq!(direct.status(), StatusCode::UNAUTHORIZED);
}

type WebClient = AuthServiceClient<
    tonic_web::GrpcWebClientService<
        HyperClient<
            hyper_util::client::legacy::connect::HttpConnector,
            tonic_web::GrpcWebCall<tonic::body::Body>,
        >,
    >,
>;

/// An auth client speaking gRPC-web to the gateway over HTTP/1.1, as a browser does.
fn grpc_web(platform: &TestPlatform) -> WebClient {
    let http1 = HyperClient::builder(TokioExecutor::new()).build_http();
    let web = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1);
    AuthServiceClient::with_origin(web, platform.gateway_url.parse().expect("uri"))
}

fn wrong_login() -> pb::LoginRequest {
    pb::LoginRequest {
        email: "someone@example.com".into(),
        password: "wrong password!".into(),
    }
}

/// Asserts a rate-limit refusal that says when to retry.
fn assert_limited(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait = atelier_common::error::retry_after(status).expect("a retry hint");
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&wait),
        "retry in {wait:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_spends_the_budget_of_grpc_web_and_grpc() {
    let platform = TestPlatform::spawn_with(options(3)).await;
    for _ in 0..3 {
        let response = login(&platform.gateway_url, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login(&platform.gateway_url, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let mut web = grpc_web(&platform);
    let refused = web.login(wrong_login()).await.expect_err("limited");
    assert_limited(&refused);
    let refused = web
        .register(pb::RegisterRequest {
            email: "new@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect_err("limited");
    assert_limited(&refused);

    let mut native = AuthServiceClient::connect(platform.gateway_url.clone())
        .await
        .expect("connect");
    let refused = native
        .refresh(pb::RefreshRequest {
            refresh_token: "not-a-token".into(),
        })
        .await
        .expect_err("limited");
    assert_limited(&refused);
    // Methods that take no credentials keep their looser budget.
    native
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks is not a credential method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_spends_the_budget_of_rest() {
    let platform = TestPlatform::spawn_with(options(3)).await;
    let mut web = grpc_web(&platform);
    for _ in 0..3 {
        let denied = web.login(wrong_login()).await.expect_err("wrong password");
        assert_eq!(denied.code(), Code::Unauthenticated);
    }
    assert_limited(&web.login(wrong_login()).await.expect_err("limited"));

    let limited = login(&platform.gateway_url, None).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "retry after {retry_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_budget_through_redis() {
    let mut options = options(4);
    options.queue = QueueBackend::Redis;
    let platform = TestPlatform::spawn_with(options).await;
    let second = platform
        .spawn_gateway(platform.gateway_config.clone())
        .await;
    let gateways = [platform.gateway_url.clone(), second];
    for attempt in 0..4 {
        let response = login(&gateways[attempt % 2], None).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    // Each replica saw two attempts; together they used the whole budget.
    for gateway in &gateways {
        assert_eq!(
            login(gateway, None).await.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{gateway}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_redis_is_away_serves_and_limits_alone() {
    let platform = TestPlatform::spawn_with(options(3)).await;
    let mut config = platform.gateway_config.clone();
    // Nothing listens on port 1.
    config.platform.redis_url = Some(Secret::new("redis://127.0.0.1:1"));
    let gateway = platform.spawn_gateway(config).await;
    // It starts after a bounded wait for Redis.
    let alive = Client::new()
        .get(format!("{gateway}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(alive.status(), StatusCode::OK);
    for _ in 0..3 {
        let started = Instant::now();
        let response = login(&gateway, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a missing Redis must not hold requests up: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        login(&gateway, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_budget_is_a_cell_rate_in_redis() {
    let shared = atelier_gateway::limits::SharedLimits::new(test_redis().await);
    // 6 a minute: bursts of 6, then one every 10 s.
    for attempt in 0..6 {
        let verdict = shared
            .check("test", "client", 6)
            .await
            .expect("redis answers");
        assert_eq!(verdict, Ok(()), "attempt {attempt}");
    }
    let wait = shared
        .check("test", "client", 6)
        .await
        .expect("redis answers")
        .expect_err("over the budget");
    assert!(
        (Duration::from_secs(9)..=Duration::from_secs(10)).contains(&wait),
        "{wait:?}"
    );
    // Refusals are not counted, and other keys have budgets of their own.
    let again = shared.check("test", "client", 6).await.expect("answers");
    assert!(again.expect_err("still over") <= wait);
    assert_eq!(shared.check("test", "other", 6).await, Some(Ok(())));
}

async fn test_redis() -> atelier_common::redis::Redis {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("atelier-test-{}:", uuid::Uuid::new_v4().simple());
    atelier_common::redis::Redis::connect(&url, prefix)
        .await
        .expect("TEST_REDIS_URL reachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_takes_its_budget_in_leases() {
    let shared = atelier_gateway::limits::SharedLimits::new(test_redis().await);
    // 6,000,000 a minute: leases of up to 6,000 requests, doubling from 1 while
    // each is spent within its lifetime.
    for attempt in 0..1000 {
        let verdict = shared.check("test", "busy", 6_000_000).await;
        assert_eq!(verdict, Some(Ok(())), "attempt {attempt}");
    }
    let trips = shared.round_trips();
    assert!(
        (10..=40).contains(&trips),
        "{trips} round trips to Redis for 1,000 checks"
    );
    // A small budget is checked in Redis request by request.
    for _ in 0..10 {
        assert_eq!(shared.check("test", "small", 1999).await, Some(Ok(())));
    }
    assert_eq!(shared.round_trips(), trips + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_never_let_replicas_past_the_budget() {
    let redis = test_redis().await;
    let replicas = [
        atelier_gateway::limits::SharedLimits::new(redis.clone()),
        atelier_gateway::limits::SharedLimits::new(redis),
    ];
    // 4,000 a minute (bursts of 4,000; leases up to 4): two replicas asking
    // 5,000 times in all get the burst and what refilled meanwhile, no more.
    let started = Instant::now();
    let mut allowed = 0u64;
    for attempt in 0..5000 {
        match replicas[attempt % 2].check("test", "shared", 4000).await {
            Some(Ok(())) => allowed += 1,
            Some(Err(wait)) => assert!(wait <= Duration::from_millis(15), "{wait:?}"),
            None => panic!("redis did not answer"),
        }
    }
    let refilled = (started.elapsed().as_secs_f64() * 4000.0 / 60.0).ceil() as u64;
    assert!(
        (4000 - 16..=4000 + refilled).contains(&allowed),
        "{allowed} allowed of a budget of 4,000 (+{refilled} refilled)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_waiting_out_failures_answers_429_and_resource_exhausted() {
    let mut options = options(10_000);
    options.backoff = Backoff {
        free_failures: 2,
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
        reset_after: Duration::from_secs(3600),
    };
    let platform = TestPlatform::spawn_with(options).await;
    for _ in 0..2 {
        assert_eq!(
            login(&platform.gateway_url, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let waiting = login(&platform.gateway_url, None).await;
    assert_eq!(waiting.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(waiting.headers()[header::RETRY_AFTER], "1");
    let problem: serde_json::Value = waiting.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("too many failed sign-ins"),
        "{problem}"
    );
    assert_limited(
        &grpc_web(&platform)
            .login(wrong_login())
            .await
            .expect_err("waits"),
    );
}
