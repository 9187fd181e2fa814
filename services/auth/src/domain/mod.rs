//! The rules of accounts and sessions.

pub mod keys;
pub mod password;

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use atelier_common::{Claims, Clock, token};

use crate::{
    error::AuthError,
    store::{self, RefreshToken, Rotation, Store},
};
use keys::KeyRing;

/// Lifetimes of the tokens a session is made of.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub access: Duration,
    pub refresh: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access: Duration::from_secs(15 * 60),
            refresh: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
}

impl From<store::User> for User {
    fn from(user: store::User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            created_at: user.created_at,
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
            decoy_hash,
        })
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<Session, AuthError> {
        let email = password::normalize_email(email);
        let violations = password::check_registration(&email, password);
        if !violations.is_empty() {
            return Err(AuthError::InvalidInput(violations));
        }
        let password_hash = hash_blocking(password.to_owned()).await?;
        let now = self.clock.now();
        let user = store::User {
            id: Uuid::now_v7(),
            email,
            password_hash,
            created_at: now,
            updated_at: now,
        };
        let user = match self.store.insert_user(user).await {
            Ok(user) => user,
            Err(err) if atelier_common::db::is_unique_violation(&err) => {
                return Err(AuthError::EmailTaken);
            }
            Err(err) => return Err(err.into()),
        };
        tracing::info!(user_id = %user.id, "account registered");
        self.start_session(user.into(), Uuid::now_v7()).await
    }

    /// Signs in. An unknown email and a wrong password give the same error after
    /// the same work.
    pub async fn login(&self, email: &str, password: &str) -> Result<Session, AuthError> {
        let email = password::normalize_email(email);
        let user = self.store.user_by_email(&email).await?;
        let hash = user.as_ref().map_or_else(
            || self.decoy_hash.clone(),
            |user| user.password_hash.clone(),
        );
        let matches = verify_blocking(password.to_owned(), hash).await?;
        match user {
            Some(user) if matches => self.start_session(user.into(), Uuid::now_v7()).await,
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// Rotates a refresh token. A token presented twice revokes its family: one of
    /// the two holders is not the user.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, AuthError> {
        let now = self.clock.now();
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
            )
            .await?;
        match rotation {
            Rotation::Rotated { user, .. } => Ok(Session {
                access_token: self.access_token(&user.id, &user.email, now)?,
                refresh_token: token,
                expires_in: self.lifetimes.access,
                user: user.into(),
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

    /// Ends every session of the user ("sign out everywhere").
    pub async fn logout_all(&self, user_id: Uuid) -> Result<u64, AuthError> {
        Ok(self.store.revoke_all(user_id, self.clock.now()).await?)
    }

    /// Deletes the account and its sessions. Deleting an account that is gone already
    /// succeeds, so a deletion cut short can be repeated.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), AuthError> {
        self.store.delete_user(user_id).await?;
        tracing::info!(%user_id, "account deleted");
        Ok(())
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

    async fn start_session(&self, user: User, family_id: Uuid) -> Result<Session, AuthError> {
        let now = self.clock.now();
        let (token, mut row) = self.new_refresh_token(now);
        row.user_id = user.id;
        row.family_id = family_id;
        self.store.insert_refresh_token(row).await?;
        Ok(Session {
            access_token: self.access_token(&user.id, &user.email, now)?,
            refresh_token: token,
            expires_in: self.lifetimes.access,
            user,
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

    fn access_token(
        &self,
        user_id: &Uuid,
        email: &str,
        now: OffsetDateTime,
    ) -> Result<String, AuthError> {
        let issued = now.unix_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            email: email.to_owned(),
            iss: token::ISSUER.into(),
            aud: token::AUDIENCE.into(),
            iat: issued,
            exp: issued + self.lifetimes.access.as_secs() as i64,
            jti: Uuid::new_v4().to_string(),
        };
        Ok(self.keys.sign(&claims)?)
    }
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
