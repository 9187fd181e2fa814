//! `/api/keys`: the caller's API keys, over the auth service.

use atelier_common::FieldViolation;
use atelier_proto::auth::v1 as pb;
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::Body,
    problem::Problem,
    state::{AppState, grpc_request},
    views::rfc3339,
};

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewApiKey {
    /// What the key is for (1 to 100 characters).
    #[serde(default)]
    #[schema(
        required = true,
        example = "ci upscaler",
        min_length = 1,
        max_length = 100
    )]
    pub name: String,
    /// What the key may do: `images:read`, `images:write`, `processing:read`,
    /// `processing:write`, `workflows:read`, `account:read`, `account:write`,
    /// `keys:read`, `keys:write`, `webhooks:read`, `webhooks:write`,
    /// `shares:read`, `shares:write`. Each operation of this API names the scopes
    /// it needs in its security requirement. A key may create keys only with
    /// scopes it has itself.
    #[serde(default)]
    #[schema(required = true, min_items = 1, example = json!(["images:read", "processing:write"]))]
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339, in the future); absent: never.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Requests a minute allowed with this key (1 to 100000); absent: the
    /// platform's default per key. Your account's own limit applies as well.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_limit_per_minute: Option<u32>,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyBody {
    pub id: String,
    /// The full key: only in the answer to its creation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "atl_live_AbC1dEf2...")]
    pub key: Option<String>,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "atl_live_AbC1")]
    pub prefix: String,
    pub name: String,
    pub scopes: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Updated at most once a minute.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
}

impl ApiKeyBody {
    fn from_pb(key: pb::ApiKey, secret: Option<String>) -> Self {
        Self {
            id: key.id,
            key: secret,
            prefix: key.prefix,
            name: key.name,
            scopes: key.scopes,
            created_at: rfc3339(key.created_at),
            expires_at: rfc3339(key.expires_at),
            last_used_at: rfc3339(key.last_used_at),
            revoked_at: rfc3339(key.revoked_at),
            rate_limit_per_minute: key.rate_limit_per_minute,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Newest first, revoked keys included.
    pub keys: Vec<ApiKeyBody>,
}

/// Create an API key. The key is in this answer only: store it now. Send it as
/// `Authorization: Bearer atl_live_...` wherever an access token is accepted.
#[utoipa::path(
    post, path = "/api/keys", tag = "keys", operation_id = "create_api_key",
    security(("bearer" = [])),
    request_body = NewApiKey,
    responses(
        (status = 201, description = "The key, with `key` set this once", body = ApiKeyBody),
        (status = 403, description = "An API key may not grant a scope it lacks", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Too many keys on the account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown scope, an empty name, an expiry in the past (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<NewApiKey>,
) -> Result<impl IntoResponse, Problem> {
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|text| {
            OffsetDateTime::parse(text, &Rfc3339)
                .map(atelier_common::timestamp)
                .map_err(|_| {
                    Problem::invalid(vec![FieldViolation::new(
                        "expires_at",
                        "is not an RFC 3339 date and time",
                    )])
                })
        })
        .transpose()?;
    let reply = state
        .auth
        .clone()
        .create_api_key(grpc_request(
            pb::CreateApiKeyRequest {
                name: body.name,
                scopes: body.scopes,
                expires_at,
                rate_limit_per_minute: body.rate_limit_per_minute,
            },
            &headers,
        ))
        .await?
        .into_inner();
    let key = reply
        .api_key
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without key")))?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyBody::from_pb(key, Some(reply.key))),
    ))
}

/// Your API keys, newest first: prefixes, never the keys.
#[utoipa::path(
    get, path = "/api/keys", tag = "keys", operation_id = "list_api_keys",
    security(("bearer" = [])),
    responses((status = 200, description = "Your keys", body = ApiKeyList))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ApiKeyList>, Problem> {
    let reply = state
        .auth
        .clone()
        .list_api_keys(grpc_request(pb::ListApiKeysRequest {}, &headers))
        .await?
        .into_inner();
    Ok(Json(ApiKeyList {
        keys: reply
            .api_keys
            .into_iter()
            .map(|key| ApiKeyBody::from_pb(key, None))
            .collect(),
    }))
}

/// Revoke one of your API keys: every replica refuses it within seconds.
/// Revoking a revoked key succeeds.
#[utoipa::path(
    delete, path = "/api/keys/{id}", tag = "keys", operation_id = "revoke_api_key",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .clone()
        .revoke_api_key(grpc_request(pb::RevokeApiKeyRequest { id }, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
}
