//! How fast `GET /api/processing/:id/status` answers through the gateway, against
//! the HTTP ceiling of this machine: a bare axum server (same process, runtime of
//! its own) answering the same body bytes with the same headers. `oha` offers 1k,
//! 2k and 5k requests a second (latency corrected for coordinated omission) and then
//! as many as it can, to each. Targets, on PostgreSQL + Redis (the production
//! setup): p99 ≤ 2 ms at 2k rps, and a maximum rate of at least 15% of bare axum's.
//! SQLite (the embedded default, in-process queue) is reported beside it.
//!
//! `make bench` runs it in full (writes `status.md` and the plot `status.svg` to
//! `$BENCH_RESULTS`); `cargo test` runs a few hundred requests at a low rate to each
//! side and checks every one was answered 200.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use atelier_bench::{Load, Mode, Report, Row, Spread, number, oha, results_dir};
use atelier_testbed::{Backend, LimitConfig, Options, QueueBackend, TestPlatform};
use atelier_testkit::{fixtures, rest};
use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, HeaderName, header},
    routing::get,
};
use reqwest::StatusCode;

/// Offered rates, requests a second.
const RATES: [u32; 3] = [1_000, 2_000, 5_000];
const TARGET_P99_MS: f64 = 2.0;
const TARGET_MAX_RATIO: f64 = 0.15;

struct Settings {
    runs: usize,
    rates: Vec<u32>,
    duration: Duration,
    /// Connections oha keeps open at a set rate, and at its maximum.
    rate_connections: usize,
    max_connections: usize,
    /// Whether to drive each side as fast as it goes.
    max: bool,
}

/// What was measured of one server.
#[derive(Default)]
struct Side {
    /// p99 in ms, per offered rate, one value per run.
    p99: Vec<(u32, Vec<f64>)>,
    /// Requests a second at oha's maximum, one value per run.
    max: Vec<f64>,
}

fn load(url: &str, settings: &Settings, rate: Option<u32>, token: Option<&str>) -> Load {
    let connections = match rate {
        Some(_) => settings.rate_connections,
        None => settings.max_connections,
    };
    let headers: Vec<String> = token
        .map(|token| format!("Authorization: Bearer {token}"))
        .into_iter()
        .collect();
    let load = oha(url, settings.duration, connections, rate, &headers)
        .unwrap_or_else(|err| panic!("oha against {url}: {err}"));
    assert!(
        load.total > 0 && load.requests_per_sec > 0.0,
        "{url}: nothing measured ({load:?})"
    );
    assert_eq!(
        load.errors, 0,
        "{url}: {} of {} requests were not answered 200",
        load.errors, load.total
    );
    load
}

/// Runs every load against `url`, `settings.runs` times.
fn measure(url: &str, token: Option<&str>, settings: &Settings) -> Side {
    let mut side = Side::default();
    for &rate in &settings.rates {
        let p99 = (0..settings.runs)
            .map(|_| atelier_bench::ms(load(url, settings, Some(rate), token).p99))
            .collect();
        side.p99.push((rate, p99));
    }
    if settings.max {
        side.max = (0..settings.runs)
            .map(|_| load(url, settings, None, token).requests_per_sec)
            .collect();
    }
    side
}

/// The bare server: `body` with `headers` on the same route, on a runtime of its own.
fn bare(body: Bytes, headers: HeaderMap) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("bare runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bare listener");
            tx.send(listener.local_addr().expect("address"))
                .expect("report the address");
            let app = Router::new().route(
                "/api/processing/{job_id}/status",
                get(move || {
                    let (body, headers) = (body.clone(), headers.clone());
                    async move { (headers, body) }
                }),
            );
            axum::serve(listener, app).await.expect("bare server");
        });
    });
    rx.recv().expect("the bare server's address")
}

struct Ours {
    _platform: TestPlatform,
    url: String,
    token: String,
    body: Bytes,
    headers: HeaderMap,
}

/// A platform on `backend` with a signed-up user and one completed job (an output
/// with signed URLs, so the status is a full one).
async fn boot(backend: Backend, knobs: &Knobs) -> Ours {
    let mut options = Options::new(backend);
    options.status_cache_ttl = knobs.cache;
    if backend == Backend::Postgres {
        options.queue = QueueBackend::Redis;
    }
    // Rate limits are not what is measured: high enough never to refuse.
    options.limits = LimitConfig {
        per_ip: 1_000_000_000,
        per_user: 1_000_000_000,
        credentials_per_ip: 1_000_000_000,
        per_key: 1_000_000_000,
    };
    let platform = TestPlatform::spawn_with(options).await;
    let user = rest::sign_up(&platform, "bench@example.com").await;
    let image = rest::upload(&platform, &user, fixtures::png(64, 64)).await;
    let job = rest::start_job(&platform, &user, &image, "lineart", serde_json::json!({})).await;
    let done = rest::finished(&platform, &user, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    let url = format!(
        "{}/api/processing/{job}/status{}",
        platform.gateway_url,
        knobs
            .include
            .as_deref()
            .map(|include| format!("?include={include}"))
            .unwrap_or_default()
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("status");
    assert_eq!(response.status(), StatusCode::OK);
    let mut headers = response.headers().clone();
    for dynamic in [
        header::DATE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(dynamic);
    }
    // The request id is per request on our side; the bare side sends one as long.
    headers.insert(
        HeaderName::from_static("x-request-id"),
        uuid::Uuid::new_v4().to_string().parse().expect("header"),
    );
    let body = response.bytes().await.expect("body");
    assert!(
        serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|job| job["outputs"]
            .as_array()
            .is_some_and(|outputs| !outputs.is_empty())),
        "the status has no outputs: {}",
        String::from_utf8_lossy(&body)
    );
    Ours {
        _platform: platform,
        url,
        token: user.token,
        body,
        headers,
    }
}

/// One curve of the plot: its name, its dash pattern, (rate, p99 ms) points.
struct Series {
    name: String,
    dash: &'static str,
    points: Vec<(u32, f64)>,
}

/// The plot: p99 against the offered rate, ours and bare per backend, log scale.
fn plot(series: &[Series]) -> String {
    let (width, height, left, bottom, top, right) = (640.0, 360.0, 60.0, 40.0, 20.0, 180.0);
    let max_rate = RATES[RATES.len() - 1] as f64;
    let values = series
        .iter()
        .flat_map(|series| series.points.iter().map(|(_, p99)| *p99));
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| {
        (lo.min(v.max(0.01)), hi.max(v))
    });
    let (low, high) = (
        10f64.powf(low.log10().floor()),
        10f64.powf(high.log10().ceil().max(low.log10().floor() + 1.0)),
    );
    let x = |rate: f64| left + rate / max_rate * (width - left - right);
    let y = |ms: f64| {
        top + (high.log10() - ms.max(low).log10()) / (high.log10() - low.log10())
            * (height - top - bottom)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"13\">GET /api/processing/:id/status, p99 (ms, log scale) by offered rate (rps)</text>\n"
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        height - bottom,
        width - right,
        height - bottom,
        height - bottom
    );
    for rate in RATES {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(rate as f64),
            height - bottom + 15.0,
            rate_text(rate)
        );
    }
    let mut decade = low;
    while decade <= high * 1.001 {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{0}\" text-anchor=\"end\" dy=\"4\">{3}</text>",
            y(decade),
            width - right,
            left - 5.0,
            decade
        );
        decade *= 10.0;
    }
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    for (index, Series { name, dash, points }) in series.iter().enumerate() {
        let colour = colours[index % colours.len()];
        let line: Vec<String> = points
            .iter()
            .map(|(rate, p99)| format!("{:.1},{:.1}", x(*rate as f64), y(*p99)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>",
            line.join(" ")
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
            width - right + 10.0,
            top + 20.0 + 16.0 * index as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `1,000`, `200`.
fn rate_text(rate: u32) -> String {
    if rate >= 1000 {
        number(f64::from(rate))
    } else {
        rate.to_string()
    }
}

fn medians(side: &Side) -> Vec<(u32, f64)> {
    side.p99
        .iter()
        .map(|(rate, values)| (*rate, Spread::of(values).median))
        .collect()
}

/// What a run may change to see where the time goes (environment variables).
struct Knobs {
    /// `STATUS_BENCH_CACHE_MS`: the gateway's `JOB_STATUS_CACHE_MS` (default 1000;
    /// 0 measures every request going through to the processing service).
    cache: Duration,
    /// `STATUS_BENCH_INCLUDE`: an `include` for every request (e.g.
    /// `logs,queue_position`, the reads every request made before).
    include: Option<String>,
    /// `STATUS_BENCH_BACKENDS`: `postgres`, `sqlite` or both (default).
    backends: Vec<Backend>,
}

impl Knobs {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let cache = var("STATUS_BENCH_CACHE_MS")
            .map(|ms| ms.parse().expect("STATUS_BENCH_CACHE_MS: milliseconds"))
            .unwrap_or(1000);
        let backends = var("STATUS_BENCH_BACKENDS")
            .unwrap_or_else(|| "postgres,sqlite".into())
            .split(',')
            .map(|name| match name.trim() {
                "postgres" => Backend::Postgres,
                "sqlite" => Backend::Sqlite,
                other => panic!("STATUS_BENCH_BACKENDS: {other:?} is neither postgres nor sqlite"),
            })
            .collect();
        Self {
            cache: Duration::from_millis(cache),
            include: var("STATUS_BENCH_INCLUDE"),
            backends,
        }
    }

    /// What differs from the default run, for the report.
    fn describe(&self) -> String {
        let mut changed = Vec::new();
        if self.cache != Duration::from_millis(1000) {
            changed.push(format!("`JOB_STATUS_CACHE_MS={}`", self.cache.as_millis()));
        }
        if let Some(include) = &self.include {
            changed.push(format!("`?include={include}`"));
        }
        if changed.is_empty() {
            String::new()
        } else {
            format!(" This run: {}.", changed.join(", "))
        }
    }
}

fn main() {
    let mode = Mode::from_args();
    let knobs = Knobs::from_env();
    let settings = match mode {
        Mode::Full => Settings {
            runs: 3,
            rates: RATES.to_vec(),
            duration: Duration::from_secs(6),
            rate_connections: 16,
            max_connections: 64,
            max: true,
        },
        // A few hundred requests at a low rate to each side.
        Mode::Smoke => Settings {
            runs: 1,
            rates: vec![200],
            duration: Duration::from_millis(1500),
            rate_connections: 4,
            max_connections: 4,
            max: false,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut report = Report::new("status", "Job status through the gateway");
    let mut series = Vec::new();
    for &backend in &knobs.backends {
        let name = match backend {
            Backend::Postgres => "PostgreSQL + Redis",
            Backend::Sqlite => "SQLite",
        };
        let booting = Instant::now();
        let ours = runtime.block_on(boot(backend, &knobs));
        println!(
            "status, {name}: platform up and a job completed in {:.1} s",
            booting.elapsed().as_secs_f64()
        );
        let bare_addr = bare(ours.body.clone(), ours.headers.clone());
        let bare_url = format!("http://{bare_addr}/api/processing/job/status");
        let ours_side = measure(&ours.url, Some(&ours.token), &settings);
        let bare_side = measure(&bare_url, None, &settings);
        let targets = backend == Backend::Postgres;
        for ((rate, ours_p99), (_, bare_p99)) in ours_side.p99.iter().zip(&bare_side.p99) {
            let mut row = Row::new(format!("{name}: p99 at {} rps", rate_text(*rate)))
                .ours_spread(Spread::of(ours_p99), "ms")
                .peer_spread("bare axum", Spread::of(bare_p99));
            if targets && *rate == 2_000 {
                row = row.at_most(TARGET_P99_MS);
            }
            report.row(row);
        }
        if settings.max {
            let mut row = Row::new(format!("{name}: max rate"))
                .ours_spread(Spread::of(&ours_side.max), "rps")
                .peer_spread("bare axum", Spread::of(&bare_side.max));
            if targets {
                row = row.at_least_ratio(TARGET_MAX_RATIO);
            }
            report.row(row);
        }
        series.push(Series {
            name: format!("ours, {name}"),
            dash: "",
            points: medians(&ours_side),
        });
        series.push(Series {
            name: format!("bare axum, {name}"),
            dash: "5,3",
            points: medians(&bare_side),
        });
        drop(ours);
    }
    if mode == Mode::Full {
        let dir = results_dir();
        std::fs::create_dir_all(&dir).expect("results directory");
        std::fs::write(dir.join("status.svg"), plot(&series)).expect("write the plot");
    }
    report.note(format!(
        "`oha` {} from the same machine ({}): {} s per load, {} connections at a set rate \
         (`-q`, `--latency-correction`), {} at the maximum; {} runs each, median and spread. \
         The job is a completed one with an output (signed URLs in the body); the bare axum \
         server runs in the same process on a runtime of its own and answers the same body \
         bytes with the same headers. PostgreSQL rows run with Redis (rate limits, queue, \
         event bus), as in production; the targets apply there. SQLite rows are the \
         embedded default. The plot below shows p99 by offered rate, ours and bare axum.{}",
        atelier_bench::version_of("oha", &["--version"]),
        atelier_bench::machine(),
        settings.duration.as_secs_f64(),
        settings.rate_connections,
        settings.max_connections,
        settings.runs,
        knobs.describe(),
    ));
    report.finish(mode);
}
