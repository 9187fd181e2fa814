//! gRPC handlers of `atelier.webhook.v1.WebhookService`: decode, authorize (every
//! call acts on the caller's own endpoints), call the domain, encode.

use atelier_common::{grpc::caller, page, timestamp};
use atelier_proto::webhook::v1::{self as pb, webhook_service_server::WebhookService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::outbound::{DeliveryLog, DeliveryStatus, Endpoint, EndpointChange, Message, Webhooks},
    error::ProcessingError,
};

pub struct WebhookApi {
    webhooks: Webhooks,
}

impl WebhookApi {
    pub fn new(webhooks: Webhooks) -> Self {
        Self { webhooks }
    }
}

/// An endpoint id from the caller; malformed, it names no endpoint of theirs.
fn endpoint_id(raw: &str) -> Result<Uuid, ProcessingError> {
    Uuid::parse_str(raw).map_err(|_| ProcessingError::EndpointNotFound)
}

/// An endpoint as its owner sees it; its secret only when `with_secret`.
pub fn encode_endpoint(endpoint: &Endpoint, with_secret: bool) -> pb::Endpoint {
    pb::Endpoint {
        id: endpoint.id.to_string(),
        url: endpoint.url.clone(),
        description: endpoint.description.clone(),
        event_types: endpoint.event_types.clone(),
        enabled: endpoint.enabled,
        disabled_reason: endpoint.disabled_reason.clone().unwrap_or_default(),
        disabled_at: endpoint.disabled_at.map(timestamp),
        secret: if with_secret {
            endpoint.secret.clone()
        } else {
            String::new()
        },
        previous_secret_expires_at: endpoint.previous_secret_expires_at.map(timestamp),
        created_at: Some(timestamp(endpoint.created_at)),
        updated_at: Some(timestamp(endpoint.updated_at)),
    }
}

pub fn encode_delivery(log: &DeliveryLog) -> pb::Delivery {
    let delivery = &log.delivery;
    pb::Delivery {
        id: delivery.id.to_string(),
        endpoint_id: delivery.endpoint_id.to_string(),
        message_id: Message::webhook_id(delivery.message_id),
        event_type: log.event_type.clone(),
        status: (match delivery.status {
            DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
            DeliveryStatus::Succeeded => pb::DeliveryStatus::Succeeded,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
        }) as i32,
        attempts: delivery.attempts,
        next_attempt_at: delivery.next_attempt_at.map(timestamp),
        created_at: Some(timestamp(delivery.created_at)),
        request_body: log.payload.clone(),
        attempt_log: log
            .attempts
            .iter()
            .map(|attempt| pb::DeliveryAttempt {
                number: attempt.number,
                at: Some(timestamp(attempt.at)),
                response_status: attempt.response_status.unwrap_or_default(),
                response_body: attempt.response_body.clone().unwrap_or_default(),
                latency_ms: attempt.latency_ms,
                error: attempt.error.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_endpoint(
        &self,
        request: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::CreateEndpointResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let endpoint = self
            .webhooks
            .create(
                caller.user_id,
                &request.url,
                &request.description,
                &request.event_types,
            )
            .await?;
        Ok(Response::new(pb::CreateEndpointResponse {
            endpoint: Some(encode_endpoint(&endpoint, true)),
        }))
    }

    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let caller = caller(&request)?;
        let endpoints = self.webhooks.list(caller.user_id).await?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: endpoints
                .iter()
                .map(|endpoint| encode_endpoint(endpoint, false))
                .collect(),
        }))
    }

    async fn get_endpoint(
        &self,
        request: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::GetEndpointResponse>, Status> {
        let caller = caller(&request)?;
        let id = endpoint_id(&request.get_ref().endpoint_id)?;
        let endpoint = self.webhooks.get(caller.user_id, id).await?;
        Ok(Response::new(pb::GetEndpointResponse {
            endpoint: Some(encode_endpoint(&endpoint, true)),
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::UpdateEndpointResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = endpoint_id(&request.endpoint_id)?;
        let change = EndpointChange {
            url: request.url,
            description: request.description,
            event_types: request.event_types.map(|types| types.event_types),
            enabled: request.enabled,
        };
        let endpoint = self.webhooks.update(caller.user_id, id, change).await?;
        Ok(Response::new(pb::UpdateEndpointResponse {
            endpoint: Some(encode_endpoint(&endpoint, false)),
        }))
    }

    async fn delete_endpoint(
        &self,
        request: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let caller = caller(&request)?;
        let id = endpoint_id(&request.get_ref().endpoint_id)?;
        self.webhooks.delete(caller.user_id, id).await?;
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let caller = caller(&request)?;
        let id = endpoint_id(&request.get_ref().endpoint_id)?;
        let endpoint = self.webhooks.rotate_secret(caller.user_id, id).await?;
        Ok(Response::new(pb::RotateSecretResponse {
            endpoint: Some(encode_endpoint(&endpoint, true)),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = endpoint_id(&request.endpoint_id)?;
        let (limit, before) = page::request::<Uuid>(request.page_size, &request.page_token)
            .map_err(ProcessingError::InvalidInput)?;
        let deliveries = self
            .webhooks
            .deliveries(caller.user_id, id, limit + 1, before)
            .await?;
        let more = deliveries.len() as u64 > limit;
        let deliveries: Vec<_> = deliveries.into_iter().take(limit as usize).collect();
        let next_page_token = match deliveries.last() {
            Some(last) if more => page::encode(&last.delivery.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(encode_delivery).collect(),
            next_page_token,
        }))
    }

    async fn redeliver(
        &self,
        request: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::RedeliverResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = endpoint_id(&request.endpoint_id)?;
        let delivery_id =
            Uuid::parse_str(&request.delivery_id).map_err(|_| ProcessingError::DeliveryNotFound)?;
        let log = self
            .webhooks
            .redeliver(caller.user_id, id, delivery_id)
            .await?;
        Ok(Response::new(pb::RedeliverResponse {
            delivery: Some(encode_delivery(&log)),
        }))
    }

    async fn send_test_event(
        &self,
        request: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let caller = caller(&request)?;
        let id = endpoint_id(&request.get_ref().endpoint_id)?;
        let log = self.webhooks.send_test(caller.user_id, id).await?;
        Ok(Response::new(pb::SendTestEventResponse {
            delivery: Some(encode_delivery(&log)),
        }))
    }
}
