//! Appending to the chain and reading it back in order.

use std::collections::HashSet;

use sqlx::Row;
use tether_proto::common::v1::AuditEvent;
use tether_runtime::db::Database;

use super::records::{COLUMNS, INSERT_COLUMNS, StoredRecord};
use crate::domain::chain;

/// What one append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub stored: usize,
    pub duplicates: usize,
    /// The head after the append.
    pub last_sequence: u64,
}

/// The chain's last record: its sequence and hash (0 and the genesis hash when empty).
pub async fn head<'e, E>(executor: E) -> Result<(u64, String), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1").fetch_one(executor).await?;
    Ok((u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or_default(), row.try_get(1)?))
}

/// Stores the events not stored yet, in order, each linked to the one before (see
/// `store`'s rule 1). Events repeated within `events` count as duplicates too.
pub async fn append(database: &Database, events: Vec<AuditEvent>, received_at: i64) -> Result<Appended, sqlx::Error> {
    let mut tx = database.begin_write().await?;
    let row = sqlx::query("UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *tx)
        .await?;
    let mut sequence = u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or_default();
    let head_hash: String = row.try_get(1)?;
    let mut previous = chain::parse_hash(&head_hash).ok_or_else(|| sqlx::Error::Protocol("chain head".into()))?;

    let mut known = HashSet::new();
    for chunk in events.chunks(500) {
        let sql = format!(
            "SELECT event_id FROM audit_event_ids WHERE event_id IN ({})",
            (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            query = query.bind(event.event_id.clone());
        }
        for row in query.fetch_all(&mut *tx).await? {
            known.insert(row.try_get::<String, _>(0)?);
        }
    }

    let mut duplicates = 0;
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        if !known.insert(event.event_id.clone()) {
            duplicates += 1;
            continue;
        }
        sequence += 1;
        let hash = chain::link(&previous, sequence, received_at, &event);
        records.push(StoredRecord {
            sequence,
            received_at,
            event,
            prev_hash: hex::encode(previous),
            hash: hex::encode(hash),
        });
        previous = hash;
    }
    // Multi-row inserts of a few dozen rows: one round trip per row dominated ingestion.
    const ROWS_PER_INSERT: usize = 25;
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let values = (0..chunk.len())
            .map(|r| {
                let cols = (1..=INSERT_COLUMNS).map(|c| format!("${}", r * INSERT_COLUMNS + c));
                format!("({})", cols.collect::<Vec<_>>().join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("INSERT INTO audit_events ({COLUMNS}, search_text) VALUES {values}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            query = record.bind(query);
        }
        query.execute(&mut *tx).await?;
        let values = (0..chunk.len()).map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2)).collect::<Vec<_>>();
        let sql = format!("INSERT INTO audit_event_ids (event_id, seq) VALUES {}", values.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            query = query.bind(record.event.event_id.clone()).bind(record.sequence as i64);
        }
        query.execute(&mut *tx).await?;
    }
    if !records.is_empty() {
        sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(sequence as i64)
            .bind(hex::encode(previous))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if !records.is_empty() {
        database.notify_committed();
    }
    Ok(Appended { stored: records.len(), duplicates, last_sequence: sequence })
}

/// Up to `limit` records from `from` (inclusive) to `to` (inclusive), in sequence order.
pub async fn read_range(
    database: &Database,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from as i64)
        .bind(to as i64)
        .bind(limit as i64)
        .fetch_all(database.pool())
        .await?;
    rows.iter().map(StoredRecord::from_row).collect()
}

/// The stored hash of record `sequence`, if it exists.
pub async fn hash_at(database: &Database, sequence: u64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
        .bind(sequence as i64)
        .fetch_optional(database.pool())
        .await
}

/// The first and last sequence received in `[start, end)` (unix µs), if any.
pub async fn sequences_received(
    database: &Database,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Option<(u64, u64)>, sqlx::Error> {
    let row = sqlx::query("SELECT MIN(seq), MAX(seq) FROM audit_events WHERE received_at >= $1 AND received_at < $2")
        .bind(start.unwrap_or(i64::MIN))
        .bind(end.unwrap_or(i64::MAX))
        .fetch_one(database.pool())
        .await?;
    let first: Option<i64> = row.try_get(0)?;
    let last: Option<i64> = row.try_get(1)?;
    Ok(first.zip(last).map(|(a, b)| (u64::try_from(a).unwrap_or_default(), u64::try_from(b).unwrap_or_default())))
}
