//! One circuit breaker per fal host, on failsafe's state machine.
//!
//! failsafe decides when to open (failure rate over a window, or consecutive
//! failures) and when the open time is over. Three things are added here:
//! - failsafe lets every call through while half-open: a semaphore bounds the probes;
//! - failsafe does not say how long it stays open: the policy is wrapped to remember
//!   the delay it chose, and the instrument records when it opened;
//! - failsafe does not expose its state: the instrument keeps it (and publishes it as
//!   the `atelier_fal_breaker_state{host}` gauge).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use failsafe::{
    FailurePolicy, Instrument, StateMachine, backoff,
    failure_policy::{self, ConsecutiveFailures, OrElse, SuccessRateOverTimeWindow},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::BreakerConfig, error::FalError};

/// What a host's circuit breaker lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// A few probe calls go through to see whether the host recovered.
    HalfOpen,
    /// Calls fail at once with [`FalError::Unavailable`].
    Open,
}

impl BreakerState {
    /// The value of the `atelier_fal_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    /// `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::HalfOpen,
            2 => Self::Open,
            _ => Self::Closed,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// How long a caller is told to wait when the half-open probes are all taken.
const PROBE_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the instrument and the policy share with the breaker.
#[derive(Debug)]
struct Shared {
    host: String,
    state: AtomicU8,
    /// When the breaker last opened, and for how long.
    open: Mutex<(Option<Instant>, Duration)>,
}

impl Shared {
    fn set_state(&self, state: BreakerState) {
        let previous = BreakerState::from_u8(self.state.swap(state.to_u8(), Ordering::SeqCst));
        metrics::gauge!("atelier_fal_breaker_state", "host" => self.host.clone())
            .set(state.gauge_value());
        if previous != state {
            match state {
                BreakerState::Open => {
                    tracing::warn!(host = %self.host, "fal circuit breaker opened");
                }
                BreakerState::HalfOpen => {
                    tracing::info!(host = %self.host, "fal circuit breaker half-open, probing");
                }
                BreakerState::Closed => {
                    tracing::info!(host = %self.host, "fal circuit breaker closed");
                }
            }
        }
    }

    fn open_slot(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, Duration)> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone)]
struct Observer(Arc<Shared>);

impl Instrument for Observer {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.0.open_slot().0 = Some(Instant::now());
        self.0.set_state(BreakerState::Open);
    }

    fn on_half_open(&self) {
        self.0.set_state(BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        self.0.set_state(BreakerState::Closed);
    }
}

type Inner =
    OrElse<SuccessRateOverTimeWindow<backoff::Constant>, ConsecutiveFailures<backoff::Constant>>;

/// failsafe's policy, remembering the open delay it last chose.
#[derive(Debug)]
struct Remembering {
    inner: Inner,
    shared: Arc<Shared>,
}

impl FailurePolicy for Remembering {
    fn record_success(&mut self) {
        self.inner.record_success();
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let delay = self.inner.mark_dead_on_failure();
        if let Some(delay) = delay {
            self.shared.open_slot().1 = delay;
        }
        delay
    }

    fn revived(&mut self) {
        self.inner.revived();
    }
}

/// One host's circuit breaker.
#[derive(Debug)]
pub(crate) struct HostBreaker {
    machine: StateMachine<Remembering, Observer>,
    shared: Arc<Shared>,
    probes: Arc<Semaphore>,
    slow_call: Duration,
}

/// Leave to make one call; hand it back with the call's outcome.
#[derive(Debug)]
pub(crate) struct Admission {
    _probe: Option<OwnedSemaphorePermit>,
    started: Instant,
}

impl HostBreaker {
    fn new(host: &str, config: &BreakerConfig) -> Self {
        let shared = Arc::new(Shared {
            host: host.to_owned(),
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
            open: Mutex::new((None, config.open_duration)),
        });
        let open_for = backoff::constant(config.open_duration);
        let policy = failure_policy::success_rate_over_time_window(
            1.0 - config.failure_rate,
            config.min_calls,
            // failsafe divides the window into slices of whole milliseconds and reads
            // it in whole seconds: anything under a second would break it.
            config.window.max(Duration::from_secs(1)),
            open_for.clone(),
        )
        .or_else(failure_policy::consecutive_failures(
            config.consecutive_failures,
            open_for,
        ));
        let machine = StateMachine::new(
            Remembering {
                inner: policy,
                shared: shared.clone(),
            },
            Observer(shared.clone()),
        );
        Self {
            machine,
            shared,
            probes: Arc::new(Semaphore::new(config.half_open_max_probes as usize)),
            slow_call: config.slow_call,
        }
    }

    /// The breaker's state. failsafe only moves from open to half-open when a call
    /// asks; this reports half-open as soon as the open time is over.
    pub(crate) fn state(&self) -> BreakerState {
        match BreakerState::from_u8(self.shared.state.load(Ordering::SeqCst)) {
            BreakerState::Open if self.open_remaining().is_zero() => BreakerState::HalfOpen,
            state => state,
        }
    }

    fn open_remaining(&self) -> Duration {
        match *self.shared.open_slot() {
            (Some(at), delay) => delay.saturating_sub(at.elapsed()),
            (None, _) => Duration::ZERO,
        }
    }

    /// Asks to make a call: [`FalError::Unavailable`] while open, or while half-open
    /// with every probe slot taken. Makes no network call either way.
    pub(crate) fn admit(&self) -> Result<Admission, FalError> {
        if !self.machine.is_call_permitted() {
            return Err(FalError::Unavailable {
                retry_after: self.open_remaining().max(Duration::from_millis(1)),
            });
        }
        let probe = if self.state() == BreakerState::HalfOpen {
            match self.probes.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Err(FalError::Unavailable {
                        retry_after: PROBE_BUSY_RETRY_AFTER,
                    });
                }
            }
        } else {
            None
        };
        Ok(Admission {
            _probe: probe,
            started: Instant::now(),
        })
    }

    /// Records how an admitted call went: a failure when `failed` (a transient error)
    /// or when it took longer than the slow-call threshold.
    pub(crate) fn record(&self, admission: Admission, failed: bool) {
        let slow = admission.started.elapsed() > self.slow_call;
        if slow && !failed {
            tracing::debug!(host = %self.shared.host, "slow fal call counted as a failure");
        }
        if failed || slow {
            self.machine.on_error();
        } else {
            self.machine.on_success();
        }
        drop(admission);
    }
}

/// The breakers of every host the client has called, created on first use.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    hosts: Mutex<HashMap<String, Arc<HostBreaker>>>,
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The breaker for `host` (an authority: `queue.fal.run`, `127.0.0.1:4010`).
    pub(crate) fn get(&self, host: &str) -> Arc<HostBreaker> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(HostBreaker::new(host, &self.config)))
            .clone()
    }

    /// Every known host's breaker state, sorted by host.
    pub(crate) fn states(&self) -> Vec<(String, BreakerState)> {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut states: Vec<_> = hosts
            .iter()
            .map(|(host, breaker)| (host.clone(), breaker.state()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// The state of `host`'s breaker; closed for a host never called.
    pub(crate) fn state(&self, host: &str) -> BreakerState {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts
            .get(host)
            .map_or(BreakerState::Closed, |breaker| breaker.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            min_calls: 100,
            window: Duration::from_secs(60),
            consecutive_failures: 3,
            slow_call: Duration::from_secs(5),
            open_duration: Duration::from_millis(200),
            half_open_max_probes: 2,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_are_bounded() {
        let breaker = HostBreaker::new("h", &config());
        for _ in 0..3 {
            let admission = breaker.admit().expect("closed");
            breaker.record(admission, true);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let Err(FalError::Unavailable { retry_after }) = breaker.admit() else {
            panic!("open breaker admitted a call");
        };
        assert!(retry_after <= Duration::from_millis(200));

        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let first = breaker.admit().expect("first probe");
        let second = breaker.admit().expect("second probe");
        assert!(matches!(
            breaker.admit(),
            Err(FalError::Unavailable { retry_after }) if retry_after == PROBE_BUSY_RETRY_AFTER
        ));
        breaker.record(first, false);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record(second, false);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let breaker = HostBreaker::new("h", &config());
        for _ in 0..3 {
            let admission = breaker.admit().expect("closed");
            breaker.record(admission, true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let probe = breaker.admit().expect("probe");
        breaker.record(probe, true);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.admit().is_err());
    }

    #[test]
    fn successes_reset_the_consecutive_count() {
        let breaker = HostBreaker::new("h", &config());
        for failed in [true, true, false, true, true] {
            let admission = breaker.admit().expect("closed");
            breaker.record(admission, failed);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn slow_successes_count_as_failures() {
        let mut config = config();
        config.slow_call = Duration::ZERO;
        let breaker = HostBreaker::new("h", &config);
        for _ in 0..3 {
            let admission = breaker.admit().expect("closed");
            std::thread::sleep(Duration::from_millis(1));
            breaker.record(admission, false);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn unknown_hosts_are_closed() {
        let breakers = Breakers::new(config());
        assert_eq!(breakers.state("nowhere"), BreakerState::Closed);
        assert_eq!(BreakerState::Open.gauge_value(), 2.0);
        assert_eq!(BreakerState::HalfOpen.gauge_value(), 1.0);
        assert_eq!(BreakerState::Closed.gauge_value(), 0.0);
    }
}
