//! The operator's figures over a time range: jobs per day per workflow, success
//! rate, processing time and queue wait percentiles, spend and top users.
//!
//! Every figure is computed here from the jobs created in the range, the same
//! way on every database:
//!
//! - **success rate**: completed ÷ (completed + failed); cancelled and unfinished
//!   jobs do not count; 0 when no job finished.
//! - **processing time**: `processing_time_ms` of completed jobs (from a
//!   worker's first claim to completion).
//! - **queue wait**: from creation to a worker's first claim, for jobs a worker
//!   claimed.
//! - **percentiles** are *nearest-rank*: the p-th percentile of n sorted values
//!   is the value at rank ⌈p × n / 100⌉ (1-based), always one of the values; none
//!   when there are no values.
//! - **cost**: each job's charge (its actual cost once final, its estimate while
//!   it runs; see [`super::spend`]), summed in job order and rounded to a
//!   millionth.
//! - **days** are UTC days of the jobs' creation.

use std::collections::{BTreeMap, HashMap};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Status,
    spend::{UserTotal, round_cost},
};

/// What the figures need of one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFacts {
    pub user_id: Uuid,
    pub workflow_id: String,
    pub status: Status,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub processing_time_ms: Option<i64>,
    /// Its charge (see the module documentation).
    pub charge: f64,
}

/// Jobs of one workflow created on one UTC day.
#[derive(Clone, Debug, PartialEq)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub workflow_id: String,
    pub jobs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub cost: f64,
}

/// The figures of one workflow (or of all, with an empty id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub workflow_id: String,
    pub jobs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub success_rate: f64,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub queue_p50_ms: Option<i64>,
    pub queue_p95_ms: Option<i64>,
    pub cost: f64,
}

/// Everything the analytics page shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Analytics {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub totals: Figures,
    pub days: Vec<DayCount>,
    /// By workflow id.
    pub workflows: Vec<Figures>,
    /// Most cost first (then most jobs, then id).
    pub top_users: Vec<UserTotal>,
    /// Bytes and number of every stored image, when the image service told.
    pub storage: Option<(i64, i64)>,
}

/// The `p`-th percentile (0–100) of `sorted` by nearest rank.
pub fn nearest_rank(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

fn figures<'a>(workflow_id: &str, jobs: impl Iterator<Item = &'a JobFacts>) -> Figures {
    let mut figures = Figures {
        workflow_id: workflow_id.to_owned(),
        ..Figures::default()
    };
    let (mut times, mut waits, mut cost) = (Vec::new(), Vec::new(), 0.0);
    for job in jobs {
        figures.jobs += 1;
        match job.status {
            Status::Completed => {
                figures.succeeded += 1;
                if let Some(ms) = job.processing_time_ms {
                    times.push(ms);
                }
            }
            Status::Failed => figures.failed += 1,
            Status::Cancelled => figures.cancelled += 1,
            _ => {}
        }
        if let Some(started) = job.started_at {
            waits.push(((started - job.created_at).whole_milliseconds() as i64).max(0));
        }
        cost += job.charge;
    }
    times.sort_unstable();
    waits.sort_unstable();
    let finished = figures.succeeded + figures.failed;
    figures.success_rate = if finished > 0 {
        (figures.succeeded as f64 / finished as f64 * 10_000.0).round() / 10_000.0
    } else {
        0.0
    };
    figures.p50_ms = nearest_rank(&times, 50);
    figures.p95_ms = nearest_rank(&times, 95);
    figures.queue_p50_ms = nearest_rank(&waits, 50);
    figures.queue_p95_ms = nearest_rank(&waits, 95);
    figures.cost = round_cost(cost);
    figures
}

/// The figures of `jobs` (created in `from..to`, in id order), with the `top`
/// users who spent most.
pub fn compute(
    from: OffsetDateTime,
    to: OffsetDateTime,
    jobs: &[JobFacts],
    top: usize,
) -> Analytics {
    let mut by_workflow: BTreeMap<&str, Vec<&JobFacts>> = BTreeMap::new();
    let mut by_day: BTreeMap<(String, &str), Vec<&JobFacts>> = BTreeMap::new();
    let mut by_user: HashMap<Uuid, (f64, i64)> = HashMap::new();
    for job in jobs {
        by_workflow.entry(&job.workflow_id).or_default().push(job);
        let date = job
            .created_at
            .to_offset(time::UtcOffset::UTC)
            .date()
            .to_string();
        by_day
            .entry((date, &job.workflow_id))
            .or_default()
            .push(job);
        let user = by_user.entry(job.user_id).or_default();
        user.0 += job.charge;
        user.1 += 1;
    }
    let days = by_day
        .into_iter()
        .map(|((date, workflow_id), jobs)| {
            let figures = figures(workflow_id, jobs.into_iter());
            DayCount {
                date,
                workflow_id: workflow_id.to_owned(),
                jobs: figures.jobs,
                succeeded: figures.succeeded,
                failed: figures.failed,
                cancelled: figures.cancelled,
                cost: figures.cost,
            }
        })
        .collect();
    let workflows = by_workflow
        .into_iter()
        .map(|(workflow_id, jobs)| figures(workflow_id, jobs.into_iter()))
        .collect();
    let mut top_users: Vec<UserTotal> = by_user
        .into_iter()
        .map(|(user_id, (cost, jobs))| UserTotal {
            user_id,
            cost: round_cost(cost),
            jobs,
        })
        .collect();
    top_users.sort_by(|a, b| {
        b.cost
            .total_cmp(&a.cost)
            .then(b.jobs.cmp(&a.jobs))
            .then(a.user_id.cmp(&b.user_id))
    });
    top_users.truncate(top);
    Analytics {
        from,
        to,
        totals: figures("", jobs.iter()),
        days,
        workflows,
        top_users,
        storage: None,
    }
}

/// The figures as CSV: one row per day and workflow, then one per workflow (date
/// `all`), then the total (date `all`, workflow `all`).
pub fn csv(analytics: &Analytics) -> String {
    let mut out = String::from(
        "date,workflow_id,jobs,succeeded,failed,cancelled,success_rate,p50_ms,p95_ms,queue_wait_p50_ms,queue_wait_p95_ms,cost\n",
    );
    let opt = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    for day in &analytics.days {
        out.push_str(&format!(
            "{},{},{},{},{},{},,,,,,{}\n",
            day.date,
            csv_field(&day.workflow_id),
            day.jobs,
            day.succeeded,
            day.failed,
            day.cancelled,
            day.cost
        ));
    }
    let all = std::iter::once(("all", &analytics.totals));
    for (workflow, figures) in analytics
        .workflows
        .iter()
        .map(|figures| (figures.workflow_id.as_str(), figures))
        .chain(all)
    {
        out.push_str(&format!(
            "all,{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(workflow),
            figures.jobs,
            figures.succeeded,
            figures.failed,
            figures.cancelled,
            figures.success_rate,
            opt(figures.p50_ms),
            opt(figures.p95_ms),
            opt(figures.queue_p50_ms),
            opt(figures.queue_p95_ms),
            figures.cost
        ));
    }
    out
}

/// A CSV field, quoted when it holds a separator, a quote or a line break (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn nearest_rank_is_always_one_of_the_values() {
        let values: Vec<i64> = (1..=20).map(|v| v * 10).collect();
        assert_eq!(nearest_rank(&values, 50), Some(100));
        assert_eq!(nearest_rank(&values, 95), Some(190));
        assert_eq!(nearest_rank(&values, 100), Some(200));
        assert_eq!(nearest_rank(&values, 0), Some(10));
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        assert_eq!(nearest_rank(&[1, 2, 3], 50), Some(2));
        assert_eq!(nearest_rank(&[], 50), None);
    }

    #[test]
    fn figures_group_by_day_and_workflow() {
        let user = Uuid::from_u128(1);
        let job = |workflow: &str, status, day: u8, ms, charge| JobFacts {
            user_id: user,
            workflow_id: workflow.to_owned(),
            status,
            created_at: datetime!(2026-12-01 10:00 UTC) + time::Duration::days(i64::from(day)),
            started_at: Some(
                datetime!(2026-12-01 10:00:01 UTC) + time::Duration::days(i64::from(day)),
            ),
            processing_time_ms: ms,
            charge,
        };
        let jobs = [
            job("upscale", Status::Completed, 0, Some(100), 0.1),
            job("upscale", Status::Failed, 0, None, 0.0),
            job("upscale", Status::Completed, 1, Some(300), 0.2),
            job("remove-bg", Status::Cancelled, 1, None, 0.0),
        ];
        let analytics = compute(
            datetime!(2026-12-01 00:00 UTC),
            datetime!(2026-12-03 00:00 UTC),
            &jobs,
            10,
        );
        assert_eq!(analytics.days.len(), 3);
        assert_eq!(analytics.days[0].date, "2026-12-01");
        let upscale = &analytics.workflows[1];
        assert_eq!(
            (
                upscale.jobs,
                upscale.succeeded,
                upscale.failed,
                upscale.success_rate
            ),
            (3, 2, 1, 0.6667)
        );
        assert_eq!((upscale.p50_ms, upscale.p95_ms), (Some(100), Some(300)));
        assert_eq!(upscale.queue_p50_ms, Some(1000));
        assert_eq!(analytics.totals.cost, 0.3);
        assert_eq!(analytics.top_users[0].jobs, 4);
        assert!(csv(&analytics).ends_with("all,all,4,2,1,1,0.6667,100,300,1000,1000,0.3\n"));
    }
}
