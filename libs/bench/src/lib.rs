//! What every benchmark shares: whether this is a full run (`make bench`, release, with
//! `--bench`) or the smoke run `cargo test --all-targets` makes of it; statistics over
//! repeated runs; and the report, one row per measurement with the peer or limit measured
//! in the same run, the ratio and the target. Each report is printed and kept as a
//! Markdown fragment that `make bench` gathers into `BENCHMARKS.md`.
//!
//! ```no_run
//! use atelier_bench::{Mode, Report, Row};
//! let mode = Mode::from_args();
//! let mut report = Report::new("queue", "Job queue, Redis");
//! report.row(Row::new("add + process + ack, jobs/s").ours(66_000.0, "jobs/s").peer("BullMQ 5.x", 33_000.0).at_least_ratio(2.0));
//! report.finish(mode);
//! ```

/// The allocator the `atelier` binary runs with, so that a benchmark running the
/// platform in its own process measures what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// How a benchmark binary was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench` (`make bench`): the full measurement, targets enforced.
    Full,
    /// `cargo test --all-targets` runs benchmarks without `--bench`: a short run that
    /// checks every part works (peers included), with targets reported but not enforced.
    Smoke,
}

impl Mode {
    /// [`Mode::Full`] when the arguments hold `--bench`.
    pub fn from_args() -> Self {
        if std::env::args().any(|arg| arg == "--bench") {
            Self::Full
        } else {
            Self::Smoke
        }
    }

    /// `full` in a full run, `smoke` in a smoke run.
    pub fn pick<T>(self, full: T, smoke: T) -> T {
        match self {
            Self::Full => full,
            Self::Smoke => smoke,
        }
    }
}

/// Median and spread of a measurement repeated over several runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// Over `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "a spread needs at least one value");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        }
    }

    /// A single measurement.
    pub fn one(value: f64) -> Self {
        Self::of(&[value])
    }

    fn show(&self, unit: &str) -> String {
        if self.runs > 1 {
            format!(
                "{} {unit} ({}–{}, {} runs)",
                number(self.median),
                number(self.min),
                number(self.max),
                self.runs
            )
        } else {
            format!("{} {unit}", number(self.median))
        }
    }
}

/// The `p` quantile (0 to 1) of `sorted` (ascending, not empty), nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "a percentile of nothing");
    sorted[((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize]
}

/// Milliseconds, as a float, for reports.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// What a row's target is.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    None,
    /// ours ≥ peer × ratio (higher is better).
    RatioAtLeast(f64),
    /// ours ≤ peer × ratio (lower is better; 1.0: no slower than the peer).
    RatioAtMost(f64),
    /// ours ≥ value.
    AtLeast(f64),
    /// ours ≤ value.
    AtMost(f64),
}

/// One measurement: ours, the peer or limit measured in the same run, and the target.
#[derive(Clone, Debug)]
pub struct Row {
    what: String,
    ours: Option<(Spread, String)>,
    peer: Option<(String, Spread)>,
    target: Target,
    note: Option<String>,
}

impl Row {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            ours: None,
            peer: None,
            target: Target::None,
            note: None,
        }
    }

    /// Our figure, in `unit`.
    pub fn ours(self, value: f64, unit: &str) -> Self {
        self.ours_spread(Spread::one(value), unit)
    }

    /// Our figure over repeated runs, in `unit`.
    pub fn ours_spread(mut self, spread: Spread, unit: &str) -> Self {
        self.ours = Some((spread, unit.to_owned()));
        self
    }

    /// The peer (name and version) and its figure, in the same unit as ours.
    pub fn peer(self, name: impl Into<String>, value: f64) -> Self {
        self.peer_spread(name, Spread::one(value))
    }

    pub fn peer_spread(mut self, name: impl Into<String>, spread: Spread) -> Self {
        self.peer = Some((name.into(), spread));
        self
    }

    /// Target: ours at least `ratio` × the peer's (throughput).
    pub fn at_least_ratio(mut self, ratio: f64) -> Self {
        self.target = Target::RatioAtLeast(ratio);
        self
    }

    /// Target: ours at most `ratio` × the peer's (time; 1.0 is "no slower").
    pub fn at_most_ratio(mut self, ratio: f64) -> Self {
        self.target = Target::RatioAtMost(ratio);
        self
    }

    /// Target: ours at least `value`.
    pub fn at_least(mut self, value: f64) -> Self {
        self.target = Target::AtLeast(value);
        self
    }

    /// Target: ours at most `value`.
    pub fn at_most(mut self, value: f64) -> Self {
        self.target = Target::AtMost(value);
        self
    }

    /// A remark shown beside the row (e.g. a second figure such as peak memory).
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn ratio(&self) -> Option<f64> {
        let (ours, _) = self.ours.as_ref()?;
        let (_, peer) = self.peer.as_ref()?;
        (peer.median != 0.0).then(|| ours.median / peer.median)
    }

    /// Whether the target is met (`None`: no target, or nothing measured).
    pub fn met(&self) -> Option<bool> {
        let ours = self.ours.as_ref()?.0.median;
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(r) => self.ratio().map(|x| x >= r),
            Target::RatioAtMost(r) => self.ratio().map(|x| x <= r),
            Target::AtLeast(v) => Some(ours >= v),
            Target::AtMost(v) => Some(ours <= v),
        }
    }

    fn target_text(&self) -> String {
        let unit = self.ours.as_ref().map(|(_, u)| u.as_str()).unwrap_or("");
        match self.target {
            Target::None => "—".into(),
            Target::RatioAtLeast(r) => format!("≥ {}× peer", number(r)),
            Target::RatioAtMost(1.0) => "no slower than peer".into(),
            Target::RatioAtMost(r) => format!("≤ {}× peer", number(r)),
            Target::AtLeast(v) => format!("≥ {} {unit}", number(v)),
            Target::AtMost(v) => format!("≤ {} {unit}", number(v)),
        }
    }

    fn cells(&self) -> [String; 6] {
        let ours = match &self.ours {
            Some((spread, unit)) => spread.show(unit),
            None => "not measured".into(),
        };
        let unit = self.ours.as_ref().map(|(_, u)| u.as_str()).unwrap_or("");
        let peer = match &self.peer {
            Some((name, spread)) => format!("{name}: {}", spread.show(unit)),
            None => "—".into(),
        };
        let ratio = self
            .ratio()
            .map(|r| format!("{r:.2}×"))
            .unwrap_or("—".into());
        let verdict = match self.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None if self.ours.is_none() => "MISSED",
            None => "—",
        };
        let mut what = self.what.clone();
        if let Some(note) = &self.note {
            let _ = write!(what, " ({note})");
        }
        [what, ours, peer, ratio, self.target_text(), verdict.into()]
    }
}

/// A benchmark's rows, printed and kept for `BENCHMARKS.md`.
#[derive(Debug)]
pub struct Report {
    name: String,
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// `name` names the fragment file (`<name>.md`); `title` heads its section.
    pub fn new(name: &str, title: &str) -> Self {
        Self {
            name: name.to_owned(),
            title: title.to_owned(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) -> &mut Self {
        println!("{}", row.cells().join(" | "));
        self.rows.push(row);
        self
    }

    /// A paragraph under the table (how it was measured, peer versions, a plot's file).
    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.notes.push(text.into());
        self
    }

    /// The section as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "## {}\n\n| what | Atelier | peer or limit | ratio | target | |\n|---|---|---|---|---|---|\n",
            self.title
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.cells().join(" | "));
        }
        for note in &self.notes {
            let _ = write!(out, "\n{note}\n");
        }
        out
    }

    /// Prints the table. In a full run it also writes the fragment to
    /// `<dir>/<name>.md` (`dir`: `$BENCH_RESULTS`, else `target/tmp/bench`) and exits
    /// with status 1 when a target was missed; a smoke run never fails on targets, only
    /// on a row with nothing measured.
    pub fn finish(self, mode: Mode) {
        let markdown = self.markdown();
        println!("\n{markdown}");
        let unmeasured = self.rows.iter().any(|row| row.ours.is_none());
        let missed = self.rows.iter().any(|row| row.met() == Some(false));
        if mode == Mode::Full {
            let dir = results_dir();
            std::fs::create_dir_all(&dir).expect("create the bench results directory");
            let path = dir.join(format!("{}.md", self.name));
            std::fs::write(&path, markdown).expect("write the bench fragment");
            println!("bench {}: written to {}", self.name, path.display());
        }
        if unmeasured || (mode == Mode::Full && missed) {
            eprintln!(
                "bench {}: a target was missed or a row not measured",
                self.name
            );
            std::process::exit(1);
        }
    }
}

/// Where full runs keep their fragments: `$BENCH_RESULTS`, else `target/tmp/bench`.
pub fn results_dir() -> PathBuf {
    std::env::var_os("BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp/bench"))
}

/// A number for people: thousands separated, few decimals.
pub fn number(value: f64) -> String {
    if value.abs() >= 1000.0 {
        let whole = value.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The version a command reports (`cmd --version`'s first line), for naming peers.
pub fn version_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{cmd} (version unknown)"))
}

/// Peak resident memory of process `pid` so far (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident memory of process `pid` (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The machine, for the report's header: cores and kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu})")
}

/// One `oha` run's figures (`oha --json`).
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Responses with a status other than 2xx, and requests that failed outright.
    pub errors: u64,
    pub total: u64,
}

/// Runs `oha` against `url` for `duration` with `connections` connections, at `rate`
/// requests per second (`None`: as fast as it goes), with `headers` (`Name: value`), and
/// returns its figures. Latency is corrected for coordinated omission when a rate is set.
pub fn oha(
    url: &str,
    duration: Duration,
    connections: usize,
    rate: Option<u32>,
    headers: &[String],
) -> Result<Load, String> {
    let mut cmd = Command::new("oha");
    cmd.args(["--no-tui", "--output-format", "json", "-z"])
        .arg(format!("{}ms", duration.as_millis()))
        .arg("-c")
        .arg(connections.to_string());
    if let Some(rate) = rate {
        cmd.arg("-q")
            .arg(rate.to_string())
            .arg("--latency-correction");
    }
    for header in headers {
        cmd.arg("-H").arg(header);
    }
    cmd.arg(url);
    let out = cmd.output().map_err(|err| format!("oha: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "oha failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|err| format!("oha output: {err}"))?;
    parse_oha(&json)
}

fn parse_oha(json: &serde_json::Value) -> Result<Load, String> {
    let secs = |value: &serde_json::Value| value.as_f64().map(Duration::from_secs_f64);
    let summary = &json["summary"];
    let percentiles = &json["latencyPercentiles"];
    let mut ok = 0u64;
    let mut errors = 0u64;
    if let Some(codes) = json["statusCodeDistribution"].as_object() {
        for (code, count) in codes {
            let count = count.as_u64().unwrap_or(0);
            if code.starts_with('2') {
                ok += count;
            } else {
                errors += count;
            }
        }
    }
    if let Some(failures) = json["errorDistribution"].as_object() {
        // oha cancels the requests still in flight when `-z` runs out and lists them
        // as "aborted due to deadline": its own doing, not a failure of the server.
        errors += failures
            .iter()
            .filter(|(what, _)| what.as_str() != "aborted due to deadline")
            .filter_map(|(_, count)| count.as_u64())
            .sum::<u64>();
    }
    Ok(Load {
        requests_per_sec: summary["requestsPerSec"]
            .as_f64()
            .ok_or("oha output has no summary.requestsPerSec")?,
        p50: secs(&percentiles["p50"]).ok_or("oha output has no p50")?,
        p99: secs(&percentiles["p99"]).ok_or("oha output has no p99")?,
        errors,
        total: ok + errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_and_the_extremes() {
        let spread = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!(
            (spread.median, spread.min, spread.max, spread.runs),
            (2.5, 1.0, 10.0, 4)
        );
    }

    #[test]
    fn targets_compare_against_the_peer_or_a_limit() {
        let faster = Row::new("jobs/s")
            .ours(70.0, "jobs/s")
            .peer("peer", 33.0)
            .at_least_ratio(2.0);
        assert_eq!(faster.met(), Some(true));
        let slower = Row::new("thumb")
            .ours(140.0, "ms")
            .peer("vips", 135.0)
            .at_most_ratio(1.0);
        assert_eq!(slower.met(), Some(false));
        let p99 = Row::new("p99").ours(1.5, "ms").at_most(2.0);
        assert_eq!(p99.met(), Some(true));
        assert_eq!(Row::new("nothing").at_most(2.0).met(), None);
    }

    #[test]
    fn markdown_has_one_line_per_row() {
        let mut report = Report::new("t", "Test");
        report.row(
            Row::new("a")
                .ours(1234.5, "rps")
                .peer("bare", 2469.0)
                .at_least_ratio(0.15),
        );
        let markdown = report.markdown();
        assert!(
            markdown.contains("| a | 1,235 rps | bare: 2,469 rps | 0.50× | ≥ 0.15× peer | met |"),
            "{markdown}"
        );
    }

    #[test]
    fn oha_json_is_read() {
        let json = serde_json::json!({
            "summary": {"requestsPerSec": 2000.5},
            "latencyPercentiles": {"p50": 0.0004, "p99": 0.0012},
            "statusCodeDistribution": {"200": 990, "503": 10},
            "errorDistribution": {"connection closed": 2}
        });
        let load = parse_oha(&json).expect("parsed");
        assert_eq!(load.requests_per_sec, 2000.5);
        assert_eq!(load.p99, Duration::from_micros(1200));
        assert_eq!((load.errors, load.total), (12, 1002));
    }

    #[test]
    fn requests_oha_cut_off_at_the_deadline_are_not_errors() {
        // oha 1.16's `--output-format json` of a `-z 500ms -c 8` run (abridged).
        let json: serde_json::Value = serde_json::from_str(
            r#"{"summary":{"successRate":1.0,"total":0.5003,"slowest":0.0121,"fastest":0.0004,
            "average":0.0075,"requestsPerSec":1028.72,"totalData":4064,"sizePerRequest":8,
            "sizePerSec":8122.6},"latencyPercentiles":{"p10":0.0041,"p25":0.0062,"p50":0.0074,
            "p75":0.0089,"p90":0.0101,"p95":0.0108,"p99":0.0117,"p99.9":0.0121,"p99.99":0.0121},
            "statusCodeDistribution":{"200":508},
            "errorDistribution":{"aborted due to deadline":8}}"#,
        )
        .expect("json");
        let load = parse_oha(&json).expect("parsed");
        assert_eq!((load.errors, load.total), (0, 508));
        assert_eq!(load.p50, Duration::from_micros(7400));
    }
}
