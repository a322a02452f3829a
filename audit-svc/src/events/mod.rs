//! audit's own events: what it records about itself (exports, verifications, legal holds,
//! purges), the signed checkpoints it publishes ([`checkpoints`]) and the purge job
//! ([`retention`]).
//!
//! Its own events take the same road as every other service's: written to its own outbox in
//! a transaction, then delivered to its own chain by the runtime's relay.

pub mod checkpoints;
pub mod retention;

use serde_json::json;
use tether_proto::{audit::v1 as pb, common::v1::AuditEvent};
use tether_runtime::{
    access::Caller,
    db::Database,
    events::{Audit, record_audit_only},
};

use crate::domain::filter::Filter;

/// The name audit's events carry as their source.
pub const SOURCE: &str = "audit-svc";

/// Queues one of audit's own events.
pub async fn record(database: &Database, event: AuditEvent) -> Result<(), sqlx::Error> {
    record_audit_only(database, [event]).await.map(|_| ())
}

/// An export: who, which filter, how many rows; a cut-short one is a failure.
pub fn export(
    caller: &Caller,
    format: &str,
    filter: &Filter,
    summary: Option<&pb::ExportSummary>,
    completed: bool,
) -> AuditEvent {
    let event = Audit::new(SOURCE, caller.audit_actor(), &caller.client_ip, "audit.export", "audit_trail", "")
        .tenant(filter.tenant_id.as_deref().unwrap_or_default())
        .metadata(json!({
            "format": format,
            "filter": filter.fingerprint(),
            "event_count": summary.map(|s| s.event_count),
            "sha256": summary.map(|s| s.sha256.clone()),
        }));
    if completed { event.build() } else { event.failed("CANCELLED").build() }
}

/// A verification and its verdict.
pub fn verification(caller: &Caller, reply: &pb::VerifyIntegrityResponse) -> AuditEvent {
    let event = Audit::new(SOURCE, caller.audit_actor(), &caller.client_ip, "audit.verify", "audit_trail", "")
        .metadata(json!({
            "ok": reply.ok,
            "from_sequence": reply.from_sequence,
            "to_sequence": reply.to_sequence,
            "events_checked": reply.events_checked,
            "first_broken_sequence": reply.first_broken_sequence,
            "detail": reply.detail,
        }));
    if reply.ok { event.build() } else { event.failed("CHAIN_BROKEN").build() }
}

/// A legal hold set (`reason` given) or removed.
pub fn legal_hold(caller: &Caller, tenant_id: &str, reason: Option<&str>) -> AuditEvent {
    let action = if reason.is_some() { "audit.legal_hold_set" } else { "audit.legal_hold_remove" };
    let event =
        Audit::new(SOURCE, caller.audit_actor(), &caller.client_ip, action, "legal_hold", tenant_id).tenant(tenant_id);
    match reason {
        Some(reason) => event.after(json!({ "tenant_id": tenant_id, "reason": reason })).build(),
        None => event.before(json!({ "tenant_id": tenant_id })).build(),
    }
}
