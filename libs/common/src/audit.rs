//! Recording an action in the platform's audit log (kept by the auth service)
//! from another service: the entry is written before the action's change
//! commits, and when it cannot be, the action fails and nothing changes.

use atelier_proto::audit::v1::{
    AuditEvent, RecordAuditEventRequest, audit_service_client::AuditServiceClient,
};
use serde_json::{Map, Value};
use tonic::transport::Channel;
use uuid::Uuid;

pub use crate::grpc::RequestOrigin;
use crate::json::map_to_struct;

/// An action to record. The audit log adds the entry's id, its time and the
/// calling service's name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditRecord {
    /// `<area>.<verb>`: `user.tier_changed`, `image.deleted`, ...
    pub action: String,
    /// The signed-in user who acted, if one did.
    pub actor_user_id: Option<Uuid>,
    /// The user the action is about.
    pub subject_user_id: Option<Uuid>,
    /// The resource acted on ("image", "user", ...) and its id.
    pub target_kind: String,
    pub target_id: String,
    /// Where the request came from, as the gateway passed it on.
    pub origin: RequestOrigin,
    /// Never a secret.
    pub details: Map<String, Value>,
}

impl AuditRecord {
    pub fn new(action: &str, origin: RequestOrigin) -> Self {
        Self {
            action: action.to_owned(),
            origin,
            ..Self::default()
        }
    }

    pub fn actor(mut self, user_id: Option<Uuid>) -> Self {
        self.actor_user_id = user_id;
        self
    }

    /// About `user_id`, the target being their account.
    pub fn about_user(mut self, user_id: Uuid) -> Self {
        self.subject_user_id = Some(user_id);
        self.target_kind = "user".to_owned();
        self.target_id = user_id.to_string();
        self
    }

    pub fn target(mut self, kind: &str, id: impl ToString) -> Self {
        self.target_kind = kind.to_owned();
        self.target_id = id.to_string();
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Appends `record` to the audit log behind `client`. Any failure is
/// `UNAVAILABLE`: the caller fails its action, changing nothing, and the client
/// may try again.
pub async fn record(
    client: &AuditServiceClient<Channel>,
    record: AuditRecord,
) -> Result<(), tonic::Status> {
    let id_text = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    let event = AuditEvent {
        actor_user_id: id_text(record.actor_user_id),
        action: record.action.clone(),
        subject_user_id: id_text(record.subject_user_id),
        target_kind: record.target_kind,
        target_id: record.target_id,
        client_ip: record.origin.client_ip,
        user_agent: record.origin.user_agent,
        request_id: record.origin.request_id,
        details: Some(map_to_struct(&record.details)),
        ..AuditEvent::default()
    };
    client
        .clone()
        .record_audit_event(RecordAuditEventRequest { event: Some(event) })
        .await
        .map(|_| ())
        .map_err(|status| {
            tracing::warn!(action = %record.action, code = ?status.code(), error = %status.message(), "cannot record an audit entry");
            tonic::Status::unavailable(
                "the audit log cannot record this action right now; nothing was changed",
            )
        })
}
