//! Subscription tiers and what each allows, from configuration.

use std::{collections::BTreeMap, fmt, str::FromStr};

use atelier_common::config;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            },
            Tier::Pro => Self {
                jobs_per_day: Some(1_000),
                concurrent_jobs: Some(50),
                parallel_jobs: Some(5),
                storage_bytes: Some(50 * GIB),
                max_file_size_bytes: Some(50 * MIB),
                max_retention_days: Some(365),
                high_priority: true,
            },
            Tier::Enterprise => Self {
                jobs_per_day: None,
                concurrent_jobs: Some(500),
                parallel_jobs: Some(20),
                storage_bytes: None,
                max_file_size_bytes: Some(100 * MIB),
                max_retention_days: None,
                high_priority: true,
            },
        }
    }
}

/// Every tier's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// `TIER_FREE_JOBS_PER_DAY=100`, `TIER_PRO_STORAGE_BYTES=unlimited` or
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
