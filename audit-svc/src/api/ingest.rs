//! Ingest: the services' outbox relays deliver here.

use tether_proto::common::v1::AuditEvent;
use tether_proto::{audit::v1 as pb, common::v1::ErrorReason};
use tether_runtime::{
    ApiError,
    access::require_service,
    db::{Database, now_micros},
    events::AuditSink,
};
use tonic::{Request, Response};

use super::{Audit, Reply};
use crate::{
    domain::event::{self, EventLimits},
    store::chain,
};

/// Events per call.
pub const MAX_BATCH: usize = 500;

impl Audit {
    pub(super) async fn ingest(&self, request: Request<pb::IngestRequest>) -> Reply<pb::IngestResponse> {
        require_service(request.metadata(), self.authenticator.as_ref(), &self.service_token).await?;
        let events = request.into_inner().events;
        if events.len() > MAX_BATCH {
            return Err(ApiError::field(
                ErrorReason::BatchTooLarge,
                "events",
                format!("at most {MAX_BATCH} events per call"),
            )
            .with_metadata("limit", MAX_BATCH.to_string()));
        }
        Ok(Response::new(accept(&self.database, &self.limits, events).await?))
    }
}

/// Checks each event on its own and stores the valid ones once each: what `Ingest` does after
/// admitting the caller, and what audit's own relay delivers to.
pub async fn accept(
    database: &Database,
    limits: &EventLimits,
    events: Vec<AuditEvent>,
) -> Result<pb::IngestResponse, ApiError> {
    let now = now_micros();
    let mut valid = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (index, raw) in events.into_iter().enumerate() {
        let event_id = raw.event_id.clone();
        match event::validate(raw, limits, now) {
            Ok(e) => valid.push(e),
            Err(e) => {
                tracing::warn!(%event_id, index, reason = ?e.reason, field = %e.field, "audit event rejected");
                rejected.push(pb::RejectedEvent {
                    event_id,
                    index: i32::try_from(index).unwrap_or(i32::MAX),
                    reason: e.reason as i32,
                    field: e.field,
                });
            }
        }
    }
    let appended = chain::append(database, valid, now).await.map_err(ApiError::from)?;
    Ok(pb::IngestResponse {
        accepted: i32::try_from(appended.stored).unwrap_or(i32::MAX),
        duplicates: i32::try_from(appended.duplicates).unwrap_or(i32::MAX),
        rejected,
    })
}

/// audit's own relay: its outbox delivered to its own chain, through the same checks as
/// `Ingest`.
pub struct LocalSink {
    pub database: Database,
    pub limits: EventLimits,
}

#[tonic::async_trait]
impl AuditSink for LocalSink {
    async fn ingest(&self, events: Vec<AuditEvent>) -> Result<pb::IngestResponse, ApiError> {
        accept(&self.database, &self.limits, events).await
    }
}
