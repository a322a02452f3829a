//! tenancy-svc's own schema and the SQL that reads and writes it.
//!
//! Every write runs in one transaction: `begin_write` -> `next_revision` (which serialises
//! writers, so the checks that follow read settled state) -> checks and SQL -> change-stream
//! entries and audit events in the outbox -> commit.

use sqlx::{Row, any::AnyRow};
use tether_proto::{
    common::v1::{AuditEvent, MembershipKind as ProtoKind},
    tenancy::v1::{
        Membership, Ownership, TechnicianAssignment, TenancyChange, Tenant, TenantKind as ProtoTenantKind,
        TenantStatus as ProtoStatus,
    },
};
use tether_runtime::{
    db::{Database, EmbeddedMigration},
    events::OUTBOX_MIGRATION,
};

use crate::domain::{MembershipKind, Rejection, TenantKind, TenantStatus};

pub mod assignments;
pub mod memberships;
pub mod ownership;
pub mod snapshot;
pub mod tenants;

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration { version: 1, description: "tenants", sql: include_str!("migrations/0001_tenants.sql") },
    EmbeddedMigration { version: 2, description: "memberships", sql: include_str!("migrations/0002_memberships.sql") },
    EmbeddedMigration {
        version: 3,
        description: "directory indexes",
        sql: include_str!("migrations/0003_directory_indexes.sql"),
    },
    OUTBOX_MIGRATION,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Rejected(Rejection),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<Rejection> for StoreError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub use tether_runtime::db::timestamp;

/// A write of tenancy's data: the runtime's one write recipe over tenancy's change stream.
pub type Write = tether_runtime::events::Write<TenancyChange>;

/// Records audit events alone (no state change, e.g. SwitchTenant), without taking a revision.
pub async fn record_audit_only(db: &Database, events: &[AuditEvent]) -> StoreResult<u64> {
    Ok(tether_runtime::events::record_audit_only(db, events.iter().cloned()).await?)
}

// ---------- rows ----------

pub const TENANT_COLS: &str = "id, name, slug, kind, status, parent_id, depth, client_id, path, created_at, updated_at";

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
    pub fn decode(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let kind: String = row.try_get(3)?;
        let status: String = row.try_get(4)?;
        let depth: i64 = row.try_get(6)?;
        let corrupt = |what: &str| sqlx::Error::Decode(format!("bad tenant {what}").into());
        Ok(Self {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            slug: row.try_get(2)?,
            kind: TenantKind::from_db(&kind).ok_or_else(|| corrupt("kind"))?,
            status: TenantStatus::from_db(&status).ok_or_else(|| corrupt("status"))?,
            parent_id: row.try_get(5)?,
            depth: usize::try_from(depth).map_err(|_| corrupt("depth"))?,
            client_id: row.try_get(7)?,
            path: row.try_get(8)?,
            created_at: row.try_get(9)?,
            updated_at: row.try_get(10)?,
        })
    }

    /// Ids from the root down to this tenant, itself included.
    pub fn chain(&self) -> Vec<String> {
        self.path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    pub fn to_proto(&self) -> Tenant {
        Tenant {
            tenant_id: self.id.clone(),
            name: self.name.clone(),
            slug: self.slug.clone(),
            kind: match self.kind {
                TenantKind::Admin => ProtoTenantKind::Admin,
                TenantKind::Client => ProtoTenantKind::Client,
                TenantKind::Department => ProtoTenantKind::Department,
            } as i32,
            status: status_to_proto(self.status) as i32,
            parent_id: self.parent_id.clone().unwrap_or_default(),
            depth: self.depth as i32,
            client_id: self.client_id.clone().unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }

    /// The audit trail's view of the tenant.
    pub fn json(&self) -> String {
        crate::events::json_object(&[
            ("tenant_id", &self.id),
            ("name", &self.name),
            ("slug", &self.slug),
            ("kind", self.kind.as_str()),
            ("status", self.status.as_str()),
            ("parent_id", self.parent_id.as_deref().unwrap_or("")),
            ("depth", &self.depth.to_string()),
        ])
    }
}

pub fn status_to_proto(status: TenantStatus) -> ProtoStatus {
    match status {
        TenantStatus::Active => ProtoStatus::Active,
        TenantStatus::Suspended => ProtoStatus::Suspended,
        TenantStatus::Archived => ProtoStatus::Archived,
    }
}

pub fn kind_to_proto(kind: MembershipKind) -> ProtoKind {
    match kind {
        MembershipKind::Direct => ProtoKind::Direct,
        MembershipKind::Shadow => ProtoKind::Shadow,
        MembershipKind::Assigned => ProtoKind::Assigned,
    }
}

pub const MEMBERSHIP_COLS: &str = "user_id, tenant_id, kind, role, created_at, updated_at";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    pub user_id: String,
    pub tenant_id: String,
    pub kind: MembershipKind,
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl MembershipRow {
    pub fn decode(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let kind: String = row.try_get(2)?;
        Ok(Self {
            user_id: row.try_get(0)?,
            tenant_id: row.try_get(1)?,
            kind: MembershipKind::from_db(&kind).ok_or_else(|| sqlx::Error::Decode("bad membership kind".into()))?,
            role: row.try_get(3)?,
            created_at: row.try_get(4)?,
            updated_at: row.try_get(5)?,
        })
    }

    pub fn to_proto(&self, is_default: bool) -> Membership {
        Membership {
            user_id: self.user_id.clone(),
            tenant_id: self.tenant_id.clone(),
            role: self.role.clone(),
            kind: kind_to_proto(self.kind) as i32,
            is_default,
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }

    pub fn json(&self) -> String {
        crate::events::json_object(&[
            ("user_id", &self.user_id),
            ("tenant_id", &self.tenant_id),
            ("kind", self.kind.as_str()),
            ("role", &self.role),
        ])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRow {
    pub technician_user_id: String,
    pub tenant_id: String,
    pub assigned_by_user_id: String,
    pub created_at: i64,
}

impl AssignmentRow {
    pub fn decode(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            technician_user_id: row.try_get(0)?,
            tenant_id: row.try_get(1)?,
            assigned_by_user_id: row.try_get(2)?,
            created_at: row.try_get(3)?,
        })
    }

    pub fn to_proto(&self) -> TechnicianAssignment {
        TechnicianAssignment {
            technician_user_id: self.technician_user_id.clone(),
            tenant_id: self.tenant_id.clone(),
            assigned_by_user_id: self.assigned_by_user_id.clone(),
            created_at: Some(timestamp(self.created_at)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipRow {
    pub owner_user_id: String,
    pub since: i64,
    pub previous_owner_user_id: String,
}

impl OwnershipRow {
    pub fn to_proto(&self) -> Ownership {
        Ownership {
            owner_user_id: self.owner_user_id.clone(),
            since: Some(timestamp(self.since)),
            previous_owner_user_id: self.previous_owner_user_id.clone(),
        }
    }
}

/// `$from, $from+1, …` for an IN list of `count` values.
pub fn placeholders(from: usize, count: usize) -> String {
    (from..from + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
