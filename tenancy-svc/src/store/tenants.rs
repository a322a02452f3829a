//! Tenant rows.

use tether_runtime::db::{Database, now_micros};
use uuid::Uuid;

use crate::domain::{TenantName, TenantSlug};

/// The admin tenancy's id, if it exists.
pub async fn admin_tenancy_id(db: &Database) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE kind = 'admin'").fetch_optional(db.pool()).await
}

/// Creates the admin tenancy; a concurrent creator loses on the unique index and is told so.
pub async fn insert_admin_tenancy(db: &Database, name: &TenantName, slug: &TenantSlug) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO tenants (id, name, slug, kind, status, parent_id, depth, created_at) \
         VALUES ($1, $2, $3, 'admin', 'active', NULL, 0, $4)",
    )
    .bind(id.to_string())
    .bind(name.as_str().to_owned())
    .bind(slug.as_str().to_owned())
    .bind(now_micros())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}
