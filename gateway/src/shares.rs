//! Share links: `/api/images/{id}/shares`, `/api/shares` for their owner, and the
//! public `/api/shared/{token}` the viewer page (`/s/{token}`) reads, over the
//! image service.

use std::{net::SocketAddr, sync::Arc};

use atelier_common::FieldViolation;
use atelier_proto::image::v1::{self as pb, image_service_client::ImageServiceClient};
use axum::{
    Extension, Json,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::transport::Channel;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    forwarded::TrustedProxies,
    problem::Problem,
    state::{AppState, grpc_request},
    views::{page_size, page_token, rfc3339},
};

/// Where users reach the platform, for the links handed out: `PUBLIC_URL`, else
/// the origin the request came to.
#[derive(Clone, Debug)]
pub struct PublicOrigin {
    pub public_url: Option<String>,
    /// The gateway serves TLS itself.
    pub tls: bool,
    /// Proxies whose `X-Forwarded-Proto` is believed.
    pub proxies: TrustedProxies,
}

impl PublicOrigin {
    /// `https://host[:port]` of a request from `peer`, or `PUBLIC_URL`.
    fn origin(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
        if let Some(url) = &self.public_url {
            return Some(url.trim_end_matches('/').to_owned());
        }
        let host = headers.get(header::HOST)?.to_str().ok()?;
        // A Host that is no host name is not echoed into a link.
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return None;
        }
        let https =
            self.tls || peer.is_some_and(|peer| self.proxies.forwarded_https(peer.ip(), headers));
        Some(format!("{}://{host}", if https { "https" } else { "http" }))
    }
}

fn client(state: &AppState) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(state.image.clone())
}

/// Whether a link still works, as its owner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareState {
    Active,
    Expired,
    Revoked,
}

/// A share link, as its owner sees it (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareLinkBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// The image shown.
    #[schema(format = Uuid)]
    pub image_id: String,
    /// The image shown beside it as "before"; absent when the link shows one image.
    #[schema(format = Uuid)]
    pub before_image_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// When the link stops working.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// When you revoked it; absent while it is not revoked.
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    pub state: ShareState,
    /// How often it was opened.
    pub view_count: i64,
    /// When it was last opened; absent when never.
    #[schema(format = DateTime)]
    pub last_viewed_at: Option<String>,
}

impl From<pb::ShareLink> for ShareLinkBody {
    fn from(link: pb::ShareLink) -> Self {
        let expires = link.expires_at.and_then(atelier_common::instant);
        let state = if link.revoked_at.is_some() {
            ShareState::Revoked
        } else if expires.is_none_or(|at| at <= OffsetDateTime::now_utc()) {
            ShareState::Expired
        } else {
            ShareState::Active
        };
        Self {
            id: link.id,
            image_id: link.image_id,
            before_image_id: Some(link.before_image_id).filter(|id| !id.is_empty()),
            created_at: rfc3339(link.created_at),
            expires_at: expires.and_then(|at| at.format(&Rfc3339).ok()),
            revoked_at: rfc3339(link.revoked_at),
            state,
            view_count: link.view_count,
            last_viewed_at: rfc3339(link.last_viewed_at),
        }
    }
}

/// A new share link.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShareBody {
    /// How long the link works, in seconds: at least 60, at most `SHARE_MAX_DAYS`
    /// days. Absent (and no `expires_at`): `SHARE_DEFAULT_DAYS` days.
    #[schema(minimum = 60)]
    pub expires_in_seconds: Option<i64>,
    /// When the link stops working (RFC 3339), instead of `expires_in_seconds`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Show the image beside the one it was made from (a result's input).
    #[serde(default)]
    pub before_after: bool,
    /// The "before" image, one of yours, when the image names no source or to
    /// show another one; implies `before_after`.
    #[schema(format = Uuid)]
    pub before_image_id: Option<String>,
}

/// A share link just created: the only time its token is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedShareBody {
    pub link: ShareLinkBody,
    /// The link's secret (43 characters); only its hash is kept, so it cannot be
    /// shown again.
    pub token: String,
    /// The public page: `<PUBLIC_URL or this request's origin>/s/<token>`.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShareList {
    /// Newest first, revoked and expired ones too.
    pub links: Vec<ShareLinkBody>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

/// One image of a share, as anyone with the link sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedImageBody {
    pub mime_type: String,
    pub width: u32,
    pub height: u32,
    /// Size in bytes.
    pub file_size: i64,
    /// A short-lived URL of the image, good until `url_expires_at`.
    pub url: String,
}

impl From<pb::SharedImage> for SharedImageBody {
    fn from(image: pb::SharedImage) -> Self {
        Self {
            mime_type: image.mime_type,
            width: image.width,
            height: image.height,
            file_size: image.file_size,
            url: image.url,
        }
    }
}

/// What a share link shows: nothing of who shared it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedBody {
    pub image: SharedImageBody,
    /// The image before, when the link shows both.
    pub before: Option<SharedImageBody>,
    /// When the link stops working.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// When the image URLs stop working: load the page again for fresh ones.
    #[schema(format = DateTime)]
    pub url_expires_at: Option<String>,
}

/// The expiry asked for, as the service takes it.
fn expiry(body: &CreateShareBody) -> Result<(i64, Option<prost_types::Timestamp>), Problem> {
    let at = match &body.expires_at {
        None => None,
        Some(raw) => Some(
            OffsetDateTime::parse(raw, &Rfc3339)
                .map(atelier_common::timestamp)
                .map_err(|_| {
                    Problem::invalid(vec![FieldViolation::new(
                        "expires_at",
                        "is not an RFC 3339 date and time",
                    )])
                })?,
        ),
    };
    Ok((body.expires_in_seconds.unwrap_or(0), at))
}

/// Share one of your images: a public link anyone can open without an account,
/// until it expires or you revoke it. The response is the only time the link's
/// token is shown.
#[utoipa::path(
    post, path = "/api/images/{id}/shares", tag = "shares", operation_id = "create_share_link",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Image id")),
    request_body = CreateShareBody,
    responses(
        (status = 201, description = "Created; `url` is the public page", body = CreatedShareBody),
        (status = 404, description = "No such image of yours (or no such `before_image_id` of yours)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Expiry out of bounds, both `expires_in_seconds` and `expires_at`, or `before_after` for an image made from no image of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<CreateShareBody>,
) -> Result<impl IntoResponse, Problem> {
    let (expires_in_seconds, expires_at) = expiry(&body)?;
    let reply = client(&state)
        .create_share_link(grpc_request(
            pb::CreateShareLinkRequest {
                image_id: id,
                expires_in_seconds,
                expires_at,
                before_after: body.before_after,
                before_image_id: body.before_image_id.unwrap_or_default(),
            },
            &headers,
        ))
        .await?
        .into_inner();
    let link = reply
        .link
        .ok_or_else(|| Problem::from(tonic::Status::internal("reply without link")))?;
    let origin = state
        .origin
        .origin(peer.map(|Extension(ConnectInfo(peer))| peer), &headers)
        .unwrap_or_default();
    let url = format!("{origin}/s/{}", reply.token);
    let mut response = (
        StatusCode::CREATED,
        Json(CreatedShareBody {
            link: link.into(),
            token: reply.token,
            url,
        }),
    )
        .into_response();
    // The token is a secret: kept by no cache.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Your share links, newest first, with their state and views.
#[utoipa::path(
    get, path = "/api/shares", tag = "shares", operation_id = "list_share_links",
    security(("bearer" = [])),
    params(
        ("page_size" = Option<i32>, Query, minimum = 1, maximum = 100, description = "Links per page (default 50, at most 100)"),
        ("page_token" = Option<String>, Query, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "The `next_page_token` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page of links", body = ShareList),
        (status = 422, description = "Invalid page size or token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<ShareList>, Problem> {
    let mut violations = Vec::new();
    let page_size = page_size(params.page_size).unwrap_or_else(|violation| {
        violations.push(violation);
        0
    });
    let page_token = page_token(params.page_token).unwrap_or_else(|violation| {
        violations.push(violation);
        String::new()
    });
    if !violations.is_empty() {
        return Err(Problem::invalid(violations));
    }
    let reply = client(&state)
        .list_share_links(grpc_request(
            pb::ListShareLinksRequest {
                page_size,
                page_token,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(ShareList {
        links: reply.links.into_iter().map(ShareLinkBody::from).collect(),
        next_page_token: Some(reply.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// Revoke one of your share links: it stops working at once (the image URLs it
/// handed out last at most `SIGNED_URL_TTL` more). Revoking it again changes
/// nothing.
#[utoipa::path(
    delete, path = "/api/shares/{id}", tag = "shares", operation_id = "revoke_share_link",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Share link id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such share link of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    client(&state)
        .revoke_share_link(grpc_request(
            pb::RevokeShareLinkRequest { share_id: id },
            &headers,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a share link shows, for anyone holding it: no account needed. Unknown,
/// revoked and expired links get the same `404`. Never cached, never indexed,
/// never sent on as a referrer.
#[utoipa::path(
    get, path = "/api/shared/{token}", tag = "shares", operation_id = "get_shared_image",
    params(("token" = String, Path, description = "The link's token (the last part of `/s/<token>`)")),
    responses(
        (status = 200, description = "The image shared (and the one before, when shown)", body = SharedBody),
        (status = 404, description = "The link does not exist, has expired or was revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn shared(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let viewed = async {
        let reply = client(&state)
            .get_shared_image(grpc_request(pb::GetSharedImageRequest { token }, &headers))
            .await?
            .into_inner();
        let image = reply
            .image
            .ok_or_else(|| Problem::from(tonic::Status::internal("reply without image")))?;
        Ok::<_, Problem>(Json(SharedBody {
            image: image.into(),
            before: reply.before.map(SharedImageBody::from),
            expires_at: rfc3339(reply.expires_at),
            url_expires_at: rfc3339(reply.url_expires_at),
        }))
    }
    .await;
    let mut response = viewed.into_response();
    private_page_headers(response.headers_mut());
    response
}

/// What a share link's answers (and its page) carry: kept by no cache, sent on as
/// no referrer, indexed by no search engine.
pub fn private_page_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
}

/// A request path fit for logs: a share token in it is left out.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    for prefix in ["/api/shared/", "/s/"] {
        if path.starts_with(prefix) && path.len() > prefix.len() {
            return format!("{prefix}…").into();
        }
    }
    path.into()
}

/// The share page `/s/{token}` of the web app: served as the app, with the
/// headers of [`private_page_headers`].
pub async fn page_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let share_page = request.uri().path().starts_with("/s/");
    let mut response = next.run(request).await;
    if share_page {
        private_page_headers(response.headers_mut());
    }
    response
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(revoke))
        .routes(routes!(shared))
}

/// Shared between handlers through [`AppState`].
pub type Origin = Arc<PublicOrigin>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_stay_out_of_logged_paths() {
        assert_eq!(loggable_path("/api/shared/abc"), "/api/shared/…");
        assert_eq!(loggable_path("/s/abc"), "/s/…");
        assert_eq!(loggable_path("/api/shares"), "/api/shares");
        assert_eq!(loggable_path("/settings"), "/settings");
    }

    #[test]
    fn links_point_at_the_public_url_or_the_request_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("atelier.test:8080"));
        let origin = PublicOrigin {
            public_url: None,
            tls: false,
            proxies: TrustedProxies::none(),
        };
        assert_eq!(
            origin.origin(None, &headers).as_deref(),
            Some("http://atelier.test:8080")
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil.test/x?"));
        assert_eq!(origin.origin(None, &headers), None);
        let public = PublicOrigin {
            public_url: Some("https://atelier.example.com/".into()),
            ..origin
        };
        assert_eq!(
            public.origin(None, &headers).as_deref(),
            Some("https://atelier.example.com")
        );
    }
}
