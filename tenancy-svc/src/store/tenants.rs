//! The tenant tree.
//!
//! Rules:
//!
//! 1. `tenants` holds every tenant with its `parent_id`, `depth`, `client_id` (the client at the top
//!    of its branch) and a materialised `path` of ids (`/<admin>/<client>/<dept>/`): a subtree is a
//!    prefix match, the ancestors are the path split, and a move rewrites the moved subtree's paths
//!    and depths in one UPDATE.
//! 2. Depth: the admin tenancy is 0, clients 1, departments 2 and deeper, bounded by
//!    `TETHER_TENANCY_MAX_DEPTH` (see `domain::rules::ensure_depth`).
//! 3. Tenants are never deleted, only archived.
//! 4. Creating a tenant gives every MSP staff member (direct member of the admin tenancy) a shadow
//!    membership there with their admin-tenancy role, in the same transaction and one
//!    `INSERT … SELECT … RETURNING`, so the cost does not grow with round trips.

use sqlx::AnyConnection;
use tether_proto::common::v1::ErrorReason;
use tether_runtime::db::{Database, now_micros};
use uuid::Uuid;

use super::{MembershipRow, StoreResult, TENANT_COLS, TenantRow, Write};
use crate::{
    domain::{
        MembershipKind, Rejection, TenantKind, TenantName, TenantSlug, TenantStatus, child_kind, ensure_depth,
        ensure_movable, rules::MovePlan, slug_from_name,
    },
    events::{self, AuditContext, convert},
};

pub fn not_found() -> Rejection {
    Rejection::new(ErrorReason::TenantNotFound, "no such tenant")
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> StoreResult<Option<TenantRow>> {
    let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_owned()).fetch_optional(&mut *conn).await?;
    Ok(row.as_ref().map(TenantRow::decode).transpose()?)
}

pub async fn require(conn: &mut AnyConnection, id: &str) -> StoreResult<TenantRow> {
    Ok(get(conn, id).await?.ok_or_else(not_found)?)
}

pub async fn admin(conn: &mut AnyConnection) -> StoreResult<TenantRow> {
    let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE kind = 'admin'");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
    Ok(TenantRow::decode(&row)?)
}

/// The admin tenancy's id, if it exists.
pub async fn admin_tenancy_id(db: &Database) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE kind = 'admin'").fetch_optional(db.pool()).await
}

/// Creates the admin tenancy; a concurrent creator loses on the unique index.
pub async fn insert_admin_tenancy(db: &Database, name: &TenantName, slug: &TenantSlug) -> StoreResult<Uuid> {
    let id = Uuid::now_v7();
    let now = now_micros();
    let mut write = Write::begin(db).await?;
    sqlx::query(
        "INSERT INTO tenants (id, name, slug, kind, status, parent_id, depth, created_at, client_id, path, updated_at) \
         VALUES ($1, $2, $3, 'admin', 'active', NULL, 0, $4, NULL, $5, $4)",
    )
    .bind(id.to_string())
    .bind(name.as_str().to_owned())
    .bind(slug.as_str().to_owned())
    .bind(now)
    .bind(format!("/{id}/"))
    .execute(write.conn())
    .await?;
    let row = require(write.conn(), &id.to_string()).await?;
    let mut audit = AuditContext::system("bootstrap").event("tenant.create", "tenant", &row.id, &row.id);
    audit.after_json = convert::tenant_json(&row);
    write.audit(audit);
    write.change(events::tenant_upserted(&row));
    write.commit_if_changed().await?;
    Ok(id)
}

pub struct NewTenant {
    pub name: TenantName,
    pub slug: Option<TenantSlug>,
    /// `None`: a client under the admin tenancy.
    pub parent_id: Option<String>,
    pub request_id: Option<String>,
}

async fn slug_taken(conn: &mut AnyConnection, slug: &str, except: &str) -> StoreResult<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1 AND id <> $2")
        .bind(slug.to_owned())
        .bind(except.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

fn slug_taken_error() -> Rejection {
    Rejection::new(ErrorReason::SlugTaken, "the slug is in use").on("slug")
}

/// Creates a client or department, with a shadow membership for every direct member of the
/// admin tenancy, in one transaction.
pub async fn create(
    db: &Database,
    ctx: &AuditContext,
    new: NewTenant,
    max_depth: usize,
) -> StoreResult<(TenantRow, u64)> {
    let mut write = Write::begin(db).await?;
    if let Some(request_id) = &new.request_id {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE request_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(request_id.clone()).fetch_optional(write.conn()).await?;
        if let Some(row) = row {
            let tenant = TenantRow::decode(&row)?;
            return Ok((tenant, write.commit_if_changed().await?));
        }
    }
    let parent = match &new.parent_id {
        Some(id) => require(write.conn(), id).await?,
        None => admin(write.conn()).await?,
    };
    if parent.status != TenantStatus::Active {
        return Err(Rejection::new(ErrorReason::TenantNotActive, "the parent tenant is suspended or archived")
            .on("parent_id")
            .into());
    }
    let kind = child_kind(parent.kind);
    let depth = parent.depth + 1;
    ensure_depth(depth, max_depth)?;
    let id = Uuid::now_v7().to_string();
    let slug = match &new.slug {
        Some(slug) => {
            if slug_taken(write.conn(), slug.as_str(), "").await? {
                return Err(slug_taken_error().into());
            }
            slug.as_str().to_owned()
        }
        None => unique_slug(write.conn(), &slug_from_name(new.name.as_str())).await?,
    };
    let now = now_micros();
    // Built here rather than read back: one round trip less inside the write lock.
    let tenant = TenantRow {
        id: id.clone(),
        name: new.name.as_str().to_owned(),
        slug,
        kind,
        status: TenantStatus::Active,
        parent_id: Some(parent.id.clone()),
        depth,
        client_id: if kind == TenantKind::Client { Some(id.clone()) } else { parent.client_id.clone() },
        path: format!("{}{id}/", parent.path),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO tenants (id, name, slug, kind, status, parent_id, depth, created_at, client_id, path, \
         updated_at, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(tenant.id.clone())
    .bind(tenant.name.clone())
    .bind(tenant.slug.clone())
    .bind(tenant.kind.as_str())
    .bind(tenant.status.as_str())
    .bind(tenant.parent_id.clone())
    .bind(tenant.depth as i64)
    .bind(tenant.created_at)
    .bind(tenant.client_id.clone())
    .bind(tenant.path.clone())
    .bind(tenant.updated_at)
    .bind(new.request_id.clone())
    .execute(write.conn())
    .await?;
    write.change(events::tenant_upserted(&tenant));
    // Every MSP staff member (direct member of the admin tenancy) gets a shadow membership with
    // their admin-tenancy role: one INSERT … SELECT, whatever the number of staff.
    let admin_id = if parent.kind == TenantKind::Admin { parent.id.clone() } else { admin(write.conn()).await?.id };
    let shadows = sqlx::query(
        "INSERT INTO memberships (user_id, tenant_id, kind, role, created_at, updated_at) \
         SELECT user_id, $1, 'shadow', role, $2, $2 FROM memberships WHERE tenant_id = $3 AND kind = 'direct' \
         RETURNING user_id, role",
    )
    .bind(id.clone())
    .bind(now)
    .bind(admin_id)
    .fetch_all(write.conn())
    .await?;
    for row in &shadows {
        use sqlx::Row;
        let shadow = MembershipRow {
            user_id: row.try_get(0)?,
            tenant_id: id.clone(),
            kind: MembershipKind::Shadow,
            role: row.try_get(1)?,
            created_at: now,
            updated_at: now,
        };
        write.change(events::membership_upserted(&shadow, false));
    }
    let mut audit = ctx.event("tenant.create", "tenant", &tenant.id, &tenant.id);
    audit.after_json = convert::tenant_json(&tenant);
    audit.metadata_json = events::json_object(&[("shadow_memberships", &shadows.len().to_string())]);
    write.audit(audit);
    let revision = write.commit_if_changed().await?;
    Ok((tenant, revision))
}

async fn unique_slug(conn: &mut AnyConnection, base: &str) -> StoreResult<String> {
    if !slug_taken(conn, base, "").await? {
        return Ok(base.to_owned());
    }
    for n in 2..1000 {
        let candidate = format!("{base}-{n}");
        if !slug_taken(conn, &candidate, "").await? {
            return Ok(candidate);
        }
    }
    let suffix = Uuid::new_v4().simple().to_string();
    Ok(format!("{base}-{}", &suffix[..8]))
}

pub async fn rename(
    db: &Database,
    ctx: &AuditContext,
    id: &str,
    name: &TenantName,
    slug: Option<&TenantSlug>,
) -> StoreResult<(TenantRow, u64)> {
    let mut write = Write::begin(db).await?;
    let before = require(write.conn(), id).await?;
    let new_slug = slug.map(|s| s.as_str().to_owned()).unwrap_or_else(|| before.slug.clone());
    if new_slug != before.slug && slug_taken(write.conn(), &new_slug, id).await? {
        return Err(slug_taken_error().into());
    }
    if before.name == name.as_str() && before.slug == new_slug {
        return Ok((before, write.commit_if_changed().await?));
    }
    sqlx::query("UPDATE tenants SET name = $1, slug = $2, updated_at = $3 WHERE id = $4")
        .bind(name.as_str().to_owned())
        .bind(new_slug)
        .bind(now_micros())
        .bind(id.to_owned())
        .execute(write.conn())
        .await?;
    let after = require(write.conn(), id).await?;
    let mut audit = ctx.event("tenant.rename", "tenant", id, id);
    audit.before_json = convert::tenant_json(&before);
    audit.after_json = convert::tenant_json(&after);
    write.audit(audit);
    write.change(events::tenant_upserted(&after));
    let revision = write.commit_if_changed().await?;
    Ok((after, revision))
}

/// Suspend, archive or reactivate. Idempotent.
pub async fn set_status(
    db: &Database,
    ctx: &AuditContext,
    id: &str,
    status: TenantStatus,
    note: &str,
) -> StoreResult<(TenantRow, u64)> {
    let mut write = Write::begin(db).await?;
    let before = require(write.conn(), id).await?;
    if before.kind == TenantKind::Admin {
        return Err(Rejection::new(ErrorReason::AdminTenancyImmutable, "the admin tenancy cannot change status").into());
    }
    if status == TenantStatus::Active
        && let Some(parent_id) = &before.parent_id
    {
        let parent = require(write.conn(), parent_id).await?;
        if parent.status != TenantStatus::Active {
            return Err(Rejection::new(ErrorReason::TenantNotActive, "the parent tenant is not active").into());
        }
    }
    if before.status == status {
        return Ok((before, write.commit_if_changed().await?));
    }
    sqlx::query("UPDATE tenants SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(now_micros())
        .bind(id.to_owned())
        .execute(write.conn())
        .await?;
    let after = require(write.conn(), id).await?;
    let action = match status {
        TenantStatus::Active => "tenant.reactivate",
        TenantStatus::Suspended => "tenant.suspend",
        TenantStatus::Archived => "tenant.archive",
    };
    let mut audit = ctx.event(action, "tenant", id, id);
    audit.before_json = convert::tenant_json(&before);
    audit.after_json = convert::tenant_json(&after);
    if !note.is_empty() {
        audit.metadata_json = events::json_object(&[("reason", note)]);
    }
    write.audit(audit);
    write.change(events::tenant_upserted(&after));
    let revision = write.commit_if_changed().await?;
    Ok((after, revision))
}

/// Every tenant of the subtree rooted at `root` (itself included).
pub async fn subtree_rows(conn: &mut AnyConnection, root: &TenantRow) -> StoreResult<Vec<TenantRow>> {
    let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE path LIKE $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(format!("{}%", root.path)).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(TenantRow::decode).collect::<Result<Vec<_>, _>>()?)
}

/// Moves a department and its subtree under `new_parent_id`; memberships stay where they are.
pub async fn move_tenant(
    db: &Database,
    ctx: &AuditContext,
    id: &str,
    new_parent_id: &str,
    max_depth: usize,
) -> StoreResult<(TenantRow, u64)> {
    let mut write = Write::begin(db).await?;
    let before = require(write.conn(), id).await?;
    let parent = require(write.conn(), new_parent_id).await.map_err(|e| match e {
        super::StoreError::Rejected(r) => super::StoreError::Rejected(r.on("new_parent_id")),
        other => other,
    })?;
    let subtree = subtree_rows(write.conn(), &before).await?;
    let height = subtree.iter().map(|t| t.depth - before.depth).max().unwrap_or(0);
    let chain = parent.chain();
    ensure_movable(
        &MovePlan {
            moving_id: &before.id,
            moving_kind: before.kind,
            parent_kind: parent.kind,
            parent_depth: parent.depth,
            parent_chain: &chain,
            subtree_height: height,
        },
        max_depth,
    )?;
    if before.parent_id.as_deref() == Some(new_parent_id) {
        return Ok((before, write.commit_if_changed().await?));
    }
    let new_path = format!("{}{}/", parent.path, before.id);
    let now = now_micros();
    let depth_shift = parent.depth as i64 + 1 - before.depth as i64;
    sqlx::query(
        "UPDATE tenants SET path = $1 || substr(path, CAST($2 AS INTEGER)), depth = depth + $3, client_id = $4, updated_at = $5 \
         WHERE path LIKE $6",
    )
    .bind(new_path)
    .bind(before.path.len() as i64 + 1)
    .bind(depth_shift)
    .bind(parent.client_id.clone())
    .bind(now)
    .bind(format!("{}%", before.path))
    .execute(write.conn())
    .await?;
    sqlx::query("UPDATE tenants SET parent_id = $1 WHERE id = $2")
        .bind(parent.id.clone())
        .bind(id.to_owned())
        .execute(write.conn())
        .await?;
    let after = require(write.conn(), id).await?;
    let mut moved = subtree_rows(write.conn(), &after).await?;
    moved.sort_by_key(|t| t.depth);
    for tenant in &moved {
        write.change(events::tenant_upserted(tenant));
    }
    // Memberships are keyed by tenant id and stay. Technician coverage follows the client at the
    // top of the branch: the new client_id in the changes above is what authz-svc reads.
    let mut audit = ctx.event("tenant.move", "tenant", id, id);
    audit.before_json = convert::tenant_json(&before);
    audit.after_json = convert::tenant_json(&after);
    write.audit(audit);
    let revision = write.commit_if_changed().await?;
    Ok((after, revision))
}

pub struct ListFilter {
    pub parent_id: String,
    /// Empty: active and suspended.
    pub statuses: Vec<TenantStatus>,
    /// Lower-cased substring.
    pub query: String,
    /// Only tenants whose path contains one of these ids (a client user's visible subtrees);
    /// `None`: all.
    pub within: Option<Vec<String>>,
}

/// Children of a tenant by name, keyset-paginated after `(name, id)`.
pub async fn list_children(
    db: &Database,
    filter: &ListFilter,
    after: Option<(String, String)>,
    limit: usize,
) -> StoreResult<Vec<TenantRow>> {
    let mut sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE parent_id = $1");
    let mut binds: Vec<String> = vec![filter.parent_id.clone()];
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    sql.push_str(&format!(" AND status IN ({})", super::placeholders(binds.len() + 1, statuses.len())));
    binds.extend(statuses.iter().map(|s| (*s).to_owned()));
    if !filter.query.is_empty() {
        let n = binds.len() + 1;
        sql.push_str(&format!(" AND (LOWER(name) LIKE ${n} OR slug LIKE ${n})"));
        let escaped = filter.query.replace(['%', '_'], "");
        binds.push(format!("%{escaped}%"));
    }
    if let Some(within) = &filter.within {
        if within.is_empty() {
            return Ok(Vec::new());
        }
        let parts: Vec<String> = within
            .iter()
            .map(|id| {
                binds.push(format!("%/{id}/%"));
                format!("path LIKE ${}", binds.len())
            })
            .collect();
        sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
    }
    if let Some((name, id)) = after {
        let n = binds.len() + 1;
        sql.push_str(&format!(" AND (name > ${n} OR (name = ${n} AND id > ${}))", n + 1));
        binds.push(name);
        binds.push(id);
    }
    sql.push_str(&format!(" ORDER BY name, id LIMIT {}", limit + 1));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(db.pool()).await?;
    Ok(rows.iter().map(TenantRow::decode).collect::<Result<Vec<_>, _>>()?)
}

/// Depth-first pre-order of a subtree: parents before children, siblings by name.
pub fn pre_order(
    root: &TenantRow,
    mut rows: Vec<TenantRow>,
    max_levels: usize,
    include_archived: bool,
) -> Vec<TenantRow> {
    use std::collections::HashMap;
    rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let mut children: HashMap<String, Vec<TenantRow>> = HashMap::new();
    for row in rows {
        if row.id == root.id {
            continue;
        }
        if let Some(parent) = row.parent_id.clone() {
            children.entry(parent).or_default().push(row);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        if !include_archived && node.status == TenantStatus::Archived && node.id != root.id {
            continue;
        }
        let level = node.depth - root.depth;
        if let Some(kids) = children.remove(&node.id)
            && (max_levels == 0 || level < max_levels)
        {
            stack.extend(kids.into_iter().rev());
        }
        out.push(node);
    }
    out
}
