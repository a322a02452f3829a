//! Retention: legal holds, and purging expired records.
//!
//! Rules:
//!
//! 1. A record has expired when it was received more than the retention period ago.
//! 2. A purge removes records up to a boundary: the newest checkpoint at or below the last
//!    sequence before the first unexpired record (or, without checkpoints, that sequence itself),
//!    so everything after the boundary is kept and verifies from the boundary's hash.
//! 3. Records of tenants under a legal hold are never removed, whatever their age; once the
//!    hold is lifted, a later purge removes those that expired.
//! 4. The boundary and its hash are kept (`audit_retention`); verification of the kept chain
//!    starts after it. Checkpoints are never purged.

use sqlx::Row;
use tether_runtime::db::{Backend, Database};

use super::partitions;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub tenant_id: String,
    pub reason: String,
    pub set_by: String,
    pub set_at: i64,
}

pub async fn set_hold(database: &Database, hold: &Hold) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_legal_holds (tenant_id, reason, set_by, set_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET reason = excluded.reason, set_by = excluded.set_by, \
         set_at = excluded.set_at",
    )
    .bind(hold.tenant_id.clone())
    .bind(hold.reason.clone())
    .bind(hold.set_by.clone())
    .bind(hold.set_at)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// Whether there was a hold to remove.
pub async fn remove_hold(database: &Database, tenant_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM audit_legal_holds WHERE tenant_id = $1")
        .bind(tenant_id.to_owned())
        .execute(database.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn holds(database: &Database) -> Result<Vec<Hold>, sqlx::Error> {
    let rows = sqlx::query("SELECT tenant_id, reason, set_by, set_at FROM audit_legal_holds ORDER BY tenant_id")
        .fetch_all(database.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Hold { tenant_id: r.try_get(0)?, reason: r.try_get(1)?, set_by: r.try_get(2)?, set_at: r.try_get(3)? })
        })
        .collect()
}

/// Where the kept chain starts: the last purged sequence and its chain hash (0 and zeros when
/// nothing was purged).
pub async fn purged_through(database: &Database) -> Result<(u64, String), sqlx::Error> {
    let row = sqlx::query("SELECT purged_through, anchor_hash FROM audit_retention WHERE id = 1")
        .fetch_one(database.pool())
        .await?;
    Ok((u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or_default(), row.try_get(1)?))
}

/// What one purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub removed: u64,
    pub held: u64,
    pub through: u64,
}

/// Removes the records received before `cutoff` (unix µs) up to the boundary of rule 2.
pub async fn purge(database: &Database, cutoff: i64) -> Result<Purged, sqlx::Error> {
    let mut tx = database.begin_write().await?;
    let row = sqlx::query("SELECT purged_through FROM audit_retention WHERE id = 1").fetch_one(&mut *tx).await?;
    let done: i64 = row.try_get(0)?;
    // The last sequence before the first record still kept by age.
    let first_kept: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_events WHERE received_at >= $1")
        .bind(cutoff)
        .fetch_one(&mut *tx)
        .await?;
    let last_expired: i64 = match first_kept {
        Some(seq) => seq - 1,
        None => sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM audit_events")
            .fetch_one(&mut *tx)
            .await?
            .unwrap_or(0),
    };
    let checkpoint =
        sqlx::query("SELECT seq, chain_hash FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 1")
            .bind(last_expired)
            .fetch_optional(&mut *tx)
            .await?;
    let (boundary, anchor): (i64, String) = match checkpoint {
        Some(row) => (row.try_get(0)?, row.try_get(1)?),
        None if last_expired > done && !has_checkpoints(&mut tx).await? => {
            let hash: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(last_expired)
                .fetch_optional(&mut *tx)
                .await?;
            match hash {
                Some(hash) => (last_expired, hash),
                None => return Ok(Purged { through: u64::try_from(done).unwrap_or_default(), ..Purged::default() }),
            }
        }
        None => return Ok(Purged { through: u64::try_from(done).unwrap_or_default(), ..Purged::default() }),
    };
    if boundary <= done {
        return Ok(Purged { through: u64::try_from(done).unwrap_or_default(), ..Purged::default() });
    }
    // Whole months first where the database has them (store::partitions, rule 4), then the
    // rest row by row. Records below the last boundary are still there only while held; once
    // a hold is lifted they go with the next purge.
    let mut removed = 0;
    if database.backend() == Backend::Postgres {
        for month in partitions::months(&mut tx).await? {
            if partitions::droppable(&mut tx, &month, cutoff, boundary).await? {
                removed += partitions::drop_month(&mut tx, &month).await?;
            }
        }
    }
    removed += sqlx::query(
        "DELETE FROM audit_events WHERE seq <= $1 AND tenant_id NOT IN (SELECT tenant_id FROM audit_legal_holds)",
    )
    .bind(boundary)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // The ids of removed records are forgotten with them (held ones stay known).
    sqlx::query(
        "DELETE FROM audit_event_ids WHERE seq <= $1 \
         AND NOT EXISTS (SELECT 1 FROM audit_events WHERE audit_events.seq = audit_event_ids.seq)",
    )
    .bind(boundary)
    .execute(&mut *tx)
    .await?;
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE seq <= $1")
        .bind(boundary)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("UPDATE audit_retention SET purged_through = $1, anchor_hash = $2 WHERE id = 1")
        .bind(boundary)
        .bind(anchor)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Purged {
        removed,
        held: u64::try_from(held).unwrap_or_default(),
        through: u64::try_from(boundary).unwrap_or_default(),
    })
}

/// Whether any checkpoint was ever published (then purges wait for one to cover the boundary).
async fn has_checkpoints(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<bool, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints").fetch_one(&mut **tx).await?;
    Ok(count > 0)
}
