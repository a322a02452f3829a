//! tenancy-svc's own schema and the SQL that reads and writes it.
//!
//! Every write runs in one transaction: `begin_write` -> `next_revision` (which serialises
//! writers, so the checks that follow read settled state) -> checks and SQL -> change-stream
//! entries and audit events in the outbox -> commit.
//!
//! The records (`TenantRow`, `MembershipRow`, …) are `domain` types; this module decodes them
//! from SQL. Imports point one way: `store` uses `domain` and `events` (to record change-stream
//! messages and audit events inside the write); `events` never imports `store`. Within `store`,
//! `ownership` uses `memberships`, which uses `tenants`; none imports back.

use sqlx::{AnyConnection, Row, any::AnyRow};
use tether_proto::{common::v1::AuditEvent, tenancy::v1::TenancyChange};
use tether_runtime::{
    db::{Database, EmbeddedMigration},
    events::{OUTBOX_MIGRATION, OUTBOX_PARKING_MIGRATION},
};

pub use crate::domain::{AssignmentRow, MembershipRow, OwnershipRow, TenantRow};
use crate::domain::{MembershipKind, Rejection, TenantKind, TenantStatus};

pub mod assignments;
pub mod memberships;
pub mod ownership;
pub mod snapshot;
pub mod tenants;

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration::portable(1, "tenants", include_str!("migrations/0001_tenants.sql")),
    EmbeddedMigration::portable(2, "memberships", include_str!("migrations/0002_memberships.sql")),
    EmbeddedMigration::portable(3, "directory indexes", include_str!("migrations/0003_directory_indexes.sql")),
    OUTBOX_MIGRATION,
    OUTBOX_PARKING_MIGRATION,
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

/// A write of tenancy's data: the runtime's one write recipe over tenancy's change stream.
pub type Write = tether_runtime::events::Write<TenancyChange>;

/// Records audit events alone (no state change, e.g. SwitchTenant), without taking a revision.
pub async fn record_audit_only(db: &Database, events: &[AuditEvent]) -> StoreResult<u64> {
    Ok(tether_runtime::events::record_audit_only(db, events.iter().cloned()).await?)
}

// ---------- rows ----------

pub const TENANT_COLS: &str = "id, name, slug, kind, status, parent_id, depth, client_id, path, created_at, updated_at";

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
}

pub const MEMBERSHIP_COLS: &str = "user_id, tenant_id, kind, role, created_at, updated_at";

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
}

/// The MSP's owner (a one-row table), if recorded.
pub async fn owner(conn: &mut AnyConnection) -> StoreResult<Option<OwnershipRow>> {
    let row = sqlx::query("SELECT owner_user_id, since, previous_owner_user_id FROM ownership WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row
        .map(|r| -> Result<OwnershipRow, sqlx::Error> {
            Ok(OwnershipRow {
                owner_user_id: r.try_get(0)?,
                since: r.try_get(1)?,
                previous_owner_user_id: r.try_get(2)?,
            })
        })
        .transpose()?)
}

/// `$from, $from+1, …` for an IN list of `count` values.
pub fn placeholders(from: usize, count: usize) -> String {
    (from..from + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
