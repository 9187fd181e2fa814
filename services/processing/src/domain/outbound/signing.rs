//! Standard Webhooks signatures (https://www.standardwebhooks.com/): a secret is
//! `whsec_` and the base64 of a random key; a signature is `v1,` and the base64 of
//! HMAC-SHA256 under that key over `<msg id>.<unix timestamp>.<body>`.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Bytes of a new secret's key (the specification asks for 24 to 64).
const KEY_BYTES: usize = 32;

/// A new secret, from `rng`.
pub fn new_secret(rng: &mut impl RngCore) -> String {
    let mut key = [0u8; KEY_BYTES];
    rng.fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The key a secret stands for; `None` when it is not one this module made.
fn key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()
}

/// `v1,<signature>` of `body` sent as message `msg_id` at `timestamp` (unix
/// seconds) under `secret`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret, space-separated (the
/// secret before a rotation is signed with too while it is still valid).
pub fn header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries.
    #[test]
    fn signs_as_the_reference_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signature = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .expect("a signature");
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn new_secrets_differ_and_sign() {
        let mut rng = rand::thread_rng();
        let (a, b) = (new_secret(&mut rng), new_secret(&mut rng));
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        assert_eq!(key(&a).map(|key| key.len()), Some(KEY_BYTES));
        let both = header(&[&a, &b], "msg_1", 1, "{}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(sign("nope", "msg_1", 1, "{}").is_none());
    }
}
