//! What every handler shares: the channels to the services and the gateway's
//! own in-memory state.

use std::sync::Arc;

use atelier_common::{
    grpc::{CLIENT_IP, CLIENT_USER_AGENT, REQUEST_ID},
    token::JwtVerifier,
};
use atelier_proto::auth::v1::auth_service_client::AuthServiceClient;
use axum::http::HeaderMap;
use tonic::transport::Channel;

use crate::{
    limits::Limits,
    live::{StreamConfig, StreamSlots},
    status_cache::{JobCache, UrlCache},
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthServiceClient<Channel>,
    pub auth_channel: Channel,
    pub image: Channel,
    pub workflow: Channel,
    pub processing: Channel,
    pub user: Channel,
    pub verifier: Arc<JwtVerifier>,
    pub limits: Arc<Limits>,
    pub streams: Arc<StreamSlots>,
    pub stream_config: StreamConfig,
    /// Job status bodies lately answered (see [`status_cache`]).
    pub statuses: Arc<JobCache>,
    /// Result images' signed URLs, reused while fresh.
    pub urls: Arc<UrlCache>,
    /// Where the links handed out point (share links).
    pub origin: crate::shares::Origin,
}

/// A gRPC request carrying the caller's token, the request id and the client's
/// address and user agent (as [`crate::limits::limit_requests`] found them) onward.
pub fn grpc_request<T>(message: T, headers: &HeaderMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for name in [
        http::header::AUTHORIZATION.as_str(),
        REQUEST_ID,
        CLIENT_IP,
        CLIENT_USER_AGENT,
    ] {
        if let Some(value) = headers.get(name).and_then(|value| value.to_str().ok())
            && let Ok(value) = value.parse()
        {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}
