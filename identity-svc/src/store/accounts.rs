//! Account rows.
//!
//! Rules:
//!
//! 1. Account status is `pending | active | suspended | deleted`.
//! 2. Deleting leaves a tombstone (id, display name, staff flag, times); email, password, history
//!    and second factor are purged, so the email (unique case-insensitively among non-deleted
//!    accounts) can be used again.
//! 3. A CreateUser `request_id` is unique among accounts (migration 0009): a retry passes the same
//!    permission checks and gets the first call's account only if the caller may view it;
//!    otherwise ALREADY_EXISTS / `DUPLICATE_ENTRY` (field `request_id`), saying nothing of whose it
//!    is.
//! 4. `ListUsers` pages by keyset: the token carries the last user's sort key and id, and the next
//!    page starts strictly after it, so users added or removed between pages neither repeat nor go
//!    missing. Names sort and match by `name_key`, the display name lower-cased by the service (the
//!    databases' `LOWER` differ beyond ASCII), so both backends search and order alike.
//! 5. An unprovisioned account (`provisioned = 0`, its membership not yet in tenancy-svc) cannot
//!    log in; see `events::relay`.

use sqlx::{Any, AnyPool, Row, Transaction, any::AnyRow};
use tether_runtime::db::{Database, now_micros};
use uuid::Uuid;

use crate::domain::{
    DisplayName, Email,
    account::{CursorKey, NewUser, Sort, Status, UserEdit, UserQuery, name_key},
};

/// One account as stored (never leaves the service with its hash).
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: String,
    pub email: Option<String>,
    pub display_name: String,
    pub status: Status,
    pub is_msp_staff: bool,
    pub primary_tenant_id: Option<String>,
    pub job_title: Option<String>,
    pub notes: Option<String>,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub totp_enabled: bool,
    pub created_at: i64,
    pub joined_at: Option<i64>,
    pub last_login_at: Option<i64>,
    pub provisioned: bool,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

const COLUMNS: &str = "id, email, display_name, status, is_msp_staff, primary_tenant_id, job_title, notes, \
    password_hash, must_change_password, totp_enabled, created_at, joined_at, last_login_at, provisioned, \
    updated_at, deleted_at";

fn from_row(row: &AnyRow) -> Result<AccountRow, sqlx::Error> {
    Ok(AccountRow {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        display_name: row.try_get(2)?,
        status: {
            let raw: String = row.try_get(3)?;
            Status::parse(&raw).ok_or_else(|| sqlx::Error::Decode(format!("unknown account status {raw:?}").into()))?
        },
        is_msp_staff: row.try_get::<i64, _>(4)? != 0,
        primary_tenant_id: row.try_get(5)?,
        job_title: row.try_get(6)?,
        notes: row.try_get(7)?,
        password_hash: row.try_get(8)?,
        must_change_password: row.try_get::<i64, _>(9)? != 0,
        totp_enabled: row.try_get::<i64, _>(10)? != 0,
        created_at: row.try_get(11)?,
        joined_at: row.try_get(12)?,
        last_login_at: row.try_get(13)?,
        provisioned: row.try_get::<i64, _>(14)? != 0,
        updated_at: row.try_get(15)?,
        deleted_at: row.try_get(16)?,
    })
}

/// The bootstrap owner's account id, if one was created.
pub async fn bootstrap_owner_id(db: &Database) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM bootstrap WHERE name = 'owner_account_id'").fetch_optional(db.pool()).await
}

/// Inserts the MSP owner (active MSP staff, not yet provisioned in tenancy-svc) and records it
/// as the bootstrap owner, in one transaction.
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
         password_hash, created_at, joined_at, updated_at, provisioned, name_key) \
         VALUES ($1, $2, $3, $4, 'active', 1, $5, $6, $6, $6, 0, $7)",
    )
    .bind(id.to_string())
    .bind(email.as_str().to_owned())
    .bind(email.normalized())
    .bind(name.as_str().to_owned())
    .bind(password_hash.to_owned())
    .bind(now)
    .bind(name_key(name.as_str()))
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO bootstrap (name, value) VALUES ('owner_account_id', $1)")
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    add_history(tx, &id.to_string(), password_hash).await?;
    Ok(id)
}

pub async fn get<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    one_where(executor, "id", id).await
}

pub async fn get_by_email(pool: &AnyPool, normalized: &str) -> Result<Option<AccountRow>, sqlx::Error> {
    one_where(pool, "email_normalized", normalized).await
}

pub async fn get_by_request_id(pool: &AnyPool, request_id: &str) -> Result<Option<AccountRow>, sqlx::Error> {
    one_where(pool, "request_id", request_id).await
}

/// The account whose `column` (a unique column) holds `value`.
async fn one_where<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    column: &'static str,
    value: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE {column} = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value.to_owned())
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Inserts a "create now" account: active, but not loginable until tenancy-svc has
/// acknowledged its membership (`provisioned = 0`).
pub async fn insert_new(
    tx: &mut Transaction<'static, Any>,
    user: &NewUser,
    tenant_id: Option<&str>,
    password_hash: &str,
) -> Result<String, sqlx::Error> {
    let id = Uuid::now_v7().to_string();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO accounts (id, email, email_normalized, display_name, status, is_msp_staff, primary_tenant_id, \
         job_title, notes, password_hash, must_change_password, created_at, joined_at, updated_at, provisioned, \
         request_id, name_key) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $11, $11, 0, $12, $13)",
    )
    .bind(id.clone())
    .bind(user.email.as_str().to_owned())
    .bind(user.email.normalized())
    .bind(user.display_name.as_str().to_owned())
    .bind(i64::from(user.is_msp_staff))
    .bind(tenant_id.map(str::to_owned))
    .bind(user.job_title.clone())
    .bind(user.notes.clone())
    .bind(password_hash.to_owned())
    .bind(i64::from(user.must_change_password))
    .bind(now)
    .bind(user.request_id.map(|r| r.to_string()))
    .bind(name_key(user.display_name.as_str()))
    .execute(&mut **tx)
    .await?;
    add_history(tx, &id, password_hash).await?;
    Ok(id)
}

pub async fn apply_edit(tx: &mut Transaction<'static, Any>, id: &str, edit: &UserEdit) -> Result<(), sqlx::Error> {
    let now = now_micros();
    if let Some(name) = &edit.display_name {
        sqlx::query("UPDATE accounts SET display_name = $1, name_key = $4, updated_at = $2 WHERE id = $3")
            .bind(name.as_str().to_owned())
            .bind(now)
            .bind(id.to_owned())
            .bind(name_key(name.as_str()))
            .execute(&mut **tx)
            .await?;
    }
    if let Some(email) = &edit.email {
        sqlx::query("UPDATE accounts SET email = $1, email_normalized = $2, updated_at = $3 WHERE id = $4")
            .bind(email.as_str().to_owned())
            .bind(email.normalized())
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut **tx)
            .await?;
    }
    if let Some(title) = &edit.job_title {
        sqlx::query("UPDATE accounts SET job_title = $1, updated_at = $2 WHERE id = $3")
            .bind(title.clone())
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut **tx)
            .await?;
    }
    if let Some(notes) = &edit.notes {
        sqlx::query("UPDATE accounts SET notes = $1, updated_at = $2 WHERE id = $3")
            .bind(notes.clone())
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn set_status(tx: &mut Transaction<'static, Any>, id: &str, status: Status) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(now_micros())
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts the pending account of an invitation (not loginable: no password, pending).
pub async fn insert_pending(
    tx: &mut Transaction<'static, Any>,
    email: &Email,
    name: &str,
    is_msp_staff: bool,
    tenant_id: Option<&str>,
) -> Result<String, sqlx::Error> {
    let id = Uuid::now_v7().to_string();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO accounts (id, email, email_normalized, display_name, status, is_msp_staff, primary_tenant_id, \
         created_at, updated_at, provisioned, name_key) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $7, 0, $8)",
    )
    .bind(id.clone())
    .bind(email.as_str().to_owned())
    .bind(email.normalized())
    .bind(name.to_owned())
    .bind(i64::from(is_msp_staff))
    .bind(tenant_id.map(str::to_owned))
    .bind(now)
    .bind(name_key(name))
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Leaves a tombstone: id, display name, staff flag and creation time stay; email and
/// credentials go (so the email can be used again).
pub async fn tombstone(tx: &mut Transaction<'static, Any>, id: &str) -> Result<(), sqlx::Error> {
    let now = now_micros();
    sqlx::query(
        "UPDATE accounts SET status = 'deleted', email = NULL, email_normalized = NULL, password_hash = NULL, \
         job_title = NULL, notes = NULL, totp_enabled = 0, must_change_password = 0, primary_tenant_id = NULL, \
         request_id = NULL, deleted_at = $1, updated_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id.to_owned())
    .execute(&mut **tx)
    .await?;
    // Every credential goes with the account: history, second factor, open reset links and
    // login steps (a step token must not lead anywhere after the deletion).
    for purge in [
        "DELETE FROM password_history WHERE account_id = $1",
        "DELETE FROM login_failures WHERE kind = 'account' AND subject = $1",
        "DELETE FROM totp WHERE account_id = $1",
        "DELETE FROM recovery_codes WHERE account_id = $1",
        "DELETE FROM login_steps WHERE account_id = $1",
        "UPDATE password_resets SET voided = 1 WHERE account_id = $1 AND used_at IS NULL",
    ] {
        sqlx::query(purge).bind(id.to_owned()).execute(&mut **tx).await?;
    }
    Ok(())
}

/// An invitee accepted: name, password, active, joined now. False, changing nothing, if the
/// account is not pending any more (deactivated or deleted since the invitation was sent).
pub async fn activate_invited(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    name: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let now = now_micros();
    let done = sqlx::query(
        "UPDATE accounts SET status = 'active', display_name = $1, password_hash = $2, joined_at = $3, \
         updated_at = $3, name_key = $5 WHERE id = $4 AND status = 'pending'",
    )
    .bind(name.to_owned())
    .bind(password_hash.to_owned())
    .bind(now)
    .bind(id.to_owned())
    .bind(name_key(name))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    add_history(tx, id, password_hash).await?;
    Ok(true)
}

pub async fn set_password(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    password_hash: &str,
    must_change: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET password_hash = $1, must_change_password = $2, updated_at = $3 WHERE id = $4")
        .bind(password_hash.to_owned())
        .bind(i64::from(must_change))
        .bind(now_micros())
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    add_history(tx, id, password_hash).await
}

/// Replaces the hash without touching the history (a rehash of the same password).
pub async fn rehash(pool: &AnyPool, id: &str, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
        .bind(password_hash.to_owned())
        .bind(id.to_owned())
        .execute(pool)
        .await?;
    Ok(())
}

async fn add_history(tx: &mut Transaction<'static, Any>, id: &str, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO password_history (account_id, password_hash, created_at) VALUES ($1, $2, $3)")
        .bind(id.to_owned())
        .bind(password_hash.to_owned())
        .bind(now_micros())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The hashes of the last `n` passwords, newest first.
pub async fn recent_hashes(pool: &AnyPool, id: &str, n: usize) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT password_hash FROM password_history WHERE account_id = $1 ORDER BY created_at DESC LIMIT $2",
    )
    .bind(id.to_owned())
    .bind(n as i64)
    .fetch_all(pool)
    .await
}

pub async fn record_login(tx: &mut Transaction<'static, Any>, id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET last_login_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn mark_provisioned(tx: &mut Transaction<'static, Any>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET provisioned = 1 WHERE id = $1").bind(id.to_owned()).execute(&mut **tx).await?;
    Ok(())
}

/// One page of accounts matching `q`; `restrict_tenant` / `exclude_staff` narrow it to what
/// the caller may see.
pub async fn list(pool: &AnyPool, q: &UserQuery) -> Result<Vec<AccountRow>, sqlx::Error> {
    let mut conditions: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let bind = |value: String, binds: &mut Vec<String>| {
        binds.push(value);
        format!("${}", binds.len())
    };
    if !q.include_deleted {
        conditions.push("status <> 'deleted'".to_owned());
    }
    if let Some(t) = q.tenant_id {
        let p = bind(t.to_string(), &mut binds);
        conditions.push(format!("primary_tenant_id = {p}"));
    }
    if let Some(s) = q.status {
        let p = bind(s.as_str().to_owned(), &mut binds);
        conditions.push(format!("status = {p}"));
    }
    if let Some(tf) = q.two_factor_enabled {
        conditions.push(format!("totp_enabled = {}", i64::from(tf)));
    }
    if let Some(staff) = q.is_msp_staff {
        conditions.push(format!("is_msp_staff = {}", i64::from(staff)));
    }
    if let Some(text) = &q.text {
        let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let p = bind(format!("%{escaped}%"), &mut binds);
        conditions
            .push(format!("(name_key LIKE {p} ESCAPE '\\' OR COALESCE(email_normalized, '') LIKE {p} ESCAPE '\\')"));
    }
    // Never-logged-in users sort as time 0 (first ascending, last descending).
    let (key, descending) = match q.sort {
        Sort::NameAsc => ("name_key", false),
        Sort::NameDesc => ("name_key", true),
        Sort::LastLoginAsc => ("COALESCE(last_login_at, 0)", false),
        Sort::LastLoginDesc => ("COALESCE(last_login_at, 0)", true),
        Sort::CreatedDesc => ("created_at", true),
    };
    let (direction, beyond) = if descending { ("DESC", "<") } else { ("ASC", ">") };
    if let Some(after) = &q.after {
        let k = match &after.key {
            CursorKey::Name(name) => bind(name.clone(), &mut binds),
            // A parsed number, written into the statement (the binds here are all text).
            CursorKey::Time(t) => t.to_string(),
        };
        let id = bind(after.id.to_string(), &mut binds);
        conditions.push(format!("({key} {beyond} {k} OR ({key} = {k} AND id {beyond} {id}))"));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let sql = format!(
        "SELECT {COLUMNS} FROM accounts {filter} ORDER BY {key} {direction}, id {direction} LIMIT {}",
        q.page_size + 1
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(b);
    }
    query.fetch_all(pool).await?.iter().map(from_row).collect()
}

/// Fills the name key of accounts written before it existed (once, at start-up).
pub async fn fill_name_keys(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, display_name FROM accounts WHERE name_key IS NULL").fetch_all(pool).await?;
    for (id, name) in rows {
        sqlx::query("UPDATE accounts SET name_key = $1 WHERE id = $2")
            .bind(name_key(&name))
            .bind(id)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Every non-deleted account, for a Watch snapshot.
pub async fn all_live(tx: &mut Transaction<'static, Any>) -> Result<Vec<AccountRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE status <> 'deleted' ORDER BY id");
    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut **tx).await?.iter().map(from_row).collect()
}

/// True if the error is a unique-constraint violation (a concurrent insert of the same email).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation() || d.message().contains("UNIQUE") || d.message().contains("duplicate key")
        }
        _ => false,
    }
}
