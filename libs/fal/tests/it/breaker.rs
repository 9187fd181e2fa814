//! The circuit breaker against a scripted fake: when it opens, that it then makes no
//! network call, how half-open probes are bounded, and when it closes.

use std::time::Duration;

use atelier_fal::{BreakerState, EndpointId, FalError};
use serde_json::json;

use crate::fake::{Fake, Reply, client, config, status_body};

fn endpoint() -> EndpointId {
    EndpointId::parse("fal-ai/esrgan").expect("endpoint")
}

#[tokio::test]
async fn opens_after_consecutive_failures_and_then_makes_no_call() {
    let fake = Fake::start(Reply::text(503, "down")).await;
    let mut config = config(&fake.url());
    config.retry.max_retries = 0;
    let client = client(config);
    assert_eq!(client.queue_host(), fake.host());

    for _ in 0..3 {
        let err = client
            .status(&endpoint(), "r", false)
            .await
            .expect_err("down");
        assert!(matches!(err, FalError::Transient { .. }));
    }
    assert_eq!(fake.count(), 3);
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Open);

    for _ in 0..5 {
        let err = client
            .status(&endpoint(), "r", false)
            .await
            .expect_err("open");
        let FalError::Unavailable { retry_after } = err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert!(retry_after <= Duration::from_millis(300));
        assert!(err.is_transient() && !err.is_validation());
    }
    assert_eq!(fake.count(), 3, "an open breaker makes no network call");
}

#[tokio::test]
async fn retries_stop_once_the_breaker_opens() {
    let fake = Fake::start(Reply::text(502, "down")).await;
    let mut config = config(&fake.url());
    config.retry.max_retries = 10;
    let client = client(config);
    let err = client
        .status(&endpoint(), "r", false)
        .await
        .expect_err("down");
    assert!(matches!(err, FalError::Unavailable { .. }), "{err:?}");
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn half_open_lets_one_probe_through_and_closes_on_success() {
    let fake = Fake::start(Reply::text(503, "down")).await;
    let mut config = config(&fake.url());
    config.retry.max_retries = 0;
    let client = client(config);
    for _ in 0..3 {
        client.status(&endpoint(), "r", false).await.ok();
    }
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Open);

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::HalfOpen);
    // The probe is slow, so the other calls arrive while it is in flight.
    fake.set_default(
        Reply::json(202, status_body("IN_QUEUE", Some(1))).delayed(Duration::from_millis(500)),
    );
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.status(&endpoint(), "r", false).await })
        })
        .collect();
    let mut admitted = 0;
    let mut rejected = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(_) => admitted += 1,
            Err(FalError::Unavailable { .. }) => rejected += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, rejected), (1, 4));
    assert_eq!(fake.count(), 3 + 1);
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Closed);

    client
        .status(&endpoint(), "r", false)
        .await
        .expect("closed again");
    assert_eq!(fake.count(), 5);
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let fake = Fake::start(Reply::text(504, "down")).await;
    let mut config = config(&fake.url());
    config.retry.max_retries = 0;
    let client = client(config);
    for _ in 0..3 {
        client.status(&endpoint(), "r", false).await.ok();
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let err = client
        .status(&endpoint(), "r", false)
        .await
        .expect_err("probe fails");
    assert!(matches!(err, FalError::Transient { .. }));
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Open);
    assert!(matches!(
        client.status(&endpoint(), "r", false).await,
        Err(FalError::Unavailable { .. })
    ));
    assert_eq!(fake.count(), 4);
}

#[tokio::test]
async fn slow_calls_count_as_failures() {
    let fake = Fake::start(
        Reply::json(202, status_body("IN_QUEUE", Some(1))).delayed(Duration::from_millis(120)),
    )
    .await;
    let mut config = config(&fake.url());
    config.breaker.slow_call = Duration::from_millis(50);
    let client = client(config);
    for _ in 0..3 {
        client
            .status(&endpoint(), "r", false)
            .await
            .expect("slow but fine");
    }
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Open);
    assert!(matches!(
        client.status(&endpoint(), "r", false).await,
        Err(FalError::Unavailable { .. })
    ));
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn client_errors_do_not_trip_the_breaker() {
    let fake = Fake::start(Reply::json(
        422,
        json!({"detail": [{"loc": ["body", "scale"], "msg": "bad", "type": "value_error"}]}),
    ))
    .await;
    let client = client(config(&fake.url()));
    for _ in 0..5 {
        assert!(
            client
                .status(&endpoint(), "r", false)
                .await
                .expect_err("invalid")
                .is_validation()
        );
    }
    fake.set_default(Reply::text(404, "nope"));
    for _ in 0..5 {
        client.status(&endpoint(), "r", false).await.ok();
    }
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Closed);
    assert_eq!(fake.count(), 10);
}

#[tokio::test]
async fn a_high_failure_rate_opens_the_breaker() {
    // failsafe judges the rate only once a whole window (whole seconds) has passed
    // since the breaker was created, and weighs calls by time (a moving average).
    let fake = Fake::start(Reply::json(202, status_body("IN_QUEUE", Some(1)))).await;
    let mut config = config(&fake.url());
    config.retry.max_retries = 0;
    config.breaker.consecutive_failures = 100;
    config.breaker.window = Duration::from_secs(1);
    config.breaker.min_calls = 2;
    let client = client(config);
    client.status(&endpoint(), "r", false).await.expect("ok");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    fake.set_default(Reply::text(503, "down"));
    client.status(&endpoint(), "r", false).await.ok();
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Closed);
    client.status(&endpoint(), "r", false).await.ok();
    assert_eq!(client.breaker_state(&fake.host()), BreakerState::Open);
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn each_host_has_its_own_breaker() {
    let down = Fake::start(Reply::text(503, "down")).await;
    let up = Fake::start(Reply::json(202, status_body("IN_QUEUE", Some(1)))).await;
    let mut config = config(&down.url());
    config.retry.max_retries = 0;
    let client = client(config);
    for _ in 0..3 {
        client.status(&endpoint(), "r", false).await.ok();
    }
    assert_eq!(client.breaker_state(&down.host()), BreakerState::Open);
    assert_eq!(client.breaker_state(&up.host()), BreakerState::Closed);
    assert_eq!(client.breaker_state("queue.fal.run"), BreakerState::Closed);
    assert_eq!(
        client.breaker_states(),
        vec![(down.host(), BreakerState::Open)]
    );
}
