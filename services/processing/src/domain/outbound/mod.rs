//! Outgoing webhooks: the user's endpoints, the events sent there and their
//! delivery, at least once, signed as Standard Webhooks sign them.
//!
//! A job's final state change writes its message in the same transaction
//! ([`payload::job_message`], an outbox): nothing is lost when the process stops
//! right after. The delivery worker ([`deliver`]) fans each message out to the
//! endpoints that subscribed to its type (one delivery row each), claims due
//! deliveries with a lease (safe with several replicas), POSTs them and records
//! every attempt; a failure is retried on [`WebhookSettings::schedule`].

pub mod deliver;
pub mod payload;
pub mod signing;
pub mod target;

use std::{sync::Arc, time::Duration};

use atelier_common::{Clock, FieldViolation};
use time::OffsetDateTime;
use uuid::Uuid;

pub use deliver::Deliverer;
pub use target::TargetPolicy;

use crate::{error::ProcessingError, store::webhooks::WebhookStore};

/// How long the secret before a rotation is still signed with.
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest description kept.
pub const MAX_DESCRIPTION: usize = 500;
/// Endpoints one user may have.
pub const MAX_ENDPOINTS: usize = 20;

/// How webhooks are delivered.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `WEBHOOK_RETRY_SCHEDULE`: the wait before each attempt, the first included
    /// (0: at once). Its length is the number of attempts.
    pub schedule: Vec<Duration>,
    /// `WEBHOOK_TIMEOUT_SECS`: how long an endpoint has to answer.
    pub timeout: Duration,
    /// `WEBHOOK_LEASE_SECS`: how long a claimed delivery is one worker's; after
    /// that (the worker died) another takes it. Longer than the timeout.
    pub lease: Duration,
    /// `WEBHOOK_POLL_MS`: how often due deliveries are looked for.
    pub poll_every: Duration,
    /// `WEBHOOK_CONCURRENCY`: deliveries one process makes at once.
    pub concurrency: usize,
    /// `WEBHOOK_DISABLE_AFTER_SECS`: an endpoint that has failed every attempt for
    /// this long (none succeeded since the first failure) is disabled.
    pub disable_after: Duration,
    /// `WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES`: an endpoint is disabled as well
    /// after this many deliveries in a row failed every attempt; 0: never.
    pub disable_after_failed_deliveries: u32,
    pub targets: TargetPolicy,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            timeout: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            poll_every: Duration::from_secs(1),
            concurrency: 16,
            disable_after: Duration::from_secs(5 * 24 * 60 * 60),
            disable_after_failed_deliveries: 0,
            targets: TargetPolicy::default(),
        }
    }
}

/// `WEBHOOK_RETRY_SCHEDULE`: comma-separated waits, each a number with a unit
/// (`ms`, `s`, `m`, `h`; seconds without one), e.g. `0,5s,5m,30m,2h,5h,10h,10h`.
pub fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let schedule = raw
        .split(',')
        .map(|step| {
            let step = step.trim();
            let split = step
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(step.len());
            let (number, unit) = step.split_at(split);
            let number: u64 = number
                .parse()
                .map_err(|_| format!("`{step}` is not a wait such as 5s or 10m"))?;
            Ok(match unit {
                "ms" => Duration::from_millis(number),
                "" | "s" => Duration::from_secs(number),
                "m" => Duration::from_secs(number * 60),
                "h" => Duration::from_secs(number * 3600),
                _ => return Err(format!("`{step}` has an unknown unit")),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if schedule.is_empty() {
        return Err("the schedule needs at least one attempt".into());
    }
    Ok(schedule)
}

/// Where an endpoint's deliveries go and how they are signed.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub id: Uuid,
    pub user_id: Uuid,
    pub url: String,
    pub description: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<OffsetDateTime>,
    /// The first failed attempt since the last success.
    pub failing_since: Option<OffsetDateTime>,
    /// Deliveries in a row that failed every attempt.
    pub failed_deliveries: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Endpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }

    /// The secrets deliveries are signed with `at`: the current one, and the one
    /// before the last rotation while it is still valid.
    pub fn signing_secrets(&self, at: OffsetDateTime) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && at < until
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// An event for one user, sent to each of their endpoints that wants its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub user_id: Uuid,
    pub event_type: String,
    /// The request body, exactly as signed and sent.
    pub payload: String,
    /// Two messages with one key are one (see [`payload::batch_message`]).
    pub dedupe_key: Option<String>,
    pub created_at: OffsetDateTime,
}

impl Message {
    /// The `webhook-id` header.
    pub fn webhook_id(id: Uuid) -> String {
        format!("msg_{}", id.simple())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One message on its way to one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub message_id: Uuid,
    pub endpoint_id: Uuid,
    pub user_id: Uuid,
    pub status: DeliveryStatus,
    /// A redelivery asked for by the user: one attempt, no retries.
    pub manual: bool,
    pub attempts: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// One try at a delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub delivery_id: Uuid,
    pub number: i32,
    pub at: OffsetDateTime,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// A delivery with its message and attempts, as its owner sees it.
#[derive(Clone, Debug)]
pub struct DeliveryLog {
    pub delivery: Delivery,
    pub event_type: String,
    pub payload: String,
    pub attempts: Vec<Attempt>,
}

/// What an endpoint change sets.
#[derive(Clone, Debug, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// The user's side of webhooks: endpoints, their secrets and their deliveries.
#[derive(Clone)]
pub struct Webhooks {
    store: WebhookStore,
    clock: Arc<dyn Clock>,
    settings: Arc<WebhookSettings>,
    /// Told when a delivery is due at once.
    wake: Arc<tokio::sync::Notify>,
}

fn invalid(field: &str, description: impl Into<String>) -> ProcessingError {
    ProcessingError::InvalidInput(vec![FieldViolation::new(field, description)])
}

fn check_event_types(field: &str, event_types: &[String]) -> Result<Vec<String>, ProcessingError> {
    let mut out: Vec<String> = Vec::new();
    for event_type in event_types {
        let event_type = event_type.trim();
        if !payload::EVENT_TYPES.contains(&event_type) {
            return Err(invalid(
                field,
                format!(
                    "`{event_type}` is not an event type (one of {})",
                    payload::EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.iter().any(|t| t == event_type) {
            out.push(event_type.to_owned());
        }
    }
    Ok(out)
}

fn check_description(description: &str) -> Result<String, ProcessingError> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(description.trim().to_owned())
}

impl Webhooks {
    pub fn new(
        store: WebhookStore,
        clock: Arc<dyn Clock>,
        settings: Arc<WebhookSettings>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            store,
            clock,
            settings,
            wake,
        }
    }

    /// `raw` as an endpoint URL the policy allows, resolved now.
    async fn check_url(&self, raw: &str) -> Result<String, ProcessingError> {
        let url = target::parse(raw).map_err(|err| invalid("url", err.to_string()))?;
        self.settings
            .targets
            .resolve(&url)
            .await
            .map_err(|err| invalid("url", err.to_string()))?;
        Ok(url.to_string())
    }

    pub async fn create(
        &self,
        user_id: Uuid,
        url: &str,
        description: &str,
        event_types: &[String],
    ) -> Result<Endpoint, ProcessingError> {
        let description = check_description(description)?;
        let event_types = check_event_types("event_types", event_types)?;
        let url = self.check_url(url).await?;
        if self.store.endpoints_of(user_id).await?.len() >= MAX_ENDPOINTS {
            return Err(invalid(
                "url",
                format!("a user may have at most {MAX_ENDPOINTS} webhook endpoints"),
            ));
        }
        let now = self.clock.now();
        let endpoint = Endpoint {
            id: Uuid::now_v7(),
            user_id,
            url,
            description,
            event_types,
            secret: signing::new_secret(&mut rand::thread_rng()),
            previous_secret: None,
            previous_secret_expires_at: None,
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            failing_since: None,
            failed_deliveries: 0,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_endpoint(&endpoint).await?;
        tracing::info!(endpoint_id = %endpoint.id, %user_id, "webhook endpoint created");
        Ok(endpoint)
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<Endpoint>, ProcessingError> {
        Ok(self.store.endpoints_of(user_id).await?)
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<Endpoint, ProcessingError> {
        self.store
            .endpoint(user_id, id)
            .await?
            .ok_or(ProcessingError::EndpointNotFound)
    }

    pub async fn update(
        &self,
        user_id: Uuid,
        id: Uuid,
        change: EndpointChange,
    ) -> Result<Endpoint, ProcessingError> {
        let mut endpoint = self.get(user_id, id).await?;
        if let Some(description) = &change.description {
            endpoint.description = check_description(description)?;
        }
        if let Some(event_types) = &change.event_types {
            endpoint.event_types = check_event_types("event_types", event_types)?;
        }
        if let Some(url) = &change.url {
            endpoint.url = self.check_url(url).await?;
        }
        match change.enabled {
            Some(true) => {
                endpoint.enabled = true;
                endpoint.disabled_reason = None;
                endpoint.disabled_at = None;
                endpoint.failing_since = None;
                endpoint.failed_deliveries = 0;
            }
            Some(false) if endpoint.enabled => {
                endpoint.enabled = false;
                endpoint.disabled_at = Some(self.clock.now());
            }
            _ => {}
        }
        endpoint.updated_at = self.clock.now();
        self.store.update_endpoint(&endpoint).await?;
        if change.enabled == Some(true) {
            self.wake.notify_one();
        }
        Ok(endpoint)
    }

    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), ProcessingError> {
        if !self.store.delete_endpoint(user_id, id).await? {
            return Err(ProcessingError::EndpointNotFound);
        }
        tracing::info!(endpoint_id = %id, %user_id, "webhook endpoint deleted");
        Ok(())
    }

    /// A new secret; the current one stays valid for [`SECRET_OVERLAP`].
    pub async fn rotate_secret(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<Endpoint, ProcessingError> {
        let mut endpoint = self.get(user_id, id).await?;
        let now = self.clock.now();
        endpoint.previous_secret = Some(std::mem::replace(
            &mut endpoint.secret,
            signing::new_secret(&mut rand::thread_rng()),
        ));
        endpoint.previous_secret_expires_at = Some(now + SECRET_OVERLAP);
        endpoint.updated_at = now;
        self.store.update_endpoint(&endpoint).await?;
        tracing::info!(endpoint_id = %id, %user_id, "webhook secret rotated");
        Ok(endpoint)
    }

    /// The endpoint's deliveries, newest first, after `before` (a delivery id).
    pub async fn deliveries(
        &self,
        user_id: Uuid,
        endpoint_id: Uuid,
        limit: u64,
        before: Option<Uuid>,
    ) -> Result<Vec<DeliveryLog>, ProcessingError> {
        self.get(user_id, endpoint_id).await?;
        Ok(self
            .store
            .deliveries(user_id, endpoint_id, limit, before)
            .await?)
    }

    /// Sends a delivery's message to its endpoint again, once, now.
    pub async fn redeliver(
        &self,
        user_id: Uuid,
        endpoint_id: Uuid,
        delivery_id: Uuid,
    ) -> Result<DeliveryLog, ProcessingError> {
        self.get(user_id, endpoint_id).await?;
        let log = self
            .store
            .redeliver(user_id, endpoint_id, delivery_id, self.clock.now())
            .await?
            .ok_or(ProcessingError::DeliveryNotFound)?;
        self.wake.notify_one();
        Ok(log)
    }

    /// Deletes every endpoint, message and delivery of a user.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), ProcessingError> {
        Ok(self.store.delete_user(user_id).await?)
    }

    /// Sends `webhook.test` to the endpoint.
    pub async fn send_test(
        &self,
        user_id: Uuid,
        endpoint_id: Uuid,
    ) -> Result<DeliveryLog, ProcessingError> {
        let endpoint = self.get(user_id, endpoint_id).await?;
        let now = self.clock.now();
        let message = payload::test_message(user_id, endpoint.id, now);
        let log = self.store.insert_direct(&message, endpoint.id, now).await?;
        self.wake.notify_one();
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_with_units() {
        assert_eq!(
            parse_schedule("0, 5s,5m,2h,250ms,3"),
            Ok(vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200),
                Duration::from_millis(250),
                Duration::from_secs(3),
            ])
        );
        assert!(parse_schedule("5d").is_err());
        assert!(parse_schedule("soon").is_err());
        assert!(parse_schedule("").is_err());
    }

    #[test]
    fn the_previous_secret_signs_until_it_expires() {
        let now = OffsetDateTime::now_utc();
        let endpoint = Endpoint {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            url: "https://example.com".into(),
            description: String::new(),
            event_types: vec![payload::JOB_COMPLETED.into()],
            secret: "whsec_new".into(),
            previous_secret: Some("whsec_old".into()),
            previous_secret_expires_at: Some(now + SECRET_OVERLAP),
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            failing_since: None,
            failed_deliveries: 0,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(endpoint.signing_secrets(now), ["whsec_new", "whsec_old"]);
        assert_eq!(
            endpoint.signing_secrets(now + SECRET_OVERLAP),
            ["whsec_new"]
        );
        assert!(endpoint.wants(payload::JOB_COMPLETED));
        assert!(!endpoint.wants(payload::JOB_FAILED));
    }
}
