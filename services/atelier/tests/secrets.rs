//! Secrets never reach the logs: the platform runs on production backends
//! (PostgreSQL, Redis, S3, an external fal) with known secret values and debug
//! logging, a user goes through a whole session, and no secret, password or token
//! may appear anywhere in what the processes wrote.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use atelier_testkit::free_port;
use atelier_testkit::{
    TestDb, fixtures,
    rest::{self, PASSWORD},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// A child process with its output in a file, killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn atelier");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read log")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn wait_ok(client: &Client, url: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(reply) = client.get(url).send().await
            && reply.status() == StatusCode::OK
        {
            return;
        }
        if let Some(status) = proc.child.try_wait().expect("wait") {
            panic!("exited early with {status}:\n{}", proc.log());
        }
        assert!(
            Instant::now() < deadline,
            "{url} not ready:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn atelier(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        // As deployed (the chart's default), and free of colour codes.
        .env("LOG_FORMAT", "json");
    command
}

/// The secret key material in every PEM file under `dir`: each base64 line.
fn pem_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("keys dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("pem");
        lines.extend(
            text.lines()
                .filter(|line| !line.starts_with("-----") && line.len() >= 16)
                .map(str::to_owned),
        );
    }
    assert!(!lines.is_empty(), "no signing key under {}", dir.display());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_debug_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new();

    // Known secret values, each distinctive enough that a hit is no coincidence.
    let db_password = "pg-Secret-3c1f0a9e7b";
    let redis_password = "redis-Secret-8d2e4f6a";
    let fal_key = "fal-key-id:fal-Secret-5a7c9e1b3d";
    let url_signing_key = "url-signing-Secret-0123456789abcdefghijklmnopqrstuvwxyz";
    let s3 = atelier_testkit::s3_config(&format!(
        "atelier-secrets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    atelier_storage::S3Store::new(s3.clone())
        .await
        .expect("s3 client")
        .create_bucket_if_missing()
        .await
        .expect("the S3 test server answers at TEST_S3_ENDPOINT; `make test` starts it");
    let s3_secret = s3.secret_access_key.clone().expect("an S3 secret");

    // PostgreSQL with trust authentication accepts the password without checking it:
    // what matters is that the URL holding it is never logged.
    let db = TestDb::create().await.expect("a database");
    let database_url = db
        .url
        .replacen("postgres@", &format!("postgres:{db_password}@"), 1);
    assert_ne!(
        database_url, db.url,
        "TEST_DATABASE_URL names user postgres"
    );
    // Redis's default user has no password: AUTH with any password succeeds.
    let redis_url = std::env::var("TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        .replacen("redis://", &format!("redis://default:{redis_password}@"), 1);

    let sim_port = free_port();
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let mut sim = Proc::spawn(
        atelier(dir.path()).args(["fal-sim", "--addr", &format!("127.0.0.1:{sim_port}")]),
        dir.path().join("fal-sim.log"),
    );
    wait_ok(&client, &format!("{sim_url}/healthz"), &mut sim).await;

    let gateway_port = free_port();
    let admin_port = free_port();
    let base = format!("http://127.0.0.1:{gateway_port}");
    let keys_dir = dir.path().join("keys");
    let mut serve = atelier(dir.path());
    serve
        .arg("serve")
        .env("DATABASE_URL", &database_url)
        .env("REDIS_URL", &redis_url)
        .env(
            "REDIS_PREFIX",
            format!("secrets-{}", uuid::Uuid::new_v4().simple()),
        )
        .env("DATA_DIR", dir.path().join("data"))
        .env("JWT_KEYS_DIR", &keys_dir)
        .env("URL_SIGNING_KEY", url_signing_key)
        .env("S3_BUCKET", &s3.bucket)
        .env("S3_ENDPOINT", s3.endpoint.clone().unwrap_or_default())
        .env(
            "S3_ACCESS_KEY_ID",
            s3.access_key_id.clone().unwrap_or_default(),
        )
        .env("S3_SECRET_ACCESS_KEY", &s3_secret)
        .env("FAL_KEY", fal_key)
        .env("FAL_QUEUE_URL", &sim_url)
        .env("FAL_API_URL", format!("{sim_url}/v1"))
        .env("FAL_RESULT_HOSTS", &sim_url)
        .env(
            "FAL_WEBHOOK_JWKS_URL",
            format!("{sim_url}/.well-known/jwks.json"),
        )
        .env("GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}"))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .envs(atelier_testkit::service_addresses());
    let mut platform = Proc::spawn(&mut serve, dir.path().join("atelier.log"));
    wait_ok(
        &client,
        &format!("http://127.0.0.1:{admin_port}/readyz"),
        &mut platform,
    )
    .await;

    // A whole session: sign up, sign in again, refresh, upload, process, watch,
    // download, list, sign out.
    let mut user = rest::sign_up(&base, "secrets@example.com").await;
    let mut tokens = vec![user.token.clone(), user.refresh_token.clone()];
    let login: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": user.email, "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("tokens");
    let refresh_token = login["refresh_token"].as_str().expect("refresh token");
    let refreshed: Value = client
        .post(format!("{base}/api/auth/refresh"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("tokens");
    for token in [
        &login["access_token"],
        &login["refresh_token"],
        &refreshed["access_token"],
        &refreshed["refresh_token"],
    ] {
        tokens.push(token.as_str().expect("a token").to_owned());
    }
    user.token = tokens[tokens.len() - 2].clone();

    let image = rest::upload(&base, &user, fixtures::png(64, 48)).await;
    let job = rest::start_job(&base, &user, &image, "esrgan-upscale", json!({})).await;
    let events = client
        .get(format!("{base}/api/processing/{job}/events"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), StatusCode::OK);
    let done = rest::finished(&base, &user, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    drop(events);
    let download = client
        .get(format!("{base}/api/processing/{job}/download"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), StatusCode::OK);
    assert!(!download.bytes().await.expect("result").is_empty());
    let (status, images) = rest::get(&base, &user, "/api/images").await;
    assert_eq!(status, StatusCode::OK, "{images}");
    // An API key: created, used over REST and gRPC-web (the services verify it),
    // refused for a scope it lacks, revoked, then refused.
    let (status, created) = rest::post(
        &base,
        &user,
        "/api/keys",
        json!({"name": "secrets", "scopes": ["images:read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let api_key = created["key"].as_str().expect("a key").to_owned();
    let as_key = rest::User {
        token: api_key.clone(),
        ..user.clone()
    };
    let (status, listed) = rest::get(&base, &as_key, "/api/images").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let (status, refused) = rest::get(&base, &as_key, "/api/users/profile").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let revoked = client
        .delete(format!(
            "{base}/api/keys/{}",
            created["id"].as_str().expect("id")
        ))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let (status, _) = rest::get(&base, &as_key, "/api/images").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tokens.push(api_key.clone());
    // What follows the prefix is the secret: no part of it may show.
    tokens.push(api_key["atl_live_".len()..].to_owned());

    // A refused sign-in with a wrong password is logged too, without the password.
    let wrong_password = "not-the-Secret-password-42";
    let refused = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": user.email, "password": wrong_password}))
        .send()
        .await
        .expect("login");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let logout = client
        .post(format!("{base}/api/auth/logout"))
        .json(&json!({"refresh_token": refreshed["refresh_token"]}))
        .send()
        .await
        .expect("logout");
    assert!(logout.status().is_success(), "logout: {}", logout.status());

    drop(platform);
    drop(sim);
    let logs = std::fs::read_to_string(dir.path().join("atelier.log")).expect("platform log")
        + &std::fs::read_to_string(dir.path().join("fal-sim.log")).expect("simulator log");
    // The run really logged at debug level, requests included: an empty log would
    // hide nothing.
    assert!(
        logs.lines().filter(|line| line.contains("DEBUG")).count() > 100,
        "debug logging was not on:\n{logs}"
    );
    assert!(logs.contains(&job), "the job's own log lines are missing");

    let mut secrets: Vec<(&str, String)> = vec![
        ("database password", db_password.into()),
        ("redis password", redis_password.into()),
        ("FAL_KEY", fal_key.into()),
        (
            "FAL_KEY secret",
            fal_key.split_once(':').expect("id:secret").1.into(),
        ),
        ("URL_SIGNING_KEY", url_signing_key.into()),
        ("S3 secret key", s3_secret),
        ("user's password", PASSWORD.into()),
        ("refused password", wrong_password.into()),
    ];
    secrets.extend(
        pem_lines(&keys_dir)
            .into_iter()
            .map(|line| ("signing key", line)),
    );
    for token in tokens.iter().filter(|token| token.starts_with("atl_live_")) {
        secrets.push(("api key", token.clone()));
    }
    tokens.retain(|token| !token.starts_with("atl_live_"));
    for token in tokens {
        // An access token's signature alone is as good as the token to an attacker
        // holding the rest (the header and claims are public).
        let signature = token.rsplit('.').next().expect("token").to_owned();
        secrets.push(("token", token));
        secrets.push(("token signature", signature));
    }
    let leaks: Vec<String> = secrets
        .iter()
        .filter_map(|(what, secret)| {
            logs.lines()
                .find(|line| line.contains(secret.as_str()))
                .map(|line| format!("{what} in: {line}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the logs:\n{}",
        leaks.join("\n")
    );
}
