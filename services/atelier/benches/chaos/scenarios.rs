//! The scenarios: each breaks one thing while jobs flow, lets it recover, and says
//! what was lost (jobs accepted that never finished), submitted twice (by the
//! simulator's count of repeated inputs), failed, which errors clients saw, and how
//! long recovery took.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use futures::{StreamExt as _, stream};
use serde_json::json;

use crate::{
    client::{Api, JobState, Seen, User},
    cluster::{Cluster, Role},
};

/// Every job of the run gets its own seed, so its input is its own.
static SEEDS: AtomicU64 = AtomicU64::new(1);

fn seed() -> u64 {
    SEEDS.fetch_add(1, Ordering::SeqCst)
}

/// How long jobs get to finish once the fault is over.
const SETTLE: Duration = Duration::from_secs(240);

/// One row of the table.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    pub jobs: usize,
    pub lost: usize,
    pub twice: u64,
    pub failed: usize,
    pub errors: Vec<Seen>,
    /// Errors other than clean 503s that the scenario allows (the gateway's own
    /// connections refused while it is down).
    pub allow_unanswered: bool,
    pub recovered: Option<Duration>,
    /// Further checks of the scenario: what, and whether it held.
    pub checks: Vec<(String, bool)>,
}

impl Outcome {
    fn new(scenario: impl Into<String>) -> Self {
        Self {
            scenario: scenario.into(),
            jobs: 0,
            lost: 0,
            twice: 0,
            failed: 0,
            errors: Vec::new(),
            allow_unanswered: false,
            recovered: None,
            checks: Vec::new(),
        }
    }

    fn check(&mut self, what: impl Into<String>, held: bool) {
        self.checks.push((what.into(), held));
    }

    /// Errors that are not a clean 503 (nor, where allowed, a connection refused).
    pub fn unclean(&self) -> Vec<&Seen> {
        self.errors
            .iter()
            .filter(|seen| !(seen.clean_503 || (self.allow_unanswered && seen.status.is_none())))
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.twice == 0
            && self.failed == 0
            && self.unclean().is_empty()
            && self.checks.iter().all(|(_, held)| *held)
    }

    /// The "errors seen" cell: how many, and of which kind.
    pub fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for seen in &self.errors {
            let kind = match (seen.status, seen.clean_503) {
                (Some(503), true) => "clean 503".to_owned(),
                (Some(status), _) => format!("{status} (not a clean 503)"),
                (None, _) => "no answer".to_owned(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        kinds
            .into_iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The jobs of a scenario, by user.
#[derive(Default)]
struct Jobs {
    by_user: Vec<(User, Vec<String>)>,
}

impl Jobs {
    fn add(&mut self, user: &User, job: String) {
        match self.by_user.iter_mut().find(|(u, _)| u.token == user.token) {
            Some((_, jobs)) => jobs.push(job),
            None => self.by_user.push((user.clone(), vec![job])),
        }
    }

    fn len(&self) -> usize {
        self.by_user.iter().map(|(_, jobs)| jobs.len()).sum()
    }

    /// The state of every job (jobs the API no longer knows are left out).
    async fn states(&self, api: &Api) -> anyhow::Result<HashMap<String, JobState>> {
        let mut all = HashMap::new();
        for (user, _) in &self.by_user {
            all.extend(api.jobs(user).await?);
        }
        Ok(all)
    }

    /// Waits until every job is final (or `within` passes); returns the states, when the
    /// jobs of `watched` were all final, and when every job was.
    async fn settle(
        &self,
        api: &Api,
        watched: &[String],
        within: Duration,
    ) -> anyhow::Result<Settled> {
        let deadline = Instant::now() + within;
        let mut watched_done = None;
        loop {
            let states = match self.states(api).await {
                Ok(states) => states,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let done = |id: &String| states.get(id).is_some_and(JobState::is_final);
            if watched_done.is_none() && watched.iter().all(done) {
                watched_done = Some(Instant::now());
            }
            let all_done = self.by_user.iter().flat_map(|(_, jobs)| jobs).all(done);
            if all_done || Instant::now() >= deadline {
                return Ok(Settled {
                    states,
                    watched_done,
                    all_done: all_done.then(Instant::now),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Counts the outcome: lost (not finished, or gone), failed (failed or cancelled,
    /// or completed without a result).
    fn count(&self, states: &HashMap<String, JobState>, outcome: &mut Outcome) {
        outcome.jobs = self.len();
        for id in self.by_user.iter().flat_map(|(_, jobs)| jobs) {
            match states.get(id) {
                Some(state) if state.status == "completed" && state.has_result => {}
                Some(state) if state.is_final() => {
                    outcome.failed += 1;
                    eprintln!("chaos: job {id} ended {}", state.status);
                }
                Some(state) => {
                    outcome.lost += 1;
                    eprintln!("chaos: job {id} never finished: {}", state.status);
                }
                None => {
                    outcome.lost += 1;
                    eprintln!("chaos: job {id} is gone");
                }
            }
        }
    }
}

/// Where the jobs ended up.
struct Settled {
    states: HashMap<String, JobState>,
    watched_done: Option<Instant>,
    all_done: Option<Instant>,
}

/// Starts `n` jobs spread over `users`, a few at a time.
async fn start_jobs(api: &Api, users: &[User], n: usize, jobs: &mut Jobs) -> anyhow::Result<()> {
    let started: Vec<(usize, anyhow::Result<String>)> = stream::iter(0..n)
        .map(|i| {
            let user = &users[i % users.len()];
            async move {
                (
                    i % users.len(),
                    api.start_retrying(user, seed(), Duration::from_secs(60))
                        .await,
                )
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (user, job) in started {
        jobs.add(&users[user], job?);
    }
    Ok(())
}

/// Registers `n` users.
async fn users(api: &Api, name: &str, n: usize) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        users.push(api.user(&format!("{name}-{i}")).await?);
    }
    Ok(users)
}

/// Load while a fault happens: a job started every `every` (its start retried with the
/// same idempotency key until it is accepted) and a status read of a job in between.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(usize, String)>>,
}

impl Load {
    fn start(api: &Api, users: &[User], every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (api, users, flag) = (api.clone(), users.to_vec(), stop.clone());
        let task = tokio::spawn(async move {
            let accepted = Arc::new(Mutex::new(Vec::new()));
            let mut starts = Vec::new();
            let mut tick = tokio::time::interval(every);
            let mut i = 0usize;
            while !flag.load(Ordering::SeqCst) {
                tick.tick().await;
                let user_index = i % users.len();
                let (api2, user, accepted2) =
                    (api.clone(), users[user_index].clone(), accepted.clone());
                starts.push(tokio::spawn(async move {
                    if let Ok(job) = api2
                        .start_retrying(&user, seed(), Duration::from_secs(120))
                        .await
                    {
                        let _ = api2.job(&user, &job).await;
                        accepted2
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((user_index, job));
                    }
                }));
                i += 1;
            }
            for start in starts {
                let _ = start.await;
            }
            let accepted = accepted.lock().unwrap_or_else(PoisonError::into_inner);
            accepted.clone()
        });
        Self { stop, task }
    }

    /// Stops starting jobs; returns the jobs it started once every start settled.
    async fn stop(self, users: &[User], jobs: &mut Jobs) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for (user, job) in self.task.await.context("the load task")? {
            jobs.add(&users[user], job);
        }
        Ok(())
    }
}

/// Waits until `pred` holds for the jobs' states, polling.
async fn wait_for(
    api: &Api,
    jobs: &Jobs,
    within: Duration,
    what: &str,
    pred: impl Fn(&HashMap<String, JobState>) -> bool,
) -> anyhow::Result<HashMap<String, JobState>> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(states) = jobs.states(api).await
            && pred(&states)
        {
            return Ok(states);
        }
        ensure!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_status(states: &HashMap<String, JobState>, wanted: &[&str]) -> usize {
    states
        .values()
        .filter(|s| wanted.contains(&s.status.as_str()))
        .count()
}

fn ids_with(states: &HashMap<String, JobState>, pred: impl Fn(&JobState) -> bool) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| pred(s))
        .map(|(id, _)| id.clone())
        .collect()
}

/// `kill -9` of the processing process with `n` jobs in flight, then a new one.
pub async fn kill_processing(
    cluster: &mut Cluster,
    api: &Api,
    n: usize,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(format!("kill -9 processing, {n} jobs in flight"));
    let users = users(api, "kill", 5).await?;
    let before = cluster.sim.stats().await?;
    let since = Instant::now();
    let mut jobs = Jobs::default();
    start_jobs(api, &users, n, &mut jobs).await?;
    // Jobs at fal and some done: the kill lands on jobs in every state.
    let states = wait_for(
        api,
        &jobs,
        Duration::from_secs(300),
        "jobs are at fal",
        |s| {
            count_status(s, &["submitted", "processing"]) > 0 && count_status(s, &["completed"]) > 0
        },
    )
    .await?;
    let unfinished = ids_with(&states, |s| !s.is_final());
    let at_fal = count_status(&states, &["submitted", "processing"]);
    let killed = Instant::now();
    cluster.kill(Role::Processing)?;
    eprintln!(
        "chaos: killed processing with {} of {n} jobs unfinished, {at_fal} at fal",
        unfinished.len()
    );
    cluster.spawn(Role::Processing).await?;
    let settled = jobs.settle(api, &unfinished, SETTLE).await?;
    jobs.count(&settled.states, &mut outcome);
    outcome.recovered = settled.watched_done.map(|at| at - killed);
    let sim = cluster.sim.stats().await? - before;
    outcome.twice = sim.repeated;
    outcome.errors = api.errors.since(since);
    outcome.check(
        format!(
            "fal saw one submission per job ({} for {} jobs)",
            sim.submissions, outcome.jobs
        ),
        sim.submissions as usize == outcome.jobs,
    );
    cluster.check_running()?;
    Ok(outcome)
}

/// Redis loses every key under load: `FLUSHALL`, or a restart (no persistence).
pub async fn redis_loss(
    cluster: &mut Cluster,
    api: &Api,
    n: usize,
    restart: bool,
) -> anyhow::Result<Outcome> {
    let what = if restart {
        "Redis restart (data lost)"
    } else {
        "Redis FLUSHALL"
    };
    let mut outcome = Outcome::new(format!("{what}, {n} jobs in flight, load flowing"));
    let users = users(api, if restart { "redis-restart" } else { "flush" }, 5).await?;
    let before = cluster.sim.stats().await?;
    let since = Instant::now();
    let mut jobs = Jobs::default();
    start_jobs(api, &users, n, &mut jobs).await?;
    let load = Load::start(api, &users, Duration::from_millis(100));
    let states = wait_for(
        api,
        &jobs,
        Duration::from_secs(300),
        "jobs are at fal",
        |s| count_status(s, &["submitted", "processing"]) > 0,
    )
    .await?;
    let unfinished = ids_with(&states, |s| !s.is_final());
    let fault = Instant::now();
    if restart {
        cluster.redis.down()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.redis.up().await?;
    } else {
        let answer = cluster.redis.cli(&["FLUSHALL"])?;
        ensure!(answer == "OK", "FLUSHALL answered {answer}");
    }
    eprintln!("chaos: {what} with {} jobs unfinished", unfinished.len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.stop(&users, &mut jobs).await?;
    let settled = jobs.settle(api, &unfinished, SETTLE).await?;
    jobs.count(&settled.states, &mut outcome);
    outcome.recovered = settled.watched_done.map(|at| at - fault);
    let sim = cluster.sim.stats().await? - before;
    outcome.twice = sim.repeated;
    outcome.errors = api.errors.since(since);
    cluster.check_running()?;
    Ok(outcome)
}

/// PostgreSQL stops for `down` and starts again while clients start jobs and read them.
pub async fn postgres_restart(
    cluster: &mut Cluster,
    api: &Api,
    n: usize,
    down: Duration,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(format!(
        "PostgreSQL restart ({} s down), {n} jobs in flight, load flowing",
        down.as_secs()
    ));
    let users = users(api, "postgres", 5).await?;
    let before = cluster.sim.stats().await?;
    let since = Instant::now();
    let mut jobs = Jobs::default();
    start_jobs(api, &users, n, &mut jobs).await?;
    let load = Load::start(api, &users, Duration::from_millis(100));
    let states = wait_for(
        api,
        &jobs,
        Duration::from_secs(300),
        "jobs are at fal",
        |s| count_status(s, &["submitted", "processing"]) > 0,
    )
    .await?;
    let unfinished = ids_with(&states, |s| !s.is_final());
    let stopped = Instant::now();
    cluster.postgres.down()?;
    tokio::time::sleep(down).await;
    cluster.postgres.up()?;
    let back = Instant::now();
    eprintln!(
        "chaos: PostgreSQL restarted with {} jobs unfinished",
        unfinished.len()
    );
    // Load goes on after the restart: errors must stop once PostgreSQL is back.
    tokio::time::sleep(Duration::from_secs(15)).await;
    load.stop(&users, &mut jobs).await?;
    let settled = jobs.settle(api, &unfinished, SETTLE).await?;
    jobs.count(&settled.states, &mut outcome);
    let sim = cluster.sim.stats().await? - before;
    outcome.twice = sim.repeated;
    outcome.errors = api.errors.since(since);
    let last_error = outcome.errors.iter().map(|seen| seen.at).max();
    // Recovered: the last error after PostgreSQL was back (none: at once).
    outcome.recovered =
        Some(last_error.map_or(Duration::ZERO, |at| at.saturating_duration_since(back)));
    let before_stop = outcome
        .errors
        .iter()
        .filter(|seen| seen.at < stopped)
        .count();
    outcome.check(
        format!("no error before the stop ({before_stop})"),
        before_stop == 0,
    );
    let late = outcome
        .errors
        .iter()
        .filter(|seen| seen.at > back + Duration::from_secs(10))
        .count();
    outcome.check(
        format!("no error 10 s after PostgreSQL was back ({late})"),
        late == 0,
    );
    cluster.check_running()?;
    Ok(outcome)
}

/// fal answers 503 to everything for `outage`, while jobs are at fal.
pub async fn fal_outage(
    cluster: &mut Cluster,
    api: &Api,
    n: usize,
    outage: Duration,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(format!(
        "fal outage ({} s of 503), {n} jobs in flight, load flowing",
        outage.as_secs()
    ));
    let users = users(api, "outage", 5).await?;
    let before = cluster.sim.stats().await?;
    let since = Instant::now();
    let mut jobs = Jobs::default();
    start_jobs(api, &users, n, &mut jobs).await?;
    let load = Load::start(api, &users, Duration::from_millis(250));
    wait_for(
        api,
        &jobs,
        Duration::from_secs(300),
        "jobs are at fal",
        |s| count_status(s, &["submitted", "processing"]) > 0,
    )
    .await?;
    let began = Instant::now();
    cluster
        .sim
        .faults(json!({"outage": "unavailable", "outage_ms": outage.as_millis() as u64}))
        .await?;
    // Watch the breaker while fal is out.
    let mut opened = false;
    while began.elapsed() < outage {
        if let Ok(metrics) = cluster.metrics(Role::Processing).await {
            opened |= metrics
                .lines()
                .any(|line| line.starts_with("atelier_fal_breaker_state") && line.ends_with(" 2"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ended = Instant::now();
    let during = cluster.sim.stats().await? - before;
    load.stop(&users, &mut jobs).await?;
    let settled = jobs.settle(api, &[], SETTLE).await?;
    jobs.count(&settled.states, &mut outcome);
    // Recovered: every job finished, from the outage's end.
    outcome.recovered = settled
        .all_done
        .map(|at| at.saturating_duration_since(ended));
    let sim = cluster.sim.stats().await? - before;
    outcome.twice = sim.repeated;
    outcome.errors = api.errors.since(since);
    outcome.check("the circuit breaker opened", opened);
    let settings = &cluster.settings;
    // Open, the breaker lets `probes` calls through each time its open time ends.
    let rounds = outage.as_secs().div_ceil(settings.breaker_open_secs.max(1));
    let bound = settings.breaker_threshold + settings.breaker_probes * rounds;
    outcome.check(
        format!(
            "calls to fal's queue API during the outage: {} ≤ {bound} (threshold {} + {} probes × {rounds} half-open rounds)",
            during.queue_outage_calls, settings.breaker_threshold, settings.breaker_probes,
        ),
        during.queue_outage_calls <= bound,
    );
    cluster.check_running()?;
    Ok(outcome)
}

/// fal 10× slower while one user floods the queue: another user's jobs still finish in
/// reasonable time.
pub async fn fal_slow(cluster: &mut Cluster, api: &Api, flood: usize) -> anyhow::Result<Outcome> {
    const LIGHT_JOBS: usize = 3;
    let mut outcome = Outcome::new(format!(
        "fal 10× slower, one user floods {flood} jobs, another starts {LIGHT_JOBS}"
    ));
    let heavy = users(api, "heavy", 1).await?;
    let light = users(api, "light", 1).await?;
    let before = cluster.sim.stats().await?;
    let since = Instant::now();
    cluster.sim.faults(json!({"slow_factor": 10})).await?;
    // Alone: how long one job takes on the slow fal.
    let mut alone = Jobs::default();
    let started = Instant::now();
    start_jobs(api, &light, 1, &mut alone).await?;
    let baseline = alone
        .settle(api, &[], SETTLE)
        .await?
        .all_done
        .map_or(SETTLE, |at| at - started);
    let mut jobs = Jobs::default();
    start_jobs(api, &heavy, flood, &mut jobs).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut light_jobs = Jobs::default();
    let started = Instant::now();
    start_jobs(api, &light, LIGHT_JOBS, &mut light_jobs).await?;
    let light_took = light_jobs
        .settle(api, &[], SETTLE)
        .await?
        .all_done
        .map(|at| at - started);
    for (user, ids) in light_jobs.by_user.iter().chain(&alone.by_user) {
        for id in ids {
            jobs.add(user, id.clone());
        }
    }
    let settled = jobs.settle(api, &[], SETTLE).await?;
    cluster.sim.faults(json!({})).await?;
    jobs.count(&settled.states, &mut outcome);
    outcome.recovered = light_took;
    let sim = cluster.sim.stats().await? - before;
    outcome.twice = sim.repeated;
    outcome.errors = api.errors.since(since);
    // The light user's jobs wait for a free slot at fal at most, not for the flood.
    let limit = baseline * 3 + Duration::from_secs(5);
    outcome.check(
        format!(
            "the second user's {LIGHT_JOBS} jobs finished in {:.1} s ≤ {:.1} s (3 × one job alone on the slow fal, {:.1} s, + 5 s)",
            light_took.unwrap_or(SETTLE).as_secs_f64(),
            limit.as_secs_f64(),
            baseline.as_secs_f64()
        ),
        light_took.is_some_and(|took| took <= limit),
    );
    cluster.check_running()?;
    Ok(outcome)
}

/// One client following a job's events over SSE, reconnecting with `Last-Event-ID`.
async fn follow(
    api: Api,
    user: User,
    job: String,
    reconnects: Arc<Mutex<Vec<Instant>>>,
) -> anyhow::Result<Vec<i64>> {
    let mut seen: Vec<i64> = Vec::new();
    let deadline = Instant::now() + SETTLE;
    loop {
        ensure!(Instant::now() < deadline, "job {job}'s events never ended");
        let mut request = api
            .http
            .get(format!("{}/api/processing/{job}/events", api.base))
            .bearer_auth(&user.token)
            .header("accept", "text/event-stream")
            .timeout(SETTLE);
        if let Some(last) = seen.last() {
            request = request.header("last-event-id", last.to_string());
        }
        let response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !seen.is_empty() {
            reconnects
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Instant::now());
        }
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut finished = false;
        while let Some(Ok(chunk)) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            // One event per blank line (the gateway sends \n line ends).
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().parse::<i64>().ok();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if let Some(id) = id {
                    seen.push(id);
                    let data: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                    if matches!(
                        data["status"].as_str(),
                        Some("completed" | "failed" | "cancelled")
                    ) {
                        finished = true;
                    }
                }
            }
        }
        if finished {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The gateway is killed while clients follow their jobs' events; a new one starts.
pub async fn gateway_kill(cluster: &mut Cluster, api: &Api, n: usize) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(format!(
        "kill -9 gateway, {n} clients following their jobs' events (SSE)"
    ));
    outcome.allow_unanswered = true;
    let users = users(api, "stream", 2).await?;
    let before = cluster.sim.stats().await?;
    let since = Instant::now();
    // Slow enough that the jobs are still running when the gateway goes.
    cluster.sim.processing_time(4_000).await?;
    let mut jobs = Jobs::default();
    start_jobs(api, &users, n, &mut jobs).await?;
    let reconnects = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for (user, ids) in &jobs.by_user {
        for id in ids {
            clients.push((
                id.clone(),
                user.clone(),
                tokio::spawn(follow(
                    api.clone(),
                    user.clone(),
                    id.clone(),
                    reconnects.clone(),
                )),
            ));
        }
    }
    wait_for(
        api,
        &jobs,
        Duration::from_secs(120),
        "jobs are at fal",
        |s| count_status(s, &["submitted", "processing"]) > 0,
    )
    .await?;
    let load = Load::start(api, &users, Duration::from_millis(250));
    let killed = Instant::now();
    cluster.kill(Role::Gateway)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.spawn(Role::Gateway).await?;
    load.stop(&users, &mut jobs).await?;
    let mut missed = 0usize;
    let mut repeated = 0usize;
    let mut streamed = 0usize;
    for (id, user, client) in clients {
        let seen = client.await.context("a client task")??;
        streamed += seen.len();
        // Everything the job's history holds, read after it ended.
        let all = follow(api.clone(), user, id.clone(), Arc::default()).await?;
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        repeated += seen.len() - unique.len();
        missed += all.iter().filter(|seq| !seen.contains(seq)).count();
    }
    let reconnects = reconnects
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    // Recovered: the last client back on a stream.
    outcome.recovered = reconnects
        .iter()
        .max()
        .map(|at| at.saturating_duration_since(killed));
    cluster.sim.processing_time(200).await?;
    let settled = jobs.settle(api, &[], SETTLE).await?;
    jobs.count(&settled.states, &mut outcome);
    let sim = cluster.sim.stats().await? - before;
    outcome.twice = sim.repeated;
    outcome.errors = api.errors.since(since);
    outcome.check(
        format!(
            "clients reconnected ({} times) and missed no event ({missed} of {streamed} missed, {repeated} seen twice)",
            reconnects.len()
        ),
        missed == 0 && repeated == 0 && !reconnects.is_empty(),
    );
    cluster.check_running()?;
    Ok(outcome)
}
