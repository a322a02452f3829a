//! The tenancy change stream (`TenancyChange` in the outbox, served by `Watch`) and the audit
//! events every write records.
//!
//! Rules:
//!
//! 1. Every write takes the next revision first (serialising writers, so its checks read settled
//!    state), records `TenancyChange`s (full-state upserts, tombstones for removals) and an
//!    `AuditEvent` in the outbox, and commits (`store::Write`).
//! 2. A no-op (an idempotent retry) rolls back and returns the current revision.
//! 3. One revision may carry many changes (a tenant plus 200 shadows is one revision of 201
//!    changes); `record_changes` writes them with multi-row INSERTs.
//! 4. `Watch` from 0 sends a snapshot read in one transaction (REPEATABLE READ on PostgreSQL):
//!    tenants by depth, memberships, assignments, ownership; then `SnapshotEnd` and live changes
//!    (`store::snapshot`).
//!
//! Imports point one way: `store` records these messages inside its writes, so `store` depends
//! on `events` and `events` depends only on `domain` (the records it converts, in `convert`),
//! never on `store`.

pub mod convert;

use tether_proto::{
    common::v1::{Actor as AuditActor, ActorKind, AuditEvent},
    tenancy::v1::{
        MembershipRemoved, MembershipUpserted, OwnershipTransferred, TechnicianAssigned, TechnicianUnassigned,
        TenancyChange, TenantUpserted, tenancy_change::Change,
    },
};
use tether_runtime::{access::Caller, events::Audit};

use crate::domain::{AssignmentRow, MembershipKind, MembershipRow, OwnershipRow, TenantRow};

pub const SOURCE_SERVICE: &str = "tenancy-svc";

fn change(change: Change) -> TenancyChange {
    TenancyChange { change: Some(change), ..Default::default() }
}

pub fn tenant_upserted(tenant: &TenantRow) -> TenancyChange {
    change(Change::TenantUpserted(TenantUpserted { tenant: Some(convert::tenant(tenant)) }))
}

pub fn membership_upserted(membership: &MembershipRow, is_default: bool) -> TenancyChange {
    change(Change::MembershipUpserted(MembershipUpserted {
        membership: Some(convert::membership(membership, is_default)),
    }))
}

pub fn membership_removed(user_id: &str, tenant_id: &str, kind: MembershipKind) -> TenancyChange {
    change(Change::MembershipRemoved(MembershipRemoved {
        user_id: user_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        kind: convert::kind(kind) as i32,
    }))
}

pub fn technician_assigned(assignment: &AssignmentRow) -> TenancyChange {
    change(Change::TechnicianAssigned(TechnicianAssigned { assignment: Some(convert::assignment(assignment)) }))
}

pub fn technician_unassigned(technician_user_id: &str, tenant_id: &str) -> TenancyChange {
    change(Change::TechnicianUnassigned(TechnicianUnassigned {
        technician_user_id: technician_user_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
    }))
}

pub fn ownership_transferred(ownership: &OwnershipRow) -> TenancyChange {
    change(Change::OwnershipTransferred(OwnershipTransferred { ownership: Some(convert::ownership(ownership)) }))
}

/// Who acts, as the audit trail records it.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub actor: AuditActor,
    pub client_ip: String,
}

impl AuditContext {
    pub fn from_caller(caller: &Caller) -> Self {
        let actor = caller.audit_actor();
        Self { actor, client_ip: caller.client_ip.clone() }
    }

    /// tenancy-svc itself (bootstrap).
    pub fn system(component: &str) -> Self {
        Self {
            actor: AuditActor {
                kind: ActorKind::System as i32,
                system_name: format!("{SOURCE_SERVICE}/{component}"),
                ..Default::default()
            },
            client_ip: String::new(),
        }
    }

    /// The acting user's id, empty for services.
    pub fn user_id(&self) -> &str {
        &self.actor.user_id
    }

    /// A successful write.
    pub fn event(&self, action: &str, resource_type: &str, resource_id: &str, tenant_id: &str) -> AuditEvent {
        Audit::new(SOURCE_SERVICE, self.actor.clone(), &self.client_ip, action, resource_type, resource_id)
            .tenant(tenant_id)
            .build()
    }
}

/// A flat JSON object of string fields (the before/after states are small and secret-free).
pub fn json_object(fields: &[(&str, &str)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|(key, value)| ((*key).to_owned(), serde_json::Value::from(*value))).collect();
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_is_escaped() {
        assert_eq!(super::json_object(&[("name", "a\"b\\c\n")]), r#"{"name":"a\"b\\c\n"}"#);
    }
}
