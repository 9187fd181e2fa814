//! `atelier backup` and `atelier restore` on a running `atelier serve` (the embedded
//! default: SQLite files and local objects under DATA_DIR, jobs on the built-in fal
//! simulator).
//!
//! The backup is taken under load: uploads, jobs and sign-ups go on while it runs,
//! and while it pauses between copying the databases and copying the objects an
//! image the database copy holds is deleted. The archive is restored into a fresh
//! data directory and a second platform started on it: every account, image and job
//! the copy holds is back (signing in works, bytes are identical, jobs keep their
//! status and results), nothing is half-written (every image row's objects exist
//! and no object lies there without a row, every job's images exist), the deleted
//! image is left out, and the restored platform takes new work. A changed archive
//! and a non-empty target are refused.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use atelier_testkit::rest::{self, PASSWORD, User};
use reqwest::{Client, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `atelier <args>` with only the environment given (and PATH), run to its end.
fn atelier(args: &[&str], env: &[(&str, String)], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("running atelier")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `atelier restore ARCHIVE --data-dir INTO [--force]`.
fn restore(archive: &Path, into: &Path, force: bool, dir: &Path) -> Output {
    let (archive, into) = (archive.display().to_string(), into.display().to_string());
    let mut args = vec!["restore", &archive, "--data-dir", &into];
    if force {
        args.push("--force");
    }
    atelier(&args, &[], dir)
}

/// `atelier backup --verify ARCHIVE`.
fn verify(archive: &Path, dir: &Path) -> Output {
    atelier(
        &["backup", "--verify", &archive.display().to_string()],
        &[],
        dir,
    )
}

/// A running `atelier serve` on a data directory of its own, killed when dropped;
/// its log printed when the test fails.
struct Serve {
    child: Option<Child>,
    log: PathBuf,
    base: String,
}

impl Serve {
    async fn start(name: &str, data_dir: &Path, dir: &Path) -> Self {
        Self::start_with(name, data_dir, dir, Vec::new()).await
    }

    /// With `extra` settings (a database, a bucket) on top of the embedded default.
    async fn start_with(
        name: &str,
        data_dir: &Path,
        dir: &Path,
        extra: Vec<(String, String)>,
    ) -> Self {
        let gateway = free_port();
        let admin = free_port();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let uploads = dir.join(format!("{name}-uploads"));
        std::fs::create_dir_all(&uploads).expect("uploads dir");
        let env: Vec<(String, String)> = [
            ("DATA_DIR", data_dir.display().to_string()),
            ("UPLOAD_TMP_DIR", uploads.display().to_string()),
            ("GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
            ("ADMIN_ADDR", format!("127.0.0.1:{admin}")),
            ("AUTH_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("IMAGE_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("WORKFLOW_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("PROCESSING_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("USER_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("FAL_SIM_ADDR", format!("127.0.0.1:{}", free_port())),
            ("RECONCILE_SECS", "1".into()),
            ("RATE_LIMIT_PER_IP", "1000000".into()),
            ("RATE_LIMIT_PER_USER", "1000000".into()),
            ("RATE_LIMIT_LOGIN_PER_IP", "1000000".into()),
            ("TIER_FREE_JOBS_PER_DAY", "unlimited".into()),
            ("TIER_FREE_CONCURRENT_JOBS", "unlimited".into()),
            ("TIER_FREE_PARALLEL_JOBS", "10".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(extra)
        .collect();
        let child = Command::new(env!("CARGO_BIN_EXE_atelier"))
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawning atelier serve");
        let mut serve = Self {
            child: Some(child),
            log,
            base: format!("http://127.0.0.1:{gateway}"),
        };
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(response) = client
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
                && response.status() == StatusCode::OK
            {
                break;
            }
            if let Some(status) = serve
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{name} exited with {status}");
            }
            assert!(Instant::now() < deadline, "{name} not ready within 90 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serve
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- last lines of {} -----", self.log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A distinct PNG per `n` (its size), stored byte for byte as uploaded.
fn picture(n: u32) -> Vec<u8> {
    atelier_testkit::fixtures::png(24 + n % 40, 16 + n / 40)
}

async fn sign_in(base: &str, email: &str) -> reqwest::Response {
    Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login")
}

/// The original's and the thumbnail's bytes of `image`, as its owner downloads
/// them; `None` when the image is not there.
async fn download(base: &str, user: &User, image: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (status, body) = rest::get(base, user, format!("/api/images/{image}")).await;
    if status == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(status, StatusCode::OK, "image {image}: {body}");
    let fetch = |url: String| async move {
        let response = Client::new().get(&url).send().await.expect("download");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        response.bytes().await.expect("bytes").to_vec()
    };
    let original = fetch(body["url"].as_str().expect("url").to_owned()).await;
    let thumbnail = fetch(
        body["thumbnail_url"]
            .as_str()
            .expect("thumbnail url")
            .to_owned(),
    )
    .await;
    Some((original, thumbnail))
}

/// A job as the owner sees it: its status and its outputs' image ids.
async fn job(base: &str, user: &User, id: &str) -> (String, Vec<String>) {
    let (code, body) = rest::status(base, user, id).await;
    assert_eq!(code, StatusCode::OK, "job {id}: {body}");
    let outputs = body["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|output| output["image_id"].as_str().expect("image id").to_owned())
        .collect();
    (body["status"].as_str().expect("status").to_owned(), outputs)
}

async fn open(path: &Path) -> DatabaseConnection {
    Database::connect(format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// What the restored data directory holds, read from its files.
struct Restored {
    /// Email → user id.
    users: BTreeMap<String, Uuid>,
    /// Image id → (owner, object keys).
    images: BTreeMap<Uuid, (Uuid, Vec<String>)>,
    /// Job id → (owner, input image, status, result image ids).
    jobs: BTreeMap<Uuid, (Uuid, Uuid, String, Vec<Uuid>)>,
}

async fn read_restored(data: &Path) -> Restored {
    let auth = open(&data.join("auth.db")).await;
    let users = rows(&auth, "SELECT id, email FROM users")
        .await
        .into_iter()
        .map(|row| {
            (
                row.try_get::<String>("", "email").expect("email"),
                row.try_get::<Uuid>("", "id").expect("id"),
            )
        })
        .collect();
    let image = open(&data.join("image.db")).await;
    let images = rows(
        &image,
        "SELECT id, user_id, storage_path, thumbnail_path FROM images",
    )
    .await
    .into_iter()
    .map(|row| {
        let mut keys = vec![row.try_get::<String>("", "storage_path").expect("path")];
        keys.extend(
            row.try_get::<Option<String>>("", "thumbnail_path")
                .expect("thumbnail"),
        );
        keys.dedup();
        (
            row.try_get::<Uuid>("", "id").expect("id"),
            (row.try_get::<Uuid>("", "user_id").expect("user"), keys),
        )
    })
    .collect();
    let processing = open(&data.join("processing.db")).await;
    let jobs = rows(
        &processing,
        "SELECT id, user_id, image_id, status, result_image_ids FROM processing_jobs",
    )
    .await
    .into_iter()
    .map(|row| {
        let results: Value = row.try_get("", "result_image_ids").expect("results");
        let results = results
            .as_array()
            .expect("an array")
            .iter()
            .map(|id| id.as_str().expect("an id").parse().expect("a uuid"))
            .collect();
        (
            row.try_get::<Uuid>("", "id").expect("id"),
            (
                row.try_get::<Uuid>("", "user_id").expect("user"),
                row.try_get::<Uuid>("", "image_id").expect("image"),
                row.try_get::<String>("", "status").expect("status"),
                results,
            ),
        )
    })
    .collect();
    Restored {
        users,
        images,
        jobs,
    }
}

/// Every object file under a local store's root, as keys.
fn object_keys(root: &Path) -> BTreeSet<String> {
    let objects = root.join("objects");
    let mut keys = BTreeSet::new();
    let mut pending = vec![objects.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("objects dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let key = path.strip_prefix(&objects).expect("under objects");
                keys.insert(key.to_str().expect("utf-8").to_owned());
            }
        }
    }
    keys
}

/// What the load did, with the instant each action finished.
#[derive(Default)]
struct Load {
    uploads: Vec<(Instant, Instant, User, String, String)>,
    sign_ups: Vec<(Instant, User)>,
    jobs: Vec<(Instant, User, String)>,
}

/// Uploads, sign-ups and jobs until `stop`.
fn spawn_load(
    base: String,
    users: Vec<User>,
    inputs: Vec<(User, String)>,
    stop: Arc<AtomicBool>,
    load: Arc<Mutex<Load>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (worker, user) in users.into_iter().enumerate() {
        let (base, stop, load) = (base.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 100 + worker as u32 * 1000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let bytes = picture(n);
                let started = Instant::now();
                let id = rest::upload(&base, &user, bytes.clone()).await;
                load.lock().expect("load").uploads.push((
                    started,
                    Instant::now(),
                    user.clone(),
                    id,
                    sha256(&bytes),
                ));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }
    {
        let (base, stop, load) = (base.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let user = rest::sign_up(&base, &format!("load-{n}@example.com")).await;
                load.lock()
                    .expect("load")
                    .sign_ups
                    .push((Instant::now(), user));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let (user, image) = &inputs[n % inputs.len()];
            n += 1;
            let id = rest::start_job(&base, user, image, "lineart", json!({})).await;
            load.lock()
                .expect("load")
                .jobs
                .push((Instant::now(), user.clone(), id));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_whole_and_consistent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let source = Serve::start("source", &data, dir.path()).await;
    let base = source.base.clone();

    // Before the backup: accounts, images, finished jobs.
    let mut before_users = Vec::new();
    let mut before_images: Vec<(User, String, Vec<u8>)> = Vec::new();
    for n in 0..3 {
        let user = rest::sign_up(&base, &format!("before-{n}@example.com")).await;
        for m in 0..2 {
            let bytes = picture(n * 2 + m);
            let id = rest::upload(&base, &user, bytes.clone()).await;
            before_images.push((user.clone(), id, bytes));
        }
        before_users.push(user);
    }
    let mut before_jobs = Vec::new();
    for (user, image, _) in before_images.iter().step_by(2) {
        let id = rest::start_job(&base, user, image, "lineart", json!({})).await;
        before_jobs.push((user.clone(), id));
    }
    // Downloads as the platform serves them, to compare with the restored ones.
    let mut served: HashMap<String, (Vec<u8>, Vec<u8>)> = HashMap::new();
    let mut before_results = HashMap::new();
    for (user, id) in &before_jobs {
        let finished = rest::finished(&base, user, id).await;
        assert_eq!(finished["status"], "completed", "{finished}");
        let (_, outputs) = job(&base, user, id).await;
        assert!(!outputs.is_empty(), "{finished}");
        for output in &outputs {
            let bytes = download(&base, user, output).await.expect("a result");
            served.insert(output.clone(), bytes);
        }
        before_results.insert(id.clone(), outputs);
    }
    for (user, id, bytes) in &before_images {
        let downloaded = download(&base, user, id).await.expect("an image");
        assert_eq!(sha256(&downloaded.0), sha256(bytes), "stored as uploaded");
        served.insert(id.clone(), downloaded);
    }
    // The image deleted while the backup pauses between databases and objects: not
    // one a job reads.
    let (doomed_owner, doomed, _) = before_images[5].clone();

    // Load, and the backup in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));
    let inputs: Vec<(User, String)> = before_images
        .iter()
        .take(4)
        .map(|(user, id, _)| (user.clone(), id.clone()))
        .collect();
    let tasks = spawn_load(
        base.clone(),
        before_users[..2].to_vec(),
        inputs,
        stop.clone(),
        load.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let archive = dir.path().join("platform.tar.gz");
    let backup_started = Instant::now();
    let mut backup = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["backup", "--output"])
        .arg(&archive)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATA_DIR", &data)
        .env("BACKUP_PAUSE_AFTER_DATABASES_MS", "1500")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("backup.err")).expect("stderr file"))
        .spawn()
        .expect("atelier backup");
    let (paused_tx, paused_rx) = tokio::sync::oneshot::channel();
    let stdout = backup.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut paused = Some(paused_tx);
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            if line.contains("databases copied; pausing")
                && let Some(paused) = paused.take()
            {
                let _ = paused.send(Instant::now());
            }
            lines.push(line);
        }
        lines.join("\n")
    });
    let paused_at = tokio::time::timeout(Duration::from_secs(60), paused_rx)
        .await
        .expect("the backup reaches its pause")
        .expect("the pause line");
    let deleted = Client::new()
        .delete(format!("{base}/api/images/{doomed}"))
        .bearer_auth(&doomed_owner.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let status = tokio::task::spawn_blocking(move || backup.wait())
        .await
        .expect("joined")
        .expect("backup exit");
    let backup_finished = Instant::now();
    let stdout = reader.join().expect("stdout reader");
    assert!(
        status.success(),
        "atelier backup failed: {stdout}\n{}",
        std::fs::read_to_string(dir.path().join("backup.err")).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("load task");
    }
    let load = std::mem::take(&mut *load.lock().expect("load"));
    assert!(
        stdout.contains("image(s) left out"),
        "the deleted image is left out: {stdout}"
    );
    assert!(stdout.contains("holds secrets"), "{stdout}");
    // The load ran through the backup: work finished before it, during it, after it.
    let during = |at: Instant| at > backup_started && at < backup_finished;
    assert!(
        load.uploads.iter().any(|(_, at, ..)| *at < backup_started)
            && load.uploads.iter().any(|(_, at, ..)| during(*at))
            && load.jobs.iter().any(|(at, ..)| during(*at))
            && load.sign_ups.iter().any(|(at, _)| during(*at)),
        "the load ran while the backup did"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&archive).expect("archive").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the archive holds secrets");
    // Downloads of everything the load uploaded, as the source serves them.
    for (_, _, user, id, _) in &load.uploads {
        if let Some(bytes) = download(&base, user, id).await {
            served.insert(id.clone(), bytes);
        }
    }

    let verified = verify(&archive, dir.path());
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("match the manifest"),
        "{}",
        text(&verified)
    );

    // Restore into a fresh directory and start a platform on it.
    let restored_dir = dir.path().join("restored");
    let restored = restore(&archive, &restored_dir, false, dir.path());
    assert!(restored.status.success(), "{}", text(&restored));
    let snapshot = read_restored(&restored_dir).await;
    let target = Serve::start("restored", &restored_dir, dir.path()).await;
    let new_base = target.base.clone();

    // Nothing half-written: every row's objects are there, and nothing else is.
    let keys: BTreeSet<String> = snapshot
        .images
        .values()
        .flat_map(|(_, keys)| keys.iter().cloned())
        .collect();
    assert_eq!(
        object_keys(&restored_dir.join("objects")),
        keys,
        "the restored objects are exactly those the image rows name"
    );
    assert!(
        !snapshot.images.contains_key(&doomed.parse().expect("uuid")),
        "the image deleted before its objects were copied is left out"
    );
    for (job, (_, image, status, results)) in &snapshot.jobs {
        assert!(
            snapshot.images.contains_key(image),
            "job {job}'s input {image} is there"
        );
        if status == "completed" {
            assert!(!results.is_empty(), "job {job} completed without results");
        }
        for result in results {
            assert!(
                snapshot.images.contains_key(result),
                "job {job}'s result {result} is there"
            );
        }
    }

    // Every account the copy holds signs in; every one from before the backup is there.
    for user in &before_users {
        assert!(snapshot.users.contains_key(&user.email), "{}", user.email);
    }
    assert!(
        load.sign_ups
            .iter()
            .filter(|(at, _)| *at < backup_started)
            .all(|(_, user)| snapshot.users.contains_key(&user.email)),
        "sign-ups finished before the backup are in it"
    );
    let mut signed_in: HashMap<Uuid, User> = HashMap::new();
    for (email, id) in &snapshot.users {
        let response = sign_in(&new_base, email).await;
        assert_eq!(response.status(), StatusCode::OK, "{email} signs in");
        let body: Value = response.json().await.expect("tokens");
        signed_in.insert(
            *id,
            User {
                id: id.to_string(),
                email: email.clone(),
                token: body["access_token"].as_str().expect("token").to_owned(),
                refresh_token: body["refresh_token"].as_str().expect("refresh").to_owned(),
            },
        );
    }

    // Every image the copy holds is back, byte for byte, thumbnail too.
    for (id, (owner, _)) in &snapshot.images {
        let user = signed_in.get(owner).expect("the owner's account is there");
        let bytes = download(&new_base, user, &id.to_string())
            .await
            .unwrap_or_else(|| panic!("image {id} is served"));
        if let Some(expected) = served.get(&id.to_string()) {
            assert_eq!(sha256(&bytes.0), sha256(&expected.0), "image {id}");
            assert_eq!(sha256(&bytes.1), sha256(&expected.1), "thumbnail of {id}");
        }
    }
    for (user, id, bytes) in before_images.iter().filter(|(_, id, _)| *id != doomed) {
        let user = &signed_in[&user.id.parse::<Uuid>().expect("uuid")];
        let restored = download(&new_base, user, id).await.expect("image back");
        assert_eq!(sha256(&restored.0), sha256(bytes), "image {id}");
    }
    for (_, at, user, id, bytes) in &load.uploads {
        let present = snapshot.images.contains_key(&id.parse().expect("uuid"));
        if *at < backup_started {
            assert!(present, "upload {id} finished before the backup is in it");
        }
        if present {
            let user = &signed_in[&user.id.parse::<Uuid>().expect("uuid")];
            let restored = download(&new_base, user, id).await.expect("image back");
            assert_eq!(sha256(&restored.0), *bytes, "upload {id}");
        }
    }
    // Uploads begun once the databases were copied are not.
    let late: Vec<&String> = load
        .uploads
        .iter()
        .filter(|(started, ..)| *started > paused_at)
        .map(|(_, _, _, id, _)| id)
        .collect();
    assert!(!late.is_empty(), "uploads ran during the pause");
    for id in late {
        assert!(
            !snapshot.images.contains_key(&id.parse().expect("uuid")),
            "upload {id} begun after the databases were copied is not in the backup"
        );
    }

    // Jobs: those from before keep their status and results; the rest the copy
    // holds are there, and the unfinished ones run to an end.
    for (user, id) in &before_jobs {
        let user = &signed_in[&user.id.parse::<Uuid>().expect("uuid")];
        let (status, outputs) = job(&new_base, user, id).await;
        assert_eq!(status, "completed", "job {id}");
        assert_eq!(outputs, before_results[id], "job {id}'s results");
        for output in &outputs {
            let bytes = download(&new_base, user, output).await.expect("a result");
            assert_eq!(
                sha256(&bytes.0),
                sha256(&served[output].0),
                "result {output}"
            );
        }
    }
    for (at, user, id) in &load.jobs {
        let present = snapshot.jobs.contains_key(&id.parse().expect("uuid"));
        assert!(
            present || *at > backup_started,
            "job {id} from before the backup"
        );
        if present {
            let user = &signed_in[&user.id.parse::<Uuid>().expect("uuid")];
            let finished = rest::finished(&new_base, user, id).await;
            let status = finished["status"].as_str().expect("status");
            assert!(
                status == "completed" || status == "failed",
                "job {id}: {finished}"
            );
        }
    }

    // The restored platform takes new work, from old accounts and new ones.
    let old = &signed_in[&before_users[0].id.parse::<Uuid>().expect("uuid")];
    let job_id = rest::start_job(&new_base, old, &before_images[0].1, "lineart", json!({})).await;
    assert_eq!(
        rest::finished(&new_base, old, &job_id).await["status"],
        "completed"
    );
    let newcomer = rest::sign_up(&new_base, "after-restore@example.com").await;
    let image = rest::upload(&new_base, &newcomer, picture(999)).await;
    let job_id = rest::start_job(&new_base, &newcomer, &image, "lineart", json!({})).await;
    assert_eq!(
        rest::finished(&new_base, &newcomer, &job_id).await["status"],
        "completed"
    );
    drop(target);
    drop(source);

    // A changed archive is refused, by --verify and by restore, and nothing is made.
    let tampered = dir.path().join("tampered.tar.gz");
    tamper(&archive, &tampered);
    let verified = verify(&tampered, dir.path());
    assert!(!verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("does not match the manifest"),
        "{}",
        text(&verified)
    );
    let refused_dir = dir.path().join("from-tampered");
    let refused = restore(&tampered, &refused_dir, false, dir.path());
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("does not match the manifest"),
        "{}",
        text(&refused)
    );
    assert!(!refused_dir.exists(), "nothing is restored from it");
    assert!(
        std::fs::read_dir(dir.path())
            .expect("dir")
            .all(|entry| !entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .contains(".restore-")),
        "no half-restored directory is left"
    );

    // A directory that is not empty is refused, unless --force replaces it.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).expect("dir");
    std::fs::write(occupied.join("notes.txt"), "mine").expect("file");
    let refused = restore(&archive, &occupied, false, dir.path());
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not empty"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(occupied.join("notes.txt")).expect("untouched"),
        "mine"
    );
    let forced = restore(&archive, &occupied, true, dir.path());
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(!occupied.join("notes.txt").exists(), "replaced whole");
    assert!(occupied.join("auth.db").is_file());
}

/// Writes `to`: the archive `from` with one byte of its first object changed and
/// its manifest kept, as damage on disk would leave it.
fn tamper(from: &Path, to: &Path) {
    let input = flate2::read::GzDecoder::new(std::fs::File::open(from).expect("archive"));
    let mut archive = tar::Archive::new(input);
    let output = flate2::write::GzEncoder::new(
        std::fs::File::create(to).expect("tampered"),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(output);
    let mut changed = false;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut header = entry.header().clone();
        let name = entry
            .path()
            .expect("path")
            .to_str()
            .expect("utf-8")
            .to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("bytes");
        if !changed && name.starts_with("objects/") {
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
            changed = true;
        }
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .expect("append");
    }
    assert!(changed, "the archive holds an object");
    builder.into_inner().expect("tar").finish().expect("gzip");
}

/// Copies every object of `from` that `to` lacks (what `aws s3 sync FROM TO`
/// without `--delete` does), through the platform's storage library; the keys copied.
async fn sync_bucket(
    from: &atelier_storage::S3Store,
    to: &atelier_storage::S3Store,
) -> Vec<String> {
    use atelier_storage::{ObjectStore, StorageError};
    let mut copied = Vec::new();
    for key in from.list("").await.expect("list") {
        match to.head(&key).await {
            Ok(_) => continue,
            Err(StorageError::NotFound) => {}
            Err(err) => panic!("head {key}: {err}"),
        }
        let read = from.get(&key, None).await.expect("get");
        to.put(&key, &read.meta.content_type, read.body)
            .await
            .expect("put");
        copied.push(key);
    }
    copied
}

async fn s3_bucket(name: &str) -> (atelier_storage::S3Store, atelier_storage::S3Config) {
    let config =
        atelier_testkit::s3_config(&format!("atelier-drill-{name}-{}", Uuid::new_v4().simple()));
    let store = atelier_storage::S3Store::new(config.clone())
        .await
        .expect("S3 store");
    store
        .create_bucket_if_missing()
        .await
        .expect("the S3 test server at TEST_S3_ENDPOINT (`make test` starts it)");
    (store, config)
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("a row");
    row.try_get_by_index::<String>(0).expect("text")
}

/// The ids of `user`'s images, and of their jobs with status and outputs.
async fn holdings(
    base: &str,
    user: &User,
) -> (BTreeSet<String>, BTreeMap<String, (String, Vec<String>)>) {
    let (status, images) = rest::get(base, user, "/api/images?page_size=100").await;
    assert_eq!(status, StatusCode::OK, "{images}");
    let images = images["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| image["id"].as_str().expect("id").to_owned())
        .collect();
    let (status, jobs) = rest::get(base, user, "/api/processing/jobs?page_size=100").await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    let jobs = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| {
            let outputs = job["outputs"]
                .as_array()
                .expect("outputs")
                .iter()
                .map(|output| output["image_id"].as_str().expect("id").to_owned())
                .collect();
            (
                job["job_id"].as_str().expect("id").to_owned(),
                (job["status"].as_str().expect("status").to_owned(), outputs),
            )
        })
        .collect();
    (images, jobs)
}

/// The production runbook (k8s/RUNBOOK-backup.md), drilled on a PostgreSQL cluster
/// of the test's own with WAL archiving and on the S3 test server: a base backup,
/// data written through the platform, a noted time, more writes and a deletion;
/// then the cluster recovered to that time into a fresh data directory from the
/// base backup and the archived WAL, the objects restored, and a platform started
/// on the result sees exactly the data of that time.
///
/// The S3 test server (s3s-fs) has no bucket versioning (nor lifecycle rules), so
/// the runbook's versioned restore cannot run here: the drill runs its fallback, a
/// backup bucket kept by a periodic one-way sync and copied back after a recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_recovers_postgresql_to_a_time_and_objects_from_the_backup_bucket() {
    use atelier_testkit::postgres::Postgres;

    let dir = tempfile::tempdir().expect("temp dir");
    let wal_archive = dir.path().join("wal-archive");
    std::fs::create_dir_all(&wal_archive).expect("archive dir");
    let archive_command = format!(
        "archive_command='test ! -f {0}/%f && cp %p {0}/%f'",
        wal_archive.display()
    );
    let live = Postgres::init(
        dir.path().join("live"),
        &[
            "wal_level=replica",
            "archive_mode=on",
            &archive_command,
            "max_connections=200",
        ],
    )
    .expect("a PostgreSQL cluster with WAL archiving");
    live.own(&wal_archive).expect("archive dir owner");
    let (objects, s3) = s3_bucket("live").await;
    let (backup_bucket, _) = s3_bucket("backup").await;
    let platform_env = |url: String| -> Vec<(String, String)> {
        [
            ("DATABASE_URL", url),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("S3_BUCKET", s3.bucket.clone()),
            ("S3_ENDPOINT", s3.endpoint.clone().unwrap_or_default()),
            (
                "S3_ACCESS_KEY_ID",
                s3.access_key_id.clone().unwrap_or_default(),
            ),
            (
                "S3_SECRET_ACCESS_KEY",
                s3.secret_access_key.clone().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    // Keys and certificates stay where they are (in production: mounted Secrets);
    // the database and the objects are what the drill restores.
    let data = dir.path().join("data");
    let mut serving =
        Serve::start_with("drill-live", &data, dir.path(), platform_env(live.url())).await;
    let base = serving.base.clone();

    // Runbook step: the base backup (the schemas exist; the data comes after it).
    let base_backup = dir.path().join("base-backup");
    live.run(
        "pg_basebackup",
        &[
            "-h".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            live.port().to_string().as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-D".as_ref(),
            base_backup.as_os_str(),
            "-X".as_ref(),
            "stream".as_ref(),
            "-c".as_ref(),
            "fast".as_ref(),
        ],
    )
    .expect("pg_basebackup");

    // Data of the time to come back to: an account, an upload, a finished job.
    let alice = rest::sign_up(&base, "alice@example.com").await;
    let kept_bytes = picture(7);
    let kept = rest::upload(&base, &alice, kept_bytes.clone()).await;
    let job_id = rest::start_job(&base, &alice, &kept, "lineart", json!({})).await;
    assert_eq!(
        rest::finished(&base, &alice, &job_id).await["status"],
        "completed"
    );
    let (images_then, jobs_then) = holdings(&base, &alice).await;
    assert_eq!(images_then.len(), 2, "the upload and the job's result");
    let mut bytes_then = HashMap::new();
    for image in &images_then {
        bytes_then.insert(
            image.clone(),
            download(&base, &alice, image).await.expect("an image"),
        );
    }
    // Runbook: objects are copied to the backup bucket (here, once; in production
    // by the bucket's replication or a scheduled sync).
    let copied = sync_bucket(&objects, &backup_bucket).await;
    for image in &images_then {
        assert!(
            copied.iter().any(|key| key.contains(image.as_str())),
            "{image} is in the backup bucket: {copied:?}"
        );
    }

    // The time to recover to, by the database's clock, with a margin either side.
    let pg = Database::connect(live.url()).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target_time = scalar(&pg, "SELECT clock_timestamp()::text").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // After it: another account, another upload, and the kept image deleted (its
    // objects too: the live bucket loses them).
    let bob = rest::sign_up(&base, "bob@example.com").await;
    rest::upload(&base, &bob, picture(8)).await;
    let also_later = rest::upload(&base, &alice, picture(9)).await;
    let deleted = Client::new()
        .delete(format!("{base}/api/images/{kept}"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(download(&base, &alice, &kept).await.is_none());
    {
        use atelier_storage::ObjectStore;
        let keys = objects.list("").await.expect("list");
        assert!(
            !keys.iter().any(|key| key.contains(&kept)),
            "the deletion removed the kept image's objects from the live bucket: {keys:?}"
        );
    }

    // The last WAL segment is archived (the runbook's archive_timeout does this on
    // its own); then the disaster: the platform and its database are gone.
    let segment = scalar(&pg, "SELECT pg_walfile_name(pg_switch_wal())").await;
    pg.close().await.ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wal_archive.join(&segment).exists() {
        assert!(
            Instant::now() < deadline,
            "WAL segment {segment} not archived: {}",
            live.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serving.stop();
    live.down().expect("stop the live cluster");

    // Runbook: recover into a fresh data directory from the base backup and the WAL
    // archive, to the noted time, then promote.
    let recovered = Postgres::at(dir.path().join("recovered"), &["max_connections=200"])
        .expect("a cluster directory");
    let copy = recovered
        .command("cp")
        .arg("-a")
        .arg(&base_backup)
        .arg(recovered.data_dir())
        .output()
        .expect("cp");
    assert!(copy.status.success(), "{copy:?}");
    let conf = recovered.data_dir().join("postgresql.auto.conf");
    let mut settings = std::fs::read_to_string(&conf).unwrap_or_default();
    settings.push_str(&format!(
        "restore_command = 'cp {}/%f %p'\nrecovery_target_time = '{target_time}'\nrecovery_target_action = 'promote'\n",
        wal_archive.display()
    ));
    std::fs::write(&conf, settings).expect("recovery settings");
    std::fs::write(recovered.data_dir().join("recovery.signal"), "").expect("recovery.signal");
    recovered
        .own(&recovered.data_dir().join("recovery.signal"))
        .expect("owner");
    recovered.up().expect("the recovered cluster starts");
    let pg = Database::connect(recovered.url()).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(&pg, "SELECT pg_is_in_recovery()::text").await != "false" {
        assert!(
            Instant::now() < deadline,
            "still recovering: {}",
            recovered.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered.log().contains("recovery stopping before"),
        "recovery stopped at the target time: {}",
        recovered.log()
    );
    pg.close().await.ok();

    // Runbook: the objects next (the database first: it says which are wanted),
    // from the backup bucket into the live one.
    let restored = sync_bucket(&backup_bucket, &objects).await;
    assert!(
        restored.iter().any(|key| key.contains(&kept)),
        "the deleted image's objects come back: {restored:?}"
    );

    // Runbook checks: the platform on the recovered database sees that time's data.
    let _recovered_platform = Serve::start_with(
        "drill-recovered",
        &data,
        dir.path(),
        platform_env(recovered.url()),
    )
    .await;
    let base = _recovered_platform.base.clone();
    assert_eq!(
        sign_in(&base, "alice@example.com").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        sign_in(&base, "bob@example.com").await.status(),
        StatusCode::UNAUTHORIZED,
        "bob signed up after the target time"
    );
    let response = sign_in(&base, "alice@example.com").await;
    let tokens: Value = response.json().await.expect("tokens");
    let alice = User {
        token: tokens["access_token"].as_str().expect("token").to_owned(),
        ..alice
    };
    let (images_now, jobs_now) = holdings(&base, &alice).await;
    assert_eq!(images_now, images_then, "exactly the images of that time");
    assert_eq!(jobs_now, jobs_then, "exactly the jobs of that time");
    for (image, bytes) in &bytes_then {
        let now = download(&base, &alice, image).await.expect("image back");
        assert_eq!(sha256(&now.0), sha256(&bytes.0), "image {image}");
        assert_eq!(sha256(&now.1), sha256(&bytes.1), "thumbnail of {image}");
    }
    assert!(download(&base, &alice, &also_later).await.is_none());
    // And it takes new work.
    let image = rest::upload(&base, &alice, picture(10)).await;
    let job_id = rest::start_job(&base, &alice, &image, "lineart", json!({})).await;
    assert_eq!(
        rest::finished(&base, &alice, &job_id).await["status"],
        "completed"
    );
}
