//! The stored state of tenants, memberships, assignments and the ownership, as plain values.
//!
//! `store` reads and writes them (decoding SQL rows), `events::convert` turns them into the
//! contract's messages and the audit trail's JSON.

use super::{MembershipKind, TenantKind, TenantStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub kind: TenantKind,
    pub status: TenantStatus,
    pub parent_id: Option<String>,
    pub depth: usize,
    pub client_id: Option<String>,
    pub path: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TenantRow {
    /// Ids from the root down to this tenant, itself included.
    pub fn chain(&self) -> Vec<String> {
        self.path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    pub user_id: String,
    pub tenant_id: String,
    pub kind: MembershipKind,
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A membership with its default flag, as replies and the change stream show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMembership {
    pub row: MembershipRow,
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRow {
    pub technician_user_id: String,
    pub tenant_id: String,
    pub assigned_by_user_id: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipRow {
    pub owner_user_id: String,
    pub since: i64,
    pub previous_owner_user_id: String,
}
