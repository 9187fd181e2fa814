//! The delivery worker: fans messages out to endpoints, claims due deliveries with
//! a lease, POSTs each (signed, to the address checked, no redirects, with a
//! timeout), records the attempt and schedules the next one; and disables an
//! endpoint that keeps failing. Time comes from the clock and the jitter from the
//! caller, so the rules below are tested without waiting.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use atelier_common::Clock;
use rand::Rng;
use time::OffsetDateTime;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{Attempt, Delivery, Endpoint, Message, WebhookSettings, payload, signing, target};
use crate::store::{
    Store,
    webhooks::{AfterAttempt, Due, WebhookStore},
};

/// The most of a response body kept in the log.
pub const MAX_RESPONSE_BODY: usize = 1024;

/// What follows a failed or successful attempt number `number` of `delivery`:
/// success ends it; a failure waits the schedule's next step, stretched by
/// `jitter` (0.8 to 1.2, so retries of many deliveries spread out), or ends it
/// when that was the last attempt (a manual redelivery has one).
pub fn after_attempt(
    settings: &WebhookSettings,
    delivery: &Delivery,
    number: i32,
    succeeded: bool,
    now: OffsetDateTime,
    jitter: f64,
) -> AfterAttempt {
    if succeeded {
        return AfterAttempt::Succeeded;
    }
    let attempts = if delivery.manual {
        1
    } else {
        settings.schedule.len()
    };
    match settings.schedule.get(number as usize) {
        Some(wait) if (number as usize) < attempts => {
            AfterAttempt::Retry(now + wait.mul_f64(jitter.clamp(0.5, 1.5)))
        }
        _ => AfterAttempt::Failed,
    }
}

/// Why `endpoint` (as it is after an attempt) should be disabled, if it should:
/// it has failed every attempt for [`WebhookSettings::disable_after`], or its last
/// [`WebhookSettings::disable_after_failed_deliveries`] deliveries all failed.
pub fn disable_reason(
    settings: &WebhookSettings,
    endpoint: &Endpoint,
    now: OffsetDateTime,
) -> Option<String> {
    if !endpoint.enabled {
        return None;
    }
    if let Some(since) = endpoint.failing_since
        && now - since >= settings.disable_after
    {
        return Some(format!(
            "every delivery attempt failed since {}",
            payload::rfc3339(since)
        ));
    }
    let limit = settings.disable_after_failed_deliveries;
    if limit > 0 && endpoint.failed_deliveries >= limit as i32 {
        return Some(format!(
            "{} deliveries in a row failed every attempt",
            endpoint.failed_deliveries
        ));
    }
    None
}

/// How one POST went.
struct Sent {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    latency: Duration,
}

impl Sent {
    fn succeeded(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }

    fn outcome(&self) -> &'static str {
        match (self.status, &self.error) {
            _ if self.succeeded() => "success",
            (Some(_), _) => "http_error",
            (None, Some(error)) if error.starts_with("timed out") => "timeout",
            (None, Some(error)) if error.starts_with("refused") => "refused",
            _ => "network_error",
        }
    }
}

/// The first [`MAX_RESPONSE_BODY`] bytes of `response`'s body, as text.
async fn short_body(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BODY {
        match response.chunk().await? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.truncate(MAX_RESPONSE_BODY);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sends deliveries; one per process (or more: they share the work through leases).
pub struct Deliverer {
    store: WebhookStore,
    jobs: Store,
    clock: Arc<dyn Clock>,
    settings: Arc<WebhookSettings>,
    /// Names this worker's leases.
    worker: String,
    wake: Arc<tokio::sync::Notify>,
}

impl Deliverer {
    pub fn new(
        store: WebhookStore,
        jobs: Store,
        clock: Arc<dyn Clock>,
        settings: Arc<WebhookSettings>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            jobs,
            clock,
            settings,
            worker: format!("webhooks-{}", Uuid::new_v4().simple()),
            wake,
        })
    }

    /// Makes the deliveries of messages not fanned out yet; a job's message whose
    /// batch is now final adds the batch's `batch.completed`. Returns how many
    /// messages were fanned out.
    pub async fn fan_out(&self) -> anyhow::Result<usize> {
        let mut done = 0;
        loop {
            let messages = self.store.unsent_messages(100).await?;
            if messages.is_empty() {
                return Ok(done);
            }
            for message in &messages {
                let endpoints: Vec<Uuid> = self
                    .store
                    .endpoints_of(message.user_id)
                    .await?
                    .into_iter()
                    .filter(|endpoint| endpoint.enabled && endpoint.wants(&message.event_type))
                    .map(|endpoint| endpoint.id)
                    .collect();
                let now = self.clock.now();
                if !self.store.fan_out(message, &endpoints, now).await? {
                    continue;
                }
                done += 1;
                self.batch_completed(message).await?;
            }
        }
    }

    /// `batch.completed` when `message` is about a job whose batch is now final.
    async fn batch_completed(&self, message: &Message) -> anyhow::Result<()> {
        if !message.event_type.starts_with("job.") {
            return Ok(());
        }
        let body: serde_json::Value = serde_json::from_str(&message.payload)?;
        let Some(batch_id) = body["data"]["batch_id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return Ok(());
        };
        let jobs = self.jobs.of_batch(message.user_id, batch_id).await?;
        if let Some(batch) = payload::batch_message(batch_id, &jobs, self.clock.now()) {
            self.store.insert_message(&batch).await?;
        }
        Ok(())
    }

    /// Claims up to `limit` due deliveries.
    pub async fn claim(&self, limit: usize) -> anyhow::Result<Vec<Due>> {
        let now = self.clock.now();
        Ok(self
            .store
            .claim(&self.worker, now, now + self.settings.lease, limit as u64)
            .await?)
    }

    /// POSTs `body` to `url`, connecting to `addr` (the address checked).
    async fn post(
        &self,
        url: &reqwest::Url,
        addr: SocketAddr,
        headers: [(&str, String); 3],
        body: String,
    ) -> Sent {
        let started = std::time::Instant::now();
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.settings.timeout)
            .no_proxy()
            .user_agent(concat!("Atelier-Webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(host) = url.host_str() {
            client = client.resolve(host, addr);
        }
        let client = match client.build() {
            Ok(client) => client,
            Err(err) => {
                return Sent {
                    status: None,
                    body: None,
                    error: Some(format!("client error: {err}")),
                    latency: started.elapsed(),
                };
            }
        };
        let mut request = client
            .post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let timeout = self.settings.timeout;
        let answered = async {
            let response = request.body(body).send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, short_body(response).await.unwrap_or_default()))
        };
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok((status, body))) => Sent {
                status: Some(status),
                body: Some(body),
                error: None,
                latency: started.elapsed(),
            },
            Ok(Err(err)) => Sent {
                status: None,
                body: None,
                error: Some(if err.is_timeout() {
                    format!("timed out after {} s", timeout.as_secs_f64())
                } else if err.is_connect() {
                    format!(
                        "connection failed: {}",
                        std::error::Error::source(&err)
                            .map(ToString::to_string)
                            .unwrap_or_else(|| err.to_string())
                    )
                } else {
                    format!("request failed: {}", err.without_url())
                }),
                latency: started.elapsed(),
            },
            Err(_) => Sent {
                status: None,
                body: None,
                error: Some(format!("timed out after {} s", timeout.as_secs_f64())),
                latency: started.elapsed(),
            },
        }
    }

    /// Makes one attempt at a claimed delivery and records it.
    pub async fn deliver(&self, due: Due) -> anyhow::Result<()> {
        let Due {
            delivery,
            message,
            endpoint,
        } = due;
        let number = delivery.attempts + 1;
        let span = tracing::info_span!(
            "webhook_delivery",
            delivery_id = %delivery.id,
            message_id = %Message::webhook_id(message.id),
            endpoint_id = %endpoint.id,
            event_type = %message.event_type,
            attempt = number,
            status = tracing::field::Empty,
        );
        async {
            let now = self.clock.now();
            let sent = match target::parse(&endpoint.url) {
                Err(err) => Sent {
                    status: None,
                    body: None,
                    error: Some(format!("refused: the URL {err}")),
                    latency: Duration::ZERO,
                },
                Ok(url) => match self.settings.targets.resolve(&url).await {
                    Err(err) => Sent {
                        status: None,
                        body: None,
                        error: Some(format!("refused: the host {err}")),
                        latency: Duration::ZERO,
                    },
                    Ok(addr) => {
                        let id = Message::webhook_id(message.id);
                        let timestamp = now.unix_timestamp();
                        let signature = signing::header(
                            &endpoint.signing_secrets(now),
                            &id,
                            timestamp,
                            &message.payload,
                        );
                        let headers = [
                            ("webhook-id", id),
                            ("webhook-timestamp", timestamp.to_string()),
                            ("webhook-signature", signature),
                        ];
                        self.post(&url, addr, headers, message.payload.clone()).await
                    }
                },
            };
            let outcome = sent.outcome();
            tracing::Span::current().record("status", sent.status.unwrap_or_default());
            metrics::counter!("atelier_webhook_deliveries_total", "outcome" => outcome)
                .increment(1);
            metrics::histogram!("atelier_webhook_delivery_seconds")
                .record(sent.latency.as_secs_f64());
            let jitter = rand::thread_rng().gen_range(0.8..=1.2);
            let after = after_attempt(
                &self.settings,
                &delivery,
                number,
                sent.succeeded(),
                self.clock.now(),
                jitter,
            );
            let attempt = Attempt {
                delivery_id: delivery.id,
                number,
                at: now,
                response_status: sent.status.map(i32::from),
                response_body: sent.body,
                latency_ms: sent.latency.as_millis() as i64,
                error: sent.error,
            };
            match after {
                AfterAttempt::Succeeded => tracing::info!(outcome, "webhook delivered"),
                AfterAttempt::Retry(at) => {
                    tracing::info!(outcome, error = ?attempt.error, retry_at = %payload::rfc3339(at), "webhook attempt failed")
                }
                AfterAttempt::Failed => {
                    tracing::warn!(outcome, error = ?attempt.error, "webhook delivery failed every attempt")
                }
            }
            let Some(endpoint) = self
                .store
                .record_attempt(&self.worker, &attempt, endpoint.id, after)
                .await?
            else {
                tracing::warn!("webhook delivery lease lost before its attempt was recorded");
                return Ok(());
            };
            let now = self.clock.now();
            if let Some(reason) = disable_reason(&self.settings, &endpoint, now)
                && self.store.disable(endpoint.id, &reason, now).await?
            {
                metrics::counter!("atelier_webhook_endpoints_disabled_total").increment(1);
                tracing::warn!(endpoint_id = %endpoint.id, %reason, "webhook endpoint disabled");
            }
            Ok::<(), anyhow::Error>(())
        }
        .instrument(span)
        .await
    }

    /// One round: fan out, then claim as many due deliveries as there are free
    /// slots and start them on `tasks`.
    async fn round(self: &Arc<Self>, slots: &Arc<Semaphore>, tasks: &mut JoinSet<()>) {
        if let Err(err) = self.fan_out().await {
            tracing::warn!(error = %err, "webhook fan-out failed");
        }
        let free = slots.available_permits();
        if free == 0 {
            return;
        }
        let due = match self.claim(free).await {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "claiming webhook deliveries failed");
                return;
            }
        };
        for due in due {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tasks.spawn(async move {
                if let Err(err) = me.deliver(due).await {
                    tracing::warn!(error = %err, "recording a webhook attempt failed");
                }
                drop(slot);
                me.wake.notify_one();
            });
        }
    }

    /// Delivers until `shutdown`, then gives back the deliveries under way so another
    /// worker (or this service's next start) sends them at once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            self.round(&slots, &mut tasks).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.settings.poll_every) => {}
                _ = self.wake.notified() => {}
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        match self.store.release(&self.worker).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "webhook deliveries under way given back"),
            Err(err) => tracing::warn!(error = %err, "giving back webhook deliveries failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outbound::DeliveryStatus;

    fn delivery(manual: bool) -> Delivery {
        let now = OffsetDateTime::now_utc();
        Delivery {
            id: Uuid::now_v7(),
            message_id: Uuid::now_v7(),
            endpoint_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            status: DeliveryStatus::Pending,
            manual,
            attempts: 0,
            next_attempt_at: Some(now),
            created_at: now,
        }
    }

    #[test]
    fn failures_follow_the_schedule_then_give_up() {
        let settings = WebhookSettings::default();
        let now = OffsetDateTime::now_utc();
        let scheduled = delivery(false);
        assert_eq!(
            after_attempt(&settings, &scheduled, 1, true, now, 1.0),
            AfterAttempt::Succeeded
        );
        assert_eq!(
            after_attempt(&settings, &scheduled, 1, false, now, 1.0),
            AfterAttempt::Retry(now + Duration::from_secs(5))
        );
        assert_eq!(
            after_attempt(&settings, &scheduled, 2, false, now, 1.2),
            AfterAttempt::Retry(now + Duration::from_secs(360))
        );
        let last = settings.schedule.len() as i32;
        assert_eq!(
            after_attempt(&settings, &scheduled, last, false, now, 1.0),
            AfterAttempt::Failed
        );
        let total: Duration = settings.schedule.iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        assert_eq!(
            after_attempt(&settings, &delivery(true), 1, false, now, 1.0),
            AfterAttempt::Failed
        );
    }

    #[test]
    fn endpoints_failing_long_enough_are_disabled() {
        let settings = WebhookSettings {
            disable_after_failed_deliveries: 3,
            ..WebhookSettings::default()
        };
        let now = OffsetDateTime::now_utc();
        let mut endpoint = Endpoint {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            url: "https://example.com".into(),
            description: String::new(),
            event_types: Vec::new(),
            secret: "whsec_a".into(),
            previous_secret: None,
            previous_secret_expires_at: None,
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            failing_since: Some(now - Duration::from_secs(3600)),
            failed_deliveries: 1,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(disable_reason(&settings, &endpoint, now), None);
        endpoint.failing_since = Some(now - settings.disable_after);
        assert!(
            disable_reason(&settings, &endpoint, now)
                .is_some_and(|reason| reason.contains("every delivery attempt failed"))
        );
        endpoint.failing_since = None;
        endpoint.failed_deliveries = 3;
        assert!(disable_reason(&settings, &endpoint, now).is_some());
        endpoint.enabled = false;
        assert_eq!(disable_reason(&settings, &endpoint, now), None);
    }
}
