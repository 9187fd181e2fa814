//! The audit log's gRPC handlers: services record, administrators list and
//! export. No method changes or deletes an entry.

use std::{pin::Pin, sync::Arc};

use atelier_common::{
    FieldViolation, instant,
    json::{from_struct, map_to_struct},
    page, timestamp,
};
use atelier_proto::audit::v1::{self as pb, audit_service_server::AuditService};
use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    api::origin,
    domain::{
        Auth,
        audit::{AuditEntry, AuditFilter},
    },
    error::AuthError,
};

/// Entries per batch of an export.
const EXPORT_BATCH: u64 = 500;

pub struct AuditApi {
    auth: Arc<Auth>,
}

impl AuditApi {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

/// An entry as the contract carries it.
pub fn event(entry: AuditEntry) -> pb::AuditEvent {
    let id_text = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    pb::AuditEvent {
        id: entry.id.to_string(),
        at: Some(timestamp(entry.at)),
        actor_user_id: id_text(entry.actor_user_id),
        actor_service: entry.actor_service,
        action: entry.action,
        subject_user_id: id_text(entry.subject_user_id),
        target_kind: entry.target_kind,
        target_id: entry.target_id,
        outcome: entry.outcome,
        client_ip: entry.client_ip,
        user_agent: entry.user_agent,
        request_id: entry.request_id,
        details: Some(map_to_struct(&entry.details)),
    }
}

fn optional_id(field: &str, value: &str, violations: &mut Vec<FieldViolation>) -> Option<Uuid> {
    if value.is_empty() {
        return None;
    }
    Uuid::parse_str(value)
        .map_err(|_| violations.push(FieldViolation::new(field, "is not a valid id")))
        .ok()
}

/// The filter a request asks for, every invalid field reported.
fn filter(filter: Option<pb::AuditFilter>) -> Result<AuditFilter, Vec<FieldViolation>> {
    let filter = filter.unwrap_or_default();
    let mut violations = Vec::new();
    let mut at = |field: &str, value: Option<prost_types::Timestamp>| {
        value.and_then(|value| {
            instant(value).or_else(|| {
                violations.push(FieldViolation::new(field, "is out of range"));
                None
            })
        })
    };
    let since = at("filter.since", filter.since);
    let until = at("filter.until", filter.until);
    let actor_user_id = optional_id(
        "filter.actor_user_id",
        &filter.actor_user_id,
        &mut violations,
    );
    let subject_user_id = optional_id(
        "filter.subject_user_id",
        &filter.subject_user_id,
        &mut violations,
    );
    if filter.action_prefix.len() > 64 {
        violations.push(FieldViolation::new(
            "filter.action_prefix",
            "must be at most 64 characters",
        ));
    }
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        violations.push(FieldViolation::new(
            "filter.until",
            "must not be before since",
        ));
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(AuditFilter {
        actor_user_id,
        subject_user_id,
        action_prefix: Some(filter.action_prefix).filter(|prefix| !prefix.is_empty()),
        since,
        until,
    })
}

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportAuditEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn record_audit_event(
        &self,
        request: Request<pb::RecordAuditEventRequest>,
    ) -> Result<Response<pb::RecordAuditEventResponse>, Status> {
        let service = origin(&request).actor_service;
        let event = request.into_inner().event.unwrap_or_default();
        let mut violations = Vec::new();
        let actor_user_id =
            optional_id("event.actor_user_id", &event.actor_user_id, &mut violations);
        let subject_user_id = optional_id(
            "event.subject_user_id",
            &event.subject_user_id,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(AuthError::InvalidInput(violations).into());
        }
        let entry = AuditEntry {
            id: Uuid::nil(),
            at: time::OffsetDateTime::UNIX_EPOCH,
            actor_user_id,
            actor_service: service,
            action: event.action,
            subject_user_id,
            target_kind: event.target_kind,
            target_id: event.target_id,
            outcome: event.outcome,
            client_ip: event.client_ip,
            user_agent: event.user_agent,
            request_id: event.request_id,
            details: from_struct(event.details),
        };
        let id = self.auth.record(entry).await?;
        Ok(Response::new(pb::RecordAuditEventResponse {
            id: id.to_string(),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let origin = origin(&request);
        let request = request.into_inner();
        let (filter, paging) = (
            filter(request.filter),
            page::request::<Uuid>(request.page_size, &request.page_token),
        );
        let (filter, (size, after)) = match (filter, paging) {
            (Ok(filter), Ok(paging)) => (filter, paging),
            (filter, paging) => {
                let violations = filter
                    .err()
                    .into_iter()
                    .chain(paging.err())
                    .flatten()
                    .collect();
                return Err(AuthError::InvalidInput(violations).into());
            }
        };
        let (entries, next) = self.auth.audit_page(&filter, after, size, &origin).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: entries.into_iter().map(event).collect(),
            next_page_token: next.map(|id| page::encode(&id)).unwrap_or_default(),
        }))
    }

    type ExportAuditEventsStream = ExportStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> Result<Response<Self::ExportAuditEventsStream>, Status> {
        let origin = origin(&request);
        let filter = filter(request.into_inner().filter).map_err(AuthError::InvalidInput)?;
        self.auth.audit_export_started(&filter, &origin).await?;
        let auth = Arc::clone(&self.auth);
        let batches = futures::stream::try_unfold(
            (auth, filter, None::<Uuid>, false),
            |(auth, filter, after, done)| async move {
                if done {
                    return Ok(None);
                }
                let entries = auth
                    .audit_batch(&filter, after, EXPORT_BATCH)
                    .await
                    .map_err(Status::from)?;
                if entries.is_empty() {
                    return Ok(None);
                }
                let last = entries.last().map(|entry| entry.id);
                let done = (entries.len() as u64) < EXPORT_BATCH;
                let reply = pb::ExportAuditEventsResponse {
                    events: entries.into_iter().map(event).collect(),
                };
                Ok(Some((reply, (auth, filter, last, done))))
            },
        );
        Ok(Response::new(Box::pin(batches)))
    }
}
