//! Spend control: what jobs cost at fal, per user and for the platform, per UTC
//! day and UTC calendar month, against budgets.
//!
//! A job's *charge* is its actual cost once final (its successful outputs at
//! fal's price when it started; 0 when it failed or was cancelled: fal bills
//! successful outputs only) and its estimated cost while it runs, so that
//! concurrent starts cannot overrun a budget by what is still running. A job
//! counts in the period it was created in. Budgets apply per user (their
//! tier's, or one an administrator set for them, which replaces both of the
//! tier's) and for the platform (`PLATFORM_MONTHLY_BUDGET`). A start whose
//! estimate would take spend past a budget is refused while `BUDGET_HARD_STOP`
//! holds; reaching `BUDGET_ALERT_PERCENT` (and 100 %) of a budget raises an
//! alert once per scope, period and threshold.

use std::{sync::Arc, time::Duration};

use atelier_common::Clock;
use serde_json::json;
use time::{Date, OffsetDateTime, Time};
use uuid::Uuid;

use super::{
    Quota, Quotas,
    analytics::{self, Analytics},
    outbound::Message,
};
use crate::{error::ProcessingError, store::spend::SpendStore};

/// The event type outgoing webhooks send when a budget threshold is reached.
pub const THRESHOLD_REACHED: &str = "budget.threshold_reached";

/// How budgets are enforced (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSettings {
    /// `BUDGET_ALERT_PERCENT`: the share of a budget (1–100) that raises an alert.
    pub alert_percent: u32,
    /// `BUDGET_HARD_STOP`: whether a start past a budget is refused.
    pub hard_stop: bool,
    /// `PLATFORM_MONTHLY_BUDGET`: what every user's jobs together may cost per
    /// month; `None`: no platform budget.
    pub platform_monthly: Option<f64>,
    /// `BUDGET_CURRENCY`: the currency budgets are in (fal's prices are in USD).
    pub currency: String,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            alert_percent: 80,
            hard_stop: true,
            platform_monthly: None,
            currency: "USD".to_owned(),
        }
    }
}

impl BudgetSettings {
    /// The thresholds that raise alerts, in percent: the configured one and 100.
    pub fn thresholds(&self) -> Vec<u32> {
        let mut thresholds = vec![self.alert_percent.clamp(1, 100), 100];
        thresholds.dedup();
        thresholds
    }
}

/// A budget period: a UTC day or a UTC calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    Day,
    Month,
}

impl PeriodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The period around `now`: its start (inclusive) and end (exclusive).
    pub fn bounds(self, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let now = now.to_offset(time::UtcOffset::UTC);
        match self {
            Self::Day => {
                let start = now.date().midnight().assume_utc();
                (start, start + time::Duration::days(1))
            }
            Self::Month => {
                let first =
                    Date::from_calendar_date(now.year(), now.month(), 1).unwrap_or(now.date());
                let (year, month) = match now.month() {
                    time::Month::December => (now.year() + 1, time::Month::January),
                    month => (now.year(), month.next()),
                };
                let next = Date::from_calendar_date(year, month, 1).unwrap_or(first);
                (
                    first.with_time(Time::MIDNIGHT).assume_utc(),
                    next.with_time(Time::MIDNIGHT).assume_utc(),
                )
            }
        }
    }
}

/// Costs to a millionth of the currency unit, so sums do not show float noise
/// and read the same on every database.
pub fn round_cost(cost: f64) -> f64 {
    (cost * 1_000_000.0).round() / 1_000_000.0
}

/// One stored output of a finished job: its role (`image`, `mask`) and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredOutput<'a> {
    pub role: &'a str,
    pub width: u32,
    pub height: u32,
}

/// What fal bills for a job's successful `outputs` at `unit_price` per `unit`:
/// per output image (`image`), or per megapixel of the output images
/// (`megapixels`); masks are not billed. `None` for a unit that cannot be
/// reckoned from the outputs (e.g. GPU seconds).
pub fn actual_cost(unit_price: f64, unit: &str, outputs: &[StoredOutput<'_>]) -> Option<f64> {
    let images = outputs.iter().filter(|output| output.role != "mask");
    let cost = match unit {
        "image" | "images" => unit_price * images.count() as f64,
        "megapixels" | "megapixel" => {
            unit_price
                * images
                    .map(|output| f64::from(output.width) * f64::from(output.height) / 1_000_000.0)
                    .sum::<f64>()
        }
        _ => return None,
    };
    Some(round_cost(cost))
}

/// What jobs created in a period cost: `spent` by final jobs, `reserved` by
/// unfinished ones (their estimates).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub spent: f64,
    pub reserved: f64,
    pub jobs: i64,
}

impl Totals {
    pub fn total(&self) -> f64 {
        round_cost(self.spent + self.reserved)
    }
}

/// One period's spend against its budget.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodSpend {
    pub kind: PeriodKind,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub totals: Totals,
    pub budget: Option<f64>,
}

impl PeriodSpend {
    /// The share of the budget used, in percent; `None` without a budget.
    pub fn percent(&self) -> Option<f64> {
        let budget = self.budget?;
        Some(if budget > 0.0 {
            (self.totals.total() / budget * 100.0 * 100.0).round() / 100.0
        } else {
            100.0
        })
    }

    /// What is left of the budget (never below 0); `None` without a budget.
    pub fn remaining(&self) -> Option<f64> {
        Some(round_cost((self.budget? - self.totals.total()).max(0.0)))
    }
}

/// Where a user's budgets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetSource {
    /// Their subscription tier's.
    Tier,
    /// An administrator set them for this user.
    Override,
}

impl BudgetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tier => "tier",
            Self::Override => "override",
        }
    }
}

/// The budgets an administrator set for one user; `None`: no budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetOverride {
    pub daily: Option<f64>,
    pub monthly: Option<f64>,
}

/// A budget threshold reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The user's id, or `platform`.
    pub scope: String,
    pub period: PeriodKind,
    pub period_start: OffsetDateTime,
    /// In percent of the budget.
    pub threshold: u32,
    /// The spend that reached it.
    pub spent: f64,
    pub budget: f64,
    pub at: OffsetDateTime,
}

/// The scope of the platform's alerts.
pub const PLATFORM: &str = "platform";

/// A user's spend, budgets and alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSpend {
    pub currency: String,
    pub day: PeriodSpend,
    pub month: PeriodSpend,
    pub source: BudgetSource,
    pub alert_percent: u32,
    pub hard_stop: bool,
    /// Alerts raised in the current month (and day), oldest first.
    pub alerts: Vec<Alert>,
}

/// One user's spend in a period, for the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct UserTotal {
    pub user_id: Uuid,
    pub cost: f64,
    pub jobs: i64,
}

/// The platform's spend.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformSpend {
    pub currency: String,
    pub day: PeriodSpend,
    pub month: PeriodSpend,
    pub alert_percent: u32,
    pub hard_stop: bool,
    /// The users who spent most this month, most first.
    pub top_users: Vec<UserTotal>,
    pub alerts: Vec<Alert>,
}

/// A start refused because it would take spend past a budget.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetExceeded {
    /// `user` or `platform`.
    pub scope: &'static str,
    pub period: PeriodKind,
    pub budget: f64,
    /// Spent and reserved in the period before this start.
    pub spent: f64,
    /// What this start was estimated to cost.
    pub estimate: f64,
    pub currency: String,
    /// When the period ends and the budget is available again.
    pub period_end: OffsetDateTime,
    /// From the refusal to `period_end`.
    pub retry_after: Duration,
}

/// Whether `estimate` more fits `budget` after `totals`: a start with no known
/// cost still fits until the budget is used up.
fn fits(totals: &Totals, estimate: f64, budget: f64) -> bool {
    let total = totals.total();
    if estimate > 0.0 {
        round_cost(total + estimate) <= budget
    } else {
        total < budget
    }
}

/// Spend, budgets and alerts.
pub struct Spend {
    store: SpendStore,
    clock: Arc<dyn Clock>,
    quotas: Arc<Quotas>,
    settings: std::sync::RwLock<BudgetSettings>,
}

impl Spend {
    pub fn new(store: SpendStore, clock: Arc<dyn Clock>, quotas: Arc<Quotas>) -> Self {
        Self {
            store,
            clock,
            quotas,
            settings: std::sync::RwLock::new(BudgetSettings::default()),
        }
    }

    pub fn configure(&self, settings: BudgetSettings) {
        *self
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
    }

    pub fn settings(&self) -> BudgetSettings {
        self.settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The user's budgets and where they come from: an administrator's, else
    /// their tier's.
    async fn budgets(
        &self,
        user_id: Uuid,
        quota: &Quota,
    ) -> Result<(BudgetOverride, BudgetSource), ProcessingError> {
        Ok(match self.store.budget_override(user_id).await? {
            Some(budgets) => (budgets, BudgetSource::Override),
            None => (
                BudgetOverride {
                    daily: quota.daily_budget,
                    monthly: quota.monthly_budget,
                },
                BudgetSource::Tier,
            ),
        })
    }

    async fn period(
        &self,
        user_id: Option<Uuid>,
        kind: PeriodKind,
        now: OffsetDateTime,
        budget: Option<f64>,
    ) -> Result<PeriodSpend, ProcessingError> {
        let (start, end) = kind.bounds(now);
        let totals = self.store.totals(user_id, start, end).await?;
        Ok(PeriodSpend {
            kind,
            start,
            end,
            totals,
            budget,
        })
    }

    /// The periods a start of `user_id`'s is checked against: theirs, and the
    /// platform's month when it has a budget.
    async fn periods(
        &self,
        user_id: Uuid,
        quota: &Quota,
        now: OffsetDateTime,
    ) -> Result<(Vec<(&'static str, PeriodSpend)>, BudgetSource), ProcessingError> {
        let (budgets, source) = self.budgets(user_id, quota).await?;
        let mut periods = Vec::new();
        if budgets.daily.is_some() {
            periods.push((
                "user",
                self.period(Some(user_id), PeriodKind::Day, now, budgets.daily)
                    .await?,
            ));
        }
        if budgets.monthly.is_some() {
            periods.push((
                "user",
                self.period(Some(user_id), PeriodKind::Month, now, budgets.monthly)
                    .await?,
            ));
        }
        if let Some(budget) = self.settings().platform_monthly {
            periods.push((
                PLATFORM,
                self.period(None, PeriodKind::Month, now, Some(budget))
                    .await?,
            ));
        }
        Ok((periods, source))
    }

    /// Refuses a start of `user_id`'s estimated at `estimate` that would take
    /// spend past one of the budgets (with the hard stop on).
    pub async fn admit(
        &self,
        user_id: Uuid,
        quota: &Quota,
        estimate: f64,
    ) -> Result<(), ProcessingError> {
        let settings = self.settings();
        if !settings.hard_stop {
            return Ok(());
        }
        let now = self.clock.now();
        let (periods, _) = self.periods(user_id, quota, now).await?;
        for (scope, period) in periods {
            let Some(budget) = period.budget else {
                continue;
            };
            if !fits(&period.totals, estimate, budget) {
                let wait = (period.end - now).max(time::Duration::SECOND);
                metrics::counter!(
                    "atelier_budget_refusals_total",
                    "scope" => scope,
                    "period" => period.kind.as_str()
                )
                .increment(1);
                tracing::info!(%user_id, scope, period = period.kind.as_str(), budget, spent = period.totals.total(), estimate, "start refused over budget");
                return Err(ProcessingError::BudgetExceeded(Box::new(BudgetExceeded {
                    scope,
                    period: period.kind,
                    budget,
                    spent: period.totals.total(),
                    estimate: round_cost(estimate),
                    currency: settings.currency,
                    period_end: period.end,
                    retry_after: Duration::from_secs(wait.whole_seconds().max(1) as u64),
                })));
            }
        }
        Ok(())
    }

    /// Raises the alerts `user_id`'s spend (and the platform's) has reached and
    /// not raised yet this period: once per scope, period and threshold, however
    /// many jobs pass it. Each is logged, counted, and sent to the user's
    /// webhooks (`budget.threshold_reached`; the platform's only logged and
    /// counted).
    pub async fn raise_alerts(&self, user_id: Uuid, quota: &Quota) -> Result<(), ProcessingError> {
        let now = self.clock.now();
        let settings = self.settings();
        let (periods, _) = self.periods(user_id, quota, now).await?;
        for (scope, period) in periods {
            let Some(budget) = period.budget else {
                continue;
            };
            let total = period.totals.total();
            for threshold in settings.thresholds() {
                let reached = if budget > 0.0 {
                    total * 100.0 >= budget * f64::from(threshold)
                } else {
                    total > 0.0
                };
                if !reached {
                    continue;
                }
                let alert = Alert {
                    scope: if scope == PLATFORM {
                        PLATFORM.to_owned()
                    } else {
                        user_id.to_string()
                    },
                    period: period.kind,
                    period_start: period.start,
                    threshold,
                    spent: total,
                    budget,
                    at: now,
                };
                let message = (scope != PLATFORM)
                    .then(|| alert_message(user_id, &alert, &settings.currency, period.end));
                if self.store.raise(&alert, message.as_ref()).await? {
                    metrics::counter!(
                        "atelier_budget_alerts_total",
                        "scope" => scope,
                        "period" => period.kind.as_str(),
                        "threshold" => threshold.to_string()
                    )
                    .increment(1);
                    tracing::warn!(
                        scope = alert.scope,
                        period = period.kind.as_str(),
                        threshold,
                        spent = total,
                        budget,
                        "budget threshold reached"
                    );
                }
            }
        }
        Ok(())
    }

    /// The user's spend this day and month, budgets and alerts.
    pub async fn of_user(&self, user_id: Uuid) -> Result<UserSpend, ProcessingError> {
        let quota = self.quotas.limits(user_id).await?;
        let now = self.clock.now();
        let settings = self.settings();
        let (budgets, source) = self.budgets(user_id, &quota).await?;
        let day = self
            .period(Some(user_id), PeriodKind::Day, now, budgets.daily)
            .await?;
        let month = self
            .period(Some(user_id), PeriodKind::Month, now, budgets.monthly)
            .await?;
        let alerts = self.store.alerts(&user_id.to_string(), month.start).await?;
        Ok(UserSpend {
            currency: settings.currency,
            day,
            month,
            source,
            alert_percent: settings.alert_percent,
            hard_stop: settings.hard_stop,
            alerts,
        })
    }

    /// The platform's spend this day and month and the users who spent most.
    pub async fn of_platform(&self, top: u64) -> Result<PlatformSpend, ProcessingError> {
        let now = self.clock.now();
        let settings = self.settings();
        let day = self.period(None, PeriodKind::Day, now, None).await?;
        let month = self
            .period(None, PeriodKind::Month, now, settings.platform_monthly)
            .await?;
        let top_users = self.store.top_users(month.start, month.end, top).await?;
        let alerts = self.store.alerts(PLATFORM, month.start).await?;
        Ok(PlatformSpend {
            currency: settings.currency,
            day,
            month,
            alert_percent: settings.alert_percent,
            hard_stop: settings.hard_stop,
            top_users,
            alerts,
        })
    }

    /// Sets the budgets of one user, replacing their tier's.
    pub async fn set_override(
        &self,
        user_id: Uuid,
        budgets: BudgetOverride,
    ) -> Result<(), ProcessingError> {
        let mut refusals = Vec::new();
        for (field, value) in [("daily", budgets.daily), ("monthly", budgets.monthly)] {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                refusals.push(atelier_common::FieldViolation::new(
                    field,
                    "must be a non-negative amount",
                ));
            }
        }
        if !refusals.is_empty() {
            return Err(ProcessingError::InvalidInput(refusals));
        }
        self.store
            .set_override(user_id, budgets, self.clock.now())
            .await?;
        tracing::info!(%user_id, daily = budgets.daily, monthly = budgets.monthly, "budget override set");
        Ok(())
    }

    /// Removes the budgets set for one user: their tier's apply again. False
    /// when there were none.
    pub async fn clear_override(&self, user_id: Uuid) -> Result<bool, ProcessingError> {
        Ok(self.store.clear_override(user_id).await?)
    }

    /// The operator's figures over jobs created in `from..to` (see
    /// [`super::analytics`]), with the `top` users who spent most.
    pub async fn analytics(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        top: usize,
    ) -> Result<Analytics, ProcessingError> {
        let jobs = self.store.job_facts(from, to).await?;
        Ok(analytics::compute(from, to, &jobs, top))
    }

    /// Forgets `user_id`'s budget and alerts (their account is deleted).
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), ProcessingError> {
        Ok(self.store.delete_user(user_id).await?)
    }

    /// The budgets set for one user, if any.
    pub async fn override_of(
        &self,
        user_id: Uuid,
    ) -> Result<Option<BudgetOverride>, ProcessingError> {
        Ok(self.store.budget_override(user_id).await?)
    }
}

/// Keeps the analytics gauges current: every `every`, the figures of the jobs
/// created in the last 24 hours, this UTC day's and month's platform spend, and
/// the bytes stored, read from the database. Every replica exports the same
/// values (they come from the shared database), so queries aggregate with
/// `max without (instance, pod)` rather than `sum`.
pub fn spawn_gauges(
    spend: Arc<Spend>,
    storage: Option<Arc<dyn crate::peers::StorageSource>>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        loop {
            if let Err(err) = spend.export_gauges(storage.as_deref(), &mut seen).await {
                tracing::warn!(error = %err, "analytics gauges not refreshed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

impl Spend {
    /// Sets the analytics gauges once (see [`spawn_gauges`]); `seen` holds the
    /// workflows given gauges before, set to 0 when they had no job since.
    pub async fn export_gauges(
        &self,
        storage: Option<&dyn crate::peers::StorageSource>,
        seen: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), ProcessingError> {
        let now = self.clock.now();
        let figures = self
            .analytics(now - time::Duration::days(1), now, 0)
            .await?;
        let name = |figures: &analytics::Figures| {
            if figures.workflow_id.is_empty() {
                "all".to_owned()
            } else {
                figures.workflow_id.clone()
            }
        };
        let mut all: Vec<analytics::Figures> = std::iter::once(figures.totals)
            .chain(figures.workflows)
            .collect();
        let current: std::collections::BTreeSet<String> = all.iter().map(name).collect();
        for gone in seen.difference(&current) {
            all.push(analytics::Figures {
                workflow_id: gone.clone(),
                ..analytics::Figures::default()
            });
        }
        seen.extend(current);
        for figures in &all {
            let workflow = name(figures);
            for (status, count) in [
                ("completed", figures.succeeded),
                ("failed", figures.failed),
                ("cancelled", figures.cancelled),
                (
                    "unfinished",
                    figures.jobs - figures.succeeded - figures.failed - figures.cancelled,
                ),
            ] {
                metrics::gauge!("atelier_analytics_jobs", "workflow" => workflow.clone(), "status" => status)
                    .set(count as f64);
            }
            metrics::gauge!("atelier_analytics_success_ratio", "workflow" => workflow.clone())
                .set(figures.success_rate);
            for (quantile, processing, wait) in [
                ("0.5", figures.p50_ms, figures.queue_p50_ms),
                ("0.95", figures.p95_ms, figures.queue_p95_ms),
            ] {
                metrics::gauge!("atelier_analytics_processing_seconds", "workflow" => workflow.clone(), "quantile" => quantile)
                    .set(processing.unwrap_or_default() as f64 / 1000.0);
                metrics::gauge!("atelier_analytics_queue_wait_seconds", "workflow" => workflow.clone(), "quantile" => quantile)
                    .set(wait.unwrap_or_default() as f64 / 1000.0);
            }
            metrics::gauge!("atelier_analytics_cost", "workflow" => workflow).set(figures.cost);
        }
        let platform = self.of_platform(0).await?;
        for period in [&platform.day, &platform.month] {
            metrics::gauge!("atelier_spend", "period" => period.kind.as_str())
                .set(period.totals.total());
        }
        if let Some(budget) = platform.month.budget {
            metrics::gauge!("atelier_spend_budget", "period" => "month").set(budget);
        }
        if let Some(storage) = storage {
            let (bytes, images) = storage.platform_storage().await?;
            metrics::gauge!("atelier_storage_bytes").set(bytes as f64);
            metrics::gauge!("atelier_storage_images").set(images as f64);
        }
        Ok(())
    }
}

/// The `budget.threshold_reached` webhook message of `alert`; its key makes it
/// one per scope, period and threshold.
fn alert_message(
    user_id: Uuid,
    alert: &Alert,
    currency: &str,
    period_end: OffsetDateTime,
) -> Message {
    use super::outbound::payload::rfc3339;
    let data = json!({
        "period": alert.period.as_str(),
        "period_start": rfc3339(alert.period_start),
        "period_end": rfc3339(period_end),
        "threshold_percent": alert.threshold,
        "spent": alert.spent,
        "budget": alert.budget,
        "currency": currency,
    });
    let payload = json!({"type": THRESHOLD_REACHED, "timestamp": rfc3339(alert.at), "data": data})
        .to_string();
    Message {
        id: Uuid::now_v7(),
        user_id,
        event_type: THRESHOLD_REACHED.to_owned(),
        payload,
        dedupe_key: Some(format!(
            "{THRESHOLD_REACHED}:{}:{}:{}:{}",
            alert.scope,
            alert.period.as_str(),
            alert.period_start.unix_timestamp(),
            alert.threshold
        )),
        created_at: alert.at,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn periods_are_the_utc_day_and_calendar_month() {
        let now = datetime!(2026-12-31 23:59:59 +02:00);
        assert_eq!(
            PeriodKind::Day.bounds(now),
            (
                datetime!(2026-12-31 00:00 UTC),
                datetime!(2027-01-01 00:00 UTC)
            )
        );
        assert_eq!(
            PeriodKind::Month.bounds(now),
            (
                datetime!(2026-12-01 00:00 UTC),
                datetime!(2027-01-01 00:00 UTC)
            )
        );
        assert_eq!(
            PeriodKind::Month.bounds(datetime!(2027-02-10 08:00 UTC)),
            (
                datetime!(2027-02-01 00:00 UTC),
                datetime!(2027-03-01 00:00 UTC)
            )
        );
    }

    #[test]
    fn actual_cost_bills_the_output_images_in_the_price_unit() {
        let outputs = [
            StoredOutput {
                role: "image",
                width: 2000,
                height: 1000,
            },
            StoredOutput {
                role: "image",
                width: 1000,
                height: 1000,
            },
            StoredOutput {
                role: "mask",
                width: 2000,
                height: 1000,
            },
        ];
        assert_eq!(actual_cost(0.002, "image", &outputs), Some(0.004));
        assert_eq!(actual_cost(0.025, "megapixels", &outputs), Some(0.075));
        assert_eq!(actual_cost(0.001, "second", &outputs), None);
        assert_eq!(actual_cost(0.002, "image", &[]), Some(0.0));
    }

    #[test]
    fn a_start_fits_up_to_the_budget_and_an_unknown_cost_until_it_is_used_up() {
        let totals = Totals {
            spent: 0.7,
            reserved: 0.2,
            jobs: 3,
        };
        assert!(fits(&totals, 0.1, 1.0), "exactly the budget fits");
        assert!(!fits(&totals, 0.100001, 1.0));
        assert!(fits(&totals, 0.0, 1.0));
        let used_up = Totals {
            spent: 1.0,
            reserved: 0.0,
            jobs: 4,
        };
        assert!(!fits(&used_up, 0.0, 1.0));
    }

    #[test]
    fn thresholds_are_the_alert_percent_and_the_whole_budget() {
        assert_eq!(BudgetSettings::default().thresholds(), vec![80, 100]);
        let at_100 = BudgetSettings {
            alert_percent: 100,
            ..BudgetSettings::default()
        };
        assert_eq!(at_100.thresholds(), vec![100]);
    }
}
