//! Legal holds and purges (`store::retention`). Each is for the whole trail's readers
//! (`audit.view` in the admin tenancy) and is itself audited.

use tether_proto::{
    audit::v1 as pb,
    common::v1::ErrorReason,
    values::{self},
};
use tether_runtime::{
    ApiError,
    access::Actor,
    db::{now_micros, timestamp},
};
use tonic::{Request, Response};

use super::{Audit, Reply};
use crate::{
    events,
    store::retention::{self, Hold},
};

const MAX_REASON: usize = 500;

fn message(hold: Hold) -> pb::LegalHold {
    pb::LegalHold {
        tenant_id: hold.tenant_id,
        reason: hold.reason,
        set_by: hold.set_by,
        set_at: Some(timestamp(hold.set_at)),
    }
}

impl Audit {
    pub(super) async fn set_legal_hold(
        &self,
        request: Request<pb::SetLegalHoldRequest>,
    ) -> Reply<pb::SetLegalHoldResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant_id = values::id("tenant_id", &r.tenant_id)?.to_string();
        let reason = values::required_text("reason", &r.reason, MAX_REASON)?;
        let caller = self.auditor(&metadata).await?;
        let set_by = match &caller.actor {
            Actor::User(p) => p.user_id.clone(),
            Actor::Service(_) => String::new(),
        };
        let hold = Hold { tenant_id, reason, set_by, set_at: now_micros() };
        retention::set_hold(&self.database, &hold).await?;
        events::record(&self.database, events::legal_hold(&caller, &hold.tenant_id, Some(&hold.reason))).await?;
        Ok(Response::new(pb::SetLegalHoldResponse { hold: Some(message(hold)) }))
    }

    pub(super) async fn remove_legal_hold(
        &self,
        request: Request<pb::RemoveLegalHoldRequest>,
    ) -> Reply<pb::RemoveLegalHoldResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant_id = values::id("tenant_id", &r.tenant_id)?.to_string();
        let caller = self.auditor(&metadata).await?;
        if !retention::remove_hold(&self.database, &tenant_id).await? {
            return Err(ApiError::new(ErrorReason::TenantNotFound, "no legal hold on that tenant"));
        }
        events::record(&self.database, events::legal_hold(&caller, &tenant_id, None)).await?;
        Ok(Response::new(pb::RemoveLegalHoldResponse {}))
    }

    pub(super) async fn list_legal_holds(
        &self,
        request: Request<pb::ListLegalHoldsRequest>,
    ) -> Reply<pb::ListLegalHoldsResponse> {
        self.auditor(request.metadata()).await?;
        let holds = retention::holds(&self.database).await?;
        let (purged_through_sequence, _) = retention::purged_through(&self.database).await?;
        Ok(Response::new(pb::ListLegalHoldsResponse {
            holds: holds.into_iter().map(message).collect(),
            retention: Some(prost_types::Duration { seconds: self.retention.as_secs() as i64, nanos: 0 }),
            purged_through_sequence,
        }))
    }

    pub(super) async fn purge_expired(
        &self,
        request: Request<pb::PurgeExpiredRequest>,
    ) -> Reply<pb::PurgeExpiredResponse> {
        let caller = self.auditor(request.metadata()).await?;
        let (cutoff, purged) =
            events::retention::purge(&self.database, self.retention, caller.audit_actor(), &caller.client_ip).await?;
        Ok(Response::new(pb::PurgeExpiredResponse {
            purged_count: purged.removed as i64,
            held_count: purged.held as i64,
            purged_through_sequence: purged.through,
            cutoff: Some(timestamp(cutoff)),
        }))
    }
}
