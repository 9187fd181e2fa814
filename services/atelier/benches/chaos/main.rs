//! `make chaos`: the platform as real processes (PostgreSQL and Redis of the suite's
//! own, the fal simulator, and `atelier serve` as `front`, `gateway` and `processing`),
//! broken one way at a time while jobs flow. Each row says what was done, what was lost,
//! what was submitted to fal twice, what failed, which errors clients saw (each should
//! be a clean 503 problem), and how long recovery took. The run fails when anything was
//! lost, submitted twice or failed, or a check of its row did not hold.
//!
//! `cargo bench -p atelier --bench chaos` runs every scenario (release build);
//! `cargo test --all-targets` runs one small one (`kill -9` of processing with a few
//! dozen jobs in flight), so the harness itself is exercised in CI.
//!
//! Environment:
//! - `CHAOS_SCENARIOS`: a comma-separated list of `kill-processing`, `redis-flush`,
//!   `redis-restart`, `postgres-restart`, `fal-outage`, `fal-slow`, `gateway-kill`
//!   (default: all in a full run, `kill-processing` in a smoke run);
//! - `CHAOS_JOBS`: jobs in flight when processing is killed (500; smoke 30); the other
//!   scenarios run a fifth of it (at least 20) plus the load they start meanwhile;
//! - `CHAOS_OUTAGE_SECS`: how long fal is out (60);
//! - `CHAOS_ENV`: more settings for the platform, `NAME=value,NAME=value`;
//! - `CHAOS_PG_BIN`: PostgreSQL's programs (default: the newest `/usr/lib/postgresql/*/bin`);
//! - `TEST_S3_ENDPOINT`, `TEST_S3_ACCESS_KEY`, `TEST_S3_SECRET_KEY`: the S3-compatible
//!   server where the run keeps its images, in a bucket of its own (as the tests do);
//! - `BENCH_RESULTS`: where a full run writes `chaos.md`, and where the processes' logs
//!   are copied (`chaos-logs/`) when the run fails or `CHAOS_KEEP_LOGS` is set.

mod client;
mod cluster;
mod scenarios;

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use atelier_bench::Mode;

use crate::{
    client::Api,
    cluster::{Cluster, Settings},
    scenarios::Outcome,
};

const SCENARIOS: [&str; 7] = [
    "kill-processing",
    "redis-flush",
    "redis-restart",
    "postgres-restart",
    "fal-outage",
    "fal-slow",
    "gateway-kill",
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} is not valid: {raw:?}")),
        _ => Ok(default),
    }
}

fn main() -> ExitCode {
    let mode = Mode::from_args();
    // Chaos runs stay out of `make test` (cargo test builds this target, which is the
    // check it gets there); `make chaos` runs it.
    if mode == Mode::Smoke && std::env::var_os("CHAOS_SMOKE").is_none() {
        println!("chaos: built; run with `make chaos` (or CHAOS_SMOKE=1 for the short run)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chaos: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(mode)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("chaos: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> anyhow::Result<bool> {
    let chosen: Vec<String> = match std::env::var("CHAOS_SCENARIOS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => mode
            .pick(&SCENARIOS[..], &SCENARIOS[..1])
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    if let Some(unknown) = chosen.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        bail!("CHAOS_SCENARIOS: unknown scenario {unknown:?}; known: {SCENARIOS:?}");
    }
    let jobs: usize = env_or("CHAOS_JOBS", mode.pick(500, 30))?;
    let outage = Duration::from_secs(env_or("CHAOS_OUTAGE_SECS", 60)?);
    let settings = Settings {
        worker_concurrency: 50,
        visibility_secs: 30,
        reconcile_secs: 5,
        breaker_threshold: 5,
        breaker_open_secs: 30,
        breaker_probes: 2,
        parallel_jobs: 20,
        fal_concurrency: 10,
    };
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_atelier"));
    let started = std::time::Instant::now();
    let mut cluster = Cluster::start(bin, settings.clone())
        .await
        .context("starting the platform")?;
    let api = Api::new(&cluster.base)?;
    let small = (jobs / 5).max(20);

    let mut outcomes = Vec::new();
    for scenario in &chosen {
        eprintln!("chaos: {scenario}");
        let begun = std::time::Instant::now();
        let outcome = match scenario.as_str() {
            "kill-processing" => scenarios::kill_processing(&mut cluster, &api, jobs).await,
            "redis-flush" => scenarios::redis_loss(&mut cluster, &api, small, false).await,
            "redis-restart" => scenarios::redis_loss(&mut cluster, &api, small, true).await,
            "postgres-restart" => {
                scenarios::postgres_restart(&mut cluster, &api, small, Duration::from_secs(5)).await
            }
            "fal-outage" => scenarios::fal_outage(&mut cluster, &api, small, outage).await,
            "fal-slow" => scenarios::fal_slow(&mut cluster, &api, small).await,
            "gateway-kill" => scenarios::gateway_kill(&mut cluster, &api, 10).await,
            _ => unreachable!("checked above"),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                let kept = cluster.keep_logs()?;
                return Err(err.context(format!(
                    "scenario {scenario} (the processes' logs are in {})",
                    kept.display()
                )));
            }
        };
        eprintln!(
            "chaos: {scenario} took {:.0} s: {}",
            begun.elapsed().as_secs_f64(),
            if outcome.passed() { "held" } else { "FAILED" }
        );
        outcomes.push(outcome);
    }

    let markdown = table(&outcomes, &settings, mode, started.elapsed());
    println!("\n{markdown}");
    if mode == Mode::Full {
        let dir = atelier_bench::results_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("chaos.md");
        std::fs::write(&path, &markdown)?;
        println!("chaos: written to {}", path.display());
    }
    let passed = outcomes.iter().all(Outcome::passed);
    if !passed || std::env::var_os("CHAOS_KEEP_LOGS").is_some() {
        let kept = cluster.keep_logs()?;
        eprintln!("chaos: the processes' logs are in {}", kept.display());
    }
    Ok(passed)
}

fn table(outcomes: &[Outcome], settings: &Settings, mode: Mode, took: Duration) -> String {
    let mut out = String::from(
        "## Chaos\n\n| what was done | jobs | lost | submitted twice | failed | errors clients saw | time to recover | |\n|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            o.scenario,
            o.jobs,
            o.lost,
            o.twice,
            o.failed,
            o.errors_cell(),
            o.recovered.map_or("did not".to_owned(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
            if o.passed() { "held" } else { "FAILED" },
        );
    }
    for o in outcomes {
        for (what, held) in &o.checks {
            let _ = writeln!(
                out,
                "\n- {}: {what}{}",
                o.scenario,
                if *held { "" } else { " — FAILED" }
            );
        }
        for seen in o.unclean().iter().take(5) {
            let _ = writeln!(out, "\n- {}: unclean error: {}", o.scenario, seen.what);
        }
    }
    let _ = write!(
        out,
        "\n{} run on {}, {:.0} s. Time to recover: from the fault until every job that was \
         unfinished at it had finished (kill, Redis), from fal's return until every job had \
         finished (outage), from PostgreSQL's return until the last error, from the kill until \
         the last client was streaming again (gateway), the second user's jobs start to end \
         (slow fal). Platform settings: WORKER_CONCURRENCY={}, QUEUE_VISIBILITY_SECS={} (what \
         a killed worker's jobs wait before another takes them), RECONCILE_SECS={}, \
         FAL_BREAKER_CONSECUTIVE_FAILURES={}, FAL_BREAKER_OPEN_SECS={}, \
         FAL_BREAKER_HALF_OPEN_PROBES={}, TIER_FREE_PARALLEL_JOBS={}, FAL_MAX_CONCURRENCY={}; fal \
         simulator: {} requests at once, 200 ms each.\n",
        match mode {
            Mode::Full => "Full",
            Mode::Smoke => "Smoke",
        },
        atelier_bench::machine(),
        took.as_secs_f64(),
        settings.worker_concurrency,
        settings.visibility_secs,
        settings.reconcile_secs,
        settings.breaker_threshold,
        settings.breaker_open_secs,
        settings.breaker_probes,
        settings.parallel_jobs,
        settings.fal_concurrency,
        settings.fal_concurrency,
    );
    out
}
