//! Fixed-window request counters per (bucket, subject).

use sqlx::AnyPool;

/// Counts one request of `subject` in the window starting at `window_start` and returns the
/// count so far in that window (1 for the first). One statement, so concurrent requests are
/// each counted.
pub async fn hit(pool: &AnyPool, bucket: &str, subject: &str, window_start: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rate_limits (bucket, subject, window_start, hits) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (bucket, subject) DO UPDATE SET \
         hits = CASE WHEN rate_limits.window_start = $3 THEN rate_limits.hits + 1 ELSE 1 END, \
         window_start = $3 \
         RETURNING hits",
    )
    .bind(bucket.to_owned())
    .bind(subject.to_owned())
    .bind(window_start)
    .fetch_one(pool)
    .await
}
