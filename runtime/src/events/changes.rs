//! Revisions, the change log and the audit outbox.

use prost::Message;
use sqlx::{Any, Row, Transaction};
use tether_proto::common::v1::AuditEvent;

use crate::db::{Database, EmbeddedMigration, now_micros, timestamp};

/// The outbox tables, applied by each publishing service in its own schema.
pub const OUTBOX_MIGRATION: EmbeddedMigration = EmbeddedMigration::portable(1000, "outbox", include_str!("outbox.sql"));

pub use tether_proto::stream::ChangeMessage;

/// Takes the next revision. Call it first in a write transaction: the counter's row lock is
/// held until commit, which is what makes revisions visible in order.
pub async fn next_revision(tx: &mut Transaction<'static, Any>) -> Result<u64, sqlx::Error> {
    let revision: i64 =
        sqlx::query_scalar("UPDATE revision_counter SET revision = revision + 1 WHERE id = 1 RETURNING revision")
            .fetch_one(&mut **tx)
            .await?;
    Ok(u64::try_from(revision).unwrap_or_default())
}

/// The latest committed revision.
pub async fn current_revision<'e, E>(executor: E) -> Result<u64, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let revision: i64 =
        sqlx::query_scalar("SELECT revision FROM revision_counter WHERE id = 1").fetch_one(executor).await?;
    Ok(u64::try_from(revision).unwrap_or_default())
}

/// Records the changes of one revision, in order; the last is marked `end_of_revision`.
pub async fn record_changes<C: ChangeMessage>(
    tx: &mut Transaction<'static, Any>,
    revision: u64,
    changes: Vec<C>,
) -> Result<(), sqlx::Error> {
    let now = now_micros();
    let committed_at = timestamp(now);
    let count = changes.len();
    let payloads: Vec<String> = changes
        .into_iter()
        .enumerate()
        .map(|(seq, mut change)| {
            change.stamp(revision, committed_at, seq + 1 == count);
            to_hex(&change.encode_to_vec())
        })
        .collect();
    // Multi-row inserts: one revision may carry thousands of changes (a tenant with the shadow
    // memberships of every MSP staff member), and one round trip per row would dominate.
    // Not larger: SQLite's driver looks parameters up by name, which grew with statement size
    // in profiles of 500-row statements.
    const ROWS_PER_INSERT: usize = 100;
    for (chunk_index, chunk) in payloads.chunks(ROWS_PER_INSERT).enumerate() {
        let sql = multi_row_insert("INSERT INTO change_log (revision, seq, payload, committed_at)", chunk.len(), 4);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, payload) in chunk.iter().enumerate() {
            let seq = chunk_index * ROWS_PER_INSERT + i;
            query = query.bind(revision as i64).bind(seq as i64).bind(payload.clone()).bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Queues audit events for delivery to audit-svc; `event_id` makes redelivery harmless.
pub async fn record_audit(tx: &mut Transaction<'static, Any>, events: &[AuditEvent]) -> Result<(), sqlx::Error> {
    let now = now_micros();
    // Small multi-row statements: authz records denials by the tens of thousands per second, and
    // SQLite's parameter lookups showed in profiles of much larger statements.
    for chunk in events.chunks(25) {
        let sql = multi_row_insert(
            "INSERT INTO audit_outbox (event_id, payload, created_at, next_attempt_at)",
            chunk.len(),
            4,
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            query = query.bind(event.event_id.clone()).bind(to_hex(&event.encode_to_vec())).bind(now).bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Lower-case hex of a payload, as the outbox stores it. A table lookup into one buffer: the
/// `hex` crate's char-by-char collect showed in profiles of authz's decision audit.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `<insert> VALUES ($1, …, $cols), ($cols+1, …), …` for `rows` rows.
fn multi_row_insert(insert: &str, rows: usize, cols: usize) -> String {
    let mut sql = format!("{insert} VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..cols {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * cols + col + 1));
        }
        sql.push(')');
    }
    sql
}

/// A change read back from the log.
#[derive(Debug, Clone)]
pub struct StoredChange<C> {
    pub revision: u64,
    pub change: C,
}

/// Reads the change log, and wakes local watchers when a write commits.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    database: Database,
}

impl ChangeFeed {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Wakes local watchers after a commit made outside [`super::Write`].
    pub fn notify(&self) {
        self.database.notify_committed();
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.database.committed()
    }

    pub async fn current_revision(&self) -> Result<u64, sqlx::Error> {
        current_revision(self.database.pool()).await
    }

    /// The oldest revision still in the log (0 when the log is empty).
    pub async fn oldest_retained(&self) -> Result<u64, sqlx::Error> {
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(revision) FROM change_log").fetch_one(self.database.pool()).await?;
        Ok(oldest.and_then(|r| u64::try_from(r).ok()).unwrap_or(0))
    }

    /// Up to `limit` changes after `after`, whole revisions only (a revision is never split
    /// across two reads, so a receiver can apply each revision at once).
    pub async fn read_after<C: ChangeMessage>(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredChange<C>>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT revision, payload FROM change_log WHERE revision > $1 AND revision <= \
             (SELECT COALESCE(MAX(revision), 0) FROM (SELECT DISTINCT revision FROM change_log \
              WHERE revision > $1 ORDER BY revision LIMIT $2) AS next_revisions) \
             ORDER BY revision, seq",
        )
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(self.database.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let revision: i64 = row.try_get(0)?;
                let payload: String = row.try_get(1)?;
                let bytes = hex::decode(payload).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                let change = C::decode(bytes.as_slice()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok(StoredChange { revision: u64::try_from(revision).unwrap_or_default(), change })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn payload_hex_reads_back_with_the_decoder() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = super::to_hex(&bytes);
        assert_eq!(text.len(), 512);
        assert!(text.starts_with("000102") && text.ends_with("fdfeff"));
        assert_eq!(hex::decode(&text).unwrap(), bytes);
    }
}
