//! The platform under test, as real processes the suite can kill and restart: a
//! PostgreSQL cluster and a Redis server of its own (on free ports, in a temporary
//! directory, so stopping or flushing them touches nothing shared), the fal simulator
//! (`atelier fal-sim`), and the platform in three processes: `front` (auth, image,
//! workflow, user), `gateway` and `processing`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

pub use atelier_testkit::postgres::{Postgres, free_port};

/// A child process, SIGKILLed when dropped, its output in `<dir>/<name>.log`.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(command: &mut Command, name: &str, dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// `kill -9`: nothing is settled, nothing flushed.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            child
                .kill()
                .with_context(|| format!("killing {}", self.name))?;
            child.wait()?;
        }
        Ok(())
    }

    /// Fails when the process is no longer running (it crashed or stopped).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => bail!("{} exited ({status}); {}", self.name, self.tail()),
            Some(Err(err)) => Err(err.into()),
            None => bail!("{} is not running", self.name),
        }
    }

    /// The last lines of the process's log, for error messages.
    pub fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("last lines of {}:\n{}", self.log.display(), tail.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `url` answers 200.
pub async fn wait_ok(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{url} did not answer within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis server of the suite's own, without persistence: a restart loses every key,
/// as a restart of a cache node without a replica does.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Redis {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self {
            port: free_port()?,
            dir,
            proc: None,
        };
        redis.up().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn up(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &self.dir.display().to_string(),
        ]);
        self.proc = Some(Proc::spawn(&mut command, "redis", &self.dir)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cli(&["PING"]).is_err() {
            ensure!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills the server (its data goes with it).
    pub fn down(&mut self) -> anyhow::Result<()> {
        match self.proc.take() {
            Some(mut proc) => proc.sigkill(),
            None => Ok(()),
        }
    }

    /// Runs a command with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("running redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(
            out.status.success() && !text.starts_with("ERR") && !text.contains("Could not connect"),
            "redis-cli {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text)
    }
}

/// The fal simulator, its own process, and its admin routes.
pub struct Sim {
    pub url: String,
    _proc: Proc,
    http: reqwest::Client,
}

impl Sim {
    pub async fn start(
        bin: &Path,
        dir: &Path,
        http: &reqwest::Client,
        concurrency: u64,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(bin);
        command
            .args(["fal-sim", "--addr", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .env_clear()
            .env("RUST_LOG", "info,atelier_fal_sim=warn")
            .env("FAL_SIM_MAX_CONCURRENCY", concurrency.to_string())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        let proc = Proc::spawn(&mut command, "fal-sim", dir)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_ok(http, &format!("{url}/healthz"), Duration::from_secs(30)).await?;
        Ok(Self {
            url,
            _proc: proc,
            http: http.clone(),
        })
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(format!("{}/_sim/{path}", self.url))
            .json(body)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "PUT /_sim/{path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// Replaces the faults in force (`PUT /_sim/faults`).
    pub async fn faults(&self, faults: Value) -> anyhow::Result<()> {
        self.put("faults", &faults).await.map(drop)
    }

    /// Sets the simulator's queue and processing times (`PUT /_sim/knobs`).
    pub async fn processing_time(&self, ms: u64) -> anyhow::Result<()> {
        self.put("knobs", &json!({"processing_time_ms": ms}))
            .await
            .map(drop)
    }

    pub async fn stats(&self) -> anyhow::Result<SimStats> {
        let stats: Value = self
            .http
            .get(format!("{}/_sim/stats", self.url))
            .send()
            .await?
            .json()
            .await?;
        let n = |key: &str| {
            stats[key]
                .as_u64()
                .with_context(|| format!("stats.{key}: {stats}"))
        };
        Ok(SimStats {
            submissions: n("submissions")?,
            repeated: n("repeated_submissions")?,
            completed: n("completed")?,
            failed: n("failed")?,
            outage_calls: stats["outage_calls"]
                .as_object()
                .context("stats.outage_calls")?
                .values()
                .filter_map(Value::as_u64)
                .sum(),
            queue_outage_calls: ["submit", "status", "result", "cancel"]
                .iter()
                .filter_map(|kind| stats["outage_calls"][kind].as_u64())
                .sum(),
        })
    }
}

/// The simulator's counters (`GET /_sim/stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    pub submissions: u64,
    pub repeated: u64,
    pub completed: u64,
    pub failed: u64,
    /// Calls answered 503 for an outage, of every kind.
    pub outage_calls: u64,
    /// Of those, calls to the queue API (submit, status, result, cancel).
    pub queue_outage_calls: u64,
}

impl std::ops::Sub for SimStats {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            submissions: self.submissions - before.submissions,
            repeated: self.repeated - before.repeated,
            completed: self.completed - before.completed,
            failed: self.failed - before.failed,
            outage_calls: self.outage_calls - before.outage_calls,
            queue_outage_calls: self.queue_outage_calls - before.queue_outage_calls,
        }
    }
}

/// Settings of the platform under test that the scenarios read back.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `WORKER_CONCURRENCY` of the processing process.
    pub worker_concurrency: usize,
    /// `QUEUE_VISIBILITY_SECS`.
    pub visibility_secs: u64,
    /// `RECONCILE_SECS`.
    pub reconcile_secs: u64,
    /// `FAL_BREAKER_CONSECUTIVE_FAILURES`.
    pub breaker_threshold: u64,
    /// `FAL_BREAKER_OPEN_SECS`.
    pub breaker_open_secs: u64,
    /// `FAL_BREAKER_HALF_OPEN_PROBES`.
    pub breaker_probes: u64,
    /// Jobs a user of the chaos tier may have running at fal (`TIER_FREE_PARALLEL_JOBS`).
    pub parallel_jobs: u64,
    /// The simulated fal account's limit (`FAL_SIM_MAX_CONCURRENCY`), and the platform's
    /// bound on jobs at fal set to it (`FAL_MAX_CONCURRENCY`), as the README advises.
    pub fal_concurrency: u64,
}

impl Settings {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WORKER_CONCURRENCY", self.worker_concurrency.to_string()),
            ("QUEUE_VISIBILITY_SECS", self.visibility_secs.to_string()),
            ("RECONCILE_SECS", self.reconcile_secs.to_string()),
            (
                "FAL_BREAKER_CONSECUTIVE_FAILURES",
                self.breaker_threshold.to_string(),
            ),
            ("FAL_BREAKER_OPEN_SECS", self.breaker_open_secs.to_string()),
            (
                "FAL_BREAKER_HALF_OPEN_PROBES",
                self.breaker_probes.to_string(),
            ),
            ("TIER_FREE_PARALLEL_JOBS", self.parallel_jobs.to_string()),
            ("FAL_MAX_CONCURRENCY", self.fal_concurrency.to_string()),
        ]
    }
}

/// Which platform process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// auth, image, workflow and user.
    Front,
    Gateway,
    Processing,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Front => "front",
            Self::Gateway => "gateway",
            Self::Processing => "processing",
        }
    }

    fn targets(self) -> &'static str {
        match self {
            Self::Front => "auth,image,workflow,user",
            Self::Gateway => "gateway",
            Self::Processing => "processing",
        }
    }
}

/// Everything the suite runs, stopped when dropped.
///
/// Fields drop in order: the platform's processes, the simulator, Redis and PostgreSQL
/// stop before their directory is removed (PostgreSQL is stopped through its data
/// directory).
pub struct Cluster {
    procs: Vec<(Role, Proc, u16)>,
    pub sim: Sim,
    pub redis: Redis,
    pub postgres: Postgres,
    pub bin: PathBuf,
    pub settings: Settings,
    /// The gateway's base URL.
    pub base: String,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    starts: usize,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(bin: PathBuf, settings: Settings) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("atelier-chaos-")
            .tempdir()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let postgres = Postgres::start(dir.path())?;
        let redis = Redis::start(dir.path()).await?;
        let sim = Sim::start(&bin, dir.path(), &http, settings.fal_concurrency).await?;
        let bucket = format!("atelier-chaos-{}", uuid::Uuid::new_v4().simple());
        let s3 = atelier_testkit::s3_config(&bucket);
        atelier_storage::S3Store::new(s3.clone())
            .await?
            .create_bucket_if_missing()
            .await
            .context("the S3 server is not reachable at TEST_S3_ENDPOINT; `make test` starts it")?;

        let gateway_port = free_port()?;
        let base = format!("http://127.0.0.1:{gateway_port}");
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), postgres.url()),
            ("REDIS_URL".into(), redis.url()),
            (
                "DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("UPLOAD_TMP_DIR".into(), dir.path().display().to_string()),
            ("S3_BUCKET".into(), bucket),
            (
                "S3_ENDPOINT".into(),
                s3.endpoint.clone().unwrap_or_default(),
            ),
            (
                "S3_ACCESS_KEY_ID".into(),
                s3.access_key_id.clone().unwrap_or_default(),
            ),
            (
                "S3_SECRET_ACCESS_KEY".into(),
                s3.secret_access_key.clone().unwrap_or_default(),
            ),
            ("GATEWAY_ADDR".into(), format!("127.0.0.1:{gateway_port}")),
            ("FAL_KEY".into(), "chaos".into()),
            ("FAL_QUEUE_URL".into(), sim.url.clone()),
            ("FAL_API_URL".into(), format!("{}/v1", sim.url)),
            ("FAL_RESULT_HOSTS".into(), sim.url.clone()),
            (
                "FAL_WEBHOOK_JWKS_URL".into(),
                format!("{}/.well-known/jwks.json", sim.url),
            ),
            ("RATE_LIMIT_PER_IP".into(), "10000000".into()),
            ("RATE_LIMIT_PER_USER".into(), "10000000".into()),
            ("MAX_STREAMS_PER_USER".into(), "10000".into()),
            ("TIER_FREE_JOBS_PER_DAY".into(), "unlimited".into()),
            ("TIER_FREE_CONCURRENT_JOBS".into(), "unlimited".into()),
            ("TIER_FREE_STORAGE_BYTES".into(), "unlimited".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        for name in [
            "AUTH_GRPC_ADDR",
            "IMAGE_GRPC_ADDR",
            "WORKFLOW_GRPC_ADDR",
            "PROCESSING_GRPC_ADDR",
            "USER_GRPC_ADDR",
        ] {
            env.push((name.into(), format!("127.0.0.1:{}", free_port()?)));
        }
        env.extend(
            settings
                .env()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        // Anything else the caller wants the platform to run with (CHAOS_ENV=A=1,B=2).
        if let Ok(extra) = std::env::var("CHAOS_ENV") {
            for pair in extra.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("CHAOS_ENV: {pair:?} is not NAME=value"))?;
                env.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let mut cluster = Self {
            dir,
            bin,
            settings,
            postgres,
            redis,
            sim,
            base,
            env,
            procs: Vec::new(),
            http,
            starts: 0,
        };
        // The first start migrates: one process at a time.
        cluster.spawn(Role::Front).await?;
        cluster.spawn(Role::Processing).await?;
        cluster.spawn(Role::Gateway).await?;
        Ok(cluster)
    }

    /// Starts a process for `role` and waits until it is ready.
    pub async fn spawn(&mut self, role: Role) -> anyhow::Result<()> {
        let admin = free_port()?;
        self.starts += 1;
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--target", role.targets()])
            .current_dir(self.dir.path())
            // Only what the suite sets: nothing from the caller's environment (a
            // PUBLIC_URL, S3_BUCKET, ...) changes what runs.
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("ADMIN_ADDR", format!("127.0.0.1:{admin}"));
        let name = format!("{}-{}", role.name(), self.starts);
        let proc = Proc::spawn(&mut command, &name, self.dir.path())?;
        self.procs.push((role, proc, admin));
        let ready = wait_ok(
            &self.http,
            &format!("http://127.0.0.1:{admin}/readyz"),
            Duration::from_secs(120),
        )
        .await;
        if let Err(err) = ready {
            let tail = self
                .procs
                .last()
                .map(|(_, p, _)| p.tail())
                .unwrap_or_default();
            bail!("{name} did not become ready: {err}\n{tail}");
        }
        Ok(())
    }

    /// `kill -9` of every process of `role`.
    pub fn kill(&mut self, role: Role) -> anyhow::Result<()> {
        for (_, proc, _) in self.procs.iter_mut().filter(|(r, _, _)| *r == role) {
            proc.sigkill()?;
        }
        self.procs.retain(|(r, _, _)| *r != role);
        Ok(())
    }

    /// Fails when a platform process died unasked.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for (_, proc, _) in &mut self.procs {
            proc.check_running()?;
        }
        Ok(())
    }

    /// Copies every process's log to `$BENCH_RESULTS/chaos-logs` (the run's directory is
    /// removed when it ends).
    pub fn keep_logs(&self) -> anyhow::Result<PathBuf> {
        let kept = atelier_bench::results_dir().join("chaos-logs");
        std::fs::create_dir_all(&kept)?;
        let logs = [self.dir.path().to_owned(), self.dir.path().join("redis")];
        for dir in logs {
            for entry in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
                if entry.path().extension().is_some_and(|ext| ext == "log") {
                    std::fs::copy(entry.path(), kept.join(entry.file_name()))?;
                }
            }
        }
        let pg_log = self.dir.path().join("postgres/postgres.log");
        if pg_log.exists() {
            std::fs::copy(pg_log, kept.join("postgres.log"))?;
        }
        Ok(kept)
    }

    /// The Prometheus text of the `role` process's admin endpoint.
    pub async fn metrics(&self, role: Role) -> anyhow::Result<String> {
        let (_, _, admin) = self
            .procs
            .iter()
            .find(|(r, _, _)| *r == role)
            .context("no such process running")?;
        Ok(self
            .http
            .get(format!("http://127.0.0.1:{admin}/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }
}
