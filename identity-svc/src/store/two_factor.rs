//! TOTP enrollments, recovery codes, 2FA policies.

use sqlx::{Any, AnyPool, Row, Transaction};
use tether_runtime::db::{Backend, Database, now_micros};

use crate::domain::totp_keys::{KeyError, Sealed, TotpKeys};

pub struct Totp {
    /// The secret as stored: sealed by `secret_key_id`, or plain text if that is `None` (a row
    /// from before encryption that start-up has not sealed yet).
    pub secret: String,
    pub secret_key_id: Option<String>,
    pub confirmed: bool,
    pub expires_at: i64,
    pub last_used_step: Option<i64>,
}

impl Totp {
    /// The base32 secret in clear.
    pub fn open(&self, keys: &TotpKeys, account_id: &str) -> Result<String, KeyError> {
        open_secret(keys, account_id, &self.secret, self.secret_key_id.as_deref())
    }
}

/// A stored secret in clear: opened with its key, or as it is if it predates encryption.
fn open_secret(keys: &TotpKeys, account_id: &str, stored: &str, key_id: Option<&str>) -> Result<String, KeyError> {
    match key_id {
        Some(key_id) => keys.open(account_id, key_id, stored),
        None => Ok(stored.to_owned()),
    }
}

pub async fn get(pool: &AnyPool, account_id: &str) -> Result<Option<Totp>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT secret, secret_key_id, confirmed, expires_at, last_used_step FROM totp WHERE account_id = $1",
    )
    .bind(account_id.to_owned())
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(Totp {
            secret: r.try_get(0)?,
            secret_key_id: r.try_get(1)?,
            confirmed: r.try_get::<i64, _>(2)? != 0,
            expires_at: r.try_get(3)?,
            last_used_step: r.try_get(4)?,
        })
    })
    .transpose()
}

/// Starts (or restarts) an unconfirmed enrollment with a sealed secret.
pub async fn begin(pool: &AnyPool, account_id: &str, secret: &Sealed, expires_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO totp (account_id, secret, secret_key_id, confirmed, expires_at) VALUES ($1, $2, $3, 0, $4) \
         ON CONFLICT (account_id) DO UPDATE SET secret = $2, secret_key_id = $3, confirmed = 0, expires_at = $4, \
         last_used_step = NULL",
    )
    .bind(account_id.to_owned())
    .bind(secret.ciphertext.clone())
    .bind(secret.key_id.clone())
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// What start-up's sealing pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Plain-text secrets (from before encryption) now sealed.
    pub sealed: usize,
    /// Secrets moved from an older key to the sealing key.
    pub rotated: usize,
    /// Secrets under a key that is not configured: left as they are (their second factor fails
    /// closed until the key is given back or the user's 2FA is reset).
    pub unreadable: usize,
}

/// Seals every secret that is plain text or under a key other than the sealing one, with the
/// sealing key, in batches. Each row is rewritten only if it still holds what was read, so an
/// enrollment that changes it meanwhile (another replica) is kept.
pub async fn reseal_all(database: &Database, keys: &TotpKeys) -> Result<Resealed, sqlx::Error> {
    const BATCH: i64 = 500;
    let pool = database.pool();
    let mut done = Resealed::default();
    let mut after = String::new();
    loop {
        let rows = sqlx::query(
            "SELECT account_id, secret, secret_key_id FROM totp \
             WHERE (secret_key_id IS NULL OR secret_key_id <> $1) AND account_id > $2 ORDER BY account_id LIMIT $3",
        )
        .bind(keys.sealing_key_id().to_owned())
        .bind(after.clone())
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        for r in &rows {
            let account_id: String = r.try_get(0)?;
            let secret: String = r.try_get(1)?;
            let key_id: Option<String> = r.try_get(2)?;
            let clear = open_secret(keys, &account_id, &secret, key_id.as_deref());
            let sealed = match clear.and_then(|clear| keys.seal(&account_id, &clear)) {
                Ok(sealed) => sealed,
                Err(e) => {
                    tracing::error!(user_id = %account_id, error = %e, "TOTP secret left as it is");
                    done.unreadable += 1;
                    continue;
                }
            };
            let updated =
                sqlx::query("UPDATE totp SET secret = $1, secret_key_id = $2 WHERE account_id = $3 AND secret = $4")
                    .bind(sealed.ciphertext)
                    .bind(sealed.key_id)
                    .bind(account_id)
                    .bind(secret)
                    .execute(pool)
                    .await?;
            if updated.rows_affected() > 0 {
                match key_id {
                    None => done.sealed += 1,
                    Some(_) => done.rotated += 1,
                }
            }
        }
    }
    if done.sealed > 0 {
        scrub_old_versions(database).await;
    }
    Ok(done)
}

/// After plain-text secrets were overwritten: their bytes may survive in the database's freed
/// space and log (SQLite's free pages and write-ahead log, PostgreSQL's dead row versions), so
/// the table is rewritten once. A failure only warns: the rows themselves are sealed.
async fn scrub_old_versions(database: &Database) {
    let statements: &[&'static str] = match database.backend() {
        Backend::Sqlite => &["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"],
        Backend::Postgres => &["VACUUM FULL totp"],
    };
    for sql in statements {
        if let Err(e) = sqlx::raw_sql(*sql).execute(database.pool()).await {
            tracing::warn!(error = %e, statement = sql, "could not rewrite the freed space of plain-text TOTP secrets");
        }
    }
}

/// Records the step of an accepted code, only if newer (so a code is accepted once even under
/// concurrency); false if another call used it first.
pub async fn use_step(tx: &mut Transaction<'static, Any>, account_id: &str, step: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE totp SET last_used_step = $1 WHERE account_id = $2 AND (last_used_step IS NULL OR last_used_step < $1)",
    )
    .bind(step)
    .bind(account_id.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn confirm(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    codes: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE totp SET confirmed = 1 WHERE account_id = $1")
        .bind(account_id.to_owned())
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE accounts SET totp_enabled = 1, updated_at = $1 WHERE id = $2")
        .bind(now_micros())
        .bind(account_id.to_owned())
        .execute(&mut **tx)
        .await?;
    replace_codes(tx, account_id, codes).await
}

pub async fn replace_codes(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    hashes: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
        .bind(account_id.to_owned())
        .execute(&mut **tx)
        .await?;
    for h in hashes {
        sqlx::query("INSERT INTO recovery_codes (account_id, code_hash) VALUES ($1, $2)")
            .bind(account_id.to_owned())
            .bind(h.clone())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Uses up one recovery code; false if it is unknown or used.
pub async fn use_recovery(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    hash: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recovery_codes SET used_at = $1 WHERE account_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(now_micros())
    .bind(account_id.to_owned())
    .bind(hash.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes the secret and codes; 2FA off.
pub async fn remove(tx: &mut Transaction<'static, Any>, account_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM totp WHERE account_id = $1").bind(account_id.to_owned()).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
        .bind(account_id.to_owned())
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE accounts SET totp_enabled = 0, updated_at = $1 WHERE id = $2")
        .bind(now_micros())
        .bind(account_id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub scope: String,
    pub require_all: bool,
    pub required_roles: Vec<String>,
    pub require_msp_staff: bool,
    pub grace_ms: i64,
    pub updated_at: i64,
    pub updated_by: String,
    /// When the requirement takes effect (microseconds).
    pub in_force_from: i64,
}

impl Policy {
    pub fn in_force(&self, now_micros: i64) -> bool {
        self.in_force_from <= now_micros
    }

    /// True if `other` asks 2FA of someone and this policy asks it of everyone `other` does
    /// (and maybe more).
    pub fn demands_at_least(&self, other: &Policy) -> bool {
        let other_demands = other.require_all || other.require_msp_staff || !other.required_roles.is_empty();
        other_demands
            && self.require_all >= other.require_all
            && self.require_msp_staff >= other.require_msp_staff
            && other.required_roles.iter().all(|r| self.required_roles.contains(r))
    }
}

const POLICY_COLUMNS: &str =
    "scope, require_all, required_roles, require_msp_staff, grace_ms, updated_at, updated_by, in_force_from";

fn policy_of(r: &sqlx::any::AnyRow) -> Result<Policy, sqlx::Error> {
    Ok(Policy {
        scope: r.try_get(0)?,
        require_all: r.try_get::<i64, _>(1)? != 0,
        required_roles: r.try_get::<String, _>(2)?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        require_msp_staff: r.try_get::<i64, _>(3)? != 0,
        grace_ms: r.try_get(4)?,
        updated_at: r.try_get(5)?,
        updated_by: r.try_get(6)?,
        in_force_from: r.try_get::<Option<i64>, _>(7)?.unwrap_or(0),
    })
}

pub async fn policy(pool: &AnyPool, scope: &str) -> Result<Option<Policy>, sqlx::Error> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM two_factor_policies WHERE scope = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(scope.to_owned()).fetch_optional(pool).await?;
    row.as_ref().map(policy_of).transpose()
}

/// Every policy (platform-wide or a tenant's) that names roles.
pub async fn role_policies(pool: &AnyPool) -> Result<Vec<Policy>, sqlx::Error> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM two_factor_policies WHERE required_roles <> '' ORDER BY scope");
    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?.iter().map(policy_of).collect()
}

/// Tenant policies that require 2FA of everyone in the tenant (and its departments).
pub async fn tenant_wide_policies(pool: &AnyPool) -> Result<Vec<Policy>, sqlx::Error> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM two_factor_policies WHERE require_all <> 0 AND scope <> ''");
    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?.iter().map(policy_of).collect()
}

pub async fn set_policy(tx: &mut Transaction<'static, Any>, p: &Policy) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO two_factor_policies (scope, require_all, required_roles, require_msp_staff, grace_ms, updated_at, \
         updated_by, in_force_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (scope) DO UPDATE SET \
         require_all = $2, required_roles = $3, require_msp_staff = $4, grace_ms = $5, updated_at = $6, \
         updated_by = $7, in_force_from = $8",
    )
    .bind(p.scope.clone())
    .bind(i64::from(p.require_all))
    .bind(p.required_roles.join(","))
    .bind(i64::from(p.require_msp_staff))
    .bind(p.grace_ms)
    .bind(p.updated_at)
    .bind(p.updated_by.clone())
    .bind(p.in_force_from)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
