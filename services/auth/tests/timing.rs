//! Login failures take the same time whether the email is unknown or the password
//! wrong, and registering a taken email as long as a new one. A test binary of its
//! own with one test, so nothing competes for the CPU while it measures; both
//! backends run one after the other.

use std::time::{Duration, Instant};

use atelier_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use atelier_testbed::{Backend, TestPlatform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_take_as_long_as_what_they_could_reveal() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        measure(backend).await;
        measure_registration(backend).await;
    }
}

/// A registration refused for a taken email costs the same argon2 work as one
/// that creates the account, so its timing does not tell the address is taken
/// any more than the answer already does (that one is documented and limited).
async fn measure_registration(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = AuthServiceClient::new(platform.auth_channel());
    let mut register = async |email: &str| {
        let started = Instant::now();
        let reply = client
            .register(pb::RegisterRequest {
                email: email.into(),
                password: "correct horse battery".into(),
            })
            .await;
        (
            started.elapsed(),
            reply.map(drop).map_err(|status| status.code()),
        )
    };
    register("taken@example.com")
        .await
        .1
        .expect("first registration");
    let (mut taken, mut new) = (Vec::new(), Vec::new());
    for round in 0..12 {
        let (elapsed, reply) = register("taken@example.com").await;
        assert_eq!(reply, Err(tonic::Code::AlreadyExists));
        let (new_elapsed, reply) = register(&format!("new-{round}@example.com")).await;
        reply.expect("new account");
        if round > 0 {
            taken.push(elapsed);
            new.push(new_elapsed);
        }
    }
    let (taken, new) = (median(taken), median(new));
    let ratio = taken.as_secs_f64() / new.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "{backend:?}: taken email {taken:?} vs new account {new:?}"
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn measure(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = AuthServiceClient::new(platform.auth_channel());
    client
        .register(pb::RegisterRequest {
            email: "known@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("register");

    let mut attempt = async |email: &str| {
        let started = Instant::now();
        let status = client
            .login(pb::LoginRequest {
                email: email.into(),
                password: "not the password".into(),
            })
            .await
            .expect_err("bad credentials");
        (
            started.elapsed(),
            status.code(),
            status.message().to_owned(),
        )
    };
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    let mut answers = std::collections::HashSet::new();
    // Interleaved, so load on the machine affects both alike.
    for round in 0..12 {
        let (elapsed, code, message) = attempt("nobody@example.com").await;
        answers.insert((code, message));
        let (wrong_elapsed, code, message) = attempt("known@example.com").await;
        answers.insert((code, message));
        // The first round warms connections and caches up.
        if round > 0 {
            unknown.push(elapsed);
            wrong.push(wrong_elapsed);
        }
    }
    assert_eq!(answers.len(), 1, "both failures answer alike: {answers:?}");
    let (unknown, wrong) = (median(unknown), median(wrong));
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    // Without the decoy hash an unknown email answers 20-100x faster than a
    // wrong password; with it the two take the same argon2 work.
    assert!(
        (0.5..2.0).contains(&ratio),
        "{backend:?}: unknown email {unknown:?} vs wrong password {wrong:?}"
    );
}
