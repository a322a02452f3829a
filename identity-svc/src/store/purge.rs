//! Removal of rows nobody can use any more: ended sessions, spent or expired tokens, old
//! brute-force counters and rate-limit windows, delivered membership intents. Without it these
//! tables only grow. The audit trail keeps the history; these rows are working state.
//!
//! Rules (every `TETHER_IDENTITY_PURGE_INTERVAL_MS`, default 10 minutes):
//!
//! 1. Sessions that ended 30 days ago.
//! 2. Expired login steps and unconfirmed enrolments.
//! 3. Brute-force counters and rate-limit windows idle for a day.
//! 4. Reset links a week past expiry; intents delivered a week ago.

use std::time::Duration;

use sqlx::AnyPool;

const DAY_MICROS: i64 = 24 * 3600 * 1_000_000;
/// Ended sessions stay listable to administrators for this long after they end.
const ENDED_SESSION_RETENTION: i64 = 30 * DAY_MICROS;
/// Expired login steps, unconfirmed enrolments, stale counters and rate-limit windows: a day.
const SHORT_RETENTION: i64 = DAY_MICROS;
/// Reset links (so an old link still answers "expired" or "used" for a week) and delivered
/// intents (for investigation).
const WEEK_RETENTION: i64 = 7 * DAY_MICROS;

/// Deletes what has been unusable for longer than its retention as of `now`; returns the number
/// of rows removed.
pub async fn expired(pool: &AnyPool, now: i64) -> Result<u64, sqlx::Error> {
    let ended_sessions = now - ENDED_SESSION_RETENTION;
    let day = now - SHORT_RETENTION;
    let week = now - WEEK_RETENTION;
    let statements: [(&str, i64); 7] = [
        ("DELETE FROM sessions WHERE revoked_at < $1 OR expires_at < $1", ended_sessions),
        ("DELETE FROM login_steps WHERE expires_at < $1", day),
        ("DELETE FROM totp WHERE confirmed = 0 AND expires_at < $1", day),
        ("DELETE FROM rate_limits WHERE window_start < $1", day),
        ("DELETE FROM login_failures WHERE last_failure_at < $1 AND (locked_until IS NULL OR locked_until < $1)", day),
        ("DELETE FROM password_resets WHERE expires_at < $1", week),
        ("DELETE FROM membership_intents WHERE delivered_at < $1", week),
    ];
    let mut removed = 0;
    for (sql, before) in statements {
        removed += sqlx::query(sql).bind(before).execute(pool).await?.rows_affected();
    }
    Ok(removed)
}

/// Runs [`expired`] every `interval` until `stopping` is cancelled (first pass after one
/// interval, so start-up stays quick).
pub fn spawn(pool: AnyPool, interval: Duration, stopping: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match expired(&pool, tether_runtime::db::now_micros()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired identity rows"),
                Err(e) => tracing::warn!(error = %e, "purging expired identity rows failed"),
            }
        }
    });
}
