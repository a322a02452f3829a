//! authz-svc's own schema: custom roles, overrides, resources and resource grants, plus the
//! outbox. Every write takes the next revision and records its audit events in the same
//! transaction; replicas reload this data when the revision moves.
//!
//! Rules:
//!
//! 1. Each kind of row is capped (`TETHER_AUTHZ_MAX_*`: 10,000 resources, 50,000 resource grants
//!    and 10,000 overrides per tenant, overrides that apply everywhere counting as one tenant;
//!    1,000 custom roles in all). A write that would add one more is RESOURCE_EXHAUSTED /
//!    `LIMIT_REACHED` with the bound in the `limit` metadata; updates of existing rows are not.
//! 2. The count is taken inside the write's transaction after the revision counter's row lock, so
//!    concurrent writes on several replicas cannot overshoot together.

use sqlx::Row;
use tether_proto::common::v1::AuditEvent;
use tether_runtime::{
    db::{Database, EmbeddedMigration},
    events::{OUTBOX_MIGRATION, OUTBOX_PARKING_MIGRATION, current_revision},
};
use uuid::Uuid;

use crate::domain::{
    index::{GrantAccess, GrantRecord, OverrideRecord, OwnData, ResourceRecord},
    parse_uuid,
    policy::{PermSet, Policy, RoleDef, Scope},
};

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration::portable(1, "policy", include_str!("migrations/0001_policy.sql")),
    EmbeddedMigration::portable(2, "resources", include_str!("migrations/0002_resources.sql")),
    EmbeddedMigration::portable(3, "limits", include_str!("migrations/0003_limits.sql")),
    OUTBOX_MIGRATION,
    OUTBOX_PARKING_MIGRATION,
];

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// How much of authz's data one tenant (or the deployment) may hold; a write that would add
/// beyond it is refused ([`WriteError::Limit`]). Checked inside the write's transaction, after
/// the revision counter's row lock is taken, so concurrent writes (on any replica) cannot
/// overshoot it together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Resource nodes per tenant.
    pub resources_per_tenant: usize,
    /// Resource grants per tenant.
    pub grants_per_tenant: usize,
    /// Overrides per tenant; overrides that apply everywhere count as one more "tenant".
    pub overrides_per_tenant: usize,
    /// Custom roles in all.
    pub custom_roles: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            resources_per_tenant: 10_000,
            grants_per_tenant: 50_000,
            overrides_per_tenant: 10_000,
            custom_roles: 1_000,
        }
    }
}

/// Why a write was not made.
#[derive(Debug)]
pub enum WriteError {
    Db(sqlx::Error),
    /// The quota of `what` (e.g. "resources per tenant") is full at `limit`; nothing was written.
    Limit {
        what: &'static str,
        limit: usize,
    },
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Db(e) => e.fmt(f),
            Self::Limit { what, limit } => write!(f, "at most {limit} {what}"),
        }
    }
}

/// Refuses a write that would add a row to `existing` ones when `limit` are already there.
fn within(existing: i64, limit: usize, what: &'static str) -> Result<(), WriteError> {
    if usize::try_from(existing).unwrap_or(usize::MAX) >= limit {
        Err(WriteError::Limit { what, limit })
    } else {
        Ok(())
    }
}

/// The revision of authz's own data.
pub async fn revision(db: &Database) -> StoreResult<u64> {
    current_revision(db.pool()).await
}

/// Everything the index needs from authz's schema, read consistently with its revision.
pub async fn load_own(db: &Database, policy: &Policy) -> StoreResult<OwnData> {
    let mut tx = db.begin_snapshot().await?;
    let revision = current_revision(&mut *tx).await?;
    let mut custom_roles = Vec::new();
    let rows = sqlx::query(
        "SELECT name, display_name, description, scope, rank, assignable, msp_staff_only, created_at, updated_at \
         FROM custom_roles ORDER BY name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let perms = sqlx::query("SELECT role_name, permission FROM custom_role_permissions").fetch_all(&mut *tx).await?;
    for r in rows {
        let name: String = r.try_get("name")?;
        let mut set: PermSet = 0;
        for p in perms.iter().filter(|p| p.try_get::<String, _>("role_name").ok().as_deref() == Some(name.as_str())) {
            let perm: String = p.try_get("permission")?;
            if let Some(bit) = policy.permission_bit(&perm) {
                set |= 1u128 << bit;
            }
        }
        custom_roles.push(RoleDef {
            display_name: r.try_get("display_name")?,
            description: r.try_get("description")?,
            permissions: set,
            scope: Scope::parse(&r.try_get::<String, _>("scope")?).unwrap_or(Scope::OwnTenant),
            rank: i32::try_from(r.try_get::<i64, _>("rank")?).unwrap_or(0),
            assignable: r.try_get::<i64, _>("assignable")? != 0,
            msp_staff_only: r.try_get::<i64, _>("msp_staff_only")? != 0,
            built_in: false,
            created_at_micros: r.try_get("created_at")?,
            updated_at_micros: r.try_get("updated_at")?,
            name,
        });
    }
    let mut overrides = Vec::new();
    for r in sqlx::query(
        "SELECT user_id, permission, tenant_id, effect, note, created_by, created_at FROM overrides \
         ORDER BY user_id, permission, tenant_id",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        let Some(user) = parse_uuid(&r.try_get::<String, _>("user_id")?) else { continue };
        let raw_tenant: String = r.try_get("tenant_id")?;
        let deny = r.try_get::<String, _>("effect")? == "deny";
        // '' means everywhere; anything else must be a tenant id. A malformed one must not
        // widen a grant to every tenant: the grant is skipped, a deny kept everywhere (closed).
        let tenant = match parse_uuid(&raw_tenant) {
            Some(t) => Some(t),
            None if raw_tenant.is_empty() || deny => {
                if !raw_tenant.is_empty() {
                    tracing::warn!(tenant_id = raw_tenant, "override with a malformed tenant id: denied everywhere");
                }
                None
            }
            None => {
                tracing::warn!(tenant_id = raw_tenant, "override with a malformed tenant id: grant skipped");
                continue;
            }
        };
        overrides.push(OverrideRecord {
            user,
            permission: r.try_get("permission")?,
            tenant,
            deny,
            note: r.try_get("note")?,
            created_by: r.try_get("created_by")?,
            created_at_micros: r.try_get("created_at")?,
        });
    }
    let mut resources = Vec::new();
    for r in sqlx::query(
        "SELECT tenant_id, resource_id, resource_type, parent_id, display_name, created_at, updated_at \
         FROM resources ORDER BY tenant_id, resource_id",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        let Some(tenant) = parse_uuid(&r.try_get::<String, _>("tenant_id")?) else { continue };
        resources.push(ResourceRecord {
            tenant,
            resource_id: r.try_get("resource_id")?,
            resource_type: r.try_get("resource_type")?,
            parent: r.try_get("parent_id")?,
            display_name: r.try_get("display_name")?,
            created_at_micros: r.try_get("created_at")?,
            updated_at_micros: r.try_get("updated_at")?,
        });
    }
    let mut grants = Vec::new();
    for r in sqlx::query(
        "SELECT grant_id, user_id, tenant_id, resource_id, role, permission, granted_by, created_at \
         FROM resource_grants ORDER BY grant_id",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        let (Some(grant_id), Some(user), Some(tenant)) = (
            parse_uuid(&r.try_get::<String, _>("grant_id")?),
            parse_uuid(&r.try_get::<String, _>("user_id")?),
            parse_uuid(&r.try_get::<String, _>("tenant_id")?),
        ) else {
            continue;
        };
        let role: String = r.try_get("role")?;
        grants.push(GrantRecord {
            grant_id,
            user,
            tenant,
            resource_id: r.try_get("resource_id")?,
            access: if role.is_empty() {
                GrantAccess::Permission(r.try_get("permission")?)
            } else {
                GrantAccess::Role(role)
            },
            granted_by: r.try_get("granted_by")?,
            created_at_micros: r.try_get("created_at")?,
        });
    }
    tx.commit().await?;
    Ok(OwnData { revision, custom_roles, overrides, resources, grants })
}

/// The one write recipe over authz's schema (no change stream: its replicas follow the
/// revision), with the call's audit events.
type Write = tether_runtime::events::Write<tether_runtime::events::NoChanges>;

async fn commit(mut write: Write, audit: &[AuditEvent]) -> Result<u64, sqlx::Error> {
    for event in audit {
        write.audit(event.clone());
    }
    write.commit().await
}

pub async fn role_exists(db: &Database, name: &str) -> StoreResult<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM custom_roles WHERE name = $1")
        .bind(name.to_owned())
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}

/// Inserts or replaces a custom role (with its permissions); a new one only while fewer than
/// `limit` custom roles exist.
pub async fn put_role(
    db: &Database,
    role: &RoleDef,
    permissions: Vec<String>,
    limit: usize,
    audit: &[AuditEvent],
) -> Result<u64, WriteError> {
    let role = role.clone();
    let mut write = Write::begin(db).await?;
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM custom_roles WHERE name = $1")
        .bind(role.name.clone())
        .fetch_one(write.conn())
        .await?;
    if exists == 0 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM custom_roles").fetch_one(write.conn()).await?;
        within(n, limit, "custom roles")?;
    }
    sqlx::query("DELETE FROM custom_role_permissions WHERE role_name = $1")
        .bind(role.name.clone())
        .execute(write.conn())
        .await?;
    sqlx::query(
        "INSERT INTO custom_roles (name, display_name, description, scope, rank, assignable, msp_staff_only, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (name) DO UPDATE SET display_name = $2, description = $3, scope = $4, rank = $5, \
         assignable = $6, msp_staff_only = $7, updated_at = $9",
    )
    .bind(role.name.clone())
    .bind(role.display_name.clone())
    .bind(role.description.clone())
    .bind(role.scope.as_str())
    .bind(i64::from(role.rank))
    .bind(i64::from(role.assignable))
    .bind(i64::from(role.msp_staff_only))
    .bind(role.created_at_micros)
    .bind(role.updated_at_micros)
    .execute(write.conn())
    .await?;
    for p in permissions {
        sqlx::query("INSERT INTO custom_role_permissions (role_name, permission) VALUES ($1, $2)")
            .bind(role.name.clone())
            .bind(p)
            .execute(write.conn())
            .await?;
    }
    Ok(commit(write, audit).await?)
}

pub async fn delete_role(db: &Database, name: &str, audit: &[AuditEvent]) -> Result<u64, WriteError> {
    let name = name.to_owned();
    let mut write = Write::begin(db).await?;
    sqlx::query("DELETE FROM custom_role_permissions WHERE role_name = $1")
        .bind(name.clone())
        .execute(write.conn())
        .await?;
    sqlx::query("DELETE FROM custom_roles WHERE name = $1").bind(name).execute(write.conn()).await?;
    Ok(commit(write, audit).await?)
}

/// Sets an override; a new one only while its tenant (or "everywhere") holds fewer than `limit`.
pub async fn set_override(
    db: &Database,
    o: &OverrideRecord,
    limit: usize,
    audit: &[AuditEvent],
) -> Result<u64, WriteError> {
    let o = o.clone();
    let mut write = Write::begin(db).await?;
    let tenant = o.tenant.map(|t| t.to_string()).unwrap_or_default();
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM overrides WHERE user_id = $1 AND permission = $2 AND tenant_id = $3")
            .bind(o.user.to_string())
            .bind(o.permission.clone())
            .bind(tenant.clone())
            .fetch_one(write.conn())
            .await?;
    if exists == 0 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM overrides WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(write.conn())
            .await?;
        within(n, limit, "overrides per tenant")?;
    }
    sqlx::query(
        "INSERT INTO overrides (user_id, permission, tenant_id, effect, created_at, note, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (user_id, permission, tenant_id) DO UPDATE SET effect = $4, created_at = $5, note = $6, created_by = $7",
    )
    .bind(o.user.to_string())
    .bind(o.permission.clone())
    .bind(o.tenant.map(|t| t.to_string()).unwrap_or_default())
    .bind(if o.deny { "deny" } else { "grant" })
    .bind(o.created_at_micros)
    .bind(o.note.clone())
    .bind(o.created_by.clone())
    .execute(write.conn())
    .await?;
    Ok(commit(write, audit).await?)
}

/// Removes an override; `None` if there was none (nothing is written then).
pub async fn remove_override(
    db: &Database,
    user: Uuid,
    permission: &str,
    tenant: Option<Uuid>,
    audit: &[AuditEvent],
) -> StoreResult<Option<u64>> {
    let permission = permission.to_owned();
    let mut write = Write::begin(db).await?;
    let deleted = sqlx::query("DELETE FROM overrides WHERE user_id = $1 AND permission = $2 AND tenant_id = $3")
        .bind(user.to_string())
        .bind(permission)
        .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
        .execute(write.conn())
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(None);
    }
    Ok(Some(commit(write, audit).await?))
}

/// Registers or updates a resource; a new one only while its tenant holds fewer than `limit`.
pub async fn put_resource(
    db: &Database,
    r: &ResourceRecord,
    limit: usize,
    audit: &[AuditEvent],
) -> Result<u64, WriteError> {
    let r = r.clone();
    let mut write = Write::begin(db).await?;
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE tenant_id = $1 AND resource_id = $2")
        .bind(r.tenant.to_string())
        .bind(r.resource_id.clone())
        .fetch_one(write.conn())
        .await?;
    if exists == 0 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE tenant_id = $1")
            .bind(r.tenant.to_string())
            .fetch_one(write.conn())
            .await?;
        within(n, limit, "resources per tenant")?;
    }
    sqlx::query(
        "INSERT INTO resources (tenant_id, resource_id, resource_type, parent_id, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, resource_id) DO UPDATE SET resource_type = $3, parent_id = $4, display_name = $5, updated_at = $7",
    )
    .bind(r.tenant.to_string())
    .bind(r.resource_id.clone())
    .bind(r.resource_type.clone())
    .bind(r.parent.clone())
    .bind(r.display_name.clone())
    .bind(r.created_at_micros)
    .bind(r.updated_at_micros)
    .execute(write.conn())
    .await?;
    Ok(commit(write, audit).await?)
}

/// Removes resources (already expanded to descendants by the caller) and their grants.
pub async fn remove_resources(
    db: &Database,
    tenant: Uuid,
    ids: Vec<String>,
    audit: &[AuditEvent],
) -> Result<u64, WriteError> {
    let mut write = Write::begin(db).await?;
    for id in ids {
        sqlx::query("DELETE FROM resource_grants WHERE tenant_id = $1 AND resource_id = $2")
            .bind(tenant.to_string())
            .bind(id.clone())
            .execute(write.conn())
            .await?;
        sqlx::query("DELETE FROM resources WHERE tenant_id = $1 AND resource_id = $2")
            .bind(tenant.to_string())
            .bind(id)
            .execute(write.conn())
            .await?;
    }
    Ok(commit(write, audit).await?)
}

/// Records a grant, or returns the existing identical one (idempotent); a new one only while
/// its tenant holds fewer than `limit`.
pub async fn put_grant(
    db: &Database,
    g: &GrantRecord,
    limit: usize,
    audit: &[AuditEvent],
) -> Result<(u64, GrantRecord), WriteError> {
    let g = g.clone();
    let mut write = Write::begin(db).await?;
    let (role, permission) = match &g.access {
        GrantAccess::Role(r) => (r.clone(), String::new()),
        GrantAccess::Permission(p) => (String::new(), p.clone()),
    };
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT grant_id FROM resource_grants WHERE user_id = $1 AND tenant_id = $2 AND resource_id = $3 \
         AND role = $4 AND permission = $5",
    )
    .bind(g.user.to_string())
    .bind(g.tenant.to_string())
    .bind(g.resource_id.clone())
    .bind(role.clone())
    .bind(permission.clone())
    .fetch_optional(write.conn())
    .await?;
    if let Some(id) = existing.as_deref().and_then(parse_uuid) {
        return Ok((commit(write, audit).await?, GrantRecord { grant_id: id, ..g }));
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM resource_grants WHERE tenant_id = $1")
        .bind(g.tenant.to_string())
        .fetch_one(write.conn())
        .await?;
    within(n, limit, "resource grants per tenant")?;
    sqlx::query(
        "INSERT INTO resource_grants (grant_id, user_id, tenant_id, resource_id, role, permission, granted_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(g.grant_id.to_string())
    .bind(g.user.to_string())
    .bind(g.tenant.to_string())
    .bind(g.resource_id.clone())
    .bind(role)
    .bind(permission)
    .bind(g.granted_by.clone())
    .bind(g.created_at_micros)
    .execute(write.conn())
    .await?;
    Ok((commit(write, audit).await?, g))
}

/// Revokes a grant; `None` if there was none.
pub async fn revoke_grant(db: &Database, grant_id: Uuid, audit: &[AuditEvent]) -> StoreResult<Option<u64>> {
    let mut write = Write::begin(db).await?;
    let deleted = sqlx::query("DELETE FROM resource_grants WHERE grant_id = $1")
        .bind(grant_id.to_string())
        .execute(write.conn())
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(None);
    }
    Ok(Some(commit(write, audit).await?))
}

/// Audit events of decisions (denials and sampled allows): no revision, nothing else changes.
pub async fn record_decisions(db: &Database, events: impl Iterator<Item = AuditEvent> + Send) -> StoreResult<()> {
    tether_runtime::events::record_audit_only(db, events).await?;
    Ok(())
}
