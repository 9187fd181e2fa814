//! gRPC handlers: decode, call the domain, encode.

use std::sync::Arc;

use atelier_common::{
    FieldViolation,
    grpc::{Peer, RequestOrigin, caller},
    page, timestamp,
    token::{self, Caller},
};
use atelier_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        Auth, Session, User,
        api_keys::{ApiKey, NewApiKey},
        audit::Origin,
        keys::{KeyRing, PublicKey},
    },
    error::AuthError,
};

pub struct AuthApi {
    auth: Arc<Auth>,
}

impl AuthApi {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

fn user(user: User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email,
        created_at: Some(timestamp(user.created_at)),
        role: user.role,
    }
}

/// Who made `request` and from where, for the audit log: the verified user (if
/// the method needs one), the service whose certificate called, and what the
/// gateway passed on of the client.
pub fn origin<T>(request: &Request<T>) -> Origin {
    let RequestOrigin {
        client_ip,
        user_agent,
        request_id,
    } = RequestOrigin::of(request);
    Origin {
        actor_user_id: request
            .extensions()
            .get::<Caller>()
            .map(|caller| caller.user_id),
        actor_service: request
            .extensions()
            .get::<Peer>()
            .map(|peer| peer.0.as_str().to_owned())
            .unwrap_or_default(),
        client_ip,
        user_agent,
        request_id,
    }
}

fn user_id(field: &str, value: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(value)
        .map_err(|_| AuthError::InvalidInput(vec![FieldViolation::new(field, "is not a valid id")]))
}

fn api_key(key: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id.to_string(),
        name: key.name,
        prefix: key.prefix,
        scopes: key.scopes,
        created_at: Some(timestamp(key.created_at)),
        expires_at: key.expires_at.map(timestamp),
        last_used_at: key.last_used_at.map(timestamp),
        revoked_at: key.revoked_at.map(timestamp),
        rate_limit_per_minute: key.rate_limit_per_minute,
    }
}

fn instant(field: &str, at: prost_types::Timestamp) -> Result<time::OffsetDateTime, AuthError> {
    time::OffsetDateTime::from_unix_timestamp(at.seconds)
        .ok()
        .filter(|_| (0..1_000_000_000).contains(&at.nanos))
        .map(|instant| instant + time::Duration::nanoseconds(i64::from(at.nanos)))
        .ok_or_else(|| {
            AuthError::InvalidInput(vec![FieldViolation::new(field, "is not a valid instant")])
        })
}

fn jwk(key: &PublicKey) -> pb::Jwk {
    pb::Jwk {
        kid: key.kid.clone(),
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: key.x.clone(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }
}

/// The ring's keys as a JWKS publishes them.
pub fn jwks(keys: &KeyRing) -> Vec<pb::Jwk> {
    keys.public_keys().iter().map(jwk).collect()
}

fn session(session: Session) -> Option<pb::Session> {
    Some(pb::Session {
        access_token: session.access_token,
        refresh_token: session.refresh_token,
        token_type: "Bearer".into(),
        expires_in: session.expires_in.as_secs() as i64,
        user: Some(user(session.user)),
    })
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let created = self
            .auth
            .register(&request.email, &request.password)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            session: session(created),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let origin = origin(&request);
        let request = request.into_inner();
        let signed_in = self
            .auth
            .login(&request.email, &request.password, &origin)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            session: session(signed_in),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let origin = origin(&request);
        let rotated = self
            .auth
            .refresh(&request.into_inner().refresh_token, &origin)
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            session: session(rotated),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.auth
            .logout(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            keys: jwks(self.auth.keys()),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let caller = caller(&request)?;
        let found = self.auth.user(caller.user_id).await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            user: Some(user(found)),
        }))
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let caller = caller(&request)?;
        let revoked = self
            .auth
            .logout_all(caller.user_id, &origin(&request))
            .await?;
        Ok(Response::new(pb::LogoutAllResponse {
            revoked_count: revoked as i64,
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller(&request)?;
        let origin = origin(&request);
        let request = request.into_inner();
        let revoked = self
            .auth
            .change_password(
                caller.user_id,
                &request.current_password,
                &request.new_password,
                &request.refresh_token,
                &origin,
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_count: revoked as i64,
        }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let origin = origin(&request);
        let request = request.into_inner();
        let user_id = if request.user_id.is_empty() && !request.email.is_empty() {
            self.auth.user_id_by_email(&request.email).await?
        } else {
            user_id("user_id", &request.user_id)?
        };
        let changed = self.auth.set_role(user_id, &request.role, &origin).await?;
        Ok(Response::new(pb::SetUserRoleResponse {
            user: Some(user(changed)),
        }))
    }

    async fn admin_list_users(
        &self,
        request: Request<pb::AdminListUsersRequest>,
    ) -> Result<Response<pb::AdminListUsersResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        if request.query.chars().count() > 254 {
            violations.push(FieldViolation::new(
                "query",
                "must be at most 254 characters",
            ));
        }
        let only = match request.user_id.as_str() {
            "" => None,
            raw => match Uuid::parse_str(raw) {
                Ok(id) => Some(id),
                Err(_) => {
                    violations.push(FieldViolation::new("user_id", "must be a UUID"));
                    None
                }
            },
        };
        let (size, offset) = match page::request::<u64>(request.page_size, &request.page_token) {
            Ok(page) => page,
            Err(found) => {
                violations.extend(found);
                (0, None)
            }
        };
        if !violations.is_empty() {
            return Err(AuthError::InvalidInput(violations).into());
        }
        let offset = offset.unwrap_or(0);
        let mut users = self
            .auth
            .list_users(&request.query, only, offset, size + 1)
            .await?;
        let more = users.len() as u64 > size;
        users.truncate(size as usize);
        Ok(Response::new(pb::AdminListUsersResponse {
            next_page_token: if more {
                page::encode(&(offset + size))
            } else {
                String::new()
            },
            users: users.into_iter().map(user).collect(),
        }))
    }

    async fn admin_set_user_role(
        &self,
        request: Request<pb::AdminSetUserRoleRequest>,
    ) -> Result<Response<pb::AdminSetUserRoleResponse>, Status> {
        let origin = origin(&request);
        let request = request.into_inner();
        let user_id = user_id("user_id", &request.user_id)?;
        if origin.actor_user_id == Some(user_id) && request.role != token::ADMIN_ROLE {
            return Err(AuthError::InvalidInput(vec![FieldViolation::new(
                "user_id",
                "administrators cannot take their own role: another administrator must",
            )])
            .into());
        }
        let changed = self.auth.set_role(user_id, &request.role, &origin).await?;
        Ok(Response::new(pb::AdminSetUserRoleResponse {
            user: Some(user(changed)),
        }))
    }

    async fn delete_current_user(
        &self,
        request: Request<pb::DeleteCurrentUserRequest>,
    ) -> Result<Response<pb::DeleteCurrentUserResponse>, Status> {
        let caller = caller(&request)?;
        self.auth
            .delete_user(caller.user_id, &origin(&request))
            .await?;
        Ok(Response::new(pb::DeleteCurrentUserResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let origin = origin(&request);
        let request = request.into_inner();
        let wanted = NewApiKey {
            name: request.name,
            scopes: request.scopes,
            expires_at: request
                .expires_at
                .map(|at| instant("expires_at", at))
                .transpose()?,
            rate_limit_per_minute: request.rate_limit_per_minute,
        };
        let (created, key) = self
            .auth
            .create_api_key(caller.user_id, caller.scopes(), &wanted, &origin)
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(api_key(created)),
            key,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = caller(&request)?;
        let keys = self.auth.api_keys(caller.user_id).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let origin = origin(&request);
        // A malformed id names no key of the caller's.
        let id = Uuid::parse_str(&request.get_ref().id).map_err(|_| AuthError::ApiKeyNotFound)?;
        let revoked = self
            .auth
            .revoke_api_key(caller.user_id, id, &origin)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            api_key: Some(api_key(revoked)),
        }))
    }

    async fn verify_api_key(
        &self,
        request: Request<pb::VerifyApiKeyRequest>,
    ) -> Result<Response<pb::VerifyApiKeyResponse>, Status> {
        let verified = self.auth.verify_api_key(&request.get_ref().hash).await?;
        let key = verified.key;
        Ok(Response::new(pb::VerifyApiKeyResponse {
            key_id: key.id.to_string(),
            user_id: key.user_id.to_string(),
            email: verified.email,
            scopes: key.scopes,
            expires_at: key.expires_at.map(timestamp),
            revoked_at: key.revoked_at.map(timestamp),
            rate_limit_per_minute: key.rate_limit_per_minute,
        }))
    }

    async fn get_session_state(
        &self,
        request: Request<pb::GetSessionStateRequest>,
    ) -> Result<Response<pb::GetSessionStateResponse>, Status> {
        let user_id = user_id("user_id", &request.get_ref().user_id)?;
        let state = self.auth.session_state(user_id).await?;
        Ok(Response::new(pb::GetSessionStateResponse {
            not_before: state
                .not_before
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            deleted: state.deleted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session state a test changes, counting the questions.
    #[derive(Clone, Default)]
    struct Sessions(Arc<std::sync::Mutex<token::SessionState>>);

    #[async_trait::async_trait]
    impl token::SessionSource for Sessions {
        async fn state(&self, _user_id: Uuid) -> anyhow::Result<token::SessionState> {
            Ok(*self.0.lock().expect("state"))
        }
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_but_its_session_is_checked_every_time() {
        use atelier_common::token::{
            AUDIENCE, Claims, ISSUER, JwtVerifier, SessionState, StaticKeySource, TokenError,
        };
        let ring = KeyRing::ephemeral().expect("keys");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = |exp: i64| Claims {
            sub: Uuid::new_v4().to_string(),
            email: "a@example.com".into(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now - 10,
            exp,
            jti: Uuid::new_v4().to_string(),
            role: String::new(),
        };
        let sessions = Sessions::default();
        // No session caching: every check asks the source.
        let verifier = JwtVerifier::with_session_ttl(
            StaticKeySource(jwks(&ring)),
            sessions.clone(),
            std::time::Duration::ZERO,
        );
        let token = ring.sign(&claims(now + 900)).expect("token");
        let first = verifier.verify(&token).await.expect("verified");
        assert_eq!(verifier.verify(&token).await, Ok(first), "remembered");

        *sessions.0.lock().expect("state") = SessionState {
            not_before: Some(now),
            deleted: false,
        };
        assert_eq!(
            verifier.verify(&token).await,
            Err(TokenError::Revoked),
            "a remembered token of a revoked session is refused"
        );

        // A token with a signature not made by the ring is refused, remembered or not.
        let mut forged = ring.sign(&claims(now + 900)).expect("token");
        let at = forged.len() - 10;
        let other = if &forged[at..=at] == "A" { "B" } else { "A" };
        forged.replace_range(at..=at, other);
        assert_eq!(verifier.verify(&forged).await, Err(TokenError::Invalid));
        let expired = ring.sign(&claims(now - 60)).expect("token");
        assert_eq!(verifier.verify(&expired).await, Err(TokenError::Expired));
    }
}
