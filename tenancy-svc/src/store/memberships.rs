//! Memberships (direct, shadow, assigned), default tenants, and the admin-tenancy hooks that keep
//! shadow memberships in step with the MSP's staff.
//!
//! Rules:
//!
//! 1. A membership is a row `(user_id, tenant_id, kind) -> role`, kind `direct | shadow | assigned`.
//!    "MSP staff" means a direct member of the admin tenancy.
//! 2. Default tenant (`default_tenants`): always a tenant where the user holds some membership.
//!    `SetDefaultTenant` elsewhere is `NOT_A_MEMBER`. When a write leaves the user nothing in their
//!    default tenant, it moves to their strongest, oldest remaining membership (direct, then
//!    assigned, then shadow); with none left there is no default, and the next membership becomes
//!    it. The default flag shows on the strongest kind held in that tenant.
//! 3. Joining the admin tenancy backfills a shadow membership in every tenant (one
//!    `INSERT … SELECT`); leaving it (also identity's empty `SetUserMemberships` for a deleted
//!    user) deletes the user's shadow and assigned memberships and technician assignments; a change
//!    of admin-tenancy role rewrites their shadow and assigned roles.
//! 4. tenancy does not track account status: a deactivated staff member keeps their shadows and
//!    gets one in each tenant created meanwhile (so reactivation needs no backfill); authz-svc
//!    denies them while deactivated.
//! 5. The owner role is never granted, and the owner is never removed or demoted in the admin
//!    tenancy (`domain::ownership`); this module reads who the owner is and asks the rule.
//! 6. Last administrator: removing or demoting a direct member whose role is one of the pack's
//!    `admin_roles` (or the owner role) fails with `LAST_ADMIN` when nobody else holds one there
//!    (`domain::rules::ensure_admin_kept`). Identity's deletion of a user skips this check (authz's
//!    `CheckRoleGrant` judged it before).
//! 7. Membership writes are idempotent: the same membership again is success, unchanged (identity's
//!    relay may deliver twice).
//! 8. Directory (`ListTenantMembers`): direct members paged by user id (keyset, at most 500 a page)
//!    from a partial index `(tenant_id, user_id, role, created_at, updated_at, kind)
//!    WHERE kind = 'direct'` that covers the query. Every by-tenant lookup is of direct members, so shadows (most rows) sit
//!    in no by-tenant index and a new tenant writes them into the primary key only. The default flag
//!    is a covering probe of `default_tenants (user_id, tenant_id)`; for client callers MSP staff
//!    are left out in the same statement. Only five narrow columns are read: sqlx's `Any` driver
//!    copies every value twice, which is most of a page's cost on SQLite.

use std::collections::{BTreeSet, HashMap};

use sqlx::{AnyConnection, Row};
use tether_proto::common::v1::ErrorReason;
use tether_runtime::db::{Database, now_micros};

use super::{MEMBERSHIP_COLS, MembershipRow, StoreResult, TENANT_COLS, TenantRow, Write, owner, placeholders, tenants};
use crate::{
    deps::PackInfo,
    domain::{
        HeldMembership, MembershipKind, Rejection, TenantKind, TenantStatus, ensure_admin_kept, ensure_grantable,
        ensure_owner_kept, strongest_kind_rank,
    },
    events::{self, AuditContext, convert, json_object},
};

pub async fn of_user(conn: &mut AnyConnection, user_id: &str) -> StoreResult<Vec<MembershipRow>> {
    let sql = format!("SELECT {MEMBERSHIP_COLS} FROM memberships WHERE user_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id.to_owned()).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(MembershipRow::decode).collect::<Result<Vec<_>, _>>()?)
}

async fn in_tenant(conn: &mut AnyConnection, user_id: &str, tenant_id: &str) -> StoreResult<Vec<MembershipRow>> {
    let sql = format!("SELECT {MEMBERSHIP_COLS} FROM memberships WHERE user_id = $1 AND tenant_id = $2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id.to_owned())
        .bind(tenant_id.to_owned())
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(MembershipRow::decode).collect::<Result<Vec<_>, _>>()?)
}

pub async fn direct(conn: &mut AnyConnection, user_id: &str, tenant_id: &str) -> StoreResult<Option<MembershipRow>> {
    Ok(in_tenant(conn, user_id, tenant_id).await?.into_iter().find(|m| m.kind == MembershipKind::Direct))
}

pub async fn default_of(conn: &mut AnyConnection, user_id: &str) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar("SELECT tenant_id FROM default_tenants WHERE user_id = $1")
        .bind(user_id.to_owned())
        .fetch_optional(&mut *conn)
        .await?)
}

/// MSP staff, as tenancy sees them: direct members of the admin tenancy.
pub async fn is_msp_staff(conn: &mut AnyConnection, user_id: &str) -> StoreResult<bool> {
    let admin = tenants::admin(conn).await?;
    Ok(direct(conn, user_id, &admin.id).await?.is_some())
}

/// Which of a user's rows in one tenant carries the default flag: the strongest kind.
pub fn flags(rows: &[MembershipRow], default: Option<&str>) -> Vec<bool> {
    let strongest: HashMap<&str, u8> = rows.iter().fold(HashMap::new(), |mut map, m| {
        let rank = strongest_kind_rank(m.kind);
        let entry = map.entry(m.tenant_id.as_str()).or_insert(rank);
        *entry = (*entry).min(rank);
        map
    });
    rows.iter()
        .map(|m| {
            default == Some(m.tenant_id.as_str())
                && strongest.get(m.tenant_id.as_str()) == Some(&strongest_kind_rank(m.kind))
        })
        .collect()
}

/// Re-publishes a user's memberships in `tenants` (after a change of role or default).
async fn flush(write: &mut Write, user_id: &str, tenants: &BTreeSet<String>) -> StoreResult<()> {
    let default = default_of(write.conn(), user_id).await?;
    for tenant_id in tenants {
        let rows = in_tenant(write.conn(), user_id, tenant_id).await?;
        let flags = flags(&rows, default.as_deref());
        for (row, is_default) in rows.iter().zip(flags) {
            write.change(events::membership_upserted(row, is_default));
        }
    }
    Ok(())
}

async fn count_other_admins(
    conn: &mut AnyConnection,
    tenant_id: &str,
    user_id: &str,
    pack: &PackInfo,
) -> StoreResult<usize> {
    let mut roles: Vec<String> = pack.admin_roles.clone();
    if !pack.owner_role.is_empty() {
        roles.push(pack.owner_role.clone());
    }
    if roles.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND kind = 'direct' AND user_id <> $2 AND role IN ({})",
        placeholders(3, roles.len())
    );
    let mut query =
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(tenant_id.to_owned()).bind(user_id.to_owned());
    for role in roles {
        query = query.bind(role);
    }
    Ok(usize::try_from(query.fetch_one(&mut *conn).await?).unwrap_or(0))
}

/// The last-administrator rule for one change of a direct membership (`new_role` `None`: removal).
async fn keep_an_admin(
    conn: &mut AnyConnection,
    current: &MembershipRow,
    new_role: Option<&str>,
    pack: &PackInfo,
) -> StoreResult<()> {
    let was_admin = pack.is_admin_role(&current.role);
    let stays_admin = new_role.is_some_and(|r| pack.is_admin_role(r));
    if was_admin && !stays_admin {
        let others = count_other_admins(conn, &current.tenant_id, &current.user_id, pack).await?;
        ensure_admin_kept(was_admin, stays_admin, others)?;
    }
    Ok(())
}

/// Whether `user_id` is the MSP's owner.
async fn is_owner(conn: &mut AnyConnection, user_id: &str) -> StoreResult<bool> {
    Ok(owner(conn).await?.is_some_and(|o| o.owner_user_id == user_id))
}

/// A user joined the admin tenancy: a shadow membership in every other tenant.
async fn on_admin_join(write: &mut Write, user_id: &str, role: &str) -> StoreResult<()> {
    let now = now_micros();
    let rows = sqlx::query(
        "INSERT INTO memberships (user_id, tenant_id, kind, role, created_at, updated_at) \
         SELECT $1, id, 'shadow', $2, $3, $3 FROM tenants WHERE kind <> 'admin' \
         ON CONFLICT (user_id, tenant_id, kind) DO NOTHING RETURNING tenant_id",
    )
    .bind(user_id.to_owned())
    .bind(role.to_owned())
    .bind(now)
    .fetch_all(write.conn())
    .await?;
    for row in rows {
        let tenant_id: String = row.try_get(0)?;
        let shadow = MembershipRow {
            user_id: user_id.to_owned(),
            tenant_id,
            kind: MembershipKind::Shadow,
            role: role.to_owned(),
            created_at: now,
            updated_at: now,
        };
        write.change(events::membership_upserted(&shadow, false));
    }
    Ok(())
}

/// A user left the admin tenancy: no more shadow or assigned memberships, no assignments.
async fn on_admin_leave(write: &mut Write, user_id: &str) -> StoreResult<()> {
    let rows = sqlx::query(
        "DELETE FROM memberships WHERE user_id = $1 AND kind IN ('shadow', 'assigned') RETURNING tenant_id, kind",
    )
    .bind(user_id.to_owned())
    .fetch_all(write.conn())
    .await?;
    for row in rows {
        let tenant_id: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let kind = MembershipKind::from_db(&kind).unwrap_or(MembershipKind::Shadow);
        write.change(events::membership_removed(user_id, &tenant_id, kind));
    }
    let rows = sqlx::query("DELETE FROM technician_assignments WHERE technician_user_id = $1 RETURNING tenant_id")
        .bind(user_id.to_owned())
        .fetch_all(write.conn())
        .await?;
    for row in rows {
        let tenant_id: String = row.try_get(0)?;
        write.change(events::technician_unassigned(user_id, &tenant_id));
    }
    Ok(())
}

/// A staff member's admin-tenancy role changed: their shadow and assigned memberships follow.
async fn on_admin_role_change(write: &mut Write, user_id: &str, role: &str) -> StoreResult<()> {
    let sql = format!(
        "UPDATE memberships SET role = $1, updated_at = $2 WHERE user_id = $3 AND kind IN ('shadow', 'assigned') \
         RETURNING {MEMBERSHIP_COLS}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(role.to_owned())
        .bind(now_micros())
        .bind(user_id.to_owned())
        .fetch_all(write.conn())
        .await?;
    for row in rows {
        let m = MembershipRow::decode(&row)?;
        write.change(events::membership_upserted(&m, false));
    }
    Ok(())
}

/// Makes sure the default tenant is one where the user holds a membership (or that there is
/// none when they hold none). Returns the tenants whose flag may have changed.
async fn repair_default(write: &mut Write, user_id: &str, wanted: Option<&str>) -> StoreResult<BTreeSet<String>> {
    let current = default_of(write.conn(), user_id).await?;
    let mut rows = of_user(write.conn(), user_id).await?;
    let holds = |t: &str, rows: &[MembershipRow]| rows.iter().any(|m| m.tenant_id == t);
    let next = match wanted {
        Some(t) if holds(t, &rows) => Some(t.to_owned()),
        _ => match &current {
            Some(t) if holds(t, &rows) => Some(t.clone()),
            _ => {
                rows.sort_by_key(|m| (strongest_kind_rank(m.kind), m.created_at));
                rows.first().map(|m| m.tenant_id.clone())
            }
        },
    };
    let mut touched = BTreeSet::new();
    if next == current {
        return Ok(touched);
    }
    sqlx::query("DELETE FROM default_tenants WHERE user_id = $1")
        .bind(user_id.to_owned())
        .execute(write.conn())
        .await?;
    if let Some(t) = &next {
        sqlx::query("INSERT INTO default_tenants (user_id, tenant_id) VALUES ($1, $2)")
            .bind(user_id.to_owned())
            .bind(t.clone())
            .execute(write.conn())
            .await?;
        touched.insert(t.clone());
    }
    if let Some(t) = current {
        touched.insert(t);
    }
    Ok(touched)
}

/// One (tenant, role) of SetUserMemberships.
#[derive(Debug, Clone)]
pub struct Spec {
    pub tenant_id: String,
    pub role: String,
}

/// Replaces a user's direct memberships and sets the default, in one transaction.
/// `enforce_last_admin` is false for identity's user deletion (an empty list).
pub async fn set_user_memberships(
    db: &Database,
    ctx: &AuditContext,
    user_id: &str,
    specs: &[Spec],
    default: Option<&str>,
    pack: &PackInfo,
    enforce_last_admin: bool,
) -> StoreResult<(Vec<HeldMembership>, u64)> {
    let mut write = Write::begin(db).await?;
    let admin = tenants::admin(write.conn()).await?;
    let is_owner = is_owner(write.conn(), user_id).await?;
    let all = of_user(write.conn(), user_id).await?;
    let current: HashMap<String, MembershipRow> =
        all.into_iter().filter(|m| m.kind == MembershipKind::Direct).map(|m| (m.tenant_id.clone(), m)).collect();
    let wanted: HashMap<&str, &str> = specs.iter().map(|s| (s.tenant_id.as_str(), s.role.as_str())).collect();

    for (i, spec) in specs.iter().enumerate() {
        let tenant = tenants::get(write.conn(), &spec.tenant_id)
            .await?
            .ok_or_else(|| tenants::not_found().on(format!("memberships[{i}].tenant_id")))?;
        let existing = current.get(&spec.tenant_id);
        let changes_role = existing.is_none_or(|m| m.role != spec.role);
        if changes_role {
            ensure_grantable(&spec.role, &pack.owner_role).map_err(|r| r.on(format!("memberships[{i}].role")))?;
        }
        if existing.is_none() && tenant.status != TenantStatus::Active {
            return Err(Rejection::new(ErrorReason::TenantNotActive, "the tenant is suspended or archived")
                .on(format!("memberships[{i}].tenant_id"))
                .into());
        }
    }
    if let Some(m) = current.get(&admin.id) {
        ensure_owner_kept(is_owner, TenantKind::Admin, &m.role, wanted.get(admin.id.as_str()).copied())?;
    }
    if enforce_last_admin {
        for (tenant_id, membership) in &current {
            let new_role = wanted.get(tenant_id.as_str()).copied();
            if new_role != Some(membership.role.as_str()) {
                keep_an_admin(write.conn(), membership, new_role, pack).await?;
            }
        }
    }

    let now = now_micros();
    let mut touched = BTreeSet::new();
    for (tenant_id, membership) in &current {
        if !wanted.contains_key(tenant_id.as_str()) {
            sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND tenant_id = $2 AND kind = 'direct'")
                .bind(user_id.to_owned())
                .bind(tenant_id.clone())
                .execute(write.conn())
                .await?;
            write.change(events::membership_removed(user_id, tenant_id, MembershipKind::Direct));
            let _ = membership;
        }
    }
    for spec in specs {
        match current.get(&spec.tenant_id) {
            Some(m) if m.role == spec.role => {}
            Some(_) => {
                sqlx::query(
                    "UPDATE memberships SET role = $1, updated_at = $2 \
                     WHERE user_id = $3 AND tenant_id = $4 AND kind = 'direct'",
                )
                .bind(spec.role.clone())
                .bind(now)
                .bind(user_id.to_owned())
                .bind(spec.tenant_id.clone())
                .execute(write.conn())
                .await?;
                touched.insert(spec.tenant_id.clone());
            }
            None => {
                insert_direct(&mut write, user_id, &spec.tenant_id, &spec.role, now).await?;
                touched.insert(spec.tenant_id.clone());
            }
        }
    }
    let was_staff = current.contains_key(&admin.id);
    match (was_staff, wanted.get(admin.id.as_str())) {
        (false, Some(role)) => on_admin_join(&mut write, user_id, role).await?,
        (true, None) => on_admin_leave(&mut write, user_id).await?,
        (true, Some(role)) if current.get(&admin.id).is_some_and(|m| m.role != *role) => {
            on_admin_role_change(&mut write, user_id, role).await?;
        }
        _ => {}
    }
    let wanted_default = default.or_else(|| specs.first().map(|s| s.tenant_id.as_str()));
    touched.extend(repair_default(&mut write, user_id, wanted_default).await?);
    flush(&mut write, user_id, &touched).await?;

    let describe = |pairs: Vec<(String, String)>| {
        let mut pairs = pairs;
        pairs.sort();
        pairs.iter().map(|(t, r)| format!("{t}:{r}")).collect::<Vec<_>>().join(",")
    };
    let before = describe(current.values().map(|m| (m.tenant_id.clone(), m.role.clone())).collect());
    let after = describe(specs.iter().map(|s| (s.tenant_id.clone(), s.role.clone())).collect());
    if write.has_changes() {
        let mut audit = ctx.event("membership.set", "user", user_id, "");
        audit.before_json = json_object(&[("user_id", user_id), ("memberships", &before)]);
        audit.after_json = json_object(&[("user_id", user_id), ("memberships", &after)]);
        write.audit(audit);
    }
    let result = direct_memberships(write.conn(), user_id).await?;
    let revision = write.commit_if_changed().await?;
    Ok((result, revision))
}

async fn insert_direct(write: &mut Write, user_id: &str, tenant_id: &str, role: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO memberships (user_id, tenant_id, kind, role, created_at, updated_at) \
         VALUES ($1, $2, 'direct', $3, $4, $4)",
    )
    .bind(user_id.to_owned())
    .bind(tenant_id.to_owned())
    .bind(role.to_owned())
    .bind(now)
    .execute(write.conn())
    .await?;
    Ok(())
}

/// A user's direct memberships with their default flags.
pub async fn direct_memberships(conn: &mut AnyConnection, user_id: &str) -> StoreResult<Vec<HeldMembership>> {
    let default = default_of(conn, user_id).await?;
    let rows = of_user(conn, user_id).await?;
    let flags = flags(&rows, default.as_deref());
    let mut out: Vec<HeldMembership> = rows
        .into_iter()
        .zip(flags)
        .filter(|(m, _)| m.kind == MembershipKind::Direct)
        .map(|(row, is_default)| HeldMembership { row, is_default })
        .collect();
    out.sort_by(|a, b| a.row.tenant_id.cmp(&b.row.tenant_id));
    Ok(out)
}

async fn held_membership(
    conn: &mut AnyConnection,
    user_id: &str,
    tenant_id: &str,
    kind: MembershipKind,
) -> StoreResult<Option<HeldMembership>> {
    let default = default_of(conn, user_id).await?;
    let rows = in_tenant(conn, user_id, tenant_id).await?;
    let flags = flags(&rows, default.as_deref());
    Ok(rows
        .into_iter()
        .zip(flags)
        .find(|(m, _)| m.kind == kind)
        .map(|(row, is_default)| HeldMembership { row, is_default }))
}

/// Adds one direct membership; the same membership again is success, unchanged.
pub async fn add(
    db: &Database,
    ctx: &AuditContext,
    user_id: &str,
    tenant_id: &str,
    role: &str,
    make_default: bool,
    pack: &PackInfo,
) -> StoreResult<(HeldMembership, u64)> {
    let mut write = Write::begin(db).await?;
    let tenant = tenants::require(write.conn(), tenant_id).await?;
    let mut touched = BTreeSet::new();
    match direct(write.conn(), user_id, tenant_id).await? {
        Some(existing) if existing.role == role => {
            if make_default {
                touched.extend(repair_default(&mut write, user_id, Some(tenant_id)).await?);
                flush(&mut write, user_id, &touched).await?;
            }
        }
        Some(_) => {
            return Err(Rejection::new(
                ErrorReason::MembershipExists,
                "the user already holds a direct membership there with another role",
            )
            .into());
        }
        None => {
            if tenant.status != TenantStatus::Active {
                return Err(Rejection::new(ErrorReason::TenantNotActive, "the tenant is suspended or archived").into());
            }
            ensure_grantable(role, &pack.owner_role)?;
            insert_direct(&mut write, user_id, tenant_id, role, now_micros()).await?;
            if tenant.kind == TenantKind::Admin {
                on_admin_join(&mut write, user_id, role).await?;
            }
            touched.insert(tenant_id.to_owned());
            touched.extend(repair_default(&mut write, user_id, make_default.then_some(tenant_id)).await?);
            flush(&mut write, user_id, &touched).await?;
            let mut audit = ctx.event("membership.add", "membership", &format!("{user_id}:{tenant_id}"), tenant_id);
            audit.after_json = json_object(&[("user_id", user_id), ("tenant_id", tenant_id), ("role", role)]);
            write.audit(audit);
        }
    }
    if !write.has_audits() && write.has_changes() {
        let mut audit = ctx.event("membership.set_default", "membership", &format!("{user_id}:{tenant_id}"), tenant_id);
        audit.after_json = json_object(&[("user_id", user_id), ("default_tenant_id", tenant_id)]);
        write.audit(audit);
    }
    let membership = held_membership(write.conn(), user_id, tenant_id, MembershipKind::Direct)
        .await?
        .ok_or_else(|| Rejection::new(ErrorReason::MembershipNotFound, "no such membership"))?;
    let revision = write.commit_if_changed().await?;
    Ok((membership, revision))
}

pub fn membership_not_found() -> Rejection {
    Rejection::new(ErrorReason::MembershipNotFound, "the user holds no direct membership in that tenant")
}

/// The current direct membership, for the handler's delegation check.
pub async fn get_direct(db: &Database, user_id: &str, tenant_id: &str) -> StoreResult<Option<MembershipRow>> {
    let mut conn = db.pool().acquire().await?;
    direct(&mut conn, user_id, tenant_id).await
}

pub async fn change_role(
    db: &Database,
    ctx: &AuditContext,
    user_id: &str,
    tenant_id: &str,
    role: &str,
    pack: &PackInfo,
) -> StoreResult<(HeldMembership, u64)> {
    let mut write = Write::begin(db).await?;
    let tenant = tenants::require(write.conn(), tenant_id).await?;
    let current = direct(write.conn(), user_id, tenant_id).await?.ok_or_else(membership_not_found)?;
    ensure_owner_kept(is_owner(write.conn(), user_id).await?, tenant.kind, &current.role, Some(role))?;
    if current.role != role {
        ensure_grantable(role, &pack.owner_role)?;
    }
    if current.role != role {
        keep_an_admin(write.conn(), &current, Some(role), pack).await?;
        sqlx::query(
            "UPDATE memberships SET role = $1, updated_at = $2 WHERE user_id = $3 AND tenant_id = $4 AND kind = 'direct'",
        )
        .bind(role.to_owned())
        .bind(now_micros())
        .bind(user_id.to_owned())
        .bind(tenant_id.to_owned())
        .execute(write.conn())
        .await?;
        if tenant.kind == TenantKind::Admin {
            on_admin_role_change(&mut write, user_id, role).await?;
        }
        flush(&mut write, user_id, &BTreeSet::from([tenant_id.to_owned()])).await?;
        let mut audit = ctx.event("membership.role_change", "membership", &format!("{user_id}:{tenant_id}"), tenant_id);
        audit.before_json = convert::membership_json(&current);
        audit.after_json =
            json_object(&[("user_id", user_id), ("tenant_id", tenant_id), ("kind", "direct"), ("role", role)]);
        write.audit(audit);
    }
    let membership = held_membership(write.conn(), user_id, tenant_id, MembershipKind::Direct)
        .await?
        .ok_or_else(membership_not_found)?;
    let revision = write.commit_if_changed().await?;
    Ok((membership, revision))
}

pub async fn remove(
    db: &Database,
    ctx: &AuditContext,
    user_id: &str,
    tenant_id: &str,
    pack: &PackInfo,
) -> StoreResult<u64> {
    let mut write = Write::begin(db).await?;
    let tenant = tenants::require(write.conn(), tenant_id).await?;
    let current = direct(write.conn(), user_id, tenant_id).await?.ok_or_else(membership_not_found)?;
    ensure_owner_kept(is_owner(write.conn(), user_id).await?, tenant.kind, &current.role, None)?;
    keep_an_admin(write.conn(), &current, None, pack).await?;
    sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND tenant_id = $2 AND kind = 'direct'")
        .bind(user_id.to_owned())
        .bind(tenant_id.to_owned())
        .execute(write.conn())
        .await?;
    write.change(events::membership_removed(user_id, tenant_id, MembershipKind::Direct));
    if tenant.kind == TenantKind::Admin {
        on_admin_leave(&mut write, user_id).await?;
    }
    let mut touched = repair_default(&mut write, user_id, None).await?;
    touched.insert(tenant_id.to_owned());
    flush(&mut write, user_id, &touched).await?;
    let mut audit = ctx.event("membership.remove", "membership", &format!("{user_id}:{tenant_id}"), tenant_id);
    audit.before_json = convert::membership_json(&current);
    write.audit(audit);
    Ok(write.commit_if_changed().await?)
}

pub async fn set_default(
    db: &Database,
    ctx: &AuditContext,
    user_id: &str,
    tenant_id: &str,
) -> StoreResult<(HeldMembership, u64)> {
    let mut write = Write::begin(db).await?;
    let rows = in_tenant(write.conn(), user_id, tenant_id).await?;
    let Some(strongest) = rows.iter().map(|m| m.kind).min_by_key(|k| strongest_kind_rank(*k)) else {
        return Err(Rejection::new(ErrorReason::NotAMember, "the user holds no membership in that tenant").into());
    };
    let touched = repair_default(&mut write, user_id, Some(tenant_id)).await?;
    if !touched.is_empty() {
        flush(&mut write, user_id, &touched).await?;
        let mut audit = ctx.event("membership.set_default", "user", user_id, tenant_id);
        audit.after_json = json_object(&[("user_id", user_id), ("default_tenant_id", tenant_id)]);
        write.audit(audit);
    }
    let membership = held_membership(write.conn(), user_id, tenant_id, strongest)
        .await?
        .ok_or_else(|| Rejection::new(ErrorReason::NotAMember, "the user holds no membership in that tenant"))?;
    let revision = write.commit_if_changed().await?;
    Ok((membership, revision))
}

/// What a directory page lists.
pub struct DirectoryQuery<'a> {
    pub tenant_id: &'a str,
    pub role: Option<&'a str>,
    /// The last user id of the previous page.
    pub after: Option<&'a str>,
    pub limit: usize,
    /// Leave out MSP staff (direct members of the admin tenancy), except this viewer.
    pub hide_staff_except: Option<&'a str>,
}

/// A tenant's directory: its direct members by user id, `limit + 1` at most (the extra one
/// says there is another page).
pub async fn directory(db: &Database, q: &DirectoryQuery<'_>) -> StoreResult<Vec<HeldMembership>> {
    let DirectoryQuery { tenant_id, role, after, limit, hide_staff_except } = *q;
    // Only the columns the reply lacks (tenant and kind are known), the default flag as an
    // integer, decoded by position straight into the reply: each value of each row is copied
    // twice through the Any driver, which is most of the cost of a page of hundreds.
    let mut sql = String::from(
        "SELECT m.user_id, m.role, m.created_at, m.updated_at, CASE WHEN d.user_id IS NULL THEN 0 ELSE 1 END \
         FROM memberships m LEFT JOIN default_tenants d ON d.user_id = m.user_id AND d.tenant_id = m.tenant_id \
         WHERE m.tenant_id = $1 AND m.kind = 'direct'",
    );
    let mut binds = vec![tenant_id.to_owned()];
    if let Some(role) = role {
        binds.push(role.to_owned());
        sql.push_str(&format!(" AND m.role = ${}", binds.len()));
    }
    if let Some(after) = after {
        binds.push(after.to_owned());
        sql.push_str(&format!(" AND m.user_id > ${}", binds.len()));
    }
    if let Some(viewer) = hide_staff_except {
        // One primary-key probe per row, in the same statement: pages stay full and no user ids
        // travel back for a second query.
        binds.push(viewer.to_owned());
        sql.push_str(&format!(
            " AND (m.user_id = ${} OR NOT EXISTS (SELECT 1 FROM memberships s WHERE s.user_id = m.user_id \
             AND s.tenant_id = (SELECT id FROM tenants WHERE kind = 'admin') AND s.kind = 'direct'))",
            binds.len()
        ));
    }
    // The partial index of direct members by (tenant_id, user_id, role, times) is in this order
    // and covers the query (migration 0003).
    sql.push_str(&format!(" ORDER BY m.user_id LIMIT {}", limit + 1));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(db.pool()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let is_default: i64 = row.try_get(4)?;
        out.push(HeldMembership {
            row: MembershipRow {
                user_id: row.try_get(0)?,
                tenant_id: tenant_id.to_owned(),
                kind: MembershipKind::Direct,
                role: row.try_get(1)?,
                created_at: row.try_get(2)?,
                updated_at: row.try_get(3)?,
            },
            // Direct is the strongest kind, so the default flag of this tenant is on this row.
            is_default: is_default != 0,
        });
    }
    Ok(out)
}

/// Every tenant a user holds a membership in, once, with the strongest membership: default
/// first, then by name.
pub async fn user_tenants(db: &Database, user_id: &str) -> StoreResult<Vec<(TenantRow, HeldMembership)>> {
    let mut conn = db.pool().acquire().await?;
    let default = default_of(&mut conn, user_id).await?;
    let cols: String = TENANT_COLS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {cols}, m.kind, m.role, m.created_at, m.updated_at FROM memberships m \
         JOIN tenants t ON t.id = m.tenant_id WHERE m.user_id = $1"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id.to_owned()).fetch_all(&mut *conn).await?;
    let mut best: HashMap<String, (TenantRow, MembershipRow)> = HashMap::new();
    for row in &rows {
        let tenant = TenantRow::decode(row)?;
        let kind: String = row.try_get(11)?;
        let m = MembershipRow {
            user_id: user_id.to_owned(),
            tenant_id: tenant.id.clone(),
            kind: MembershipKind::from_db(&kind).ok_or_else(|| sqlx::Error::Decode("bad kind".into()))?,
            role: row.try_get(12)?,
            created_at: row.try_get(13)?,
            updated_at: row.try_get(14)?,
        };
        match best.get(&tenant.id) {
            Some((_, held)) if strongest_kind_rank(held.kind) <= strongest_kind_rank(m.kind) => {}
            _ => {
                best.insert(tenant.id.clone(), (tenant, m));
            }
        }
    }
    let mut out: Vec<(TenantRow, HeldMembership)> = best
        .into_values()
        .map(|(t, row)| {
            let is_default = default.as_deref() == Some(t.id.as_str());
            (t, HeldMembership { row, is_default })
        })
        .collect();
    out.sort_by(|(a, am), (b, bm)| {
        bm.is_default.cmp(&am.is_default).then_with(|| a.name.cmp(&b.name)).then_with(|| a.id.cmp(&b.id))
    });
    Ok(out)
}

/// The tenants a user may see: `None` for MSP staff (all), else the tenants where they hold a
/// membership (each with its departments).
pub async fn visible_roots(db: &Database, user_id: &str) -> StoreResult<Option<Vec<String>>> {
    let mut conn = db.pool().acquire().await?;
    if is_msp_staff(&mut conn, user_id).await? {
        return Ok(None);
    }
    let mut roots: Vec<String> = of_user(&mut conn, user_id).await?.into_iter().map(|m| m.tenant_id).collect();
    roots.sort();
    roots.dedup();
    Ok(Some(roots))
}

/// Gives `user_id` `role` in the admin tenancy (a direct membership, created if missing), with
/// the shadow memberships that follow. Used by ownership transfers.
pub async fn set_admin_role(write: &mut Write, admin_id: &str, user_id: &str, role: &str) -> StoreResult<()> {
    match direct(write.conn(), user_id, admin_id).await? {
        Some(m) if m.role == role => return Ok(()),
        Some(_) => {
            sqlx::query(
                "UPDATE memberships SET role = $1, updated_at = $2 \
                 WHERE user_id = $3 AND tenant_id = $4 AND kind = 'direct'",
            )
            .bind(role.to_owned())
            .bind(now_micros())
            .bind(user_id.to_owned())
            .bind(admin_id.to_owned())
            .execute(write.conn())
            .await?;
            on_admin_role_change(write, user_id, role).await?;
        }
        None => {
            insert_direct(write, user_id, admin_id, role, now_micros()).await?;
            on_admin_join(write, user_id, role).await?;
        }
    }
    let mut touched = repair_default(write, user_id, None).await?;
    touched.insert(admin_id.to_owned());
    flush(write, user_id, &touched).await
}

pub async fn direct_membership(
    conn: &mut AnyConnection,
    user_id: &str,
    tenant_id: &str,
) -> StoreResult<Option<HeldMembership>> {
    held_membership(conn, user_id, tenant_id, MembershipKind::Direct).await
}

/// The membership a user holds in a tenant, strongest kind, for SwitchTenant.
pub async fn strongest_in(db: &Database, user_id: &str, tenant_id: &str) -> StoreResult<Option<HeldMembership>> {
    let mut conn = db.pool().acquire().await?;
    let rows = in_tenant(&mut conn, user_id, tenant_id).await?;
    let Some(kind) = rows.iter().map(|m| m.kind).min_by_key(|k| strongest_kind_rank(*k)) else {
        return Ok(None);
    };
    held_membership(&mut conn, user_id, tenant_id, kind).await
}
