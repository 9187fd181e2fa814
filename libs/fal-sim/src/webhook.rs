//! Webhooks as fal sends them: a POST of `{request_id, gateway_request_id, status,
//! payload, error?}`, signed with Ed25519 over `request_id \n user_id \n timestamp \n
//! hex(sha256(body))`, the key published as a JWKS; retried with backoff when delivery
//! fails.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// The user id the simulator's webhooks carry in `X-Fal-Webhook-User-Id` unless
/// configured otherwise ([`crate::SimConfig::webhook_user_id`]).
pub const WEBHOOK_USER_ID: &str = "atelier-fal-sim";

/// How many times a webhook is tried in all.
const ATTEMPTS: u32 = 5;
/// The wait before the first retry; it doubles after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How long one delivery may take (fal: 15 s).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// The simulator's webhook signing key, made at start, and the fal user its
/// webhooks speak for.
pub(crate) struct Signer {
    key: SigningKey,
    kid: String,
    user_id: String,
}

impl Signer {
    pub(crate) fn generate(user_id: String) -> Self {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let kid = hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8]);
        Self { key, kid, user_id }
    }

    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The JWKS document with the public key.
    pub(crate) fn jwks(&self) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public_key());
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }] })
    }

    /// The hex signature of a webhook body, as fal computes it.
    pub(crate) fn sign(&self, request_id: &str, timestamp: u64, body: &[u8]) -> String {
        let message = format!(
            "{request_id}\n{}\n{timestamp}\n{}",
            self.user_id,
            hex::encode(Sha256::digest(body))
        );
        hex::encode(self.key.sign(message.as_bytes()).to_bytes())
    }
}

/// The body of a webhook about a request that ended.
pub(crate) fn body(
    request_id: &str,
    gateway_request_id: &str,
    outcome: Result<&Value, (&str, Value)>,
) -> Value {
    match outcome {
        Ok(payload) => json!({
            "request_id": request_id,
            "gateway_request_id": gateway_request_id,
            "status": "OK",
            "payload": payload,
            "error": null,
        }),
        Err((error, payload)) => json!({
            "request_id": request_id,
            "gateway_request_id": gateway_request_id,
            "status": "ERROR",
            "payload": payload,
            "error": error,
        }),
    }
}

/// Delivers `body` to `url`, signed afresh on each attempt, retrying with backoff until a
/// 2xx answer, [`ATTEMPTS`] tries or shutdown.
pub(crate) async fn deliver(
    client: reqwest::Client,
    signer: &Signer,
    url: String,
    request_id: String,
    body: Value,
    shutdown: CancellationToken,
) {
    let body = body.to_string().into_bytes();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = signer.sign(&request_id, timestamp, &body);
        let sent = client
            .post(&url)
            .timeout(DELIVERY_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-fal-webhook-request-id", &request_id)
            .header("x-fal-webhook-user-id", &signer.user_id)
            .header("x-fal-webhook-timestamp", timestamp.to_string())
            .header("x-fal-webhook-signature", signature)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(%request_id, attempt, "webhook delivered");
                return;
            }
            Ok(response) => {
                tracing::info!(%request_id, attempt, status = %response.status(), "webhook refused");
            }
            Err(error) => {
                tracing::info!(%request_id, attempt, %error, "webhook delivery failed");
            }
        }
        if attempt == ATTEMPTS {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff *= 2;
    }
    tracing::warn!(%request_id, %url, "webhook given up after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

    use super::*;

    #[test]
    fn signatures_verify_against_the_jwks_key() {
        let signer = Signer::generate(WEBHOOK_USER_ID.to_owned());
        let body = br#"{"status":"OK"}"#;
        let signature = signer.sign("req-1", 1_700_000_000, body);

        let jwks = signer.jwks();
        let x = jwks["keys"][0]["x"].as_str().expect("x");
        let key_bytes: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(x)
            .expect("base64url")
            .try_into()
            .expect("32 bytes");
        let key = VerifyingKey::from_bytes(&key_bytes).expect("a public key");
        let message = format!(
            "req-1\n{WEBHOOK_USER_ID}\n1700000000\n{}",
            hex::encode(Sha256::digest(body))
        );
        let signature: [u8; 64] = hex::decode(signature)
            .expect("hex")
            .try_into()
            .expect("64 bytes");
        key.verify(message.as_bytes(), &Signature::from_bytes(&signature))
            .expect("the signature verifies");
    }
}
