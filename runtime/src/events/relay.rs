//! The audit relay: delivers the audit events each service committed to its own `audit_outbox`
//! to audit-svc's `Ingest`, at least once, and never drops one.
//!
//! Rules:
//!
//! 1. One relay task per service process ([`spawn_audit_relay`]), started by the service's
//!    `prepare` with its `stopping` token. It wakes when a local write commits
//!    ([`Database::committed`]) and at least every `poll_interval` (writes of other replicas of
//!    the same service); after a batch it looks again at once.
//! 2. A batch is the oldest pending rows (not delivered, not parked, `next_attempt_at` due),
//!    oldest first (by `created_at`, then `event_id`: time-ordered UUIDs), at most `batch_size`
//!    (at most 500) events and at most 4 MiB of encoded request, what `Ingest` accepts. The
//!    relay claims them first (`next_attempt_at` moved [`CLAIM_LEASE`] ahead, only if still due),
//!    so two replicas of one service rarely send the same rows; if they do, audit-svc stores
//!    each `event_id` once.
//! 3. A payload that does not decode as an `AuditEvent`, or one event larger than a whole batch
//!    may be, is parked locally with the reason (it could never be delivered).
//! 4. `Ok` from the sink is audit-svc's acknowledgement. The events it lists in `rejected` (by
//!    index, else by `event_id`) are parked (`parked_at`, `parked_reason`), each logged at warn
//!    with its event id and reason; every other event of the batch is marked delivered
//!    (`delivered_at`), in the same transaction. Nothing is marked delivered without an
//!    acknowledgement.
//! 5. `Err` (or no answer within [`CALL_TIMEOUT`]): the batch's `attempts` grow by one and its
//!    `next_attempt_at` moves ahead by a capped exponential backoff (`backoff_min` doubling per
//!    consecutive failure up to `backoff_max`, less a random part of up to a quarter so replicas
//!    spread out, never below `backoff_min`); one warning per batch, and the relay itself sleeps
//!    that long (commits do not wake it meanwhile), so a failing audit-svc never sees a hot loop.
//!    Events are never dropped; once audit-svc answers, delivery resumes in order.
//! 6. Every `purge_interval` (and once at start) rows delivered more than `retention` ago are
//!    deleted. Parked rows are never deleted: they wait until a person looks at them (see
//!    [`audit_outbox_backlog`]) and clears or re-queues them (`parked_at = NULL`).
//! 7. Cancelling `stopping` ends both tasks. A batch in flight then is either acknowledged and
//!    marked, or left pending (its claim released) and sent again by the next start; it is never
//!    marked without an acknowledgement.
//! 8. Each batch runs in its own tracing span (`audit_relay.batch`); the events carry the trace
//!    ids of the requests that caused them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prost::Message;
use sqlx::{Any, Row};
use tether_proto::{
    audit::v1::{IngestRequest, IngestResponse, audit_service_client::AuditServiceClient},
    common::v1::{AuditEvent, ErrorReason},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    ApiError, ConfigError, ConfigSource,
    access::ServiceToken,
    client::TracedChannel,
    config::{invalid, service_key},
    db::{Database, EmbeddedMigration, now_micros},
    error::reason_name,
};

/// Adds the parking columns and the relay's queue index to `audit_outbox`; every service that
/// includes [`super::OUTBOX_MIGRATION`] includes this one after it.
pub const OUTBOX_PARKING_MIGRATION: EmbeddedMigration =
    EmbeddedMigration::portable(1001, "outbox parking", include_str!("outbox_parking.sql"));

/// Most events in one `Ingest` call (audit-svc's limit).
pub const MAX_BATCH_SIZE: usize = 500;
/// Most bytes of one encoded `IngestRequest` (audit-svc's limit).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long a claimed batch is kept from other replicas.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);
/// How long one `Ingest` call may take before it counts as failed (well inside the lease).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivered rows deleted per statement, so a long purge never holds the write lock for long.
const PURGE_CHUNK: i64 = 5_000;

/// Where the relay delivers. Implemented over gRPC by [`GrpcAuditSink`]; tests use a double.
#[tonic::async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Delivers one batch; Ok only when audit-svc acknowledged it (the response says which were
    /// rejected).
    async fn ingest(&self, events: Vec<AuditEvent>) -> Result<IngestResponse, ApiError>;
}

/// [`AuditSink`] over audit-svc's `Ingest`, calling as `service` with the service token.
pub struct GrpcAuditSink {
    client: AuditServiceClient<TracedChannel>,
    service_token: ServiceToken,
    service: &'static str,
}

impl GrpcAuditSink {
    pub fn new(channel: TracedChannel, service_token: ServiceToken, service: &'static str) -> Arc<Self> {
        Arc::new(Self { client: AuditServiceClient::new(channel), service_token, service })
    }
}

#[tonic::async_trait]
impl AuditSink for GrpcAuditSink {
    async fn ingest(&self, events: Vec<AuditEvent>) -> Result<IngestResponse, ApiError> {
        let mut request = tonic::Request::new(IngestRequest { events });
        self.service_token.attach(self.service, &mut request);
        let reply = self
            .client
            .clone()
            .ingest(request)
            .await
            .map_err(|status| ApiError::from_downstream("audit-svc", &status))?;
        Ok(reply.into_inner())
    }
}

/// How the relay paces itself (see the module rules).
#[derive(Debug, Clone)]
pub struct AuditRelaySettings {
    /// Events per `Ingest` call, 1 to 500 (default 500).
    pub batch_size: usize,
    /// Longest wait between two looks at the outbox (default 1 s): other replicas' commits.
    pub poll_interval: Duration,
    /// First retry delay after a failed call (default 100 ms); doubles per failure.
    pub backoff_min: Duration,
    /// Longest retry delay (default 30 s).
    pub backoff_max: Duration,
    /// How long delivered rows are kept before they are purged (default 7 days).
    pub retention: Duration,
    /// How often delivered rows past `retention` are purged (default 10 minutes).
    pub purge_interval: Duration,
}

impl Default for AuditRelaySettings {
    fn default() -> Self {
        Self {
            batch_size: MAX_BATCH_SIZE,
            poll_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(600),
        }
    }
}

impl AuditRelaySettings {
    /// Reads, for `service`:
    ///
    /// | key | default |
    /// |---|---|
    /// | `TETHER_<SVC>_AUDIT_RELAY_BATCH_SIZE` | 500 (1 to 500) |
    /// | `TETHER_<SVC>_AUDIT_RELAY_POLL_MS` | 1000 |
    /// | `TETHER_<SVC>_AUDIT_RELAY_BACKOFF_MIN_MS` | 100 |
    /// | `TETHER_<SVC>_AUDIT_RELAY_BACKOFF_MAX_MS` | 30000 (at least the minimum) |
    /// | `TETHER_<SVC>_AUDIT_OUTBOX_RETENTION_HOURS` | 168 |
    /// | `TETHER_<SVC>_AUDIT_OUTBOX_PURGE_INTERVAL_MS` | 600000 |
    pub fn load(source: &ConfigSource, service: &str) -> Result<Self, ConfigError> {
        let key = |k: &str| service_key(service, k);
        let d = Self::default();
        let backoff_min = source.millis_or(&key("AUDIT_RELAY_BACKOFF_MIN_MS"), d.backoff_min, 1..=600_000)?;
        let max_key = key("AUDIT_RELAY_BACKOFF_MAX_MS");
        let backoff_max = source.millis_or(&max_key, d.backoff_max, 1..=3_600_000)?;
        if backoff_max < backoff_min {
            let expected = format!("at least {} ({} ms)", key("AUDIT_RELAY_BACKOFF_MIN_MS"), backoff_min.as_millis());
            return Err(invalid(&max_key, &backoff_max.as_millis().to_string(), &expected));
        }
        let retention_hours = source.count_or(&key("AUDIT_OUTBOX_RETENTION_HOURS"), 7 * 24, 0..=87_600)?;
        Ok(Self {
            batch_size: source.count_or(&key("AUDIT_RELAY_BATCH_SIZE"), d.batch_size, 1..=MAX_BATCH_SIZE)?,
            poll_interval: source.millis_or(&key("AUDIT_RELAY_POLL_MS"), d.poll_interval, 10..=3_600_000)?,
            backoff_min,
            backoff_max,
            retention: Duration::from_secs(retention_hours as u64 * 3600),
            purge_interval: source.millis_or(
                &key("AUDIT_OUTBOX_PURGE_INTERVAL_MS"),
                d.purge_interval,
                100..=86_400_000,
            )?,
        })
    }
}

/// What a relay has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Events marked delivered (audit-svc acknowledged them, duplicates included).
    pub delivered: u64,
    /// Of those, events audit-svc already had.
    pub duplicates: u64,
    /// Events parked: rejected by audit-svc, or unreadable here.
    pub rejected: u64,
    /// Failed `Ingest` calls (each retried later).
    pub failed_attempts: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    failed_attempts: AtomicU64,
}

struct Shared {
    counters: Counters,
    /// Woken after every look at the outbox.
    round: Notify,
}

/// The running relay's handle.
#[derive(Clone)]
pub struct AuditRelay {
    database: Database,
    shared: Arc<Shared>,
}

impl AuditRelay {
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        RelayStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
        }
    }

    /// Resolves once no event is pending in the outbox (every one delivered or parked). Waits
    /// as long as that takes: bound it with a timeout.
    pub async fn drained(&self) {
        loop {
            let round = self.shared.round.notified();
            tokio::pin!(round);
            round.as_mut().enable();
            if matches!(audit_outbox_backlog(self.database.pool()).await, Ok(b) if b.pending == 0) {
                return;
            }
            round.await;
        }
    }
}

/// The outbox's rows by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Not delivered yet (due or waiting for a retry).
    pub pending: u64,
    /// Set aside for a person to look at (see the module rules).
    pub parked: u64,
    /// Delivered and not purged yet.
    pub delivered: u64,
}

/// Counts the outbox's rows by state (for health reports and tests).
pub async fn audit_outbox_backlog<'e, E>(executor: E) -> Result<OutboxBacklog, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT COUNT(CASE WHEN delivered_at IS NULL AND parked_at IS NULL THEN 1 END), \
                COUNT(CASE WHEN parked_at IS NOT NULL THEN 1 END), \
                COUNT(CASE WHEN delivered_at IS NOT NULL THEN 1 END) \
         FROM audit_outbox",
    )
    .fetch_one(executor)
    .await?;
    let count = |i: usize| -> Result<u64, sqlx::Error> { Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0)) };
    Ok(OutboxBacklog { pending: count(0)?, parked: count(1)?, delivered: count(2)? })
}

/// Starts the relay and its purge; both run until `stopping` is cancelled.
pub fn spawn_audit_relay(
    database: Database,
    sink: Arc<dyn AuditSink>,
    settings: AuditRelaySettings,
    stopping: CancellationToken,
) -> AuditRelay {
    let shared = Arc::new(Shared { counters: Counters::default(), round: Notify::new() });
    let relay = AuditRelay { database: database.clone(), shared: shared.clone() };
    tokio::spawn(purge_loop(database.clone(), settings.clone(), stopping.clone()));
    tokio::spawn(relay_loop(database, sink, settings, stopping, shared));
    relay
}

/// What one look at the outbox came to.
enum Pass {
    /// Nothing was due.
    Idle,
    /// A batch was handled (delivered or parked): look again at once.
    Handled,
    /// The call or the database failed: wait this long.
    Failed(Duration),
    /// `stopping` was cancelled during the call.
    Stopped,
}

async fn relay_loop(
    database: Database,
    sink: Arc<dyn AuditSink>,
    settings: AuditRelaySettings,
    stopping: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut failures: u32 = 0;
    loop {
        if stopping.is_cancelled() {
            return;
        }
        // Registered before looking, so a commit made during the pass still wakes the wait.
        let committed = database.committed();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let pass = match one_pass(&database, sink.as_ref(), &settings, &shared.counters, &stopping, failures).await {
            Ok(pass) => pass,
            Err(e) => {
                let delay = backoff(&settings, failures);
                tracing::warn!(error = %e, retry_in = ?delay, "audit relay: database error");
                Pass::Failed(delay)
            }
        };
        shared.round.notify_waiters();
        match pass {
            Pass::Handled => failures = 0,
            Pass::Idle => {
                failures = 0;
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = &mut committed => {}
                    () = tokio::time::sleep(settings.poll_interval) => {}
                }
            }
            Pass::Failed(delay) => {
                failures = failures.saturating_add(1);
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Pass::Stopped => return,
        }
    }
}

/// The retry delay after `failures` consecutive failures (see rule 5).
fn backoff(settings: &AuditRelaySettings, failures: u32) -> Duration {
    let base = settings.backoff_min.saturating_mul(1u32 << failures.min(20)).min(settings.backoff_max);
    // Up to a quarter less, at random, so replicas that failed together retry apart.
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff) as f64 / f64::from(u16::MAX);
    base.mul_f64(1.0 - random / 4.0).max(settings.backoff_min)
}

/// `$first, $first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Bytes an event of `len` encoded bytes adds to an `IngestRequest` (tag, length, body).
fn framed_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

struct Claimed {
    event_id: String,
    payload: String,
    created_at: i64,
}

async fn one_pass(
    database: &Database,
    sink: &dyn AuditSink,
    settings: &AuditRelaySettings,
    counters: &Counters,
    stopping: &CancellationToken,
    failures: u32,
) -> Result<Pass, sqlx::Error> {
    let now = now_micros();
    let limit = settings.batch_size.clamp(1, MAX_BATCH_SIZE);
    let candidates = sqlx::query(
        "SELECT event_id, LENGTH(payload) FROM audit_outbox \
         WHERE delivered_at IS NULL AND parked_at IS NULL AND next_attempt_at <= $1 \
         ORDER BY created_at, event_id LIMIT $2",
    )
    .bind(now)
    .bind(limit as i64)
    .fetch_all(database.pool())
    .await?;
    if candidates.is_empty() {
        return Ok(Pass::Idle);
    }
    // Within the byte budget; one event above it on its own is taken alone and parked.
    let mut ids = Vec::new();
    let mut bytes = 0usize;
    for row in &candidates {
        let id: String = row.try_get(0)?;
        let hex_len: i64 = row.try_get(1)?;
        let framed = framed_len(usize::try_from(hex_len).unwrap_or(usize::MAX) / 2);
        if !ids.is_empty() && bytes.saturating_add(framed) > MAX_BATCH_BYTES {
            break;
        }
        bytes = bytes.saturating_add(framed);
        ids.push(id);
        if bytes > MAX_BATCH_BYTES {
            break;
        }
    }
    let claimed = claim(database, &ids, now).await?;
    if claimed.is_empty() {
        // Another replica took them first.
        return Ok(Pass::Handled);
    }

    let mut local_parks = Vec::new();
    let mut batch: Vec<(String, AuditEvent)> = Vec::with_capacity(claimed.len());
    for row in claimed {
        let decoded = hex::decode(&row.payload).map_err(|e| format!("payload is not hex: {e}")).and_then(|bytes| {
            if framed_len(bytes.len()) > MAX_BATCH_BYTES {
                Err(format!("{} bytes encoded, more than an Ingest batch may carry", bytes.len()))
            } else {
                AuditEvent::decode(bytes.as_slice()).map_err(|e| format!("payload is not an AuditEvent: {e}"))
            }
        });
        match decoded {
            Ok(event) => batch.push((row.event_id, event)),
            Err(reason) => local_parks.push((row.event_id, reason)),
        }
    }
    if !local_parks.is_empty() {
        let mut tx = database.begin_write().await?;
        for (event_id, reason) in &local_parks {
            park(&mut tx, event_id, reason, now_micros()).await?;
            tracing::warn!(event_id = %event_id, reason = %reason, "audit relay: event parked, it cannot be sent");
        }
        tx.commit().await?;
        counters.rejected.fetch_add(local_parks.len() as u64, Ordering::Relaxed);
    }
    if batch.is_empty() {
        return Ok(Pass::Handled);
    }

    let span = tracing::info_span!("audit_relay.batch", events = batch.len());
    deliver(database, sink, settings, counters, stopping, failures, batch).instrument(span).await
}

/// Claims the due rows among `ids`; answers those it got, oldest first.
async fn claim(database: &Database, ids: &[String], now: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    let sql = format!(
        "UPDATE audit_outbox SET next_attempt_at = $1 \
         WHERE event_id IN ({}) AND delivered_at IS NULL AND parked_at IS NULL AND next_attempt_at <= $2 \
         RETURNING event_id, payload, created_at",
        placeholders(3, ids.len())
    );
    let lease = now.saturating_add(CLAIM_LEASE.as_micros() as i64);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(lease).bind(now);
    for id in ids {
        query = query.bind(id.clone());
    }
    let rows = query.fetch_all(database.pool()).await?;
    let mut claimed = rows
        .iter()
        .map(|row| Ok(Claimed { event_id: row.try_get(0)?, payload: row.try_get(1)?, created_at: row.try_get(2)? }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by(|a, b| (a.created_at, &a.event_id).cmp(&(b.created_at, &b.event_id)));
    Ok(claimed)
}

async fn park(
    tx: &mut sqlx::Transaction<'static, Any>,
    event_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit_outbox SET parked_at = $1, parked_reason = $2 WHERE event_id = $3 AND delivered_at IS NULL",
    )
    .bind(now)
    .bind(reason.to_owned())
    .bind(event_id.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sends one claimed batch and records the outcome.
async fn deliver(
    database: &Database,
    sink: &dyn AuditSink,
    settings: &AuditRelaySettings,
    counters: &Counters,
    stopping: &CancellationToken,
    failures: u32,
    batch: Vec<(String, AuditEvent)>,
) -> Result<Pass, sqlx::Error> {
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    let events: Vec<AuditEvent> = batch.into_iter().map(|(_, event)| event).collect();
    let call = tokio::time::timeout(CALL_TIMEOUT, sink.ingest(events));
    let outcome = tokio::select! {
        biased;
        outcome = call => outcome,
        () = stopping.cancelled() => {
            // Unanswered: the rows stay pending; give the claim back so the next start (or
            // another replica) sends them without waiting out the lease.
            let _ = set_next_attempt(database, &ids, now_micros(), false).await;
            return Ok(Pass::Stopped);
        }
    };
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return failed(database, settings, counters, failures, &ids, &error.to_string()).await,
        Err(_) => {
            let error = format!("audit-svc did not answer within {CALL_TIMEOUT:?}");
            return failed(database, settings, counters, failures, &ids, &error).await;
        }
    };

    let mut parked: Vec<Option<String>> = vec![None; ids.len()];
    for rejected in &response.rejected {
        // The index is its position in the request; the id only helps when the index is off.
        let at = usize::try_from(rejected.index)
            .ok()
            .filter(|&i| i < ids.len())
            .or_else(|| ids.iter().position(|id| !rejected.event_id.is_empty() && *id == rejected.event_id));
        let Some(at) = at else {
            tracing::warn!(index = rejected.index, event_id = %rejected.event_id, "audit relay: audit-svc rejected an event not in the batch");
            continue;
        };
        let reason = ErrorReason::try_from(rejected.reason).map(reason_name).unwrap_or("UNSPECIFIED");
        parked[at] = Some(if rejected.field.is_empty() {
            reason.to_owned()
        } else {
            format!("{reason} (field {})", rejected.field)
        });
    }
    let now = now_micros();
    let delivered: Vec<String> =
        ids.iter().zip(&parked).filter(|(_, p)| p.is_none()).map(|(id, _)| id.clone()).collect();
    let mut tx = database.begin_write().await?;
    for (event_id, reason) in ids.iter().zip(&parked) {
        if let Some(reason) = reason {
            park(&mut tx, event_id, reason, now).await?;
        }
    }
    if !delivered.is_empty() {
        let sql = format!(
            "UPDATE audit_outbox SET delivered_at = $1 WHERE event_id IN ({})",
            placeholders(2, delivered.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for id in &delivered {
            query = query.bind(id.clone());
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    for (event_id, reason) in ids.iter().zip(&parked) {
        if let Some(reason) = reason {
            tracing::warn!(event_id = %event_id, reason = %reason, "audit relay: audit-svc rejected the event; parked");
        }
    }
    let rejected = parked.iter().filter(|p| p.is_some()).count() as u64;
    counters.delivered.fetch_add(delivered.len() as u64, Ordering::Relaxed);
    counters.duplicates.fetch_add(u64::try_from(response.duplicates).unwrap_or(0), Ordering::Relaxed);
    counters.rejected.fetch_add(rejected, Ordering::Relaxed);
    tracing::debug!(
        delivered = delivered.len(),
        duplicates = response.duplicates,
        rejected,
        "audit relay: batch acknowledged"
    );
    Ok(Pass::Handled)
}

/// A batch audit-svc did not acknowledge: retried after the backoff, nothing dropped.
async fn failed(
    database: &Database,
    settings: &AuditRelaySettings,
    counters: &Counters,
    failures: u32,
    ids: &[String],
    error: &str,
) -> Result<Pass, sqlx::Error> {
    counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
    let delay = backoff(settings, failures);
    tracing::warn!(events = ids.len(), error = %error, retry_in = ?delay, "audit relay: delivery to audit-svc failed");
    set_next_attempt(database, ids, now_micros().saturating_add(delay.as_micros() as i64), true).await?;
    Ok(Pass::Failed(delay))
}

/// Moves the batch's next attempt to `at`, counting a failed attempt if `attempted`.
async fn set_next_attempt(database: &Database, ids: &[String], at: i64, attempted: bool) -> Result<(), sqlx::Error> {
    let attempts = if attempted { "attempts + 1" } else { "attempts" };
    let sql = format!(
        "UPDATE audit_outbox SET next_attempt_at = $1, attempts = {attempts} \
         WHERE event_id IN ({}) AND delivered_at IS NULL",
        placeholders(2, ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
    for id in ids {
        query = query.bind(id.clone());
    }
    query.execute(database.pool()).await?;
    Ok(())
}

/// Deletes delivered rows past retention, at start and every `purge_interval` (rule 6).
async fn purge_loop(database: Database, settings: AuditRelaySettings, stopping: CancellationToken) {
    loop {
        let cutoff = now_micros().saturating_sub(settings.retention.as_micros() as i64);
        match purge_delivered(&database, cutoff, &stopping).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "audit relay: delivered outbox rows purged"),
            Err(e) => tracing::warn!(error = %e, "audit relay: purge failed"),
        }
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(settings.purge_interval) => {}
        }
    }
}

async fn purge_delivered(database: &Database, cutoff: i64, stopping: &CancellationToken) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    while !stopping.is_cancelled() {
        let done = sqlx::query(
            "DELETE FROM audit_outbox WHERE event_id IN (SELECT event_id FROM audit_outbox \
             WHERE delivered_at IS NOT NULL AND delivered_at < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(PURGE_CHUNK)
        .execute(database.pool())
        .await?
        .rows_affected();
        deleted += done;
        if done < PURGE_CHUNK as u64 {
            break;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_goes_below_the_minimum() {
        let settings = AuditRelaySettings {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..100 {
            assert_eq!(backoff(&settings, 0), Duration::from_millis(100));
            let third = backoff(&settings, 2);
            assert!(third >= Duration::from_millis(300) && third <= Duration::from_millis(400), "{third:?}");
            let late = backoff(&settings, 40);
            assert!(late >= Duration::from_millis(750) && late <= Duration::from_secs(1), "{late:?}");
        }
    }

    #[test]
    fn framing_counts_tag_length_and_body() {
        assert_eq!(framed_len(10), 12);
        assert_eq!(framed_len(300), 303);
    }
}
