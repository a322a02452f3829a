//! Sessions, login-step tokens, and the revocation generation.

use sqlx::{Any, AnyPool, Row, Transaction, any::AnyRow};
use tether_runtime::db::now_micros;

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub account_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub client_ip: String,
    pub user_agent: String,
    pub second_factor_verified: bool,
}

const COLUMNS: &str =
    "id, account_id, created_at, last_seen_at, expires_at, client_ip, user_agent, second_factor_verified";

fn from_row(row: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: row.try_get(0)?,
        account_id: row.try_get(1)?,
        created_at: row.try_get(2)?,
        last_seen_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        client_ip: row.try_get(5)?,
        user_agent: row.try_get(6)?,
        second_factor_verified: row.try_get::<i64, _>(7)? != 0,
    })
}

pub async fn insert(tx: &mut Transaction<'static, Any>, token_hash: &str, s: &SessionRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, account_id, created_at, last_seen_at, expires_at, client_ip, \
         user_agent, second_factor_verified) VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)",
    )
    .bind(s.id.clone())
    .bind(token_hash.to_owned())
    .bind(s.account_id.clone())
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(s.client_ip.clone())
    .bind(s.user_agent.clone())
    .bind(i64::from(s.second_factor_verified))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The live (not revoked) session a token hash belongs to.
pub async fn find_live(pool: &AnyPool, token_hash: &str) -> Result<Option<SessionRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(token_hash.to_owned())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1 AND revoked_at IS NULL");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_owned())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Live sessions of an account, most recently used first.
pub async fn list_live(
    pool: &AnyPool,
    account_id: &str,
    now: i64,
    limit: usize,
    offset: usize,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sessions WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
         ORDER BY last_seen_at DESC, id LIMIT {limit} OFFSET {offset}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id.to_owned())
        .bind(now)
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Refreshes the idle timer.
pub async fn touch(pool: &AnyPool, id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id.to_owned())
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends one session; false if it was not live.
pub async fn revoke(tx: &mut Transaction<'static, Any>, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_micros())
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() > 0 {
        bump_generation(tx).await?;
    }
    Ok(done.rows_affected() > 0)
}

/// Ends every live session of an account (except `keep`); returns the ids ended.
pub async fn revoke_all(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    keep: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    // Sessions past their lifetime ended already; they are neither revoked again nor announced.
    let now = now_micros();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM sessions WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2")
            .bind(account_id.to_owned())
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
    let ids: Vec<String> = ids.into_iter().filter(|id| Some(id.as_str()) != keep).collect();
    for id in &ids {
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.clone())
            .execute(&mut **tx)
            .await?;
    }
    // Always bump: the account's state changed too (deactivation, deletion), and cached
    // principals must be re-read.
    bump_generation(tx).await?;
    Ok(ids)
}

/// Tells every replica's Authenticate cache to re-read: called in the transaction of every
/// revocation and of every change to what a principal carries.
pub async fn bump_generation(tx: &mut Transaction<'static, Any>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE auth_generation SET generation = generation + 1 WHERE id = 1").execute(&mut **tx).await?;
    Ok(())
}

pub async fn generation(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT generation FROM auth_generation WHERE id = 1").fetch_one(pool).await
}

// ---- login steps ----

pub struct LoginStep {
    pub account_id: String,
    pub kind: String,
    pub client_ip: String,
    pub user_agent: String,
    pub expires_at: i64,
    pub used: bool,
}

pub async fn insert_step(
    tx: &mut Transaction<'static, Any>,
    token_hash: &str,
    step: &LoginStep,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_steps (token_hash, account_id, kind, client_ip, user_agent, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_hash.to_owned())
    .bind(step.account_id.clone())
    .bind(step.kind.clone())
    .bind(step.client_ip.clone())
    .bind(step.user_agent.clone())
    .bind(step.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find_step(
    tx: &mut Transaction<'static, Any>,
    token_hash: &str,
    kind: &str,
) -> Result<Option<LoginStep>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT account_id, kind, client_ip, user_agent, expires_at, used_at FROM login_steps \
         WHERE token_hash = $1 AND kind = $2",
    )
    .bind(token_hash.to_owned())
    .bind(kind.to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| {
        Ok(LoginStep {
            account_id: r.try_get(0)?,
            kind: r.try_get(1)?,
            client_ip: r.try_get(2)?,
            user_agent: r.try_get(3)?,
            expires_at: r.try_get(4)?,
            used: r.try_get::<Option<i64>, _>(5)?.is_some(),
        })
    })
    .transpose()
}

pub async fn use_step(tx: &mut Transaction<'static, Any>, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE login_steps SET used_at = $1 WHERE token_hash = $2")
        .bind(now_micros())
        .bind(token_hash.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
