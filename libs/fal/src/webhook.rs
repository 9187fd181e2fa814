//! Verification of fal's webhook deliveries.
//!
//! fal signs `request_id \n user_id \n timestamp \n hex(sha256(raw body))` with
//! Ed25519 and sends the parts in `X-Fal-Webhook-*` headers. The signature carries no
//! key id, so it is checked against every key of fal's JWKS. The key set is cached
//! (at most 24 h by default) and fetched again, at most once a minute, when no cached
//! key verifies a signature: that is how a key rotation is picked up.
//!
//! fal signs webhooks for every account with the same keys, so a valid signature
//! only says fal sent it. Pinned to the platform's own fal user id
//! ([`WebhookVerifier::with_user_id`], `FAL_USER_ID`), a delivery about another
//! account's request is refused.

use std::{sync::Arc, time::Duration};

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ed25519_dalek::{Signature, VerifyingKey};
use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// fal's public webhook keys.
pub const DEFAULT_JWKS_URL: &str = "https://rest.fal.ai/.well-known/jwks.json";
/// The request the webhook is about.
pub const REQUEST_ID_HEADER: &str = "x-fal-webhook-request-id";
/// The fal user the request belongs to.
pub const USER_ID_HEADER: &str = "x-fal-webhook-user-id";
/// When fal signed the delivery, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-fal-webhook-timestamp";
/// The Ed25519 signature, hex.
pub const SIGNATURE_HEADER: &str = "x-fal-webhook-signature";

/// The fal user id the simulator signs its webhooks for by default.
pub const SIMULATOR_USER_ID: &str = "atelier-fal-sim";

/// Largest distance between the signing time and now.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// What a verified webhook delivery says.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    pub request_id: String,
    pub gateway_request_id: Option<String>,
    pub status: WebhookStatus,
    /// The model's output when `Ok`; what fal had when `Error` (may be null).
    pub payload: serde_json::Value,
    pub error: Option<String>,
    /// Why fal could not include the payload, when it could not.
    pub payload_error: Option<String>,
}

/// How the request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookStatus {
    Ok,
    Error,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A signature header is missing (or not text).
    #[error("webhook header {0} is missing")]
    MissingHeader(&'static str),
    /// No key of fal's key set verifies the signature (tampered body or headers, or
    /// a signature by a key fal does not publish), even after fetching the keys again.
    #[error("webhook signature does not verify")]
    BadSignature,
    /// The timestamp is more than [`MAX_SKEW`] away from now.
    #[error("webhook timestamp is {skew_secs} s away from now")]
    StaleTimestamp { skew_secs: i64 },
    /// fal's key set holds no Ed25519 key to verify with.
    #[error("fal's key set holds no usable key")]
    UnknownKey,
    /// Signed by fal, but for another fal account's request than the platform's own.
    #[error("webhook is for another fal account")]
    ForeignAccount,
    /// fal's key set could not be fetched; answer 5xx so fal delivers again.
    #[error("fal's key set is unavailable: {0}")]
    KeysUnavailable(String),
    /// The headers or body do not have the documented shape.
    #[error("malformed webhook: {0}")]
    Malformed(String),
}

/// Verifies fal webhook deliveries against fal's published keys. Cheap to clone;
/// clones share the key cache.
#[derive(Clone, Debug)]
pub struct WebhookVerifier {
    jwks_url: String,
    http: reqwest::Client,
    ttl: Duration,
    refetch_interval: Duration,
    /// The only fal user id accepted, when pinned.
    user_id: Option<String>,
    cache: Arc<Mutex<KeyCache>>,
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: Arc<Vec<VerifyingKey>>,
    fetched_at: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
}

#[derive(Deserialize)]
struct Delivery {
    request_id: String,
    #[serde(default)]
    gateway_request_id: Option<String>,
    status: String,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    payload_error: Option<serde_json::Value>,
}

impl WebhookVerifier {
    /// A verifier fetching keys from `jwks_url` ([`DEFAULT_JWKS_URL`] for fal) with
    /// `http`. Keys are kept 24 h and fetched again at most once a minute.
    pub fn new(jwks_url: String, http: reqwest::Client) -> Self {
        Self {
            jwks_url,
            http,
            ttl: Duration::from_secs(24 * 60 * 60),
            refetch_interval: Duration::from_secs(60),
            user_id: None,
            cache: Arc::new(Mutex::new(KeyCache::default())),
        }
    }

    /// Accepts only deliveries signed for the fal user `user_id` (the platform's own
    /// account); `None` accepts any account's.
    pub fn with_user_id(mut self, user_id: Option<String>) -> Self {
        self.user_id = user_id;
        self
    }

    /// Keeps fetched keys at most `ttl` (capped at 24 h).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.min(Duration::from_secs(24 * 60 * 60));
        self
    }

    /// Fetches again on a signature no key verifies at most once per `interval`.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Verifies a delivery: the four `X-Fal-Webhook-*` headers, a timestamp within
    /// [`MAX_SKEW`] of `now`, an Ed25519 signature over the raw `body` by one of
    /// fal's keys, and the fal user id when pinned; then parses the body.
    ///
    /// This does not deduplicate: fal delivers up to 10 times, so the caller must
    /// make handling idempotent on [`WebhookEvent::request_id`] (e.g. ignore a
    /// delivery for a job already finished).
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<WebhookEvent, WebhookError> {
        let request_id = header(headers, REQUEST_ID_HEADER)?;
        let user_id = header(headers, USER_ID_HEADER)?;
        let timestamp = header(headers, TIMESTAMP_HEADER)?;
        let signature = header(headers, SIGNATURE_HEADER)?;

        let signed_at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::Malformed("timestamp is not unix seconds".into()))?;
        let skew = now.unix_timestamp().saturating_sub(signed_at);
        if skew.unsigned_abs() > MAX_SKEW.as_secs() {
            return Err(WebhookError::StaleTimestamp { skew_secs: skew });
        }
        let signature = hex::decode(signature.trim())
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes))
            .ok_or(WebhookError::BadSignature)?;
        let message = format!(
            "{request_id}\n{user_id}\n{timestamp}\n{}",
            hex::encode(Sha256::digest(body))
        );

        let keys = self.keys(now, false).await?;
        if !verifies(&keys, message.as_bytes(), &signature) {
            // Maybe fal rotated its keys.
            let fresh = self.keys(now, true).await?;
            if Arc::ptr_eq(&fresh, &keys) || !verifies(&fresh, message.as_bytes(), &signature) {
                return Err(WebhookError::BadSignature);
            }
        }
        if let Some(expected) = &self.user_id
            && user_id.trim() != expected
        {
            return Err(WebhookError::ForeignAccount);
        }
        parse_delivery(body)
    }

    /// The cached keys, fetched when none are cached, when they are older than the
    /// TTL, or on `refresh` when the last fetch is older than the refetch interval.
    async fn keys(
        &self,
        now: OffsetDateTime,
        refresh: bool,
    ) -> Result<Arc<Vec<VerifyingKey>>, WebhookError> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched_at.map(|at| now - at);
        let fetch = match age {
            None => true,
            Some(age) if age >= self.ttl || age.is_negative() => true,
            Some(age) => refresh && age >= self.refetch_interval,
        };
        if fetch {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(keys = keys.len(), "fetched fal webhook keys");
                    cache.keys = Arc::new(keys);
                    cache.fetched_at = Some(now);
                }
                // Stale keys beat none: they may well still verify.
                Err(err) if !cache.keys.is_empty() && age.is_some_and(|a| a < self.ttl) => {
                    tracing::warn!(error = %err, "refreshing fal webhook keys failed");
                }
                Err(err) => return Err(err),
            }
        }
        if cache.keys.is_empty() {
            return Err(WebhookError::UnknownKey);
        }
        Ok(cache.keys.clone())
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, WebhookError> {
        let unavailable =
            |err: reqwest::Error| WebhookError::KeysUnavailable(err.without_url().to_string());
        let jwks: Jwks = self
            .http
            .get(&self.jwks_url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let indifferent =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let decoder = GeneralPurpose::new(&alphabet::URL_SAFE, indifferent);
        Ok(jwks
            .keys
            .iter()
            .filter(|k| k.kty.as_deref().is_none_or(|t| t == "OKP"))
            .filter(|k| k.crv.as_deref().is_none_or(|c| c == "Ed25519"))
            .filter_map(|k| decoder.decode(k.x.as_deref()?).ok())
            .filter_map(|x| <[u8; 32]>::try_from(x).ok())
            .filter_map(|x| VerifyingKey::from_bytes(&x).ok())
            .collect())
    }
}

fn verifies(keys: &[VerifyingKey], message: &[u8], signature: &Signature) -> bool {
    keys.iter()
        .any(|key| key.verify_strict(message, signature).is_ok())
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or(WebhookError::MissingHeader(name))
}

fn parse_delivery(body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    let delivery: Delivery = serde_json::from_slice(body)
        .map_err(|err| WebhookError::Malformed(format!("body: {err}")))?;
    let status = match delivery.status.as_str() {
        "OK" => WebhookStatus::Ok,
        "ERROR" => WebhookStatus::Error,
        other => return Err(WebhookError::Malformed(format!("status {other:?}"))),
    };
    Ok(WebhookEvent {
        request_id: delivery.request_id,
        gateway_request_id: delivery.gateway_request_id,
        status,
        payload: delivery.payload,
        error: delivery.error.and_then(text),
        payload_error: delivery.payload_error.and_then(text),
    })
}

fn text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_parse_both_statuses() {
        let ok = parse_delivery(
            br#"{"request_id":"r","gateway_request_id":"g","status":"OK","payload":{"image":{"url":"u"}}}"#,
        )
        .expect("ok");
        assert_eq!(ok.status, WebhookStatus::Ok);
        assert_eq!(ok.gateway_request_id.as_deref(), Some("g"));
        let err = parse_delivery(
            br#"{"request_id":"r","status":"ERROR","payload":null,"error":"Invalid status code: 422","payload_error":"x"}"#,
        )
        .expect("error");
        assert_eq!(err.status, WebhookStatus::Error);
        assert_eq!(err.error.as_deref(), Some("Invalid status code: 422"));
        assert_eq!(err.payload_error.as_deref(), Some("x"));
        assert!(matches!(
            parse_delivery(br#"{"request_id":"r","status":"MAYBE"}"#),
            Err(WebhookError::Malformed(_))
        ));
    }
}
