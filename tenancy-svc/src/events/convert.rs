//! Stored state to the contract's messages, and to the audit trail's JSON: the one place a
//! record becomes a protobuf message (replies and change-stream entries alike).

use tether_proto::{
    common::v1::MembershipKind as ProtoKind,
    tenancy::v1::{
        Membership, Ownership, TechnicianAssignment, Tenant, TenantKind as ProtoTenantKind, TenantStatus as ProtoStatus,
    },
};
use tether_runtime::db::timestamp;

use super::json_object;
use crate::domain::{
    AssignmentRow, HeldMembership, MembershipKind, MembershipRow, OwnershipRow, TenantKind, TenantRow, TenantStatus,
};

pub fn tenant(t: &TenantRow) -> Tenant {
    Tenant {
        tenant_id: t.id.clone(),
        name: t.name.clone(),
        slug: t.slug.clone(),
        kind: match t.kind {
            TenantKind::Admin => ProtoTenantKind::Admin,
            TenantKind::Client => ProtoTenantKind::Client,
            TenantKind::Department => ProtoTenantKind::Department,
        } as i32,
        status: status(t.status) as i32,
        parent_id: t.parent_id.clone().unwrap_or_default(),
        depth: t.depth as i32,
        client_id: t.client_id.clone().unwrap_or_default(),
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
    }
}

pub fn status(status: TenantStatus) -> ProtoStatus {
    match status {
        TenantStatus::Active => ProtoStatus::Active,
        TenantStatus::Suspended => ProtoStatus::Suspended,
        TenantStatus::Archived => ProtoStatus::Archived,
    }
}

pub fn kind(kind: MembershipKind) -> ProtoKind {
    match kind {
        MembershipKind::Direct => ProtoKind::Direct,
        MembershipKind::Shadow => ProtoKind::Shadow,
        MembershipKind::Assigned => ProtoKind::Assigned,
    }
}

pub fn membership(m: &MembershipRow, is_default: bool) -> Membership {
    Membership {
        user_id: m.user_id.clone(),
        tenant_id: m.tenant_id.clone(),
        role: m.role.clone(),
        kind: kind(m.kind) as i32,
        is_default,
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
    }
}

pub fn held(m: &HeldMembership) -> Membership {
    membership(&m.row, m.is_default)
}

pub fn assignment(a: &AssignmentRow) -> TechnicianAssignment {
    TechnicianAssignment {
        technician_user_id: a.technician_user_id.clone(),
        tenant_id: a.tenant_id.clone(),
        assigned_by_user_id: a.assigned_by_user_id.clone(),
        created_at: Some(timestamp(a.created_at)),
    }
}

pub fn ownership(o: &OwnershipRow) -> Ownership {
    Ownership {
        owner_user_id: o.owner_user_id.clone(),
        since: Some(timestamp(o.since)),
        previous_owner_user_id: o.previous_owner_user_id.clone(),
    }
}

/// The audit trail's view of a tenant.
pub fn tenant_json(t: &TenantRow) -> String {
    json_object(&[
        ("tenant_id", &t.id),
        ("name", &t.name),
        ("slug", &t.slug),
        ("kind", t.kind.as_str()),
        ("status", t.status.as_str()),
        ("parent_id", t.parent_id.as_deref().unwrap_or("")),
        ("depth", &t.depth.to_string()),
    ])
}

/// The audit trail's view of a membership.
pub fn membership_json(m: &MembershipRow) -> String {
    json_object(&[("user_id", &m.user_id), ("tenant_id", &m.tenant_id), ("kind", m.kind.as_str()), ("role", &m.role)])
}
