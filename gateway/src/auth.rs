//! `/api/auth/*`: accounts and sessions, over the auth service's gRPC API.

use atelier_common::FieldViolation;
use atelier_proto::auth::v1 as pb;
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::Body,
    problem::Problem,
    state::{AppState, grpc_request},
};

/// An email and password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    #[serde(default)]
    #[schema(required = true, example = "ada@example.com", format = Email, max_length = 254)]
    pub email: String,
    /// At least 10 characters, not the email address.
    #[serde(default)]
    #[schema(
        required = true,
        example = "correct horse battery staple",
        format = Password,
        min_length = 10,
        max_length = 256
    )]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub email: String,
    /// `user`, or `admin` for an administrator (who may read the audit log).
    #[schema(example = "user")]
    pub role: String,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password the account has now.
    #[serde(default)]
    #[schema(required = true, format = Password, min_length = 1, max_length = 256)]
    pub current_password: String,
    /// At least 10 characters, not the email address.
    #[serde(default)]
    #[schema(required = true, format = Password, min_length = 10, max_length = 256)]
    pub new_password: String,
    /// The refresh token of the session to keep signed in; absent ends every session.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// A signed-in session.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// An EdDSA-signed JWT; send it as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Opaque; exchange it at `/api/auth/refresh`. Each use returns a new one and
    /// retires the old; reusing a retired one ends the session.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: UserInfo,
}

impl TryFrom<Option<pb::Session>> for TokenResponse {
    type Error = Problem;
    fn try_from(session: Option<pb::Session>) -> Result<Self, Problem> {
        let session =
            session.ok_or_else(|| Problem::from(tonic::Status::internal("empty session")))?;
        let user = session
            .user
            .ok_or_else(|| Problem::from(tonic::Status::internal("session without user")))?;
        Ok(Self {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            token_type: session.token_type,
            expires_in: session.expires_in,
            user: UserInfo {
                id: user.id,
                email: user.email,
                role: user.role,
            },
        })
    }
}

fn require(fields: &[(&str, &str)]) -> Result<(), Problem> {
    let missing: Vec<_> = fields
        .iter()
        .filter(|(_, value)| value.trim().is_empty())
        .map(|(name, _)| FieldViolation::new(*name, "is required"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid(missing))
    }
}

/// Create an account and sign in.
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth", operation_id = "register",
    request_body = Credentials,
    responses(
        (status = 201, description = "Account created and signed in", body = TokenResponse),
        (status = 409, description = "An account with this email exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email or password policy not met", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<Credentials>,
) -> Result<impl IntoResponse, Problem> {
    require(&[("email", &body.email), ("password", &body.password)])?;
    let reply = state
        .auth
        .clone()
        .register(grpc_request(
            pb::RegisterRequest {
                email: body.email,
                password: body.password,
            },
            &headers,
        ))
        .await?;
    let tokens = TokenResponse::try_from(reply.into_inner().session)?;
    Ok((StatusCode::CREATED, Json(tokens)))
}

/// Sign in with an email and password.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth", operation_id = "login",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Invalid email or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<Credentials>,
) -> Result<Json<TokenResponse>, Problem> {
    require(&[("email", &body.email), ("password", &body.password)])?;
    let reply = state
        .auth
        .clone()
        .login(grpc_request(
            pb::LoginRequest {
                email: body.email,
                password: body.password,
            },
            &headers,
        ))
        .await?;
    Ok(Json(TokenResponse::try_from(reply.into_inner().session)?))
}

/// Exchange a refresh token for a new session.
#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth", operation_id = "refresh",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access and refresh token", body = TokenResponse),
        (status = 401, description = "Unknown, expired or reused refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The token is missing", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<RefreshBody>,
) -> Result<Json<TokenResponse>, Problem> {
    require(&[("refresh_token", &body.refresh_token)])?;
    let reply = state
        .auth
        .clone()
        .refresh(grpc_request(
            pb::RefreshRequest {
                refresh_token: body.refresh_token,
            },
            &headers,
        ))
        .await?;
    Ok(Json(TokenResponse::try_from(reply.into_inner().session)?))
}

/// End the session a refresh token belongs to.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth", operation_id = "logout",
    request_body = RefreshBody,
    responses(
        (status = 204, description = "Signed out (also when the token was unknown)"),
        (status = 422, description = "The token is missing", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<RefreshBody>,
) -> Result<StatusCode, Problem> {
    require(&[("refresh_token", &body.refresh_token)])?;
    state
        .auth
        .clone()
        .logout(grpc_request(
            pb::LogoutRequest {
                refresh_token: body.refresh_token,
            },
            &headers,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the caller ("sign out everywhere"): all their refresh
/// tokens stop working.
#[utoipa::path(
    post, path = "/api/auth/logout-all", tag = "auth", operation_id = "logout_all",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session ended"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout_all(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .clone()
        .logout_all(grpc_request(pb::LogoutAllRequest {}, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth", operation_id = "get_current_user",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in account", body = UserInfo),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<UserInfo>, Problem> {
    let reply = state
        .auth
        .clone()
        .get_current_user(grpc_request(pb::GetCurrentUserRequest {}, &headers))
        .await?;
    let user = reply
        .into_inner()
        .user
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without user")))?;
    Ok(Json(UserInfo {
        id: user.id,
        email: user.email,
        role: user.role,
    }))
}

/// Change your password. The current password must be given. Every other session
/// of yours ends, and access tokens issued so far stop working: the session whose
/// refresh token you send stays signed in (refresh it for a new access token).
#[utoipa::path(
    post, path = "/api/auth/password", tag = "auth", operation_id = "change_password",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Password changed; other sessions ended"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or the new password does not meet the policy", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<PasswordChange>,
) -> Result<StatusCode, Problem> {
    require(&[
        ("current_password", &body.current_password),
        ("new_password", &body.new_password),
    ])?;
    state
        .auth
        .clone()
        .change_password(grpc_request(
            pb::ChangePasswordRequest {
                current_password: body.current_password,
                new_password: body.new_password,
                refresh_token: body.refresh_token.unwrap_or_default(),
            },
            &headers,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One public key of the JWKS.
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkBody {
    pub kid: String,
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JwksBody {
    pub keys: Vec<JwkBody>,
}

/// The public keys access tokens are signed with (RFC 7517).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth", operation_id = "get_jwks",
    responses((status = 200, description = "The JSON Web Key Set", body = JwksBody))
)]
pub async fn jwks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<JwksBody>, Problem> {
    let reply = state
        .auth
        .clone()
        .get_jwks(grpc_request(pb::GetJwksRequest {}, &headers))
        .await?;
    let keys = reply
        .into_inner()
        .keys
        .into_iter()
        .map(|key| JwkBody {
            kid: key.kid,
            kty: key.kty,
            crv: key.crv,
            x: key.x,
            alg: key.alg,
            key_use: key.r#use,
        })
        .collect();
    Ok(Json(JwksBody { keys }))
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(jwks))
}
