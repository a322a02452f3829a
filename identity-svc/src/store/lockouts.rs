//! Brute-force counters per account and per client IP.

use sqlx::{AnyPool, Row};

use crate::domain::lockout::LockoutRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Account,
    Ip,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Ip => "ip",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Counter {
    pub kind: Kind,
    pub subject: String,
    pub failed_attempts: u32,
    pub last_failure_at: i64,
    pub locked_until: Option<i64>,
}

impl Counter {
    /// Failures that still count: none once the last one is older than the lockout duration
    /// (a shared address or a forgetful user starts afresh instead of carrying old delays).
    pub fn recent_failures(&self, rules: &LockoutRules, now: i64) -> u32 {
        if self.last_failure_at <= now - window_micros(rules) { 0 } else { self.failed_attempts }
    }
}

fn window_micros(rules: &LockoutRules) -> i64 {
    i64::try_from(rules.lock_duration.as_micros()).unwrap_or(i64::MAX / 4)
}

fn kind_of(raw: &str) -> Kind {
    if raw == "ip" { Kind::Ip } else { Kind::Account }
}

pub async fn get(pool: &AnyPool, kind: Kind, subject: &str) -> Result<Option<Counter>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT failed_attempts, last_failure_at, locked_until FROM login_failures WHERE kind = $1 AND subject = $2",
    )
    .bind(kind.as_str())
    .bind(subject.to_owned())
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(Counter {
            kind,
            subject: subject.to_owned(),
            failed_attempts: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u32::MAX),
            last_failure_at: r.try_get(1)?,
            locked_until: r.try_get(2)?,
        })
    })
    .transpose()
}

/// Counts one failure; locks the subject when the rules say so. An expired lock, or a last
/// failure older than the lockout duration, starts a fresh count. One statement (read and
/// increment together), so concurrent failures are each counted.
pub async fn record_failure(
    pool: &AnyPool,
    kind: Kind,
    subject: &str,
    rules: &LockoutRules,
    now: i64,
) -> Result<(), sqlx::Error> {
    let until = now + window_micros(rules);
    let first_locks = rules.locks(1).then_some(until);
    const NEXT: &str = "(CASE WHEN (login_failures.locked_until IS NOT NULL AND login_failures.locked_until <= $3) \
                        OR login_failures.last_failure_at <= $7 THEN 1 ELSE login_failures.failed_attempts + 1 END)";
    let sql = format!(
        "INSERT INTO login_failures (kind, subject, failed_attempts, last_failure_at, locked_until) \
         VALUES ($1, $2, 1, $3, $6) ON CONFLICT (kind, subject) DO UPDATE SET \
         failed_attempts = {NEXT}, last_failure_at = $3, \
         locked_until = CASE WHEN {NEXT} >= $4 THEN $5 ELSE NULL END"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kind.as_str())
        .bind(subject.to_owned())
        .bind(now)
        .bind(i64::from(rules.lock_after))
        .bind(until)
        .bind(first_locks)
        .bind(now - window_micros(rules))
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets a subject's failures; false if there were none.
pub async fn clear<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    kind: Kind,
    subject: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM login_failures WHERE kind = $1 AND subject = $2")
        .bind(kind.as_str())
        .bind(subject.to_owned())
        .execute(executor)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Entries most recent failure first.
pub async fn list(
    pool: &AnyPool,
    kind: Option<Kind>,
    locked_only_at: Option<i64>,
    limit: usize,
    offset: usize,
) -> Result<Vec<Counter>, sqlx::Error> {
    let mut sql =
        "SELECT kind, subject, failed_attempts, last_failure_at, locked_until FROM login_failures WHERE 1 = 1"
            .to_owned();
    if let Some(k) = kind {
        sql.push_str(&format!(" AND kind = '{}'", k.as_str()));
    }
    if let Some(now) = locked_only_at {
        sql.push_str(&format!(" AND locked_until > {now}"));
    }
    sql.push_str(&format!(" ORDER BY last_failure_at DESC, subject LIMIT {limit} OFFSET {offset}"));
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Counter {
                kind: kind_of(&r.try_get::<String, _>(0)?),
                subject: r.try_get(1)?,
                failed_attempts: u32::try_from(r.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                last_failure_at: r.try_get(3)?,
                locked_until: r.try_get(4)?,
            })
        })
        .collect()
}
