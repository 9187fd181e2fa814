//! The rules of accounts and sessions.

pub mod api_keys;
pub mod audit;
pub mod backoff;
pub mod keys;
pub mod password;
pub mod records;

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use atelier_common::{
    Claims, Clock,
    token::{self, SessionEvents, SessionState},
};

pub use records::{Account, RefreshToken, Rotation, Throttle};

use crate::{error::AuthError, store::Store};
use audit::{AuditEntry, AuditFilter, Origin, actions};
use backoff::Backoff;
use keys::KeyRing;

/// Lifetimes of the tokens a session is made of.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub access: Duration,
    pub refresh: Duration,
    /// How long a rotated refresh token may be presented again while its successor has
    /// never been used: the answer to the first rotation was lost (a page reloaded or a
    /// connection dropped mid-refresh), so the holder never got the successor. The
    /// unused successor is revoked and a new one issued. Outside this window, or once
    /// the successor was used, presenting a rotated token revokes the whole family.
    pub reuse_grace: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access: Duration::from_secs(15 * 60),
            refresh: Duration::from_secs(7 * 24 * 60 * 60),
            reuse_grace: Duration::from_secs(15),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
    /// `user` or `admin`.
    pub role: String,
}

/// The roles an account can have.
pub const ROLES: [&str; 2] = ["user", token::ADMIN_ROLE];

impl From<Account> for User {
    fn from(user: Account) -> Self {
        Self {
            id: user.id,
            email: user.email,
            created_at: user.created_at,
            role: user.role,
        }
    }
}

/// A signed-in session.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: Duration,
    pub user: User,
}

pub struct Auth {
    store: Store,
    keys: Arc<KeyRing>,
    clock: Arc<dyn Clock>,
    lifetimes: Lifetimes,
    backoff: Backoff,
    /// Where revoked sessions are announced to every verifier.
    events: SessionEvents,
    /// Checked against when the email is unknown, so that answer takes as long
    /// as a wrong password.
    decoy_hash: String,
}

impl Auth {
    pub fn new(
        store: Store,
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
        lifetimes: Lifetimes,
        events: SessionEvents,
    ) -> anyhow::Result<Self> {
        let mut decoy = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut decoy);
        let decoy_hash = password::hash(&URL_SAFE_NO_PAD.encode(decoy))
            .map_err(|err| anyhow::anyhow!("hashing the decoy password: {err}"))?;
        Ok(Self {
            store,
            keys,
            clock,
            lifetimes,
            backoff: Backoff::default(),
            events,
            decoy_hash,
        })
    }

    /// Slows failed sign-ins down by `backoff` instead of the default.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<Session, AuthError> {
        let email = password::normalize_email(email);
        let violations = password::check_registration(&email, password);
        if !violations.is_empty() {
            return Err(AuthError::InvalidInput(violations));
        }
        let password_hash = hash_blocking(password.to_owned()).await?;
        let now = self.clock.now();
        let user = Account {
            id: Uuid::now_v7(),
            email,
            password_hash,
            created_at: now,
            updated_at: now,
            tokens_not_before: None,
            role: "user".to_owned(),
        };
        if !self.store.insert_user(&user).await? {
            return Err(AuthError::EmailTaken);
        }
        tracing::info!(user_id = %user.id, "account registered");
        self.start_session(user, Uuid::now_v7(), None).await
    }

    /// Signs in. An unknown email and a wrong password give the same error after
    /// the same work. Failures are counted per email address, whether it has an
    /// account or not, and slow the next attempts down (see [`Backoff`]); while an
    /// address waits, every attempt is refused before its password is looked at,
    /// so the refusal tells neither whether the password was right nor whether
    /// the account exists.
    ///
    /// Every attempt is audited: `auth.sign_in` with the session, in one
    /// transaction, or `auth.sign_in_failed` with the email attempted.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<Session, AuthError> {
        let email = password::normalize_email(email);
        let throttle_key = hash_token(&email);
        let failed = |reason: &str| {
            AuditEntry::new(origin, actions::SIGN_IN_FAILED, self.clock.now())
                .failed()
                .detail("email", audit::clip(&email, 254))
                .detail("reason", reason)
        };
        if let Err(err) = self.count_attempt(&throttle_key).await {
            if matches!(err, AuthError::TooManyAttempts { .. }) {
                self.store.insert_audit(&failed("throttled")).await?;
            }
            return Err(err);
        }
        let user = self.store.user_by_email(&email).await?;
        let hash = user.as_ref().map_or_else(
            || self.decoy_hash.clone(),
            |user| user.password_hash.clone(),
        );
        let matches = verify_blocking(password.to_owned(), hash).await?;
        match user {
            Some(user) if matches => {
                self.store.clear_throttle(&throttle_key).await?;
                let mut entry =
                    AuditEntry::new(origin, actions::SIGN_IN, self.clock.now()).about_user(user.id);
                entry.actor_user_id = Some(user.id);
                self.start_session(user, Uuid::now_v7(), Some(entry)).await
            }
            _ => {
                self.store
                    .insert_audit(&failed("invalid_credentials"))
                    .await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Counts a sign-in attempt as a failure before its password is checked (a
    /// success clears the count), so concurrent attempts cannot slip past the
    /// count; refuses it while the address waits out its delay.
    async fn count_attempt(&self, key: &str) -> Result<(), AuthError> {
        // Each round loses only to another attempt on the same address that
        // wrote first; a handful of rounds is plenty.
        for _ in 0..8 {
            let now = self.clock.now();
            let current = self.store.throttle(key).await?;
            if let Some(until) = current.as_ref().and_then(|row| row.locked_until)
                && until > now
            {
                return Err(AuthError::TooManyAttempts {
                    retry_after: Duration::try_from(until - now).unwrap_or(self.backoff.base),
                });
            }
            let failures = self.backoff.count(
                current.as_ref().map(|row| {
                    (
                        u32::try_from(row.failures).unwrap_or(0),
                        row.last_failure_at,
                    )
                }),
                now,
            );
            let next = Throttle {
                key: key.to_owned(),
                failures: i32::try_from(failures).unwrap_or(i32::MAX),
                last_failure_at: now,
                locked_until: self.backoff.delay(failures).map(|delay| now + delay),
                version: current.as_ref().map_or(0, |row| row.version + 1),
            };
            if self
                .store
                .put_throttle(current.map(|row| row.version), next)
                .await?
            {
                if failures > self.backoff.free_failures {
                    tracing::info!(failures, "repeated failed sign-ins for one address");
                }
                return Ok(());
            }
        }
        Err(AuthError::TooManyAttempts {
            retry_after: self.backoff.base,
        })
    }

    /// Forgets failure counts that hold nothing back any more.
    pub async fn forget_old_failures(&self) -> Result<u64, AuthError> {
        let before = self.clock.now() - self.backoff.reset_after.max(self.backoff.max);
        Ok(self.store.forget_throttles(before).await?)
    }

    /// Rotates a refresh token. A token presented twice revokes its family: one of
    /// the two holders is not the user.
    /// Reuse is audited (`auth.refresh_reuse`) with the family's revocation.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        origin: &Origin,
    ) -> Result<Session, AuthError> {
        let now = self.clock.now();
        let reuse = AuditEntry::new(origin, actions::REFRESH_REUSE, now).failed();
        let (token, fresh) = self.new_refresh_token(now);
        let rotation = self
            .store
            .rotate(
                &hash_token(refresh_token),
                |current| RefreshToken {
                    user_id: current.user_id,
                    family_id: current.family_id,
                    ..fresh
                },
                now,
                now - self.lifetimes.reuse_grace,
                &reuse,
            )
            .await?;
        match rotation {
            Rotation::Rotated { account, .. } => Ok(Session {
                access_token: self.access_token(&account, now)?,
                refresh_token: token,
                expires_in: self.lifetimes.access,
                user: account.into(),
            }),
            Rotation::Unknown => Err(AuthError::InvalidRefreshToken),
            Rotation::Expired => Err(AuthError::RefreshTokenExpired),
            Rotation::Reused => {
                tracing::warn!("refresh token reuse detected, session family revoked");
                Err(AuthError::RefreshTokenReused)
            }
        }
    }

    /// Ends the session a refresh token belongs to. Unknown tokens are ignored, so
    /// logging out twice is harmless.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        self.store
            .revoke_family_of(&hash_token(refresh_token), self.clock.now())
            .await?;
        Ok(())
    }

    /// Ends every session of the user ("sign out everywhere"): their refresh tokens
    /// are revoked and every access token issued so far is refused. Access tokens
    /// carry whole seconds, so the refusal starts at the next whole second, and
    /// tokens issued from now on are dated no earlier than it.
    pub async fn logout_all(&self, user_id: Uuid, origin: &Origin) -> Result<u64, AuthError> {
        let now = self.clock.now();
        let not_before = next_whole_second(now);
        let entry = AuditEntry::new(origin, actions::LOGOUT_ALL, now).about_user(user_id);
        let revoked = self
            .store
            .revoke_all(user_id, now, not_before, &entry)
            .await?;
        self.events.publish(user_id).await;
        tracing::info!(%user_id, revoked, "signed out everywhere");
        Ok(revoked)
    }

    /// Deletes the account and its sessions; its access tokens are refused from now
    /// on. Deleting an account that is gone already succeeds, so a deletion cut
    /// short can be repeated.
    pub async fn delete_user(&self, user_id: Uuid, origin: &Origin) -> Result<(), AuthError> {
        let entry =
            AuditEntry::new(origin, actions::ACCOUNT_DELETED, self.clock.now()).about_user(user_id);
        self.store.delete_user(user_id, &entry).await?;
        self.events.publish(user_id).await;
        tracing::info!(%user_id, "account deleted");
        Ok(())
    }

    /// Changes `user_id`'s password after checking the current one. Every session
    /// but the one `keep_refresh_token` belongs to ends, and access tokens issued
    /// so far are refused (the kept session refreshes); audited in the same
    /// transaction. Returns how many sessions ended.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: &str,
        new: &str,
        keep_refresh_token: &str,
        origin: &Origin,
    ) -> Result<u64, AuthError> {
        let account = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let mut violations = Vec::new();
        if current.is_empty() {
            violations.push(atelier_common::FieldViolation::new(
                "current_password",
                "is required",
            ));
        }
        violations.extend(
            password::check_registration(&account.email, new)
                .into_iter()
                .filter(|violation| violation.field == "password")
                .map(|violation| {
                    atelier_common::FieldViolation::new("new_password", violation.description)
                }),
        );
        if !violations.is_empty() {
            return Err(AuthError::InvalidInput(violations));
        }
        if !verify_blocking(current.to_owned(), account.password_hash.clone()).await? {
            return Err(AuthError::WrongPassword);
        }
        let keep = if keep_refresh_token.is_empty() {
            None
        } else {
            self.store
                .refresh_token_by_hash(&hash_token(keep_refresh_token))
                .await?
                .filter(|token| token.user_id == user_id && token.revoked_at.is_none())
                .map(|token| token.family_id)
        };
        let password_hash = hash_blocking(new.to_owned()).await?;
        let now = self.clock.now();
        let entry = AuditEntry::new(origin, actions::PASSWORD_CHANGED, now)
            .about_user(user_id)
            .detail("kept_session", keep.is_some());
        let revoked = self
            .store
            .change_password(
                user_id,
                &password_hash,
                keep,
                now,
                next_whole_second(now),
                &entry,
            )
            .await?;
        self.events.publish(user_id).await;
        tracing::info!(%user_id, revoked, "password changed");
        Ok(revoked)
    }

    /// Accounts whose email contains `query` (any case; only `only` when
    /// set), newest first: `limit`
    /// of them after the first `offset`.
    pub async fn list_users(
        &self,
        query: &str,
        only: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<User>, AuthError> {
        let query = password::normalize_email(query);
        Ok(self
            .store
            .list_users(&query, only, offset, limit)
            .await?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// The id of the account with `email`.
    pub async fn user_id_by_email(&self, email: &str) -> Result<Uuid, AuthError> {
        let email = password::normalize_email(email);
        Ok(self
            .store
            .user_by_email(&email)
            .await?
            .ok_or(AuthError::UserNotFound)?
            .id)
    }

    /// Gives `user_id` the role `role` (`user` or `admin`); their access tokens
    /// issued so far are refused, so the next refresh carries the new role.
    pub async fn set_role(
        &self,
        user_id: Uuid,
        role: &str,
        origin: &Origin,
    ) -> Result<User, AuthError> {
        if !ROLES.contains(&role) {
            return Err(AuthError::InvalidInput(vec![
                atelier_common::FieldViolation::new("role", "must be user or admin"),
            ]));
        }
        let now = self.clock.now();
        let entry = AuditEntry::new(origin, actions::ROLE_CHANGED, now).about_user(user_id);
        let account = self
            .store
            .set_role(user_id, role, now, next_whole_second(now), &entry)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        self.events.publish(user_id).await;
        tracing::info!(%user_id, role, "role changed");
        Ok(account.into())
    }

    /// Appends an entry another service records: `entry`'s id and time are this
    /// service's, and its actor service the caller's certificate's.
    pub async fn record(&self, mut entry: AuditEntry) -> Result<Uuid, AuthError> {
        let mut violations = Vec::new();
        if !audit::is_action(&entry.action) {
            violations.push(atelier_common::FieldViolation::new(
                "event.action",
                "must be <area>.<verb> in lowercase letters and underscores",
            ));
        }
        if !matches!(entry.outcome.as_str(), "" | audit::SUCCESS | audit::FAILURE) {
            violations.push(atelier_common::FieldViolation::new(
                "event.outcome",
                "must be success or failure",
            ));
        }
        if serde_json::to_vec(&entry.details).map_or(0, |bytes| bytes.len()) > 16 * 1024 {
            violations.push(atelier_common::FieldViolation::new(
                "event.details",
                "must be at most 16 KiB of JSON",
            ));
        }
        if !violations.is_empty() {
            return Err(AuthError::InvalidInput(violations));
        }
        if entry.outcome.is_empty() {
            entry.outcome = audit::SUCCESS.to_owned();
        }
        entry.id = Uuid::now_v7();
        entry.at = self.clock.now();
        entry.target_kind = audit::clip(&entry.target_kind, 32);
        entry.target_id = audit::clip(&entry.target_id, 128);
        entry.client_ip = audit::clip(&entry.client_ip, 64);
        entry.user_agent = audit::clip(&entry.user_agent, 512);
        entry.request_id = audit::clip(&entry.request_id, 128);
        self.store.insert_audit(&entry).await?;
        Ok(entry.id)
    }

    /// A page of the log, newest first, after the entry `after`; the reading is
    /// audited itself (`audit.queried`).
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        after: Option<Uuid>,
        limit: u64,
        origin: &Origin,
    ) -> Result<(Vec<AuditEntry>, Option<Uuid>), AuthError> {
        let mut entries = self
            .store
            .audit_entries(filter, after, limit + 1, false)
            .await?;
        let next = if entries.len() as u64 > limit {
            entries.truncate(limit as usize);
            entries.last().map(|entry| entry.id)
        } else {
            None
        };
        let mut read = AuditEntry::new(origin, actions::AUDIT_QUERIED, self.clock.now());
        read.target_kind = "audit_log".to_owned();
        read.details = filter.describe();
        read.details.insert("returned".into(), entries.len().into());
        self.store.insert_audit(&read).await?;
        Ok((entries, next))
    }

    /// Records an export of the log matching `filter` (`audit.exported`): called
    /// once before the export's first batch.
    pub async fn audit_export_started(
        &self,
        filter: &AuditFilter,
        origin: &Origin,
    ) -> Result<(), AuthError> {
        let mut entry = AuditEntry::new(origin, actions::AUDIT_EXPORTED, self.clock.now());
        entry.target_kind = "audit_log".to_owned();
        entry.details = filter.describe();
        self.store.insert_audit(&entry).await?;
        Ok(())
    }

    /// One batch of an export: entries matching `filter`, oldest first, after `after`.
    pub async fn audit_batch(
        &self,
        filter: &AuditFilter,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, AuthError> {
        Ok(self.store.audit_entries(filter, after, limit, true).await?)
    }

    /// Removes entries older than `retention` (the retention purge); `None`
    /// keeps every entry.
    pub async fn purge_audit(&self, retention: Option<Duration>) -> Result<u64, AuthError> {
        let Some(retention) = retention else {
            return Ok(0);
        };
        let purged = self.store.purge_audit(self.clock.now() - retention).await?;
        if purged > 0 {
            tracing::info!(purged, "old audit entries purged");
        }
        Ok(purged)
    }

    /// Whether the user's access tokens still hold: refused when issued before the
    /// user's "not before" instant, and all refused once the account is gone.
    pub async fn session_state(&self, user_id: Uuid) -> Result<SessionState, AuthError> {
        Ok(match self.store.user_by_id(user_id).await? {
            Some(user) => SessionState {
                not_before: user.tokens_not_before.map(OffsetDateTime::unix_timestamp),
                deleted: false,
            },
            None => SessionState {
                not_before: None,
                deleted: true,
            },
        })
    }

    pub async fn user(&self, id: Uuid) -> Result<User, AuthError> {
        self.store
            .user_by_id(id)
            .await?
            .map(User::from)
            .ok_or(AuthError::UserNotFound)
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    async fn start_session(
        &self,
        user: Account,
        family_id: Uuid,
        audit: Option<AuditEntry>,
    ) -> Result<Session, AuthError> {
        let now = self.clock.now();
        let (token, mut row) = self.new_refresh_token(now);
        row.user_id = user.id;
        row.family_id = family_id;
        let audit = audit.map(|entry| entry.detail("family_id", family_id.to_string()));
        self.store.insert_refresh_token(row, audit.as_ref()).await?;
        Ok(Session {
            access_token: self.access_token(&user, now)?,
            refresh_token: token,
            expires_in: self.lifetimes.access,
            user: user.into(),
        })
    }

    fn new_refresh_token(&self, now: OffsetDateTime) -> (String, RefreshToken) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let row = RefreshToken {
            id: Uuid::now_v7(),
            user_id: Uuid::nil(),
            family_id: Uuid::nil(),
            token_hash: hash_token(&token),
            expires_at: now + self.lifetimes.refresh,
            revoked_at: None,
            replaced_by: None,
            created_at: now,
        };
        (token, row)
    }

    /// An access token for `user`, dated no earlier than the user's "not before"
    /// instant so that it is not refused with the tokens revoked before it.
    fn access_token(&self, user: &Account, now: OffsetDateTime) -> Result<String, AuthError> {
        let issued = user
            .tokens_not_before
            .map_or(now, |not_before| not_before.max(now))
            .unix_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            email: user.email.clone(),
            iss: token::ISSUER.into(),
            aud: token::AUDIENCE.into(),
            iat: issued,
            exp: issued + self.lifetimes.access.as_secs() as i64,
            jti: Uuid::new_v4().to_string(),
            role: user.role.clone(),
        };
        Ok(self.keys.sign(&claims)?)
    }
}

/// The first whole second after `at`: tokens dated (in whole seconds) before it were
/// all issued at or before `at`.
fn next_whole_second(at: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(at.unix_timestamp() + 1).unwrap_or(at)
}

/// Refresh tokens are stored only as their SHA-256: they are long random
/// strings, so a fast hash is enough and lets them be looked up.
fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

async fn hash_blocking(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|err| AuthError::Internal(err.into()))?
        .map_err(|err| AuthError::Internal(anyhow::anyhow!("hashing a password: {err}")))
}

async fn verify_blocking(password: String, hash: String) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .map_err(|err| AuthError::Internal(err.into()))
}
