//! Membership intents: what identity owes tenancy-svc, written in the same transaction as the
//! account change and delivered by the relay until acknowledged.

use sqlx::{Any, AnyPool, Row, Transaction};
use tether_runtime::db::now_micros;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Give the account its first membership (tenant empty: the admin tenancy).
    Add,
    /// Remove every direct membership (the account was deleted).
    Clear,
    /// Bootstrap: make the account the MSP owner.
    Own,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Clear => "clear",
            Self::Own => "own",
        }
    }
    fn parse(raw: &str) -> Self {
        match raw {
            "clear" => Self::Clear,
            "own" => Self::Own,
            _ => Self::Add,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub id: String,
    pub account_id: String,
    pub op: Op,
    pub tenant_id: String,
    pub role: String,
    pub attempts: i64,
}

pub async fn insert(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    op: Op,
    tenant_id: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    let now = now_micros();
    sqlx::query(
        "INSERT INTO membership_intents (id, account_id, op, tenant_id, role, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(account_id.to_owned())
    .bind(op.as_str())
    .bind(tenant_id.to_owned())
    .bind(role.to_owned())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Undelivered intents with no undelivered predecessor of the same account: an account's
/// intents reach tenancy in the order they were made (a deletion's Clear never overtakes a
/// creation's Add that is still being retried, which would leave a membership without a user).
const HEAD_OF_LINE: &str = "delivered_at IS NULL AND NOT EXISTS (SELECT 1 FROM membership_intents earlier \
     WHERE earlier.account_id = membership_intents.account_id AND earlier.delivered_at IS NULL \
     AND (earlier.created_at < membership_intents.created_at \
     OR (earlier.created_at = membership_intents.created_at AND earlier.id < membership_intents.id)))";

/// Undelivered intents due now (each the next of its account), oldest first.
pub async fn due(pool: &AnyPool, now: i64, limit: usize) -> Result<Vec<Intent>, sqlx::Error> {
    let sql = format!(
        "SELECT id, account_id, op, tenant_id, role, attempts FROM membership_intents \
         WHERE {HEAD_OF_LINE} AND next_attempt_at <= $1 ORDER BY created_at, id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(limit as i64).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(Intent {
                id: r.try_get(0)?,
                account_id: r.try_get(1)?,
                op: Op::parse(&r.try_get::<String, _>(2)?),
                tenant_id: r.try_get(3)?,
                role: r.try_get(4)?,
                attempts: r.try_get(5)?,
            })
        })
        .collect()
}

/// The earliest time an intent [`due`] would return is due, if any.
pub async fn next_due(pool: &AnyPool) -> Result<Option<i64>, sqlx::Error> {
    let sql = format!("SELECT MIN(next_attempt_at) FROM membership_intents WHERE {HEAD_OF_LINE}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await
}

/// Makes the account's undelivered intents due now (someone waits for them), cutting short a
/// retry delay.
pub async fn retry_now(pool: &AnyPool, account_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE membership_intents SET next_attempt_at = $1 WHERE account_id = $2 AND delivered_at IS NULL")
        .bind(now_micros())
        .bind(account_id.to_owned())
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether the account still waits for a delivery.
pub async fn pending_for(pool: &AnyPool, account_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM membership_intents WHERE account_id = $1 AND delivered_at IS NULL")
            .bind(account_id.to_owned())
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}

/// Closes a delivered intent, keeping tenancy-svc's revision of the delivery.
pub async fn mark_delivered(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    tenancy_revision: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE membership_intents SET delivered_at = $1, last_error = NULL, tenancy_revision = $2 WHERE id = $3",
    )
    .bind(now_micros())
    .bind(i64::try_from(tenancy_revision).unwrap_or(i64::MAX))
    .bind(id.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The highest tenancy-svc revision among the account's delivered intents (0: none known).
pub async fn tenancy_revision_for(pool: &AnyPool, account_id: &str) -> Result<u64, sqlx::Error> {
    let revision: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(tenancy_revision) FROM membership_intents WHERE account_id = $1 AND delivered_at IS NOT NULL",
    )
    .bind(account_id.to_owned())
    .fetch_one(pool)
    .await?;
    Ok(revision.and_then(|r| u64::try_from(r).ok()).unwrap_or(0))
}

/// Closes an intent tenancy-svc refused for good, keeping the reason (an ErrorReason name).
pub async fn mark_refused(tx: &mut Transaction<'static, Any>, id: &str, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE membership_intents SET delivered_at = $1, last_error = $2 WHERE id = $3")
        .bind(now_micros())
        .bind(format!("refused: {reason}"))
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The reason tenancy-svc refused the account's membership, if it did.
pub async fn refusal_for(pool: &AnyPool, account_id: &str) -> Result<Option<String>, sqlx::Error> {
    let error: Option<Option<String>> = sqlx::query_scalar(
        "SELECT last_error FROM membership_intents WHERE account_id = $1 AND last_error LIKE 'refused: %' LIMIT 1",
    )
    .bind(account_id.to_owned())
    .fetch_optional(pool)
    .await?;
    Ok(error.flatten().and_then(|e| e.strip_prefix("refused: ").map(str::to_owned)))
}

pub async fn mark_failed(pool: &AnyPool, id: &str, error: &str, next_attempt_at: i64) -> Result<(), sqlx::Error> {
    let error: String = error.chars().take(500).collect();
    sqlx::query(
        "UPDATE membership_intents SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3",
    )
    .bind(error)
    .bind(next_attempt_at)
    .bind(id.to_owned())
    .execute(pool)
    .await?;
    Ok(())
}
