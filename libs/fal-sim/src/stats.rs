//! What the simulator counts, for tests and the chaos suite (`GET /_sim/stats`): accepted
//! submissions (by endpoint), submissions of an input seen before, requests completed and
//! failed, cancellations, and calls that reached it during an outage.
//!
//! A repeated submission is one whose endpoint and input were submitted before. URLs in
//! the input are compared without their query string: a platform that submits one job
//! twice signs its input URL anew each time (a fresh expiry and signature), and that must
//! not hide the repeat. So callers that mean to count repeats give every job an input of
//! its own (another image, or another `seed`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which part of the API a call was for, to count calls during an outage by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Call {
    Submit,
    Status,
    Result,
    Cancel,
    /// A result file (`/files/...`).
    File,
    /// The platform API (`/v1/...`, prices).
    Platform,
}

impl Call {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Status => "status",
            Self::Result => "result",
            Self::Cancel => "cancel",
            Self::File => "file",
            Self::Platform => "platform",
        }
    }
}

/// The simulator's counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    submissions: AtomicU64,
    pub(crate) cancellations: AtomicU64,
    /// The most requests ever `IN_PROGRESS` at once.
    pub(crate) peak_running: AtomicU64,
    by_endpoint: Mutex<BTreeMap<String, u64>>,
    /// How often each (endpoint, input) was submitted, by its digest.
    inputs: Mutex<HashMap<[u8; 32], u64>>,
    repeated: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    outage_calls: Mutex<BTreeMap<Call, u64>>,
}

impl Stats {
    pub(crate) fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::SeqCst)
    }

    pub(crate) fn submissions_to(&self, endpoint_id: &str) -> u64 {
        lock(&self.by_endpoint)
            .get(endpoint_id)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn by_endpoint(&self) -> BTreeMap<String, u64> {
        lock(&self.by_endpoint).clone()
    }

    pub(crate) fn cancellations(&self) -> u64 {
        self.cancellations.load(Ordering::SeqCst)
    }

    pub(crate) fn peak_running(&self) -> u64 {
        self.peak_running.load(Ordering::SeqCst)
    }

    /// Submissions whose endpoint and input had been submitted before.
    pub(crate) fn repeated(&self) -> u64 {
        self.repeated.load(Ordering::SeqCst)
    }

    /// Requests that ended with an output.
    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Requests that ended with an error (cancellations and timeouts included).
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Calls answered as an outage, all kinds together.
    pub(crate) fn outage_calls(&self) -> u64 {
        lock(&self.outage_calls).values().sum()
    }

    pub(crate) fn count_submission(&self, endpoint_id: &str, input: &Value) {
        *lock(&self.by_endpoint)
            .entry(endpoint_id.to_owned())
            .or_default() += 1;
        self.submissions.fetch_add(1, Ordering::SeqCst);
        let seen = {
            let mut inputs = lock(&self.inputs);
            let count = inputs.entry(input_digest(endpoint_id, input)).or_default();
            *count += 1;
            *count
        };
        if seen > 1 {
            self.repeated.fetch_add(1, Ordering::SeqCst);
            tracing::info!(
                endpoint = endpoint_id,
                times = seen,
                "an input was submitted again"
            );
        }
    }

    pub(crate) fn count_end(&self, succeeded: bool) {
        let counter = if succeeded {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_outage_call(&self, call: Call) {
        *lock(&self.outage_calls).entry(call).or_default() += 1;
    }

    /// What `GET /_sim/stats` answers.
    pub(crate) fn to_json(&self) -> Value {
        let outage_calls: Map<String, Value> = lock(&self.outage_calls)
            .iter()
            .map(|(call, n)| (call.as_str().to_owned(), json!(n)))
            .collect();
        json!({
            "submissions": self.submissions(),
            "by_endpoint": self.by_endpoint(),
            "cancellations": self.cancellations(),
            "distinct_inputs": lock(&self.inputs).len(),
            "repeated_submissions": self.repeated(),
            "completed": self.completed(),
            "failed": self.failed(),
            "outage_calls": outage_calls,
            "peak_running": self.peak_running(),
        })
    }
}

/// SHA-256 of the endpoint id and the input in a canonical form: object keys sorted,
/// query strings and fragments dropped from http(s) URLs.
fn input_digest(endpoint_id: &str, input: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(endpoint_id.as_bytes());
    hasher.update([0]);
    hasher.update(canonical(input).to_string().as_bytes());
    hasher.finalize().into()
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|key| (key.clone(), canonical(&map[key])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::String(text) if text.starts_with("http://") || text.starts_with("https://") => {
            match reqwest::Url::parse(text) {
                Ok(mut url) => {
                    url.set_query(None);
                    url.set_fragment(None);
                    Value::String(url.into())
                }
                Err(_) => value.clone(),
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_url_signed_again_is_the_same_input() {
        let first =
            json!({"seed": 7, "image_url": "http://s3/b/k.png?X-Amz-Date=1&X-Amz-Signature=a"});
        let again =
            json!({"image_url": "http://s3/b/k.png?X-Amz-Date=2&X-Amz-Signature=b", "seed": 7});
        assert_eq!(input_digest("a/b", &first), input_digest("a/b", &again));
        let other_seed = json!({"seed": 8, "image_url": "http://s3/b/k.png?X-Amz-Date=1"});
        assert_ne!(
            input_digest("a/b", &first),
            input_digest("a/b", &other_seed)
        );
        let other_image = json!({"seed": 7, "image_url": "http://s3/b/l.png?X-Amz-Date=1"});
        assert_ne!(
            input_digest("a/b", &first),
            input_digest("a/b", &other_image)
        );
        assert_ne!(input_digest("a/b", &first), input_digest("a/c", &first));
    }

    #[test]
    fn repeats_ends_and_outage_calls_are_counted() {
        let stats = Stats::default();
        stats.count_submission("a/b", &json!({"seed": 1}));
        stats.count_submission("a/b", &json!({"seed": 2}));
        stats.count_submission("a/b", &json!({"seed": 1}));
        stats.count_submission("a/b", &json!({"seed": 1}));
        stats.count_end(true);
        stats.count_end(false);
        stats.count_outage_call(Call::Status);
        stats.count_outage_call(Call::Status);
        stats.count_outage_call(Call::Submit);
        assert_eq!(
            stats.to_json(),
            json!({
                "submissions": 4,
                "by_endpoint": {"a/b": 4},
                "cancellations": 0,
                "peak_running": 0,
                "distinct_inputs": 2,
                "repeated_submissions": 2,
                "completed": 1,
                "failed": 1,
                "outage_calls": {"submit": 1, "status": 2},
            })
        );
        assert_eq!(stats.outage_calls(), 3);
    }
}
