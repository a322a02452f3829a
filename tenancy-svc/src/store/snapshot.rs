//! The state a Watch from 0 starts with, read consistently with its revision.

use sqlx::Row;
use tether_proto::tenancy::v1::TenancyChange;
use tether_runtime::{db::Database, events::current_revision};

use super::{AssignmentRow, MEMBERSHIP_COLS, MembershipRow, StoreResult, TENANT_COLS, TenantRow};
use crate::events;

/// Every tenant (parents before children), membership, assignment and the ownership, at one
/// revision.
pub async fn read(db: &Database) -> StoreResult<(u64, Vec<TenancyChange>)> {
    let mut tx = db.begin_snapshot().await?;
    let revision = current_revision(&mut *tx).await?;
    let mut out = Vec::new();
    let sql = format!("SELECT {TENANT_COLS} FROM tenants ORDER BY depth, id");
    for row in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await? {
        out.push(events::tenant_upserted(&TenantRow::decode(&row)?));
    }
    let sql = format!(
        "SELECT m.{}, d.tenant_id FROM memberships m LEFT JOIN default_tenants d \
         ON d.user_id = m.user_id AND d.tenant_id = m.tenant_id ORDER BY m.user_id, m.tenant_id, m.kind",
        MEMBERSHIP_COLS.replace(", ", ", m.")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await?;
    // Rows of one user and tenant are adjacent: the default flag goes to the strongest.
    let mut group: Vec<MembershipRow> = Vec::new();
    let mut group_default = false;
    let emit = |group: &mut Vec<MembershipRow>, is_default: bool, out: &mut Vec<TenancyChange>| {
        let default = group.first().filter(|_| is_default).map(|m| m.tenant_id.clone());
        let flags = super::memberships::flags(group, default.as_deref());
        for (m, f) in group.drain(..).zip(flags) {
            out.push(events::membership_upserted(&m, f));
        }
    };
    for row in &rows {
        let m = MembershipRow::decode(row)?;
        let default: Option<String> = row.try_get(6)?;
        if group.first().is_some_and(|g| g.user_id != m.user_id || g.tenant_id != m.tenant_id) {
            emit(&mut group, group_default, &mut out);
        }
        group_default = default.is_some();
        group.push(m);
    }
    emit(&mut group, group_default, &mut out);
    let rows = sqlx::query(
        "SELECT technician_user_id, tenant_id, assigned_by_user_id, created_at FROM technician_assignments \
         ORDER BY technician_user_id, tenant_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        out.push(events::technician_assigned(&AssignmentRow::decode(row)?));
    }
    if let Some(o) = super::owner(&mut tx).await? {
        out.push(events::ownership_transferred(&o));
    }
    tx.commit().await?;
    Ok((revision, out))
}
