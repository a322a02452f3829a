//! Audit events: built here, recorded through authz's outbox (delivery is the relay's job).
//!
//! Rules:
//!
//! 1. Denied checks, and one allowed check in `TETHER_AUTHZ_AUDIT_ALLOWED_SAMPLE`, become
//!    `authz.check_denied` / `authz.check_allowed` events with the DecisionReason name, the decision
//!    id (`{batch id}/{item}` inside a BatchCheck) and the trace id. Decisions are never affected.
//! 2. The call only moves its own strings into a queue (a BatchCheck queues its items once); a
//!    background writer builds the events and inserts them into the outbox in one transaction per
//!    25 ms, so a check never waits on the database or formats JSON.
//! 3. Each replica records at most `TETHER_AUTHZ_AUDIT_MAX_PER_SECOND` (default 5,000) decision
//!    events one by one per second; the rest, and anything beyond the queue's 65,536 waiting
//!    events, are counted and recorded as one `authz.decision_audit_suppressed` event
//!    (`{"denied", "allowed", "max_per_second", "trace_ids"}`) with the next transaction or within
//!    a second, so the trail never hides that decisions went unrecorded. `trace_ids` keeps the
//!    first 10 distinct trace ids of the counted denials; once full, a suppressed call costs one
//!    atomic load.
//! 4. Decision ids are UUIDv7 from a per-process random seed and a counter, so the hot path never
//!    asks the OS for randomness.

use std::sync::{
    Arc, Mutex, OnceLock,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use tether_proto::{
    authz::v1::BatchCheckItem,
    common::v1::{Actor, ActorKind, AuditEvent, AuditOutcome},
};
use tether_runtime::{
    access::Caller,
    db::{Database, now_micros},
    events::Audit,
};
use tokio::sync::mpsc;

use tether_runtime::db::timestamp;
use tokio_util::sync::CancellationToken;

pub const SOURCE: &str = "authz-svc";

/// The actor of an event, from the resolved caller (or authz itself).
pub fn actor(caller: Option<&Caller>) -> Actor {
    match caller {
        Some(caller) => caller.audit_actor(),
        None => Actor { kind: ActorKind::System as i32, system_name: SOURCE.to_owned(), ..Default::default() },
    }
}

/// A success event of a management write.
pub struct Change<'a> {
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: String,
    pub tenant_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub fn change_event(caller: Option<&Caller>, c: Change<'_>) -> AuditEvent {
    let client_ip = caller.map(|c| c.client_ip.as_str()).unwrap_or_default();
    let mut event =
        Audit::new(SOURCE, actor(caller), client_ip, c.action, c.resource_type, &c.resource_id).tenant(&c.tenant_id);
    if let Some(before) = c.before {
        event = event.before(before);
    }
    if let Some(after) = c.after {
        event = event.after(after);
    }
    event.build()
}

/// A decision to audit, as the call left it: the call moves its own strings in, the writer
/// builds the event, so a check pays no formatting or encoding for its audit trail.
pub struct DecisionRecord {
    pub decision_id: String,
    pub user_id: String,
    pub permission: String,
    pub tenant_id: String,
    pub resource_id: String,
    pub allowed: bool,
    /// A `DecisionReason` name.
    pub reason: &'static str,
    pub trace_id: String,
    pub at_micros: i64,
}

/// What the queue carries: one check, or the recorded items of one BatchCheck (item `i`'s
/// decision id is `{batch_id}/{i}`), whose items travel as the request brought them.
pub enum Queued {
    One(DecisionRecord),
    Batch {
        batch_id: String,
        items: Vec<BatchCheckItem>,
        /// Index into `items`, whether allowed, the `DecisionReason` name.
        recorded: Vec<(usize, bool, &'static str)>,
        trace_id: String,
        at_micros: i64,
    },
}

impl Queued {
    fn len(&self) -> usize {
        let (denied, allowed) = self.counts();
        (denied + allowed) as usize
    }

    /// How many of its events are denials and how many allowed decisions.
    fn counts(&self) -> (u64, u64) {
        match self {
            Self::One(r) => {
                if r.allowed {
                    (0, 1)
                } else {
                    (1, 0)
                }
            }
            Self::Batch { recorded, .. } => {
                let allowed = recorded.iter().filter(|(_, allowed, _)| *allowed).count() as u64;
                (recorded.len() as u64 - allowed, allowed)
            }
        }
    }

    /// The trace id of the call it came from (empty when there was none).
    fn into_trace_id(self) -> String {
        match self {
            Self::One(r) => r.trace_id,
            Self::Batch { trace_id, .. } => trace_id,
        }
    }

    fn at_micros(&self) -> i64 {
        match self {
            Self::One(r) => r.at_micros,
            Self::Batch { at_micros, .. } => *at_micros,
        }
    }

    /// Its events, built one at a time as the writer takes them.
    fn into_events(self) -> impl Iterator<Item = AuditEvent> + Send {
        let (one, batch) = match self {
            Self::One(r) => (Some(decision_event(r)), None),
            Self::Batch { batch_id, mut items, recorded, trace_id, at_micros } => {
                let events = recorded.into_iter().filter_map(move |(i, allowed, reason)| {
                    let item = items.get_mut(i)?;
                    Some(decision_event(DecisionRecord {
                        decision_id: format!("{batch_id}/{i}"),
                        user_id: std::mem::take(&mut item.subject_user_id),
                        permission: std::mem::take(&mut item.permission),
                        tenant_id: std::mem::take(&mut item.tenant_id),
                        resource_id: std::mem::take(&mut item.resource_id),
                        allowed,
                        reason,
                        trace_id: trace_id.clone(),
                        at_micros,
                    }))
                });
                (None, Some(events))
            }
        };
        one.into_iter().chain(batch.into_iter().flatten())
    }
}

/// A decision event's metadata, serialised straight from the record's strings (no JSON tree:
/// the writer builds tens of thousands of these a second under a flood of denials).
#[derive(serde::Serialize)]
struct DecisionMetadata<'a> {
    decision_id: &'a str,
    subject_user_id: &'a str,
    permission: &'a str,
    resource_id: &'a str,
    /// Explain's one line, without the role and membership names (those need the index, which
    /// the writer does not hold; `Explain` with the same inputs gives them).
    summary: String,
}

/// The one-line reason of a decision, in Explain's words.
fn summary(r: &DecisionRecord) -> String {
    let (user, permission, tenant) = (&r.user_id, &r.permission, &r.tenant_id);
    match r.reason.strip_prefix("DECISION_REASON_").unwrap_or(r.reason) {
        "GRANTED_BY_MEMBERSHIP" => {
            format!("allowed: a membership of user {user} grants {permission} in tenant {tenant}")
        }
        "GRANTED_BY_OVERRIDE" => format!("allowed: a grant override of {permission} for user {user}"),
        "GRANTED_BY_RESOURCE_GRANT" => format!("allowed: a resource grant covers resource {}", r.resource_id),
        "DENIED_NO_MEMBERSHIP" => {
            format!("denied: user {user} has no membership in tenant {tenant} or its ancestors granting {permission}")
        }
        "DENIED_BY_OVERRIDE" => format!("denied: a deny override of {permission} for user {user} (deny wins)"),
        "DENIED_USER_SUSPENDED" => format!("denied: user {user} is suspended"),
        "DENIED_USER_PENDING" => format!("denied: user {user} has not accepted their invitation"),
        "DENIED_USER_DELETED" => format!("denied: user {user} is deleted"),
        "DENIED_USER_UNKNOWN" => format!("denied: no user {user} is known"),
        "DENIED_TENANT_SUSPENDED" => format!("denied: tenant {tenant} (or an ancestor) is suspended"),
        "DENIED_TENANT_ARCHIVED" => format!("denied: tenant {tenant} (or an ancestor) is archived"),
        "DENIED_TENANT_UNKNOWN" => format!("denied: no tenant {tenant} is known"),
        "DENIED_OUTSIDE_ASSIGNED_TENANTS" => format!(
            "denied: the role of user {user} is scoped to assigned tenants and tenant {tenant} is not under one"
        ),
        "DENIED_UNKNOWN_PERMISSION" => format!("denied: {permission} is not in the catalog"),
        "DENIED_PERMISSION_NOT_IN_ROLE" => {
            format!("denied: a membership of user {user} reaches tenant {tenant} but its role lacks {permission}")
        }
        "DENIED_RESOURCE_UNKNOWN" => format!("denied: no resource {} in tenant {tenant}", r.resource_id),
        other => format!("{}: {other}", if r.allowed { "allowed" } else { "denied" }),
    }
}

pub fn decision_event(r: DecisionRecord) -> AuditEvent {
    let metadata = serde_json::to_string(&DecisionMetadata {
        decision_id: &r.decision_id,
        subject_user_id: &r.user_id,
        permission: &r.permission,
        resource_id: &r.resource_id,
        summary: summary(&r),
    })
    .unwrap_or_default();
    AuditEvent {
        event_id: fresh_id().to_string(),
        occurred_at: Some(timestamp(r.at_micros)),
        source_service: SOURCE.to_owned(),
        actor: Some(actor(None)),
        action: if r.allowed { "authz.check_allowed" } else { "authz.check_denied" }.to_owned(),
        resource_type: "permission".to_owned(),
        resource_id: r.permission,
        tenant_id: r.tenant_id,
        client_ip: String::new(),
        outcome: if r.allowed { AuditOutcome::Success } else { AuditOutcome::Denied } as i32,
        reason: r.reason.to_owned(),
        trace_id: r.trace_id,
        before_json: String::new(),
        after_json: String::new(),
        metadata_json: metadata,
        span_id: String::new(),
        user_agent: String::new(),
    }
}

/// A time-ordered UUID (v7) for decision and event ids, without asking the OS for randomness on
/// every decision: a per-process random seed mixed with a counter (odd multiplier: no two
/// counter values collide), so ids stay unique across replicas and calls.
pub fn fresh_id() -> uuid::Uuid {
    static SEED: OnceLock<[u8; 10]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        let random = uuid::Uuid::new_v4();
        let mut seed = [0u8; 10];
        seed.copy_from_slice(&random.as_bytes()[..10]);
        seed
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
    // The counter goes where the version and variant bits cannot overwrite it: byte 1 and
    // bytes 3..10 of the ten (bytes 0 and 2 carry those bits in the UUID).
    let mut bytes = *seed;
    bytes[1] ^= n[0];
    for (b, m) in bytes[3..].iter_mut().zip(&n[1..]) {
        *b ^= m;
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
}

/// Most decision events waiting for the writer; beyond it new ones are only counted rather
/// than stalling decisions or growing without bound.
const MAX_QUEUED_EVENTS: usize = 65_536;

/// How long the writer rests between transactions: decision audits reach the outbox at most
/// this late, in a few large transactions rather than many small ones.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(25);

/// How soon counts of suppressed events are recorded when no single event comes to carry them.
const SUMMARY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A per-second budget of decision events (`TETHER_AUTHZ_AUDIT_MAX_PER_SECOND`), like the
/// decision-log rate limits of other policy engines: a flood of denials (a misconfigured client
/// retrying, a scan, a benchmark) is summarised instead of taking the cores from the decisions.
struct Budget {
    per_second: u64,
    second: AtomicU64,
    used: AtomicU64,
}

impl Budget {
    /// Whether `n` more events fit in the second of `at_micros`. A call that starts within the
    /// budget is taken whole (a batch may overshoot it by its own size).
    fn take(&self, n: u64, at_micros: i64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let second = (at_micros / 1_000_000) as u64;
        let current = self.second.load(Ordering::Relaxed);
        if second > current
            && self.second.compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(n, Ordering::Relaxed) < self.per_second
    }
}

/// Most trace ids of suppressed denials one summary event carries.
pub const SUMMARY_TRACE_IDS: usize = 10;

/// Decision events not recorded one by one (over the budget, or the queue full), counted until
/// the writer records them as one `authz.decision_audit_suppressed` event, with the trace ids
/// of the first few suppressed denials (distinct, at most [`SUMMARY_TRACE_IDS`]) so an SRE can
/// still follow some of them.
#[derive(Default)]
struct Suppressed {
    denied: AtomicU64,
    allowed: AtomicU64,
    /// Since start, for the log.
    total: AtomicU64,
    /// How many trace ids `trace_ids` holds: once full, a suppressed call costs no lock.
    sampled: AtomicUsize,
    trace_ids: Mutex<Vec<String>>,
}

impl Suppressed {
    fn add(&self, (denied, allowed): (u64, u64), queued: Queued) {
        self.denied.fetch_add(denied, Ordering::Relaxed);
        self.allowed.fetch_add(allowed, Ordering::Relaxed);
        if denied > 0 && self.sampled.load(Ordering::Relaxed) < SUMMARY_TRACE_IDS {
            let trace_id = queued.into_trace_id();
            if !trace_id.is_empty() {
                let mut ids = self.trace_ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if ids.len() < SUMMARY_TRACE_IDS && !ids.contains(&trace_id) {
                    ids.push(trace_id);
                    self.sampled.store(ids.len(), Ordering::Relaxed);
                }
            }
        }
        let before = self.total.fetch_add(denied + allowed, Ordering::Relaxed);
        let after = before + denied + allowed;
        // Logged each time the count since start passes a power of two.
        if before == 0 || after.ilog2() != before.ilog2() {
            tracing::warn!(
                suppressed = after,
                "decision audit events over budget or queue full; recording counts only"
            );
        }
    }

    /// The summary event of what was suppressed since the last call, if anything was.
    fn take_summary(&self, per_second: u64) -> Option<AuditEvent> {
        let denied = self.denied.swap(0, Ordering::Relaxed);
        let allowed = self.allowed.swap(0, Ordering::Relaxed);
        if denied + allowed == 0 {
            return None;
        }
        let trace_ids = {
            let mut ids = self.trace_ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.sampled.store(0, Ordering::Relaxed);
            std::mem::take(&mut *ids)
        };
        let metadata = serde_json::json!({
            "denied": denied, "allowed": allowed, "max_per_second": per_second, "trace_ids": trace_ids,
        });
        Some(AuditEvent {
            event_id: fresh_id().to_string(),
            occurred_at: Some(timestamp(now_micros())),
            source_service: SOURCE.to_owned(),
            actor: Some(actor(None)),
            action: "authz.decision_audit_suppressed".to_owned(),
            resource_type: "decision_audit".to_owned(),
            outcome: AuditOutcome::Success as i32,
            metadata_json: metadata.to_string(),
            ..Default::default()
        })
    }
}

/// Hands decision events to a background writer so a check never waits for the database.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
    allowed_every: u64,
    allowed_seen: Arc<AtomicU64>,
    budget: Arc<Budget>,
    suppressed: Arc<Suppressed>,
}

impl AuditSink {
    /// Starts the writer; it drains what is queued and stops at `stopping`. At most
    /// `max_per_second` decision events are recorded one by one each second (0: no budget).
    pub fn start(database: Database, allowed_every: usize, max_per_second: usize, stopping: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let budget =
            Arc::new(Budget { per_second: max_per_second as u64, second: AtomicU64::new(0), used: AtomicU64::new(0) });
        let suppressed = Arc::new(Suppressed::default());
        let writer_suppressed = suppressed.clone();
        tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(4096);
            let mut closing = false;
            loop {
                let got = if closing {
                    rx.recv_many(&mut buffer, 4096).await
                } else {
                    tokio::select! {
                        n = rx.recv_many(&mut buffer, 4096) => n,
                        // Nothing queued for a while, but suppressed counts may be waiting
                        // (any count but 0, which means closed).
                        _ = tokio::time::sleep(SUMMARY_INTERVAL) => usize::MAX,
                        _ = stopping.cancelled() => {
                            // Take no more, but write what is queued.
                            rx.close();
                            closing = true;
                            continue;
                        }
                    }
                };
                if got == 0 {
                    // Closed and drained: what was suppressed last still gets its summary.
                    if let Some(summary) = writer_suppressed.take_summary(max_per_second as u64)
                        && let Err(e) = crate::store::record_decisions(&database, std::iter::once(summary)).await
                    {
                        tracing::error!(error = %e, "cannot record the decision audit summary");
                    }
                    return;
                }
                let summary = writer_suppressed.take_summary(max_per_second as u64);
                if buffer.is_empty() && summary.is_none() {
                    continue;
                }
                let count: usize = buffer.iter().map(Queued::len).sum();
                writer_queued.fetch_sub(count, Ordering::Relaxed);
                let events = buffer.drain(..).flat_map(Queued::into_events).chain(summary);
                if let Err(e) = crate::store::record_decisions(&database, events).await {
                    tracing::error!(error = %e, count, "cannot record decision audit events");
                }
                if !closing {
                    // Let events gather: one transaction per interval, and no wake-up of this
                    // task per denied check while it rests (sends to a resting receiver are cheap).
                    tokio::select! {
                        _ = tokio::time::sleep(WRITE_INTERVAL) => {}
                        _ = stopping.cancelled() => {}
                    }
                }
            }
        });
        Self {
            tx,
            queued,
            allowed_every: allowed_every as u64,
            allowed_seen: Arc::new(AtomicU64::new(0)),
            budget,
            suppressed,
        }
    }

    /// Whether this allowed decision is in the sample.
    pub fn sample_allowed(&self) -> bool {
        self.allowed_every > 0 && self.allowed_seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.allowed_every)
    }

    pub fn record(&self, queued: Queued) {
        let n = queued.len();
        if n == 0 {
            return;
        }
        let counts = queued.counts();
        if !self.budget.take(n as u64, queued.at_micros()) {
            self.suppressed.add(counts, queued);
            return;
        }
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        let refused =
            if before + n > MAX_QUEUED_EVENTS { Some(queued) } else { self.tx.send(queued).err().map(|e| e.0) };
        if let Some(queued) = refused {
            // Overload: shedding single events beats stalling every decision; they are counted.
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.suppressed.add(counts, queued);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(trace_id: &str) -> Queued {
        Queued::One(DecisionRecord {
            decision_id: String::new(),
            user_id: String::new(),
            permission: String::new(),
            tenant_id: String::new(),
            resource_id: String::new(),
            allowed: false,
            reason: "DECISION_REASON_DENIED_NO_MEMBERSHIP",
            trace_id: trace_id.to_owned(),
            at_micros: 0,
        })
    }

    fn trace_ids(summary: Option<AuditEvent>) -> Vec<String> {
        let event = summary.unwrap_or_else(|| panic!("no summary"));
        let m: serde_json::Value = serde_json::from_str(&event.metadata_json).unwrap_or_else(|e| panic!("{e}"));
        m["trace_ids"].as_array().unwrap_or_else(|| panic!("no trace ids")).iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn summaries_keep_a_bounded_sample_of_suppressed_denials_trace_ids() {
        let s = Suppressed::default();
        for i in 0..25 {
            s.add((1, 0), denial(&format!("{i:032x}")));
            s.add((1, 0), denial(&format!("{i:032x}")));
            s.add((1, 0), denial(""));
        }
        let first = trace_ids(s.take_summary(100));
        assert_eq!(first.len(), SUMMARY_TRACE_IDS, "{first:?}");
        assert_eq!(first[0], format!("\"{:032x}\"", 0), "the first ones, each once, none empty");
        assert_eq!(first[1], format!("\"{:032x}\"", 1));
        // The next summary samples afresh.
        s.add((1, 0), denial("feed"));
        assert_eq!(trace_ids(s.take_summary(100)), vec!["\"feed\"".to_owned()]);
        assert!(s.take_summary(100).is_none());
    }

    #[test]
    fn fresh_ids_are_unique_time_ordered_v7() {
        let ids: Vec<uuid::Uuid> = (0..100_000).map(|_| fresh_id()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let (first, last) = (ids[0].get_timestamp().unwrap(), ids[ids.len() - 1].get_timestamp().unwrap());
        assert!(first.to_unix() <= last.to_unix());
    }
}
