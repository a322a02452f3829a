//! Password-reset links.

use sqlx::{Any, AnyPool, Row, Transaction};
use tether_runtime::db::now_micros;

pub struct Reset {
    pub account_id: String,
    pub expires_at: i64,
    pub used: bool,
    pub voided: bool,
}

/// Voids the account's open links, then adds a new one.
pub async fn issue(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    void_all(tx, account_id).await?;
    sqlx::query("INSERT INTO password_resets (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash.to_owned())
        .bind(account_id.to_owned())
        .bind(now_micros())
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn void_all(tx: &mut Transaction<'static, Any>, account_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE password_resets SET voided = 1 WHERE account_id = $1 AND used_at IS NULL")
        .bind(account_id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn find(pool: &AnyPool, token_hash: &str) -> Result<Option<Reset>, sqlx::Error> {
    let row = sqlx::query("SELECT account_id, expires_at, used_at, voided FROM password_resets WHERE token_hash = $1")
        .bind(token_hash.to_owned())
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(Reset {
            account_id: r.try_get(0)?,
            expires_at: r.try_get(1)?,
            used: r.try_get::<Option<i64>, _>(2)?.is_some(),
            voided: r.try_get::<i64, _>(3)? != 0,
        })
    })
    .transpose()
}

/// Uses the link up; false if it was used or voided meanwhile.
pub async fn use_up(tx: &mut Transaction<'static, Any>, token_hash: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE password_resets SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND voided = 0")
            .bind(now_micros())
            .bind(token_hash.to_owned())
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() > 0)
}
