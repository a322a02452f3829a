//! Technician assignments: a client tenant given to an MSP staff member, with an ASSIGNED
//! membership in the client (departments are covered through their `client_id`).
//!
//! Rules:
//!
//! 1. An assignment `(technician, client)` gives an ASSIGNED membership in the client only;
//!    departments, including later ones, are covered through their `client_id`, which is what
//!    authz-svc evaluates.
//! 2. Only clients can be assigned, and only MSP staff are technicians.

use sqlx::AnyConnection;
use tether_proto::common::v1::ErrorReason;
use tether_runtime::db::{Database, now_micros};

use super::{AssignmentRow, MembershipRow, StoreResult, Write, memberships, tenants};
use crate::{
    domain::{MembershipKind, Rejection, TenantKind},
    events::{self, AuditContext, json_object},
};

const COLS: &str = "technician_user_id, tenant_id, assigned_by_user_id, created_at";

async fn get(conn: &mut AnyConnection, technician: &str, tenant_id: &str) -> StoreResult<Option<AssignmentRow>> {
    let sql = format!("SELECT {COLS} FROM technician_assignments WHERE technician_user_id = $1 AND tenant_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(technician.to_owned())
        .bind(tenant_id.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.as_ref().map(AssignmentRow::decode).transpose()?)
}

async fn of_technician(conn: &mut AnyConnection, technician: &str) -> StoreResult<Vec<AssignmentRow>> {
    let sql = format!("SELECT {COLS} FROM technician_assignments WHERE technician_user_id = $1 ORDER BY tenant_id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(technician.to_owned()).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(AssignmentRow::decode).collect::<Result<Vec<_>, _>>()?)
}

/// The technician's admin-tenancy role, or NOT_MSP_STAFF.
async fn staff_role(conn: &mut AnyConnection, technician: &str) -> StoreResult<String> {
    let admin = tenants::admin(conn).await?;
    match memberships::direct(conn, technician, &admin.id).await? {
        Some(m) => Ok(m.role),
        None => Err(Rejection::new(ErrorReason::NotMspStaff, "only MSP staff can be assigned clients")
            .on("technician_user_id")
            .into()),
    }
}

async fn require_client(conn: &mut AnyConnection, tenant_id: &str, field: &str) -> StoreResult<()> {
    let tenant = tenants::get(conn, tenant_id).await?.ok_or_else(|| tenants::not_found().on(field))?;
    if tenant.kind != TenantKind::Client {
        return Err(Rejection::new(
            ErrorReason::NotAClient,
            "only client tenants are assigned (never departments or the admin tenancy)",
        )
        .on(field)
        .into());
    }
    Ok(())
}

async fn insert(
    write: &mut Write,
    ctx: &AuditContext,
    technician: &str,
    tenant_id: &str,
    role: &str,
) -> StoreResult<()> {
    let now = now_micros();
    let row = AssignmentRow {
        technician_user_id: technician.to_owned(),
        tenant_id: tenant_id.to_owned(),
        assigned_by_user_id: ctx.user_id().to_owned(),
        created_at: now,
    };
    sqlx::query(
        "INSERT INTO technician_assignments (technician_user_id, tenant_id, assigned_by_user_id, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(row.technician_user_id.clone())
    .bind(row.tenant_id.clone())
    .bind(row.assigned_by_user_id.clone())
    .bind(now)
    .execute(write.conn())
    .await?;
    sqlx::query(
        "INSERT INTO memberships (user_id, tenant_id, kind, role, created_at, updated_at) \
         VALUES ($1, $2, 'assigned', $3, $4, $4) ON CONFLICT (user_id, tenant_id, kind) DO NOTHING",
    )
    .bind(technician.to_owned())
    .bind(tenant_id.to_owned())
    .bind(role.to_owned())
    .bind(now)
    .execute(write.conn())
    .await?;
    write.change(events::technician_assigned(&row));
    let membership = MembershipRow {
        user_id: technician.to_owned(),
        tenant_id: tenant_id.to_owned(),
        kind: MembershipKind::Assigned,
        role: role.to_owned(),
        created_at: now,
        updated_at: now,
    };
    write.change(events::membership_upserted(&membership, false));
    let mut audit = ctx.event("assignment.create", "assignment", &format!("{technician}:{tenant_id}"), tenant_id);
    audit.after_json = json_object(&[("technician_user_id", technician), ("tenant_id", tenant_id)]);
    write.audit(audit);
    Ok(())
}

async fn delete(write: &mut Write, ctx: &AuditContext, technician: &str, tenant_id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM technician_assignments WHERE technician_user_id = $1 AND tenant_id = $2")
        .bind(technician.to_owned())
        .bind(tenant_id.to_owned())
        .execute(write.conn())
        .await?;
    sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND tenant_id = $2 AND kind = 'assigned'")
        .bind(technician.to_owned())
        .bind(tenant_id.to_owned())
        .execute(write.conn())
        .await?;
    write.change(events::technician_unassigned(technician, tenant_id));
    write.change(events::membership_removed(technician, tenant_id, MembershipKind::Assigned));
    let mut audit = ctx.event("assignment.delete", "assignment", &format!("{technician}:{tenant_id}"), tenant_id);
    audit.before_json = json_object(&[("technician_user_id", technician), ("tenant_id", tenant_id)]);
    write.audit(audit);
    Ok(())
}

/// Assigns one client; the same assignment again is success, unchanged.
pub async fn assign(
    db: &Database,
    ctx: &AuditContext,
    technician: &str,
    tenant_id: &str,
) -> StoreResult<(AssignmentRow, u64)> {
    let mut write = Write::begin(db).await?;
    require_client(write.conn(), tenant_id, "tenant_id").await?;
    let role = staff_role(write.conn(), technician).await?;
    if get(write.conn(), technician, tenant_id).await?.is_none() {
        insert(&mut write, ctx, technician, tenant_id, &role).await?;
    }
    let row = get(write.conn(), technician, tenant_id)
        .await?
        .ok_or_else(|| Rejection::new(ErrorReason::AssignmentNotFound, "no such assignment"))?;
    let revision = write.commit_if_changed().await?;
    Ok((row, revision))
}

pub async fn unassign(db: &Database, ctx: &AuditContext, technician: &str, tenant_id: &str) -> StoreResult<u64> {
    let mut write = Write::begin(db).await?;
    if get(write.conn(), technician, tenant_id).await?.is_none() {
        return Err(Rejection::new(ErrorReason::AssignmentNotFound, "no such technician assignment").into());
    }
    delete(&mut write, ctx, technician, tenant_id).await?;
    Ok(write.commit_if_changed().await?)
}

/// Replaces a technician's assignments with `tenant_ids` (already de-duplicated).
pub async fn set(
    db: &Database,
    ctx: &AuditContext,
    technician: &str,
    tenant_ids: &[String],
) -> StoreResult<(Vec<AssignmentRow>, u64)> {
    let mut write = Write::begin(db).await?;
    let role = staff_role(write.conn(), technician).await?;
    for (i, tenant_id) in tenant_ids.iter().enumerate() {
        require_client(write.conn(), tenant_id, &format!("tenant_ids[{i}]")).await?;
    }
    let current = of_technician(write.conn(), technician).await?;
    for row in &current {
        if !tenant_ids.contains(&row.tenant_id) {
            delete(&mut write, ctx, technician, &row.tenant_id).await?;
        }
    }
    for tenant_id in tenant_ids {
        if !current.iter().any(|r| &r.tenant_id == tenant_id) {
            insert(&mut write, ctx, technician, tenant_id, &role).await?;
        }
    }
    let after = of_technician(write.conn(), technician).await?;
    let revision = write.commit_if_changed().await?;
    Ok((after, revision))
}

pub enum Side {
    Technician(String),
    Tenant(String),
}

/// One page of assignments, after the cursor (the other side's id).
pub async fn list(db: &Database, side: &Side, after: Option<&str>, limit: usize) -> StoreResult<Vec<AssignmentRow>> {
    let (column, other, value) = match side {
        Side::Technician(id) => ("technician_user_id", "tenant_id", id),
        Side::Tenant(id) => ("tenant_id", "technician_user_id", id),
    };
    let mut sql = format!("SELECT {COLS} FROM technician_assignments WHERE {column} = $1");
    if after.is_some() {
        sql.push_str(&format!(" AND {other} > $2"));
    }
    sql.push_str(&format!(" ORDER BY {other} LIMIT {}", limit + 1));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value.clone());
    if let Some(after) = after {
        query = query.bind(after.to_owned());
    }
    let rows = query.fetch_all(db.pool()).await?;
    Ok(rows.iter().map(AssignmentRow::decode).collect::<Result<Vec<_>, _>>()?)
}
