//! PostgreSQL's monthly partitions of `audit_events` (migration 5). SQLite has one table and
//! nothing here applies to it.
//!
//! Rules:
//!
//! 1. A record goes to the partition of the UTC month it was received in. Partitions are made
//!    for the current month and the next two at start-up and at every purge interval, so a
//!    record always has its month ready; one received outside every month (before the first
//!    partition existed) lands in `audit_events_default`.
//! 2. Making a month whose records already sit in the default partition moves them into it in
//!    the same transaction.
//! 3. Replicas take one advisory lock for this, so two never make the same month at once.
//! 4. Retention drops a month when every record in it is expired, at or below the purge
//!    boundary, and of no tenant under a legal hold ([`droppable`]); otherwise its rows are
//!    deleted one by one like SQLite's.

use sqlx::Row;
use tether_runtime::db::{Backend, Database};

/// Months made ahead of the current one.
const MONTHS_AHEAD: i64 = 2;
/// One key for the advisory lock of rule 3 (any constant that no other lock uses).
const LOCK_KEY: i64 = 0x7465_7468_6572_0001;

/// One monthly partition: its table and the receive times it holds, `[lo, hi)` in unix µs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Month {
    pub table: String,
    pub lo: i64,
    pub hi: i64,
}

/// The UTC months from the one holding `from` to the one holding `to`, computed by PostgreSQL.
async fn months_between(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    from: i64,
    to: i64,
) -> Result<Vec<Month>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT to_char(m, 'YYYY_MM'), \
                (extract(epoch FROM m AT TIME ZONE 'UTC') * 1000000)::bigint, \
                (extract(epoch FROM (m + interval '1 month') AT TIME ZONE 'UTC') * 1000000)::bigint \
         FROM generate_series( \
             date_trunc('month', to_timestamp($1::float8 / 1000000) AT TIME ZONE 'UTC'), \
             date_trunc('month', to_timestamp($2::float8 / 1000000) AT TIME ZONE 'UTC'), \
             interval '1 month') AS m",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let label: String = row.try_get(0)?;
            // Digits and one underscore, from to_char: safe to name a table with.
            if !label.chars().all(|c| c.is_ascii_digit() || c == '_') {
                return Err(sqlx::Error::Protocol(format!("unexpected month label {label:?}")));
            }
            Ok(Month { table: format!("audit_events_{label}"), lo: row.try_get(1)?, hi: row.try_get(2)? })
        })
        .collect()
}

/// Makes the months of rule 1 that do not exist yet; returns how many it made.
pub async fn ensure(database: &Database, now: i64) -> Result<usize, sqlx::Error> {
    if database.backend() != Backend::Postgres {
        return Ok(0);
    }
    let mut tx = database.begin_write().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK_KEY).execute(&mut *tx).await?;
    // The months of records waiting in the default partition (rule 2; normally none).
    let waiting: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT (extract(epoch FROM date_trunc('month', \
             to_timestamp(received_at::float8 / 1000000) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') * 1000000)::bigint \
         FROM audit_events_default",
    )
    .fetch_all(&mut *tx)
    .await?;
    let ahead = now.saturating_add(MONTHS_AHEAD * 31 * 24 * 3600 * 1_000_000);
    let mut months = months_between(&mut tx, now, ahead).await?;
    for start in waiting {
        months.extend(months_between(&mut tx, start, start).await?);
    }
    let mut made = 0;
    for month in months {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(month.table.clone())
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        let Month { table, lo, hi } = &month;
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM audit_events_default WHERE received_at >= $1 AND received_at < $2)",
        )
        .bind(lo)
        .bind(hi)
        .fetch_one(&mut *tx)
        .await?;
        if waiting {
            // Rule 2: a partition cannot be made over rows the default partition holds.
            for sql in [
                format!("CREATE TABLE {table} (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
                format!(
                    "INSERT INTO {table} SELECT * FROM audit_events_default \
                     WHERE received_at >= {lo} AND received_at < {hi}"
                ),
                format!("DELETE FROM audit_events_default WHERE received_at >= {lo} AND received_at < {hi}"),
                format!("ALTER TABLE audit_events ATTACH PARTITION {table} FOR VALUES FROM ({lo}) TO ({hi})"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        } else {
            let sql = format!("CREATE TABLE {table} PARTITION OF audit_events FOR VALUES FROM ({lo}) TO ({hi})");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        made += 1;
    }
    tx.commit().await?;
    if made > 0 {
        tracing::info!(made, "audit partitions made");
    }
    Ok(made)
}

/// The monthly partitions that exist, oldest first.
pub async fn months(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<Vec<Month>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass AND c.relname <> 'audit_events_default' ORDER BY c.relname",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut months = Vec::with_capacity(tables.len());
    for table in tables {
        // The name says the month (rule 1); its bounds come from PostgreSQL's own calendar.
        let Some(label) = table.strip_prefix("audit_events_") else { continue };
        let row = sqlx::query(
            "SELECT (extract(epoch FROM m AT TIME ZONE 'UTC') * 1000000)::bigint, \
                    (extract(epoch FROM (m + interval '1 month') AT TIME ZONE 'UTC') * 1000000)::bigint \
             FROM (SELECT to_timestamp($1, 'YYYY_MM')::timestamp AS m) AS month",
        )
        .bind(label.to_owned())
        .fetch_one(&mut **tx)
        .await?;
        months.push(Month { table, lo: row.try_get(0)?, hi: row.try_get(1)? });
    }
    Ok(months)
}

/// Whether a whole month may go (rule 4): received before `cutoff`, nothing above `boundary`,
/// nothing held.
pub async fn droppable(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    month: &Month,
    cutoff: i64,
    boundary: i64,
) -> Result<bool, sqlx::Error> {
    if month.hi > cutoff {
        return Ok(false);
    }
    let table = &month.table;
    let sql = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {table} WHERE seq > $1 \
         OR tenant_id IN (SELECT tenant_id FROM audit_legal_holds))"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(boundary).fetch_one(&mut **tx).await
}

/// Drops a month (after [`droppable`]); returns how many records went with it.
pub async fn drop_month(tx: &mut sqlx::Transaction<'static, sqlx::Any>, month: &Month) -> Result<u64, sqlx::Error> {
    let table = &month.table;
    let count: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&mut **tx).await?;
    for sql in [format!("ALTER TABLE audit_events DETACH PARTITION {table}"), format!("DROP TABLE {table}")] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut **tx).await?;
    }
    Ok(u64::try_from(count).unwrap_or_default())
}
