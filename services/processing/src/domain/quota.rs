//! The caller's subscription-tier limits, from the user service: checked when jobs
//! start or are retried, and the queue's per-user parallelism.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use atelier_common::QuotaExceeded;
use time::OffsetDateTime;
use uuid::Uuid;

use super::job::{Priority, Status};
pub use crate::peers::Quota;
use crate::{error::ProcessingError, peers::TierSource, store::Store};

/// How long a user's limits are trusted before they are asked for again.
const TTL: Duration = Duration::from_secs(30);
/// Jobs of one user run at once while their tier is not known yet.
const DEFAULT_PARALLEL: usize = 2;

impl Quota {
    /// Refuses `priority` when the tier does not allow it.
    pub fn allow(&self, priority: Priority) -> Result<(), ProcessingError> {
        if priority == Priority::High && !self.high_priority {
            return Err(ProcessingError::PriorityNotAllowed(self.tier.clone()));
        }
        Ok(())
    }

    /// The priority a retried job runs at: its own, unless the tier no longer
    /// allows it (then normal).
    pub fn retry_priority(&self, priority: Priority) -> Priority {
        match priority {
            Priority::High if !self.high_priority => Priority::Normal,
            other => other,
        }
    }

    /// Whether the tier limits neither runs nor unfinished jobs: then there is
    /// nothing to count before admitting.
    pub fn counts_nothing(&self) -> bool {
        self.jobs_per_day.is_none() && self.concurrent_jobs.is_none()
    }

    /// Whether `requested` more runs fit, given the runs `started` in the window (a
    /// job's start and each of its retries) and the jobs `active` (not final).
    pub fn admit(&self, requested: i64, started: i64, active: i64) -> Result<(), QuotaExceeded> {
        let refuse = |limit: &str, allowed: i64, used: i64, resets_at| QuotaExceeded {
            limit: limit.to_owned(),
            allowed,
            used,
            requested,
            tier: self.tier.clone(),
            resets_at,
        };
        if let Some(allowed) = self.jobs_per_day
            && started + requested > allowed
        {
            return Err(refuse(
                "jobs_per_day",
                allowed,
                started,
                Some(self.period_end),
            ));
        }
        if let Some(allowed) = self.concurrent_jobs.map(i64::from)
            && active + requested > allowed
        {
            return Err(refuse("concurrent_jobs", allowed, active, None));
        }
        Ok(())
    }
}

/// The limits of the users the service meets, cached for [`TTL`].
pub struct Quotas {
    tiers: Arc<dyn TierSource>,
    cache: Mutex<HashMap<Uuid, (Instant, Quota)>>,
}

impl Quotas {
    pub fn new(tiers: Arc<dyn TierSource>) -> Arc<Self> {
        Arc::new(Self {
            tiers,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, user_id: Uuid) -> Option<Quota> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(&user_id)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, quota)| quota.clone())
    }

    async fn fetch(&self, user_id: Uuid) -> Result<Quota, ProcessingError> {
        let quota = self.tiers.quota(user_id).await?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() > 100_000 {
            cache.retain(|_, (at, _)| at.elapsed() < TTL);
        }
        cache.insert(user_id, (Instant::now(), quota.clone()));
        Ok(quota)
    }

    /// The user's tier and limits. Always asks the user service, so a new quota
    /// window or tier applies at once.
    pub async fn limits(&self, user_id: Uuid) -> Result<Quota, ProcessingError> {
        self.fetch(user_id).await
    }

    /// The user's limits, having refused `requested` more jobs at `priority` early
    /// when they would not fit as things stand. Only a first answer: the jobs are
    /// admitted for good when they are written, atomically (`Store::insert_admitted`).
    ///
    /// Limits seen within [`TTL`] (and within their quota window) serve when they
    /// admit the jobs; a refusal is only ever made on limits asked for just now. So
    /// a raised limit (an upgrade, a new window) applies at once, a lowered one
    /// within [`TTL`], and a user starting many jobs is not one more query each.
    pub async fn admit(
        &self,
        store: &Store,
        user_id: Uuid,
        requested: i64,
        priority: Priority,
        now: OffsetDateTime,
    ) -> Result<Quota, ProcessingError> {
        if let Some(quota) = self.cached(user_id)
            && now < quota.period_end
            && Self::check(&quota, store, user_id, requested, priority)
                .await
                .is_ok()
        {
            return Ok(quota);
        }
        let quota = self.fetch(user_id).await?;
        Self::check(&quota, store, user_id, requested, priority).await?;
        Ok(quota)
    }

    async fn check(
        quota: &Quota,
        store: &Store,
        user_id: Uuid,
        requested: i64,
        priority: Priority,
    ) -> Result<(), ProcessingError> {
        quota.allow(priority)?;
        if quota.counts_nothing() {
            return Ok(());
        }
        let (started, active) = store
            .usage(user_id, quota.period_start, &Status::UNFINISHED)
            .await?;
        quota
            .admit(requested, started as i64, active as i64)
            .map_err(ProcessingError::QuotaExceeded)
    }

    /// How many of the user's jobs the queue lets run at once. Called by the queue, so
    /// it never waits: an unknown user gets the default now and their tier's number
    /// once it has been fetched in the background.
    pub fn parallel(self: &Arc<Self>, user_id: Uuid) -> usize {
        if let Some(quota) = self.cached(user_id) {
            return quota
                .parallel_jobs
                .map_or(usize::MAX, |jobs| jobs.max(1) as usize);
        }
        let quotas = self.clone();
        tokio::spawn(async move {
            if let Err(err) = quotas.fetch(user_id).await {
                tracing::warn!(%user_id, error = %err, "fetching a user's limits failed");
            }
        });
        DEFAULT_PARALLEL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        Quota {
            tier: "free".to_owned(),
            jobs_per_day: Some(3),
            concurrent_jobs: Some(2),
            parallel_jobs: Some(1),
            high_priority: false,
            period_start: time::macros::datetime!(2026-01-01 00:00 UTC),
            period_end: time::macros::datetime!(2026-01-02 00:00 UTC),
            daily_budget: None,
            monthly_budget: None,
        }
    }

    #[test]
    fn the_daily_limit_refuses_with_its_reset_time() {
        assert!(quota().admit(1, 2, 0).is_ok());
        let refused = quota().admit(2, 2, 0).err();
        assert_eq!(
            refused.map(|q| (q.limit, q.allowed, q.used, q.requested, q.resets_at)),
            Some((
                "jobs_per_day".to_owned(),
                3,
                2,
                2,
                Some(time::macros::datetime!(2026-01-02 00:00 UTC))
            ))
        );
    }

    #[test]
    fn high_priority_is_refused_where_the_tier_does_not_allow_it() {
        assert!(quota().allow(Priority::Normal).is_ok());
        assert!(matches!(
            quota().allow(Priority::High),
            Err(ProcessingError::PriorityNotAllowed(tier)) if tier == "free"
        ));
        assert_eq!(quota().retry_priority(Priority::High), Priority::Normal);
        assert_eq!(quota().retry_priority(Priority::Low), Priority::Low);
    }

    #[test]
    fn the_concurrency_limit_does_not_reset_by_itself() {
        let refused = quota().admit(1, 0, 2).err();
        assert_eq!(
            refused.map(|q| (q.limit, q.resets_at)),
            Some(("concurrent_jobs".to_owned(), None))
        );
    }
}
