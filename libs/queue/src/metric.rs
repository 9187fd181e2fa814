//! The queue's metrics, the same for both backends.

use std::time::Duration;

use crate::{Priority, QueueDepth};

/// Sets `atelier_queue_depth{priority}` (waiting jobs) and the delayed, in-flight and
/// dead-letter gauges.
pub(crate) fn depth(depth: &QueueDepth) {
    for (priority, waiting) in [
        (Priority::High, depth.high),
        (Priority::Normal, depth.normal),
        (Priority::Low, depth.low),
    ] {
        metrics::gauge!("atelier_queue_depth", "priority" => priority.as_str()).set(waiting as f64);
    }
    metrics::gauge!("atelier_queue_delayed").set(depth.delayed as f64);
    metrics::gauge!("atelier_queue_in_flight").set(depth.in_flight as f64);
    metrics::gauge!("atelier_queue_dead_letters").set(depth.dead as f64);
}

/// A job's first delivery, `waited` after it was enqueued.
pub(crate) fn first_delivery(priority: Priority, waited: Duration) {
    metrics::histogram!("atelier_queue_wait_seconds", "priority" => priority.as_str())
        .record(waited.as_secs_f64());
}

/// A delivery was put back to be tried again.
pub(crate) fn retried() {
    metrics::counter!("atelier_queue_retries_total").increment(1);
}

/// Jobs ran out of attempts.
pub(crate) fn dead_lettered(count: u64) {
    if count > 0 {
        metrics::counter!("atelier_queue_dead_letters_total").increment(count);
    }
}

/// A delivery unsettled past the visibility timeout was delivered again.
pub(crate) fn reclaimed() {
    metrics::counter!("atelier_queue_reclaimed_total").increment(1);
}

/// Sets `atelier_queue_in_flight` and `atelier_queue_in_flight_limit` (the effective
/// bound; not set when unbounded).
pub(crate) fn concurrency(concurrency: &crate::Concurrency) {
    metrics::gauge!("atelier_queue_in_flight").set(concurrency.in_flight as f64);
    if let Some(limit) = concurrency.limit {
        metrics::gauge!("atelier_queue_in_flight_limit").set(f64::from(limit));
    }
}
