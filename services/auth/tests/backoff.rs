//! Failed sign-ins slow an address down, on PostgreSQL and on SQLite: whatever
//! the transport (the count lives in the auth database), whether the account
//! exists or not, and never for longer than the cap.

use std::time::{Duration, Instant};

use atelier_auth::{domain::Throttle, store::Store};
use atelier_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use atelier_testbed::{Backend, Backoff, Options, TestPlatform, tonic_channel::Channel};
use atelier_testkit::backends;
use sha2::{Digest, Sha256};
use tonic::Code;

const PASSWORD: &str = "correct horse battery";

type Client = AuthServiceClient<Channel>;

async fn spawn(backend: Backend, backoff: Backoff) -> (TestPlatform, Client) {
    let mut options = Options::new(backend);
    options.backoff = backoff;
    let platform = TestPlatform::spawn_with(options).await;
    let client = AuthServiceClient::new(platform.auth_channel());
    (platform, client)
}

fn backoff(free_failures: u32, max_secs: u64, reset_secs: u64) -> Backoff {
    Backoff {
        free_failures,
        base: Duration::from_secs(1),
        max: Duration::from_secs(max_secs),
        reset_after: Duration::from_secs(reset_secs),
    }
}

async fn register(client: &mut Client, email: &str) {
    client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register");
}

async fn login(client: &mut Client, email: &str, password: &str) -> Result<(), tonic::Status> {
    client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .map(drop)
}

/// A refusal while the address waits: how long it says to wait, and its message.
fn delayed(status: &tonic::Status) -> (Duration, String) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait = atelier_common::error::retry_after(status).expect("a retry hint");
    (wait, status.message().to_owned())
}

backends!(
    failures_delay_the_next_attempts_whatever_the_password,
    a_locked_answer_tells_nothing_about_the_account,
    delays_are_capped_and_a_success_starts_the_count_over,
    the_count_starts_over_after_a_quiet_spell,
    a_count_is_written_only_over_what_was_read,
    old_counts_are_forgotten,
);

async fn failures_delay_the_next_attempts_whatever_the_password(backend: Backend) {
    let (_platform, mut client) = spawn(backend, backoff(3, 60, 3600)).await;
    register(&mut client, "ada@example.com").await;
    for _ in 0..3 {
        let denied = login(&mut client, "ada@example.com", "wrong password!")
            .await
            .expect_err("wrong password");
        assert_eq!(denied.code(), Code::Unauthenticated);
    }
    // The right password waits too: the answer must not tell it was right.
    let right = login(&mut client, "Ada@Example.com", PASSWORD)
        .await
        .expect_err("waits");
    let wrong = login(&mut client, "ada@example.com", "wrong password!")
        .await
        .expect_err("waits");
    let (wait, message) = delayed(&right);
    assert_eq!(wait, Duration::from_secs(1));
    assert_eq!(delayed(&wrong).1, message);
    tokio::time::sleep(wait).await;
    login(&mut client, "ada@example.com", PASSWORD)
        .await
        .expect("the delay is over");
}

async fn a_locked_answer_tells_nothing_about_the_account(backend: Backend) {
    let (_platform, mut client) = spawn(backend, backoff(3, 60, 3600)).await;
    register(&mut client, "known@example.com").await;
    let mut answers = Vec::new();
    for email in ["known@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            let denied = login(&mut client, email, "wrong password!")
                .await
                .expect_err("wrong");
            assert_eq!(denied.code(), Code::Unauthenticated);
        }
        let status = login(&mut client, email, "wrong password!")
            .await
            .expect_err("waits");
        answers.push((status.code(), status.message().to_owned()));
    }
    assert_eq!(answers[0], answers[1], "an unknown address waits alike");
    assert_eq!(answers[0].0, Code::ResourceExhausted);
}

async fn delays_are_capped_and_a_success_starts_the_count_over(backend: Backend) {
    let (_platform, mut client) = spawn(backend, backoff(2, 2, 3600)).await;
    register(&mut client, "grace@example.com").await;
    let wrong =
        async |client: &mut Client| login(client, "grace@example.com", "wrong password!").await;
    wrong(&mut client).await.expect_err("first failure");
    wrong(&mut client).await.expect_err("second failure");
    // 1 s, then 2 s, then still 2 s: the cap.
    let mut waits = Vec::new();
    for _ in 0..3 {
        let (wait, _) = delayed(&wrong(&mut client).await.expect_err("waits"));
        waits.push(wait);
        tokio::time::sleep(wait).await;
        let denied = wrong(&mut client).await.expect_err("wrong again");
        assert_eq!(denied.code(), Code::Unauthenticated);
    }
    assert_eq!(
        waits,
        [1, 2, 2].map(Duration::from_secs),
        "doubling, then capped"
    );
    let (wait, _) = delayed(&wrong(&mut client).await.expect_err("waits"));
    tokio::time::sleep(wait).await;
    login(&mut client, "grace@example.com", PASSWORD)
        .await
        .expect("signs in once the delay is over");
    // The success cleared the count: two failures are free again.
    for _ in 0..2 {
        let denied = wrong(&mut client).await.expect_err("wrong");
        assert_eq!(denied.code(), Code::Unauthenticated);
    }
}

async fn the_count_starts_over_after_a_quiet_spell(backend: Backend) {
    let (_platform, mut client) = spawn(backend, backoff(3, 60, 2)).await;
    register(&mut client, "linus@example.com").await;
    for _ in 0..2 {
        login(&mut client, "linus@example.com", "wrong password!")
            .await
            .expect_err("wrong");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Two more failures: a count that kept the old ones would wait now.
    for _ in 0..2 {
        let denied = login(&mut client, "linus@example.com", "wrong password!")
            .await
            .expect_err("wrong");
        assert_eq!(denied.code(), Code::Unauthenticated);
    }
    login(&mut client, "linus@example.com", PASSWORD)
        .await
        .expect("not held back");
}

async fn store(platform: &TestPlatform) -> Store {
    Store::new(
        atelier_common::db::connect(&platform.platform, "auth")
            .await
            .expect("auth database"),
    )
}

/// Attempts on one address at once each count: a count is written only over the
/// state it was read at, so of two attempts that read the same one, one reads again.
async fn a_count_is_written_only_over_what_was_read(backend: Backend) {
    let (platform, _client) = spawn(backend, backoff(3, 60, 3600)).await;
    let store = store(&platform).await;
    let now = time::OffsetDateTime::now_utc();
    let count = |failures: i32, version: i64| Throttle {
        key: "some-address".into(),
        failures,
        last_failure_at: now,
        locked_until: None,
        version,
    };
    assert!(store.put_throttle(None, count(1, 0)).await.expect("first"));
    assert!(
        !store
            .put_throttle(None, count(1, 0))
            .await
            .expect("second first"),
        "two first counts: one loses"
    );
    assert!(
        store
            .put_throttle(Some(0), count(2, 1))
            .await
            .expect("next")
    );
    assert!(
        !store
            .put_throttle(Some(0), count(2, 1))
            .await
            .expect("stale"),
        "a count over a state that moved on loses"
    );
    let stored = store
        .throttle("some-address")
        .await
        .expect("read")
        .expect("row");
    assert_eq!((stored.failures, stored.version), (2, 1));
}

async fn old_counts_are_forgotten(backend: Backend) {
    let (platform, mut client) = spawn(backend, backoff(3, 60, 3600)).await;
    for email in ["a@example.com", "b@example.com"] {
        login(&mut client, email, "wrong password!")
            .await
            .expect_err("wrong");
    }
    let store = store(&platform).await;
    let key = |email: &str| hex::encode(Sha256::digest(email.as_bytes()));
    let started = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        store
            .forget_throttles(now - time::Duration::hours(1))
            .await
            .expect("forget"),
        0,
        "recent failures stay"
    );
    assert!(
        store
            .throttle(&key("a@example.com"))
            .await
            .expect("read")
            .is_some()
    );
    let later = now + time::Duration::seconds(1) + started.elapsed();
    assert_eq!(store.forget_throttles(later).await.expect("forget"), 2);
    assert!(
        store
            .throttle(&key("a@example.com"))
            .await
            .expect("read")
            .is_none()
    );
}
