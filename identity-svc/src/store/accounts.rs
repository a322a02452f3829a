//! Account rows.

use sqlx::{Any, Transaction};
use tether_runtime::db::{Database, now_micros};
use uuid::Uuid;

use crate::domain::{DisplayName, Email};

/// The bootstrap owner's account id, if one was created.
pub async fn bootstrap_owner_id(db: &Database) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM bootstrap WHERE name = 'owner_account_id'").fetch_optional(db.pool()).await
}

/// Inserts the MSP owner (active MSP staff) and records it as the bootstrap owner, in one
/// transaction.
pub async fn insert_bootstrap_owner(
    tx: &mut Transaction<'static, Any>,
    email: &Email,
    name: &DisplayName,
    password_hash: &str,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO accounts (id, email, email_normalized, display_name, status, is_msp_staff, \
         password_hash, created_at, joined_at) VALUES ($1, $2, $3, $4, 'active', 1, $5, $6, $6)",
    )
    .bind(id.to_string())
    .bind(email.as_str().to_owned())
    .bind(email.normalized())
    .bind(name.as_str().to_owned())
    .bind(password_hash.to_owned())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO bootstrap (name, value) VALUES ('owner_account_id', $1)")
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(id)
}
