//! The `atelier` binary as a user runs it.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use atelier_common::identity::{Identity, ServiceName, TlsSettings};
use sea_orm::{ConnectionTrait, Database, Statement};

fn atelier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
}

/// The services a server lists through gRPC server reflection, asked in `$version`
/// (`v1` or `v1alpha`).
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {
        async {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = ServerReflectionClient::new($channel)
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .expect("reflection")
                .into_inner();
            let reply = replies.message().await.expect("reply").expect("one reply");
            match reply.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => list
                    .service
                    .into_iter()
                    .map(|service| service.name)
                    .collect::<Vec<String>>(),
                other => panic!("unexpected reflection reply {other:?}"),
            }
        }
    };
}

#[test]
fn help_lists_the_subcommands_and_targets() {
    let output = atelier().arg("--help").output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("utf8");
    assert!(help.contains("serve") && help.contains("migrate"), "{help}");

    let output = atelier().args(["serve", "--help"]).output().expect("run");
    let help = String::from_utf8(output.stdout).expect("utf8");
    for target in [
        "all",
        "gateway",
        "auth",
        "image",
        "processing",
        "workflow",
        "user",
    ] {
        assert!(help.contains(target), "{target} missing from {help}");
    }

    let output = atelier()
        .args(["serve", "--target", "nonsense"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nonsense"));
}

/// `atelier serve` with no configuration at all: SQLite under ./data, the gateway on
/// 127.0.0.1:8080, ready, and a clean exit on SIGTERM.
#[tokio::test]
async fn serve_with_no_configuration_becomes_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = atelier()
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get("http://127.0.0.1:9464/readyz").send().await;
        if matches!(&ready, Ok(response) if response.status() == 200) {
            break;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("atelier exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The public port keeps liveness only: metrics and readiness are the admin's.
    let public = |path: &str| client.get(format!("http://127.0.0.1:8080{path}")).send();
    assert_eq!(public("/healthz").await.expect("healthz").status(), 200);
    for path in ["/readyz", "/metrics"] {
        assert_eq!(public(path).await.expect(path).status(), 404, "{path}");
    }
    // The platform made its own CA under DATA_DIR; an operator's certificate from it
    // reaches every service.
    let operator = Identity::load(
        &TlsSettings::generated(dir.path().join("data/tls")),
        ServiceName::Operator,
    )
    .expect("an operator identity");
    for port in 50051..=50055 {
        let url = format!("https://127.0.0.1:{port}");
        let channel = operator
            .channel(&url, Duration::from_secs(5))
            .expect("channel");
        atelier_common::grpc::check_health(channel.clone(), "")
            .await
            .unwrap_or_else(|err| panic!("{url} health: {err}"));
        let services = reflected_services!(v1, channel).await;
        assert!(
            services.contains(&"grpc.health.v1.Health".to_owned()),
            "{url}: {services:?}"
        );
    }
    let auth = operator
        .channel("https://127.0.0.1:50051", Duration::from_secs(5))
        .expect("channel");
    atelier_common::grpc::check_health(auth.clone(), "atelier.auth.v1.AuthService")
        .await
        .expect("auth serving");
    assert!(
        reflected_services!(v1, auth)
            .await
            .contains(&"atelier.auth.v1.AuthService".to_owned())
    );
    // Through the gateway, in both versions of reflection, as tools ask.
    let gateway = tonic::transport::Channel::from_static("http://127.0.0.1:8080")
        .connect()
        .await
        .expect("gateway channel");
    for services in [
        reflected_services!(v1, gateway.clone()).await,
        reflected_services!(v1alpha, gateway).await,
    ] {
        for service in [
            "atelier.auth.v1.AuthService",
            "atelier.processing.v1.ProcessingService",
        ] {
            assert!(services.contains(&service.to_owned()), "{services:?}");
        }
    }
    let registered = client
        .post("http://127.0.0.1:8080/api/auth/register")
        .json(
            &serde_json::json!({"email": "first@example.com", "password": "correct horse battery"}),
        )
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);
    assert!(dir.path().join("data/auth.db").exists());
    assert_private(&dir.path().join("data"));
    // No FAL_KEY: the fal simulator runs in the same process.
    let sim = client
        .get("http://127.0.0.1:8790/healthz")
        .send()
        .await
        .expect("fal-sim");
    assert_eq!(sim.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read");
    assert!(
        stdout.contains("http://127.0.0.1:8080"),
        "the URL is printed: {stdout}"
    );
}

/// Every directory under `data` (itself included) is 0700, and every key and SQLite
/// file (database, -wal, -shm) in it is 0600.
fn assert_private(data: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let mut checked = Vec::new();
    let mut dirs = vec![data.to_owned()];
    while let Some(dir) = dirs.pop() {
        assert_eq!(mode(&dir), 0o700, "{} is {:o}", dir.display(), mode(&dir));
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let secret = [".db", ".db-wal", ".db-shm", ".key", ".pem"]
                .iter()
                .any(|suffix| name.ends_with(suffix));
            if secret {
                assert_eq!(
                    mode(&path),
                    0o600,
                    "{} is {:o}",
                    path.display(),
                    mode(&path)
                );
                checked.push(name.to_owned());
            }
        }
    }
    for expected in ["auth.db", "auth.db-wal", "auth.db-shm", "url-signing.key"] {
        assert!(
            checked.iter().any(|name| name == expected),
            "{expected} not found in {checked:?}"
        );
    }
    assert!(
        checked.iter().any(|name| name.ends_with(".pem")),
        "no signing key in {checked:?}"
    );
}

/// A URL-signing key shorter than 32 bytes stops the start with an error naming it.
#[test]
fn a_short_url_signing_key_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = atelier()
        .args(["serve", "--target", "image"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("URL_SIGNING_KEY", "only-31-bytes-long-not-enough!!")
        .env("IMAGE_GRPC_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("started with a short key (still running after 30 s)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "started with a short key");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(
        stderr.contains("URL_SIGNING_KEY must be at least 32 bytes"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_creates_each_schema_on_postgres() {
    let db = atelier_testkit::TestDb::create().await.expect("database");
    for _ in 0..2 {
        let output = atelier()
            .args(["migrate"])
            .env("DATABASE_URL", &db.url)
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let conn = Database::connect(&db.url).await.expect("connect");
    let rows = conn
        .query_all_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'auth' ORDER BY 1",
        ))
        .await
        .expect("query");
    let tables: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("name"))
        .collect();
    assert_eq!(
        tables,
        [
            "api_keys",
            "audit_events",
            "login_throttle",
            "refresh_tokens",
            "seaql_migrations",
            "users"
        ]
    );
    conn.close().await.ok();
}

#[tokio::test]
async fn fal_sim_runs_standalone_and_processes_an_image() {
    use base64::Engine;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let child = atelier()
        .args(["fal-sim", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "fal-sim not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let png = atelier_testkit::fixtures::png(40, 30);
    let data_uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    let submitted: serde_json::Value = client
        .post(format!("{base}/fal-ai/esrgan"))
        .header("authorization", "Key local")
        .json(&serde_json::json!({"image_url": data_uri, "scale": 2}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let status_url = submitted["status_url"]
        .as_str()
        .expect("status_url")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .get(&status_url)
            .header("authorization", "Key local")
            .send()
            .await
            .expect("status");
        if status.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result: serde_json::Value = client
        .get(submitted["response_url"].as_str().expect("response_url"))
        .header("authorization", "Key local")
        .send()
        .await
        .expect("result")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            result["image"]["width"].as_u64(),
            result["image"]["height"].as_u64()
        ),
        (Some(80), Some(60))
    );
}
