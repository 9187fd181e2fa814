//! `/api/webhooks/*`: the caller's outgoing webhook endpoints, their signing
//! secrets and delivery log, over the processing service's `WebhookService`.
//! Deliveries are signed as Standard Webhooks (https://www.standardwebhooks.com/)
//! sign them.

use atelier_proto::webhook::v1::{self as pb, webhook_service_client::WebhookServiceClient};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    extract::{Body, Query},
    problem::Problem,
    state::{AppState, grpc_request},
    views::{page_size, page_token, rfc3339},
};

fn client(state: &AppState) -> WebhookServiceClient<tonic::transport::Channel> {
    WebhookServiceClient::new(state.processing.clone())
}

/// An event type a webhook endpoint can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum WebhookEventType {
    #[serde(rename = "job.completed")]
    JobCompleted,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    /// Every job of a batch reached a final state.
    #[serde(rename = "batch.completed")]
    BatchCompleted,
    /// The user's spend reached the alert share (or the whole) of a daily or
    /// monthly budget; once per period and threshold.
    #[serde(rename = "budget.threshold_reached")]
    BudgetThresholdReached,
    /// Sent by `POST /api/webhooks/{id}/test` only.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl WebhookEventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::JobCompleted => "job.completed",
            Self::JobFailed => "job.failed",
            Self::JobCancelled => "job.cancelled",
            Self::BatchCompleted => "batch.completed",
            Self::BudgetThresholdReached => "budget.threshold_reached",
            Self::WebhookTest => "webhook.test",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(raw.to_owned())).ok()
    }
}

fn names(types: &[WebhookEventType]) -> Vec<String> {
    types.iter().map(|t| t.as_str().to_owned()).collect()
}

/// A webhook endpoint of yours.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    pub id: String,
    pub url: String,
    pub description: String,
    /// The event types sent there; empty: every type.
    pub event_types: Vec<WebhookEventType>,
    /// False when you or the platform disabled it: nothing is sent there.
    pub enabled: bool,
    /// Why the platform disabled it (deliveries kept failing); enable it again with
    /// `PATCH {"enabled": true}`.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    /// The signing secret (`whsec_...`): in the answers of create, get and
    /// rotate-secret only.
    pub secret: Option<String>,
    /// Until when the secret before the last rotation still signs deliveries.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

fn webhook_body(endpoint: Option<pb::Endpoint>) -> Result<WebhookBody, Problem> {
    let endpoint =
        endpoint.ok_or_else(|| Problem::from(tonic::Status::internal("reply without endpoint")))?;
    Ok(WebhookBody {
        id: endpoint.id,
        url: endpoint.url,
        description: endpoint.description,
        event_types: endpoint
            .event_types
            .iter()
            .filter_map(|t| WebhookEventType::parse(t))
            .collect(),
        enabled: endpoint.enabled,
        disabled_reason: Some(endpoint.disabled_reason).filter(|reason| !reason.is_empty()),
        disabled_at: rfc3339(endpoint.disabled_at),
        secret: Some(endpoint.secret).filter(|secret| !secret.is_empty()),
        previous_secret_expires_at: rfc3339(endpoint.previous_secret_expires_at),
        created_at: rfc3339(endpoint.created_at),
        updated_at: rfc3339(endpoint.updated_at),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Newest first, without their secrets.
    pub webhooks: Vec<WebhookBody>,
}

// Fields the service checks default to empty here, so that every missing one is
// named in the problem at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// Where events are POSTed: http(s), and not an internal address unless the
    /// platform allows it.
    #[serde(default)]
    #[schema(required = true, max_length = 2048)]
    pub url: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    /// Empty or absent: every event type.
    #[serde(default)]
    pub event_types: Vec<WebhookEventType>,
}

/// The fields to change; those left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookBody {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// The new list; empty: every event type.
    pub event_types: Option<Vec<WebhookEventType>>,
    /// `true` enables an endpoint again (also one the platform disabled).
    pub enabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookDeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Every attempt failed.
    Failed,
}

/// One try at a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAttemptBody {
    pub number: i32,
    pub at: Option<String>,
    /// The HTTP status the endpoint answered; `null` when it did not answer.
    pub response_status: Option<i32>,
    /// The start of its answer (at most 1 KiB).
    pub response_body: Option<String>,
    pub latency_ms: i64,
    /// Why it failed without an answer (timeout, connection refused, refused target).
    pub error: Option<String>,
}

/// One event on its way to one endpoint, with its attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryBody {
    pub id: String,
    pub webhook_id: String,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    pub message_id: String,
    pub event_type: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<String>,
    pub created_at: Option<String>,
    /// The body every attempt sent.
    pub request_body: String,
    /// Oldest first.
    pub attempt_log: Vec<WebhookAttemptBody>,
}

fn delivery_body(delivery: Option<pb::Delivery>) -> Result<WebhookDeliveryBody, Problem> {
    let delivery =
        delivery.ok_or_else(|| Problem::from(tonic::Status::internal("reply without delivery")))?;
    Ok(WebhookDeliveryBody {
        status: match delivery.status() {
            pb::DeliveryStatus::Succeeded => WebhookDeliveryStatus::Succeeded,
            pb::DeliveryStatus::Failed => WebhookDeliveryStatus::Failed,
            _ => WebhookDeliveryStatus::Pending,
        },
        id: delivery.id,
        webhook_id: delivery.endpoint_id,
        message_id: delivery.message_id,
        event_type: delivery.event_type,
        attempts: delivery.attempts,
        next_attempt_at: rfc3339(delivery.next_attempt_at),
        created_at: rfc3339(delivery.created_at),
        request_body: delivery.request_body,
        attempt_log: delivery
            .attempt_log
            .into_iter()
            .map(|attempt| WebhookAttemptBody {
                number: attempt.number,
                at: rfc3339(attempt.at),
                response_status: Some(attempt.response_status).filter(|status| *status != 0),
                response_body: Some(attempt.response_body).filter(|body| !body.is_empty()),
                latency_ms: attempt.latency_ms,
                error: Some(attempt.error).filter(|error| !error.is_empty()),
            })
            .collect(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryList {
    /// Newest first.
    pub deliveries: Vec<WebhookDeliveryBody>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DeliveryParams {
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

const NOT_FOUND: &str = "No such webhook endpoint of yours";

/// Register a webhook endpoint. The answer carries its signing secret.
#[utoipa::path(
    post, path = "/api/webhooks", tag = "webhooks", operation_id = "create_webhook",
    security(("bearer" = [])),
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "The endpoint, with its secret", body = WebhookBody),
        (status = 422, description = "Invalid fields (each named): a URL that is not http(s), or resolves to an internal address, names `url`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<CreateWebhookBody>,
) -> Result<(StatusCode, Json<WebhookBody>), Problem> {
    let reply = client(&state)
        .create_endpoint(grpc_request(
            pb::CreateEndpointRequest {
                url: request.url,
                description: request.description,
                event_types: names(&request.event_types),
            },
            &headers,
        ))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(webhook_body(reply.into_inner().endpoint)?),
    ))
}

/// Your webhook endpoints, newest first (without their secrets).
#[utoipa::path(
    get, path = "/api/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    security(("bearer" = [])),
    responses((status = 200, description = "Your endpoints", body = WebhookList))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<WebhookList>, Problem> {
    let reply = client(&state)
        .list_endpoints(grpc_request(pb::ListEndpointsRequest {}, &headers))
        .await?;
    Ok(Json(WebhookList {
        webhooks: reply
            .into_inner()
            .endpoints
            .into_iter()
            .map(|endpoint| webhook_body(Some(endpoint)))
            .collect::<Result<_, _>>()?,
    }))
}

/// One webhook endpoint, with its signing secret.
#[utoipa::path(
    get, path = "/api/webhooks/{webhook_id}", tag = "webhooks", operation_id = "get_webhook",
    security(("bearer" = [])),
    params(("webhook_id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookBody),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
) -> Result<Json<WebhookBody>, Problem> {
    let reply = client(&state)
        .get_endpoint(grpc_request(
            pb::GetEndpointRequest {
                endpoint_id: webhook_id,
            },
            &headers,
        ))
        .await?;
    Ok(Json(webhook_body(reply.into_inner().endpoint)?))
}

/// Change a webhook endpoint: its URL, description, event types, or whether it is
/// enabled (`true` enables one the platform disabled).
#[utoipa::path(
    patch, path = "/api/webhooks/{webhook_id}", tag = "webhooks", operation_id = "update_webhook",
    security(("bearer" = [])),
    params(("webhook_id" = Uuid, Path, description = "Endpoint id")),
    request_body = UpdateWebhookBody,
    responses(
        (status = 200, description = "The changed endpoint (without its secret)", body = WebhookBody),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (each named)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
    Body(patch): Body<UpdateWebhookBody>,
) -> Result<Json<WebhookBody>, Problem> {
    let reply = client(&state)
        .update_endpoint(grpc_request(
            pb::UpdateEndpointRequest {
                endpoint_id: webhook_id,
                url: patch.url,
                description: patch.description,
                event_types: patch.event_types.map(|types| pb::EventTypes {
                    event_types: names(&types),
                }),
                enabled: patch.enabled,
            },
            &headers,
        ))
        .await?;
    Ok(Json(webhook_body(reply.into_inner().endpoint)?))
}

/// Delete a webhook endpoint with its delivery log.
#[utoipa::path(
    delete, path = "/api/webhooks/{webhook_id}", tag = "webhooks", operation_id = "delete_webhook",
    security(("bearer" = [])),
    params(("webhook_id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
) -> Result<StatusCode, Problem> {
    client(&state)
        .delete_endpoint(grpc_request(
            pb::DeleteEndpointRequest {
                endpoint_id: webhook_id,
            },
            &headers,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret. The previous one keeps signing deliveries (as a second
/// signature) for 24 hours, so receivers can switch over.
#[utoipa::path(
    post, path = "/api/webhooks/{webhook_id}/rotate-secret", tag = "webhooks", operation_id = "rotate_webhook_secret",
    security(("bearer" = [])),
    params(("webhook_id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = WebhookBody),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
) -> Result<Json<WebhookBody>, Problem> {
    let reply = client(&state)
        .rotate_secret(grpc_request(
            pb::RotateSecretRequest {
                endpoint_id: webhook_id,
            },
            &headers,
        ))
        .await?;
    Ok(Json(webhook_body(reply.into_inner().endpoint)?))
}

/// A webhook endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get, path = "/api/webhooks/{webhook_id}/deliveries", tag = "webhooks", operation_id = "list_webhook_deliveries",
    security(("bearer" = [])),
    params(
        ("webhook_id" = Uuid, Path, description = "Endpoint id"),
        ("page_size" = Option<i32>, Query, description = "1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "The `next_page_token` of the page before", pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"),
    ),
    responses(
        (status = 200, description = "A page of deliveries", body = WebhookDeliveryList),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<WebhookDeliveryList>, Problem> {
    let (size, token) = (page_size(params.page_size), page_token(params.page_token));
    let (page_size, page_token) = match (size, token) {
        (Ok(size), Ok(token)) => (size, token),
        (size, token) => {
            return Err(Problem::invalid(
                size.err().into_iter().chain(token.err()).collect(),
            ));
        }
    };
    let reply = client(&state)
        .list_deliveries(grpc_request(
            pb::ListDeliveriesRequest {
                endpoint_id: webhook_id,
                page_size,
                page_token,
            },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(Json(WebhookDeliveryList {
        deliveries: reply
            .deliveries
            .into_iter()
            .map(|delivery| delivery_body(Some(delivery)))
            .collect::<Result<_, _>>()?,
        next_page_token: Some(reply.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// Send a delivery's event again (same `webhook-id`), once, now.
#[utoipa::path(
    post, path = "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", operation_id = "redeliver_webhook",
    security(("bearer" = [])),
    params(
        ("webhook_id" = Uuid, Path, description = "Endpoint id"),
        ("delivery_id" = Uuid, Path, description = "Delivery id"),
    ),
    responses(
        (status = 202, description = "The new delivery, due now", body = WebhookDeliveryBody),
        (status = 404, description = "No such endpoint or delivery of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<WebhookDeliveryBody>), Problem> {
    let reply = client(&state)
        .redeliver(grpc_request(
            pb::RedeliverRequest {
                endpoint_id: webhook_id,
                delivery_id,
            },
            &headers,
        ))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(delivery_body(reply.into_inner().delivery)?),
    ))
}

/// Send a `webhook.test` event to the endpoint.
#[utoipa::path(
    post, path = "/api/webhooks/{webhook_id}/test", tag = "webhooks", operation_id = "test_webhook",
    security(("bearer" = [])),
    params(("webhook_id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 202, description = "The test delivery, due now", body = WebhookDeliveryBody),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn test(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
) -> Result<(StatusCode, Json<WebhookDeliveryBody>), Problem> {
    let reply = client(&state)
        .send_test_event(grpc_request(
            pb::SendTestEventRequest {
                endpoint_id: webhook_id,
            },
            &headers,
        ))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(delivery_body(reply.into_inner().delivery)?),
    ))
}

/// This module's routes, each declared once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(test))
}
