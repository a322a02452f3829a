//! Stored checkpoints.

use sqlx::Row;
use tether_runtime::db::Database;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub sequence: u64,
    pub chain_hash: String,
    pub signed_at: i64,
    pub note: String,
}

/// The latest checkpoint, if any.
pub async fn latest(database: &Database) -> Result<Option<StoredCheckpoint>, sqlx::Error> {
    Ok(page(database, None, 1).await?.into_iter().next())
}

/// Keeps a checkpoint; a second replica publishing the same sequence keeps the first.
pub async fn insert(database: &Database, checkpoint: &StoredCheckpoint) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO audit_checkpoints (seq, chain_hash, signed_at, note) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(checkpoint.sequence as i64)
    .bind(checkpoint.chain_hash.clone())
    .bind(checkpoint.signed_at)
    .bind(checkpoint.note.clone())
    .execute(database.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Newest first, below `before` (a sequence) when given.
pub async fn page(
    database: &Database,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, chain_hash, signed_at, note FROM audit_checkpoints WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(before.map_or(i64::MAX, |b| b as i64))
    .bind(limit as i64)
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredCheckpoint {
                sequence: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or_default(),
                chain_hash: r.try_get(1)?,
                signed_at: r.try_get(2)?,
                note: r.try_get(3)?,
            })
        })
        .collect()
}
