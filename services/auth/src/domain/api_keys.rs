//! API keys: long-lived credentials for programs, limited to scopes. A key is
//! `atl_live_` and 43 base62 characters (256 random bits), so secret scanners
//! can spot one; it is shown once, at creation, and only its SHA-256 is kept
//! (a key has all the entropy a slow hash would add).

use std::collections::BTreeSet;

use atelier_common::{FieldViolation, token};
use rand::{Rng, rngs::OsRng};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Auth,
    audit::{AuditEntry, Origin, actions},
};
use crate::error::AuthError;

/// Characters of a key after its prefix.
const SECRET_LEN: usize = 43;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// How much of a key lists show: `atl_live_` and four characters.
const SHOWN: usize = token::API_KEY_PREFIX.len() + 4;
/// The longest name a key may have, in characters.
const MAX_NAME: usize = 100;
/// The highest per-key rate limit a key may ask for.
const MAX_RATE_PER_MINUTE: u32 = 100_000;
/// Keys (revoked or not) one account may hold; revoke or let some expire first.
pub const MAX_KEYS_PER_USER: u64 = 100;
/// `last_used_at` is written at most this often per key.
pub const LAST_USED_GRANULARITY: time::Duration = time::Duration::minutes(1);

/// An API key as kept: its hash, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub scopes: Vec<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// What a new key is asked to be.
#[derive(Clone, Debug, Default)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<OffsetDateTime>,
    pub rate_limit_per_minute: Option<u32>,
}

/// A key with what its verification needs to know of its owner.
#[derive(Clone, Debug)]
pub struct VerifiedKey {
    pub key: ApiKey,
    pub email: String,
}

/// A fresh key: the prefix and 43 characters drawn uniformly from base62.
pub fn generate() -> String {
    let mut key = String::with_capacity(token::API_KEY_PREFIX.len() + SECRET_LEN);
    key.push_str(token::API_KEY_PREFIX);
    let mut rng = OsRng;
    while key.len() < token::API_KEY_PREFIX.len() + SECRET_LEN {
        // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
        let byte: u8 = rng.r#gen();
        if byte < 248 {
            key.push(char::from(BASE62[usize::from(byte % 62)]));
        }
    }
    key
}

/// Checks a request for a key against the rules; the scopes come back sorted and
/// without duplicates.
fn validate(
    request: &NewApiKey,
    held: Option<&[String]>,
    now: OffsetDateTime,
) -> Result<(String, Vec<String>), AuthError> {
    let mut violations = Vec::new();
    let name = request.name.trim().to_owned();
    if name.is_empty() {
        violations.push(FieldViolation::new("name", "must not be empty"));
    } else if name.chars().count() > MAX_NAME {
        violations.push(FieldViolation::new(
            "name",
            format!("must be at most {MAX_NAME} characters"),
        ));
    } else if name.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            "name",
            "must not contain control characters",
        ));
    }
    let scopes: BTreeSet<String> = request
        .scopes
        .iter()
        .map(|scope| scope.trim().to_owned())
        .collect();
    if scopes.is_empty() {
        violations.push(FieldViolation::new(
            "scopes",
            "must name at least one scope",
        ));
    }
    for (index, scope) in request.scopes.iter().enumerate() {
        if !token::SCOPES.contains(&scope.trim()) {
            violations.push(FieldViolation::new(
                format!("scopes[{index}]"),
                format!("is not a known scope; known: {}", token::SCOPES.join(", ")),
            ));
        }
    }
    if request.expires_at.is_some_and(|at| at <= now) {
        violations.push(FieldViolation::new("expires_at", "must be in the future"));
    }
    if request
        .rate_limit_per_minute
        .is_some_and(|rate| rate == 0 || rate > MAX_RATE_PER_MINUTE)
    {
        violations.push(FieldViolation::new(
            "rate_limit_per_minute",
            format!("must be between 1 and {MAX_RATE_PER_MINUTE}"),
        ));
    }
    if !violations.is_empty() {
        return Err(AuthError::InvalidInput(violations));
    }
    // A key may hand on only what it holds itself.
    if let Some(held) = held
        && let Some(missing) = scopes.iter().find(|scope| !held.contains(scope))
    {
        return Err(AuthError::ScopeNotHeld(missing.clone()));
    }
    Ok((name, scopes.into_iter().collect()))
}

impl Auth {
    /// Creates a key for `user_id`; `held` are the scopes of the key the request
    /// came with (`None` for a signed-in session). Returns the key as kept and the
    /// key itself, which is never available again. Audited.
    pub async fn create_api_key(
        &self,
        user_id: Uuid,
        held: Option<&[String]>,
        request: &NewApiKey,
        origin: &Origin,
    ) -> Result<(ApiKey, String), AuthError> {
        let now = self.clock.now();
        let (name, scopes) = validate(request, held, now)?;
        if self.store.count_api_keys(user_id).await? >= MAX_KEYS_PER_USER {
            return Err(AuthError::TooManyApiKeys(MAX_KEYS_PER_USER));
        }
        let secret = generate();
        let key = ApiKey {
            id: Uuid::now_v7(),
            user_id,
            name,
            prefix: secret[..SHOWN].to_owned(),
            hash: token::api_key_hash(&secret),
            scopes,
            rate_limit_per_minute: request.rate_limit_per_minute,
            created_at: now,
            expires_at: request.expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        let entry = AuditEntry::new(origin, actions::API_KEY_CREATED, now)
            .about_user(user_id)
            .api_key(&key);
        self.store.insert_api_key(&key, &entry).await?;
        tracing::info!(%user_id, key_id = %key.id, prefix = %key.prefix, "api key created");
        Ok((key, secret))
    }

    /// The user's keys, newest first.
    pub async fn api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>, AuthError> {
        Ok(self.store.api_keys_of(user_id).await?)
    }

    /// Revokes one of the user's keys (another user's is not found); announced so
    /// every verifier drops it at once. Revoking a revoked key changes nothing.
    pub async fn revoke_api_key(
        &self,
        user_id: Uuid,
        key_id: Uuid,
        origin: &Origin,
    ) -> Result<ApiKey, AuthError> {
        let now = self.clock.now();
        let entry = AuditEntry::new(origin, actions::API_KEY_REVOKED, now).about_user(user_id);
        let key = self
            .store
            .revoke_api_key(user_id, key_id, now, &entry)
            .await?
            .ok_or(AuthError::ApiKeyNotFound)?;
        self.events.publish(user_id).await;
        tracing::info!(%user_id, key_id = %key.id, "api key revoked");
        Ok(key)
    }

    /// The key whose SHA-256 is `hash`, with its owner's email; marks it used (at
    /// most once per [`LAST_USED_GRANULARITY`]). Revoked and expired keys are
    /// answered too: the verifier says why it refuses them.
    pub async fn verify_api_key(&self, hash: &str) -> Result<VerifiedKey, AuthError> {
        let key = self
            .store
            .api_key_by_hash(hash)
            .await?
            .ok_or(AuthError::ApiKeyNotFound)?;
        let owner = self
            .store
            .user_by_id(key.user_id)
            .await?
            .ok_or(AuthError::ApiKeyNotFound)?;
        let now = self.clock.now();
        if key.revoked_at.is_none()
            && key
                .last_used_at
                .is_none_or(|at| now - at >= LAST_USED_GRANULARITY)
        {
            self.store
                .touch_api_key(key.id, now, now - LAST_USED_GRANULARITY)
                .await?;
        }
        Ok(VerifiedKey {
            key,
            email: owner.email,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_base62_and_differ() {
        let key = generate();
        assert!(key.starts_with("atl_live_"));
        assert_eq!(key.len(), 9 + SECRET_LEN);
        assert!(key[9..].bytes().all(|byte| byte.is_ascii_alphanumeric()));
        assert_ne!(generate(), key);
    }

    fn request(scopes: &[&str]) -> NewApiKey {
        NewApiKey {
            name: "ci".into(),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            ..NewApiKey::default()
        }
    }

    #[test]
    fn unknown_scopes_and_bad_fields_are_named() {
        let now = OffsetDateTime::now_utc();
        let mut bad = request(&["images:read", "images:delete"]);
        bad.name = "  ".into();
        bad.expires_at = Some(now - time::Duration::seconds(1));
        bad.rate_limit_per_minute = Some(0);
        let Err(AuthError::InvalidInput(violations)) = validate(&bad, None, now) else {
            panic!("refused");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "scopes[1]", "expires_at", "rate_limit_per_minute"]
        );
        assert!(matches!(
            validate(&request(&[]), None, now),
            Err(AuthError::InvalidInput(_))
        ));
    }

    #[test]
    fn scopes_are_sorted_and_a_key_hands_on_only_what_it_holds() {
        let now = OffsetDateTime::now_utc();
        let (_, scopes) = validate(
            &request(&["keys:write", "images:read", "keys:write"]),
            None,
            now,
        )
        .expect("valid");
        assert_eq!(scopes, ["images:read", "keys:write"]);
        let held = vec!["keys:write".to_owned()];
        assert!(matches!(
            validate(&request(&["keys:write", "images:read"]), Some(&held), now),
            Err(AuthError::ScopeNotHeld(scope)) if scope == "images:read"
        ));
        assert!(validate(&request(&["keys:write"]), Some(&held), now).is_ok());
    }
}
