//! The client commands end to end: `atelier serve` (every service, the embedded fal
//! simulator, SQLite under a temporary DATA_DIR, free ports) and the CLI run as a
//! person runs it, with its own configuration directory.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use atelier_testkit::free_port;
use image::{GenericImageView, ImageFormat, Rgb, RgbImage};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running platform: the gateway's URL and the simulator's.
struct Platform {
    _process: Stop,
    _dir: tempfile::TempDir,
    gateway: String,
    sim: String,
}

async fn start_platform() -> Platform {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = free_port();
    let admin = free_port();
    let sim = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .arg("serve")
        .current_dir(dir.path())
        .env("DATA_DIR", dir.path().join("data"))
        .env("UPLOAD_TMP_DIR", dir.path())
        .env("GATEWAY_ADDR", format!("127.0.0.1:{gateway}"))
        .envs(atelier_testkit::service_addresses())
        .env("FAL_SIM_ADDR", format!("127.0.0.1:{sim}"))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("S3_BUCKET")
        .env_remove("FAL_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn atelier serve");
    let process = Stop(child);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    while !matches!(client.get(&ready).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "not ready within 90 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Platform {
        _process: process,
        _dir: dir,
        gateway: format!("http://127.0.0.1:{gateway}"),
        sim: format!("http://127.0.0.1:{sim}"),
    }
}

/// The CLI with its own home and configuration directory.
struct Cli {
    home: PathBuf,
}

impl Cli {
    fn new(root: &Path, name: &str) -> Self {
        let home = root.join(name);
        std::fs::create_dir_all(&home).expect("home");
        Self { home }
    }

    fn config_file(&self) -> PathBuf {
        self.home.join("config/atelier/config.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atelier"));
        command
            .args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env_remove("ATELIER_URL")
            .env_remove("ATELIER_API_KEY")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run the CLI")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the CLI");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    /// Runs `args`, expects success and parses stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        assert_eq!(code(&output), 0, "{args:?}: {}", describe(&output));
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "{args:?}: stdout is not JSON ({err}): {}",
                describe(&output)
            )
        })
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    )
}

fn write_png(path: &Path, width: u32, height: u32) {
    let picture = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 90])
    });
    picture
        .save_with_format(path, ImageFormat::Png)
        .expect("write a PNG");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn config(cli: &Cli) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(cli.config_file()).expect("config")).expect("toml")
}

#[tokio::test]
async fn the_cli_signs_in_processes_a_batch_and_reports_failures_by_exit_code() {
    let platform = start_platform().await;
    let root = tempfile::tempdir().expect("tempdir");
    let cli = Cli::new(root.path(), "ada");
    let url = platform.gateway.as_str();

    // Not signed in: workflows are public, jobs are not.
    let workflows = cli.json(&["workflows", "--json", "--url", url]);
    let esrgan = workflows
        .as_array()
        .expect("array")
        .iter()
        .find(|workflow| workflow["id"] == "esrgan-upscale")
        .unwrap_or_else(|| panic!("no esrgan-upscale in {workflows}"));
    assert!(esrgan["parameters_schema"]["properties"]["scale"].is_object());
    let table = cli.run(&["workflows", "--url", url]);
    assert_eq!(code(&table), 0, "{}", describe(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("esrgan-upscale") && table.contains("scale="),
        "{table}"
    );
    let unauthenticated = cli.run(&["jobs", "--url", url]);
    assert_eq!(code(&unauthenticated), 3, "{}", describe(&unauthenticated));
    assert!(stderr(&unauthenticated).contains("atelier login"));

    // Sign up, sign out, sign in again; the credentials are private.
    let signed_up = cli.run_with_stdin(
        &[
            "signup",
            "--url",
            url,
            "--email",
            "ada@example.com",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code(&signed_up), 0, "{}", describe(&signed_up));
    let logout = cli.run(&["logout", "--json"]);
    assert_eq!(code(&logout), 0, "{}", describe(&logout));
    assert!(config(&cli).get("servers").is_none(), "{:?}", config(&cli));
    let refused = cli.run_with_stdin(
        &[
            "login",
            "--url",
            url,
            "--email",
            "ada@example.com",
            "--password-stdin",
        ],
        "wrong password entirely\n",
    );
    assert_eq!(code(&refused), 3, "{}", describe(&refused));
    let login = cli.run_with_stdin(
        &[
            "login",
            "--url",
            url,
            "--email",
            "ada@example.com",
            "--password-stdin",
            "--json",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code(&login), 0, "{}", describe(&login));
    let login: Value = serde_json::from_slice(&login.stdout).expect("login JSON");
    assert_eq!(login["email"], "ada@example.com");
    assert_eq!(mode(&cli.config_file()), 0o600);
    assert_eq!(mode(cli.config_file().parent().expect("dir")), 0o700);
    let saved = config(&cli);
    assert_eq!(saved["default_url"].as_str(), Some(url));
    assert!(saved["servers"][url]["refresh_token"].is_str());
    let whoami = cli.run(&["whoami"]);
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout).trim(),
        "ada@example.com"
    );

    // A batch of three: each result lands next to its input, twice the size.
    let inputs = root.path().join("inputs");
    std::fs::create_dir_all(&inputs).expect("inputs");
    let sizes = [("a.png", 40, 30), ("b.png", 24, 24), ("c.png", 50, 20)];
    let files: Vec<String> = sizes
        .iter()
        .map(|(name, width, height)| {
            let path = inputs.join(name);
            write_png(&path, *width, *height);
            path.display().to_string()
        })
        .collect();
    let mut args = vec![
        "process",
        "--workflow",
        "esrgan-upscale",
        "-p",
        "scale=2",
        "--json",
    ];
    args.extend(files.iter().map(String::as_str));
    let results = cli.json(&args);
    let results = results.as_array().expect("array");
    assert_eq!(results.len(), 3, "{results:?}");
    let mut job_ids = Vec::new();
    for ((name, width, height), result) in sizes.iter().zip(results) {
        assert_eq!(result["status"], "completed", "{result}");
        assert!(result["error"].is_null(), "{result}");
        assert_eq!(result["input"], inputs.join(name).display().to_string());
        let stem = name.trim_end_matches(".png");
        let expected = inputs.join(format!("{stem}.esrgan-upscale.png"));
        assert_eq!(
            result["result_path"],
            expected.display().to_string(),
            "{result}"
        );
        let output = image::open(&expected).expect("the result decodes");
        assert_eq!(output.dimensions(), (width * 2, height * 2), "{name}");
        job_ids.push(result["job_id"].as_str().expect("job id").to_owned());
    }

    // The same input again: the earlier result is kept, the new one numbered.
    let again = cli.json(&[
        "process",
        "-w",
        "esrgan-upscale",
        "-p",
        "scale=3",
        "--json",
        &files[0],
    ]);
    let second = inputs.join("a.esrgan-upscale-1.png");
    assert_eq!(again[0]["result_path"], second.display().to_string());
    assert_eq!(
        image::open(&second).expect("decodes").dimensions(),
        (120, 90)
    );
    assert_eq!(
        image::open(inputs.join("a.esrgan-upscale.png"))
            .expect("decodes")
            .dimensions(),
        (80, 60),
        "the first result is untouched"
    );

    // Invalid parameters are refused before anything is uploaded (exit 7), with the
    // server's words.
    let invalid = cli.run(&[
        "process",
        "-w",
        "esrgan-upscale",
        "-p",
        "scale=100",
        &files[0],
    ]);
    assert_eq!(code(&invalid), 7, "{}", describe(&invalid));
    assert!(stderr(&invalid).contains("scale"), "{}", describe(&invalid));
    // Usage errors are clap's (2); missing things are "not found" (4).
    let usage = cli.run(&["process", "-w", "esrgan-upscale", "-p", "scale", &files[0]]);
    assert_eq!(code(&usage), 2, "{}", describe(&usage));
    let missing = cli.run(&["process", "-w", "esrgan-upscale", "nope.png"]);
    assert_eq!(code(&missing), 4, "{}", describe(&missing));
    assert!(stderr(&missing).contains("nope.png: no such file"));
    let unknown = cli.run(&["process", "-w", "no-such-workflow", &files[0]]);
    assert_eq!(code(&unknown), 4, "{}", describe(&unknown));
    let not_an_image = root.path().join("notes.png");
    std::fs::write(&not_an_image, "not an image at all").expect("write");
    let rejected = cli.run(&[
        "process",
        "-w",
        "esrgan-upscale",
        "--json",
        &not_an_image.display().to_string(),
        &files[1],
    ]);
    assert_eq!(code(&rejected), 7, "{}", describe(&rejected));
    let rejected: Value = serde_json::from_slice(&rejected.stdout).expect("JSON");
    assert_eq!(rejected[0]["status"], "not_started", "{rejected}");
    assert_eq!(
        rejected[1]["status"], "completed",
        "the other file still ran: {rejected}"
    );

    // A job the simulator fails: exit 5, the others still finish.
    let client = reqwest::Client::new();
    let knobs = format!("{}/_sim/knobs", platform.sim);
    let set = client
        .put(&knobs)
        .json(&serde_json::json!({"error_rate": 1.0, "error_type": "bad_request"}))
        .send()
        .await
        .expect("knobs");
    assert!(set.status().is_success(), "{set:?}");
    let failed = cli.run(&[
        "process",
        "-w",
        "esrgan-upscale",
        "--json",
        &files[1],
        &files[2],
    ]);
    client
        .put(&knobs)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("reset knobs");
    assert_eq!(code(&failed), 5, "{}", describe(&failed));
    let failed: Value = serde_json::from_slice(&failed.stdout).expect("JSON");
    for result in failed.as_array().expect("array") {
        assert_eq!(result["status"], "failed", "{result}");
        assert!(
            result["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{result}"
        );
        assert!(result["result_path"].is_null());
    }
    let failed_job = failed[0]["job_id"].as_str().expect("job id").to_owned();

    // Jobs, newest first; filtered by status.
    let jobs = cli.json(&["jobs", "--json", "--limit", "50"]);
    let listed: Vec<&str> = jobs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|job| job["job_id"].as_str())
        .collect();
    for id in job_ids.iter().chain([&failed_job]) {
        assert!(listed.contains(&id.as_str()), "{id} not in {listed:?}");
    }
    let only_failed = cli.json(&["jobs", "--json", "--status", "failed"]);
    assert_eq!(
        only_failed.as_array().expect("array").len(),
        2,
        "{only_failed}"
    );
    let limited = cli.json(&["jobs", "--json", "--limit", "2"]);
    assert_eq!(limited.as_array().expect("array").len(), 2);
    let table = cli.run(&["jobs"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&failed_job));

    // Download and watch a finished job; a failed one exits 5, an unknown one 4.
    let downloads = root.path().join("downloads");
    let downloaded = cli.json(&[
        "download",
        &job_ids[0],
        "--out",
        &downloads.display().to_string(),
        "--json",
    ]);
    let path = downloaded["files"][0].as_str().expect("a file");
    assert!(path.starts_with(&downloads.display().to_string()), "{path}");
    assert_eq!(image::open(path).expect("decodes").dimensions(), (80, 60));
    let watched = cli.json(&["watch", &job_ids[1], "--json"]);
    assert_eq!(watched["status"], "completed");
    let watched = cli.run(&["watch", &job_ids[1]]);
    assert_eq!(String::from_utf8_lossy(&watched.stdout).trim(), "completed");
    let watch_failed = cli.run(&["watch", &failed_job]);
    assert_eq!(code(&watch_failed), 5, "{}", describe(&watch_failed));
    let download_failed = cli.run(&["download", &failed_job]);
    assert_eq!(code(&download_failed), 5, "{}", describe(&download_failed));
    let unknown_job = cli.run(&["watch", "0197a3c2-0000-7000-8000-000000000000"]);
    assert_eq!(code(&unknown_job), 4, "{}", describe(&unknown_job));

    // Upload alone prints the image ids.
    let uploaded = cli.run(&["upload", &files[0], &files[1]]);
    assert_eq!(code(&uploaded), 0, "{}", describe(&uploaded));
    let ids: Vec<String> = String::from_utf8_lossy(&uploaded.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{ids:?}"
    );

    // ATELIER_API_KEY overrides the saved session; a refused key is not kept.
    let bogus = cli
        .command(&["jobs"])
        .env("ATELIER_API_KEY", format!("atl_live_{}", "A".repeat(43)))
        .output()
        .expect("run");
    assert_eq!(code(&bogus), 3, "{}", describe(&bogus));
    let key_login = cli.run(&["login", "--key", "atl_live_not-a-key"]);
    assert_eq!(code(&key_login), 3, "{}", describe(&key_login));
    assert!(config(&cli)["servers"][url].get("api_key").is_none());

    // Keys: created (the secret once), listed without it, used with their scopes,
    // revoked.
    let created = cli.json(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "processing:read",
        "--json",
    ]);
    let secret = created["key"].as_str().expect("the key, once").to_owned();
    assert!(secret.starts_with("atl_live_"), "{created}");
    let key_id = created["id"].as_str().expect("id").to_owned();
    let listed = cli.json(&["keys", "list", "--json"]);
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], key_id.as_str());
    assert_eq!(listed[0]["scopes"], serde_json::json!(["processing:read"]));
    assert!(
        !serde_json::to_string(listed)
            .expect("json")
            .contains(&secret)
    );
    let with_key = |args: &[&str]| {
        cli.command(args)
            .env("ATELIER_API_KEY", &secret)
            .output()
            .expect("run")
    };
    let jobs_by_key = with_key(&["jobs", "--json", "--url", url]);
    assert_eq!(code(&jobs_by_key), 0, "{}", describe(&jobs_by_key));
    let jobs_by_key: Value = serde_json::from_slice(&jobs_by_key.stdout).expect("jobs JSON");
    assert!(!jobs_by_key.as_array().expect("array").is_empty());
    let out_of_scope = with_key(&["upload", &files[0], "--url", url]);
    assert_eq!(code(&out_of_scope), 3, "{}", describe(&out_of_scope));
    assert!(
        stderr(&out_of_scope).contains("images:write"),
        "{}",
        describe(&out_of_scope)
    );
    let revoked = cli.json(&["keys", "revoke", &key_id, "--json"]);
    assert_eq!(revoked["revoked"], true);
    let after_revoke = with_key(&["jobs", "--url", url]);
    assert_eq!(code(&after_revoke), 3, "{}", describe(&after_revoke));

    // An expired access token is refreshed with the refresh token, and the new
    // session saved.
    let before = config(&cli)["servers"][url]["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let text = std::fs::read_to_string(cli.config_file()).expect("config");
    let mut table: toml::Table = toml::from_str(&text).expect("toml");
    table["servers"][url]["access_expires_at"] = toml::Value::Integer(0);
    std::fs::write(cli.config_file(), toml::to_string(&table).expect("toml")).expect("write");
    cli.json(&["jobs", "--json", "--limit", "1"]);
    let after = config(&cli);
    assert_ne!(
        after["servers"][url]["refresh_token"].as_str(),
        Some(before.as_str())
    );
    assert!(after["servers"][url]["access_expires_at"].as_integer() > Some(0));
    assert_eq!(mode(&cli.config_file()), 0o600);

    // A refused token with a dead refresh token: exit 3, and the session forgotten.
    table = config(&cli);
    table["servers"][url]["access_token"] = toml::Value::String("not-a-token".into());
    table["servers"][url]["refresh_token"] = toml::Value::String("not-a-refresh-token".into());
    std::fs::write(cli.config_file(), toml::to_string(&table).expect("toml")).expect("write");
    let ended = cli.run(&["jobs"]);
    assert_eq!(code(&ended), 3, "{}", describe(&ended));
    assert!(config(&cli).get("servers").is_none());

    // Signed out: exit 3 again.
    let other = Cli::new(root.path(), "nobody");
    let nobody = other.run(&["watch", &job_ids[0], "--url", url]);
    assert_eq!(code(&nobody), 3, "{}", describe(&nobody));
}

#[test]
fn a_server_that_cannot_be_reached_exits_6() {
    let root = tempfile::tempdir().expect("tempdir");
    let cli = Cli::new(root.path(), "offline");
    let url = format!("http://127.0.0.1:{}", free_port());
    let output = cli.run(&["workflows", "--url", &url]);
    assert_eq!(code(&output), 6, "{}", describe(&output));
    assert!(
        stderr(&output).contains("cannot reach"),
        "{}",
        describe(&output)
    );
    let output = cli.run_with_stdin(
        &[
            "login",
            "--url",
            &url,
            "--email",
            "a@example.com",
            "--password-stdin",
        ],
        "whatever password\n",
    );
    assert_eq!(code(&output), 6, "{}", describe(&output));
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_exit_2() {
    let root = tempfile::tempdir().expect("tempdir");
    let cli = Cli::new(root.path(), "help");
    let help = cli.run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for line in [
        "3  not signed in",
        "5  a job failed",
        "6  the server cannot be reached",
        "7  the server refused",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    for command in ["login", "process", "watch", "download", "keys"] {
        assert!(text.contains(command), "{command} missing from {text}");
    }
    let usage = cli.run(&["process", "photo.png"]);
    assert_eq!(code(&usage), 2, "{}", describe(&usage));
    assert!(stderr(&usage).contains("--workflow"));
    let bad_url = cli.run(&["workflows", "--url", "ftp://example.com"]);
    assert_eq!(code(&bad_url), 2, "{}", describe(&bad_url));
}
