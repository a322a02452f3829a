//! Invitations and their link tokens.

use sqlx::{Any, AnyPool, Row, Transaction, any::AnyRow};
use tether_runtime::db::now_micros;

#[derive(Debug, Clone)]
pub struct InvitationRow {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub display_name: String,
    pub tenant_id: String,
    pub role: String,
    pub is_msp_staff: bool,
    pub status: String,
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_sent_at: i64,
    pub send_count: i64,
    pub accepted_at: Option<i64>,
}

const COLUMNS: &str = "id, account_id, email, display_name, tenant_id, role, is_msp_staff, status, invited_by, \
    created_at, expires_at, last_sent_at, send_count, accepted_at";

fn from_row(r: &AnyRow) -> Result<InvitationRow, sqlx::Error> {
    Ok(InvitationRow {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        email: r.try_get(2)?,
        display_name: r.try_get(3)?,
        tenant_id: r.try_get(4)?,
        role: r.try_get(5)?,
        is_msp_staff: r.try_get::<i64, _>(6)? != 0,
        status: r.try_get(7)?,
        invited_by: r.try_get(8)?,
        created_at: r.try_get(9)?,
        expires_at: r.try_get(10)?,
        last_sent_at: r.try_get(11)?,
        send_count: r.try_get(12)?,
        accepted_at: r.try_get(13)?,
    })
}

pub async fn insert(
    tx: &mut Transaction<'static, Any>,
    row: &InvitationRow,
    token_hash: &str,
    request_id: Option<String>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (id, account_id, email, display_name, tenant_id, role, is_msp_staff, status, \
         invited_by, created_at, expires_at, last_sent_at, send_count, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $9, 1, $11)",
    )
    .bind(row.id.clone())
    .bind(row.account_id.clone())
    .bind(row.email.clone())
    .bind(row.display_name.clone())
    .bind(row.tenant_id.clone())
    .bind(row.role.clone())
    .bind(i64::from(row.is_msp_staff))
    .bind(row.invited_by.clone())
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(request_id)
    .execute(&mut **tx)
    .await?;
    add_token(tx, &row.id, token_hash).await
}

async fn add_token(tx: &mut Transaction<'static, Any>, id: &str, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO invitation_tokens (token_hash, invitation_id) VALUES ($1, $2)")
        .bind(token_hash.to_owned())
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<InvitationRow>, sqlx::Error> {
    one_where(executor, "id", id).await
}

pub async fn get_by_request_id(pool: &AnyPool, request_id: &str) -> Result<Option<InvitationRow>, sqlx::Error> {
    one_where(pool, "request_id", request_id).await
}

/// The invitation whose `column` (a unique column) holds `value`.
async fn one_where<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    column: &'static str,
    value: &str,
) -> Result<Option<InvitationRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM invitations WHERE {column} = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value.to_owned())
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The invitation a link belongs to, and whether that link was voided by a resend.
pub async fn by_token<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    token_hash: &str,
) -> Result<Option<(String, bool)>, sqlx::Error> {
    let row = sqlx::query("SELECT invitation_id, voided FROM invitation_tokens WHERE token_hash = $1")
        .bind(token_hash.to_owned())
        .fetch_optional(executor)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? != 0))).transpose()
}

/// Voids every link of the invitation, then (if given) adds a fresh one with a new expiry.
pub async fn reissue(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    token_hash: Option<&str>,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE invitation_tokens SET voided = 1 WHERE invitation_id = $1")
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    if let Some(hash) = token_hash {
        add_token(tx, id, hash).await?;
        sqlx::query(
            "UPDATE invitations SET expires_at = $1, last_sent_at = $2, send_count = send_count + 1 WHERE id = $3",
        )
        .bind(expires_at)
        .bind(now_micros())
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn set_status(tx: &mut Transaction<'static, Any>, id: &str, status: &str) -> Result<(), sqlx::Error> {
    let accepted_at = (status == "accepted").then(now_micros);
    sqlx::query("UPDATE invitations SET status = $1, accepted_at = COALESCE($2, accepted_at) WHERE id = $3")
        .bind(status.to_owned())
        .bind(accepted_at)
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Revokes every pending invitation of an account (it is being deleted) and voids their links;
/// returns the invitations revoked.
pub async fn revoke_pending_of(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
) -> Result<Vec<InvitationRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM invitations WHERE account_id = $1 AND status = 'pending' ORDER BY id");
    let rows: Vec<InvitationRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id.to_owned())
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(from_row)
        .collect::<Result<_, _>>()?;
    let mut revoked = Vec::with_capacity(rows.len());
    for row in rows {
        set_status(tx, &row.id, "revoked").await?;
        reissue(tx, &row.id, None, 0).await?;
        if let Some(after) = get(&mut **tx, &row.id).await? {
            revoked.push(after);
        }
    }
    Ok(revoked)
}

/// Filters: `status` is pending/accepted/revoked/expired.
pub async fn list(
    pool: &AnyPool,
    status: &str,
    tenant_id: Option<&str>,
    now: i64,
    limit: usize,
    offset: usize,
) -> Result<Vec<InvitationRow>, sqlx::Error> {
    let condition = match status {
        "expired" => format!("status = 'pending' AND expires_at <= {now}"),
        "pending" => format!("status = 'pending' AND expires_at > {now}"),
        "accepted" => "status = 'accepted'".to_owned(),
        _ => "status = 'revoked'".to_owned(),
    };
    let tenant = if tenant_id.is_some() { " AND tenant_id = $1" } else { "" };
    let sql = format!(
        "SELECT {COLUMNS} FROM invitations WHERE {condition}{tenant} ORDER BY created_at DESC, id LIMIT {limit} OFFSET {offset}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(t) = tenant_id {
        query = query.bind(t.to_owned());
    }
    query.fetch_all(pool).await?.iter().map(from_row).collect()
}

/// Every pending, unexpired invitation, for a Watch snapshot.
pub async fn all_pending(tx: &mut Transaction<'static, Any>) -> Result<Vec<InvitationRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM invitations WHERE status = 'pending' ORDER BY id");
    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut **tx).await?.iter().map(from_row).collect()
}
