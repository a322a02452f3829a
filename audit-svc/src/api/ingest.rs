//! Ingest: the services' outbox relays deliver here.

use tether_proto::{audit::v1 as pb, common::v1::ErrorReason};
use tether_runtime::{ApiError, access::require_service, db::now_micros};
use tonic::{Request, Response};

use super::{Audit, Reply};
use crate::{domain::event, store::chain};

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
        let now = now_micros();
        let mut valid = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (index, raw) in events.into_iter().enumerate() {
            let event_id = raw.event_id.clone();
            match event::validate(raw, &self.limits, now) {
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
        let appended = chain::append(&self.database, valid, now).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::IngestResponse {
            accepted: i32::try_from(appended.stored).unwrap_or(i32::MAX),
            duplicates: i32::try_from(appended.duplicates).unwrap_or(i32::MAX),
            rejected,
        }))
    }
}
