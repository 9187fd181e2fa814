//! Login failures take the same time whether the email is unknown or the password
//! wrong. A test binary of its own, so no other test competes for the CPU while it
//! measures; both backends run one after the other.

use std::time::{Duration, Instant};

use atelier_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use atelier_testkit::{Backend, TestPlatform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        measure(backend).await;
    }
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
