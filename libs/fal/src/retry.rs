//! The retry schedule fed to `tokio-retry`.
//!
//! tokio-retry's `ExponentialBackoff::from_millis(b)` grows as `b^n` (`from_millis(1000)`
//! would wait 1 s, then 1000 s), so the schedule is written here: `base × 2^n`, moved
//! by up to `±jitter`, capped at `max_delay`, `max_retries` long.

use std::time::Duration;

use crate::config::RetryConfig;

/// The delays before each retry. `unit` yields numbers in `[0, 1)` (the randomness,
/// passed in so tests control it); 0.5 means no jitter.
pub fn schedule(
    config: &RetryConfig,
    mut unit: impl FnMut() -> f64 + Send,
) -> impl Iterator<Item = Duration> + Send {
    let RetryConfig {
        max_retries,
        base,
        max_delay,
        jitter,
    } = config.clone();
    (0..max_retries).map(move |n| {
        let doubled = base.saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX));
        let nominal = doubled.min(max_delay);
        let factor = 1.0 + jitter * (2.0 * unit().clamp(0.0, 1.0) - 1.0);
        nominal.mul_f64(factor.max(0.0)).min(max_delay)
    })
}

/// [`schedule`] with the thread's random numbers.
pub(crate) fn jittered(config: &RetryConfig) -> impl Iterator<Item = Duration> + Send {
    schedule(config, rand::random::<f64>)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig {
            max_retries: 8,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: 0.25,
        }
    }

    #[test]
    fn doubles_without_jitter_and_stops_at_the_cap() {
        let delays: Vec<u64> = schedule(&config(), || 0.5)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn is_max_retries_long() {
        let mut c = config();
        c.max_retries = 3;
        assert_eq!(schedule(&c, || 0.5).count(), 3);
        c.max_retries = 0;
        assert_eq!(schedule(&c, || 0.5).count(), 0);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let low: Vec<Duration> = schedule(&config(), || 0.0).collect();
        let high: Vec<Duration> = schedule(&config(), || 0.999_999).collect();
        assert_eq!(low[0], Duration::from_millis(750));
        assert_eq!(low[2], Duration::from_millis(3_000));
        assert!(high[0] > Duration::from_millis(1_249) && high[0] <= Duration::from_millis(1_250));
        assert!(high[3] > Duration::from_millis(9_999) && high[3] <= Duration::from_millis(10_000));
        // Jitter never pushes a delay past the cap.
        assert_eq!(high[5], Duration::from_secs(30));
        assert_eq!(low[5], Duration::from_millis(22_500));

        for (n, delay) in jittered(&config()).enumerate() {
            let nominal = Duration::from_secs(1 << n).min(Duration::from_secs(30));
            assert!(delay >= nominal.mul_f64(0.75), "{n}: {delay:?}");
            assert!(
                delay <= nominal.mul_f64(1.25).min(Duration::from_secs(30)),
                "{n}: {delay:?}"
            );
        }
    }

    #[test]
    fn huge_exponents_saturate() {
        let mut c = config();
        c.max_retries = 70;
        assert_eq!(schedule(&c, || 0.5).last(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn tokio_retry_exponential_backoff_is_b_to_the_n() {
        // Why the schedule is ours: `from_millis(1000)` is 1 s, 1000 s, ...
        let mut naive = tokio_retry::strategy::ExponentialBackoff::from_millis(1000);
        assert_eq!(naive.next(), Some(Duration::from_secs(1)));
        assert_eq!(naive.next(), Some(Duration::from_secs(1000)));
        // while `from_millis(2).factor(base / 2)` doubles.
        let mut doubling =
            tokio_retry::strategy::ExponentialBackoff::from_millis(2).factor(1000 / 2);
        assert_eq!(doubling.next(), Some(Duration::from_secs(1)));
        assert_eq!(doubling.next(), Some(Duration::from_secs(2)));
        assert_eq!(doubling.next(), Some(Duration::from_secs(4)));
    }
}
