//! Failed sign-ins per account: after a few, each further attempt waits twice as
//! long as the one before (1 s, 2 s, 4 s, ...), up to a cap. The count starts
//! over after a quiet spell or a successful sign-in, so nobody can lock an
//! account for longer than the cap by failing on purpose.

use std::time::Duration;

use time::OffsetDateTime;

/// How failed sign-ins slow the next ones down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// `LOGIN_BACKOFF_AFTER`: failures allowed before the first delay.
    pub free_failures: u32,
    /// The first delay; each failure after it doubles it.
    pub base: Duration,
    /// `LOGIN_BACKOFF_MAX_SECS`: the longest delay.
    pub max: Duration,
    /// `LOGIN_BACKOFF_RESET_SECS`: a failure this long ago is forgotten, and the
    /// count starts over.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
            reset_after: Duration::from_secs(60 * 60),
        }
    }
}

impl Backoff {
    /// How long password attempts wait after the `failures`-th failure in a row.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        let doublings = failures.checked_sub(self.free_failures.max(1))?;
        let factor = 1u32 << doublings.min(31);
        Some(self.base.saturating_mul(factor).min(self.max))
    }

    /// The count after one more failure at `now`, given the one before (`None`
    /// when there was none) and when that one's last failure was.
    pub fn count(&self, before: Option<(u32, OffsetDateTime)>, now: OffsetDateTime) -> u32 {
        match before {
            Some((failures, last)) if now - last < self.reset_after => failures.saturating_add(1),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn delays_double_after_the_free_failures_up_to_the_cap() {
        let backoff = Backoff::default();
        let delays: Vec<_> = (1..=17)
            .map(|n| backoff.delay(n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [
                None,
                None,
                None,
                None,
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(64),
                Some(128),
                Some(256),
                Some(512),
                Some(900),
                Some(900),
                Some(900)
            ]
        );
        assert_eq!(backoff.delay(u32::MAX), Some(backoff.max));
    }

    #[test]
    fn the_count_starts_over_after_a_quiet_spell() {
        let backoff = Backoff::default();
        let last = datetime!(2026-01-01 12:00 UTC);
        assert_eq!(backoff.count(None, last), 1);
        assert_eq!(
            backoff.count(Some((7, last)), last + time::Duration::minutes(59)),
            8
        );
        assert_eq!(
            backoff.count(Some((7, last)), last + time::Duration::minutes(60)),
            1
        );
    }
}
