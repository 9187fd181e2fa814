//! Subscription tiers and what each allows, from configuration; the daily quota
//! window, and what a user used in it.

use std::{collections::BTreeMap, fmt, str::FromStr};

use atelier_common::config;
use time::{Duration, OffsetDateTime, Time};
use uuid::Uuid;

use super::Users;
use crate::error::UserError;

/// A subscription tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    pub const ALL: [Self; 3] = [Self::Free, Self::Pro, Self::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|tier| tier.as_str() == value)
            .ok_or_else(|| format!("unknown tier {value:?}"))
    }
}

/// What one tier allows; `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Jobs started per UTC day.
    pub jobs_per_day: Option<i64>,
    /// Jobs not yet final at once.
    pub concurrent_jobs: Option<i32>,
    /// Jobs running at fal at once; the rest wait in the queue.
    pub parallel_jobs: Option<i32>,
    /// Bytes of stored images.
    pub storage_bytes: Option<i64>,
    /// Size of one uploaded file.
    pub max_file_size_bytes: Option<i64>,
    /// The longest retention a user may choose.
    pub max_retention_days: Option<i32>,
    /// Whether jobs may run at high priority (ahead of normal and low ones).
    pub high_priority: bool,
    /// What the user's jobs may cost at fal per UTC day, in the platform's
    /// currency (`BUDGET_CURRENCY`); no built-in budget.
    pub daily_budget: Option<f64>,
    /// The same per UTC calendar month.
    pub monthly_budget: Option<f64>,
}

const MIB: i64 = 1024 * 1024;
const GIB: i64 = 1024 * MIB;

impl Limits {
    /// The built-in limits of `tier`, before configuration.
    pub fn builtin(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self {
                jobs_per_day: Some(50),
                concurrent_jobs: Some(10),
                parallel_jobs: Some(2),
                storage_bytes: Some(GIB),
                max_file_size_bytes: Some(20 * MIB),
                max_retention_days: Some(30),
                high_priority: false,
                daily_budget: None,
                monthly_budget: None,
            },
            Tier::Pro => Self {
                jobs_per_day: Some(1_000),
                concurrent_jobs: Some(50),
                parallel_jobs: Some(5),
                storage_bytes: Some(50 * GIB),
                max_file_size_bytes: Some(50 * MIB),
                max_retention_days: Some(365),
                high_priority: true,
                daily_budget: None,
                monthly_budget: None,
            },
            Tier::Enterprise => Self {
                jobs_per_day: None,
                concurrent_jobs: Some(500),
                parallel_jobs: Some(20),
                storage_bytes: None,
                max_file_size_bytes: Some(100 * MIB),
                max_retention_days: None,
                high_priority: true,
                daily_budget: None,
                monthly_budget: None,
            },
        }
    }
}

/// Every tier's limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Tiers(BTreeMap<Tier, Limits>);

impl Default for Tiers {
    fn default() -> Self {
        Self(
            Tier::ALL
                .into_iter()
                .map(|tier| (tier, Limits::builtin(tier)))
                .collect(),
        )
    }
}

impl Tiers {
    /// The built-in limits with any `TIER_<TIER>_<LIMIT>` variable applied, e.g.
    /// `TIER_FREE_JOBS_PER_DAY=100`, `TIER_FREE_MONTHLY_BUDGET=5`, `TIER_PRO_STORAGE_BYTES=unlimited` or
    /// `TIER_FREE_HIGH_PRIORITY=true`.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut tiers = Self::default();
        for tier in Tier::ALL {
            let prefix = format!("TIER_{}_", tier.as_str().to_uppercase());
            let limits = tiers.get_mut(tier);
            let name = |limit: &str| format!("{prefix}{limit}");
            read(&name("JOBS_PER_DAY"), &mut limits.jobs_per_day)?;
            read(&name("CONCURRENT_JOBS"), &mut limits.concurrent_jobs)?;
            read(&name("PARALLEL_JOBS"), &mut limits.parallel_jobs)?;
            read(&name("STORAGE_BYTES"), &mut limits.storage_bytes)?;
            read(
                &name("MAX_FILE_SIZE_BYTES"),
                &mut limits.max_file_size_bytes,
            )?;
            read(&name("MAX_RETENTION_DAYS"), &mut limits.max_retention_days)?;
            read(&name("DAILY_BUDGET"), &mut limits.daily_budget)?;
            read(&name("MONTHLY_BUDGET"), &mut limits.monthly_budget)?;
            limits.high_priority = config::var(&name("HIGH_PRIORITY"), limits.high_priority)?;
        }
        Ok(tiers)
    }

    pub fn get(&self, tier: Tier) -> Limits {
        self.0
            .get(&tier)
            .copied()
            .unwrap_or_else(|| Limits::builtin(tier))
    }

    pub fn get_mut(&mut self, tier: Tier) -> &mut Limits {
        self.0.entry(tier).or_insert_with(|| Limits::builtin(tier))
    }
}

/// Reads one limit: a non-negative number, or `unlimited`.
fn read<T: FromStr + PartialOrd + Default>(
    name: &str,
    limit: &mut Option<T>,
) -> anyhow::Result<()> {
    match config::var_opt::<String>(name)?.as_deref().map(str::trim) {
        None => Ok(()),
        Some("unlimited") => {
            *limit = None;
            Ok(())
        }
        Some(raw) => match raw.parse::<T>() {
            Ok(value) if value >= T::default() => {
                *limit = Some(value);
                Ok(())
            }
            _ => {
                anyhow::bail!("{name}: expected a non-negative number or `unlimited`, got {raw:?}")
            }
        },
    }
}

/// The current quota window: the UTC day around `now`.
pub fn quota_window(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let start = now
        .to_offset(time::UtcOffset::UTC)
        .replace_time(Time::MIDNIGHT);
    (start, start + Duration::days(1))
}

/// What a user used: jobs in the current quota window, and storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub jobs_today: i64,
    pub active_jobs: i32,
    pub storage_bytes: i64,
    pub image_count: i64,
    pub period_start: OffsetDateTime,
    pub period_end: OffsetDateTime,
}

/// A user's tier and what it allows now: what the other services enforce.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    pub tier: Tier,
    pub limits: Limits,
    pub period_start: OffsetDateTime,
    pub period_end: OffsetDateTime,
    /// Days the user's images are kept: their setting within the tier's longest;
    /// 0 for the platform's default.
    pub retention_days: i32,
}

impl Users {
    /// What the user used, asked of the services that hold jobs and images.
    pub async fn usage(&self, user_id: Uuid) -> Result<Usage, UserError> {
        let (start, end) = quota_window(self.clock.now());
        let ((jobs_today, active_jobs), (storage_bytes, image_count)) = tokio::try_join!(
            self.peers.jobs.usage(user_id, start),
            self.peers.images.storage(user_id),
        )?;
        Ok(Usage {
            jobs_today,
            active_jobs,
            storage_bytes,
            image_count,
            period_start: start,
            period_end: end,
        })
    }

    /// The user's tier, its limits and the current quota window.
    pub async fn quota(&self, user_id: Uuid) -> Result<Quota, UserError> {
        let profile = self.profile(user_id).await?;
        let limits = self.tiers.get(profile.tier);
        let (period_start, period_end) = quota_window(self.clock.now());
        let retention_days = profile
            .settings
            .retention_days
            .map(|days| limits.max_retention_days.map_or(days, |max| days.min(max)))
            .unwrap_or(0);
        Ok(Quota {
            tier: profile.tier,
            limits,
            period_start,
            period_end,
            retention_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_window_is_the_utc_day() {
        let now = time::macros::datetime!(2026-03-04 17:30 +02:00);
        let (start, end) = quota_window(now);
        assert_eq!(start, time::macros::datetime!(2026-03-04 00:00 UTC));
        assert_eq!(end, time::macros::datetime!(2026-03-05 00:00 UTC));
    }
}
