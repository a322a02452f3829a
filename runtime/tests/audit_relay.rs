//! The audit relay against a real outbox: SQLite by default, PostgreSQL (a fresh schema per
//! test) with `TETHER_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::Row;
use tether_proto::{
    audit::v1::{IngestResponse, RejectedEvent},
    common::v1::{AuditEvent, ErrorReason},
};
use tether_runtime::{
    ApiError, ConfigSource,
    config::DatabaseTarget,
    db::{Database, now_micros},
    events::{
        Audit, AuditRelay, AuditRelaySettings, AuditSink, NoChanges, OUTBOX_MIGRATION, OUTBOX_PARKING_MIGRATION,
        OutboxBacklog, Write, audit::system_actor, audit_outbox_backlog, record_audit_only, spawn_audit_relay,
    },
};
use tokio_util::sync::CancellationToken;

async fn open_database() -> Database {
    let migrations = [OUTBOX_MIGRATION, OUTBOX_PARKING_MIGRATION];
    let letters: String =
        uuid::Uuid::new_v4().simple().to_string().bytes().map(|b| char::from(b'a' + b % 26)).collect();
    match std::env::var("TETHER_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => {
            let schema: &'static str = Box::leak(format!("relay_{letters}").into_boxed_str());
            Database::open(&DatabaseTarget::Postgres(url), schema, &migrations).await.unwrap()
        }
        None => {
            let path = std::env::temp_dir().join(format!("tether-relay-{letters}")).join("outbox.db");
            Database::open(&DatabaseTarget::Sqlite(path), "relay", &migrations).await.unwrap()
        }
    }
}

/// audit-svc as the relay sees it: records every batch; fails, rejects or hangs on demand.
#[derive(Default)]
struct Sink {
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    batches: Vec<Vec<AuditEvent>>,
    calls: usize,
    failing: bool,
    hanging: bool,
    reject: HashSet<String>,
}

impl Sink {
    fn set(&self, f: impl FnOnce(&mut SinkState)) {
        f(&mut self.state.lock().unwrap());
    }
    fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
    fn received_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().batches.iter().flatten().map(|e| e.event_id.clone()).collect()
    }
    fn batch_sizes(&self) -> Vec<usize> {
        self.state.lock().unwrap().batches.iter().map(Vec::len).collect()
    }
}

#[tonic::async_trait]
impl AuditSink for Sink {
    async fn ingest(&self, events: Vec<AuditEvent>) -> Result<IngestResponse, ApiError> {
        let hang = {
            let mut state = self.state.lock().unwrap();
            state.calls += 1;
            if state.failing {
                return Err(ApiError::new(ErrorReason::Unavailable, "audit-svc is unavailable"));
            }
            state.hanging
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let mut state = self.state.lock().unwrap();
        let rejected: Vec<RejectedEvent> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| state.reject.contains(&e.event_id))
            .map(|(i, e)| RejectedEvent {
                event_id: e.event_id.clone(),
                index: i as i32,
                reason: ErrorReason::FieldTooLong as i32,
                field: "metadata_json".into(),
            })
            .collect();
        let accepted = (events.len() - rejected.len()) as i32;
        state.batches.push(events);
        Ok(IngestResponse { accepted, duplicates: 0, rejected })
    }
}

fn event(n: usize) -> AuditEvent {
    Audit::new("test-svc", system_actor("test"), "", "thing.changed", "thing", &n.to_string()).build()
}

/// Commits one write carrying `events`; answers their ids.
async fn write(db: &Database, events: Vec<AuditEvent>) -> Vec<String> {
    let ids = events.iter().map(|e| e.event_id.clone()).collect();
    let mut write = Write::<NoChanges>::begin(db).await.unwrap();
    for e in events {
        write.audit(e);
    }
    write.commit().await.unwrap();
    ids
}

fn settings() -> AuditRelaySettings {
    AuditRelaySettings {
        poll_interval: Duration::from_secs(60),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn backlog(db: &Database) -> OutboxBacklog {
    audit_outbox_backlog(db.pool()).await.unwrap()
}

async fn drained(relay: &AuditRelay) {
    tokio::time::timeout(Duration::from_secs(10), relay.drained()).await.expect("the outbox drains");
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn committed_events_reach_the_sink_in_order_and_rolled_back_ones_never() {
    let db = open_database().await;
    let sink = Arc::new(Sink::default());
    let stopping = CancellationToken::new();
    // A poll of a minute: only the commits can wake the relay within this test.
    let relay = spawn_audit_relay(db.clone(), sink.clone(), settings(), stopping.clone());

    let mut expected = write(&db, vec![event(1), event(2)]).await;
    let mut rolled_back = Write::<NoChanges>::begin(&db).await.unwrap();
    let lost = event(99);
    let lost_id = lost.event_id.clone();
    rolled_back.audit(lost);
    drop(rolled_back);
    expected.extend(write(&db, vec![event(3)]).await);
    let login = event(4);
    expected.push(login.event_id.clone());
    record_audit_only(&db, [login]).await.unwrap();

    eventually("every committed event arrived", async || sink.received_ids().len() >= expected.len()).await;
    drained(&relay).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received = sink.received_ids();
    assert_eq!(received, expected, "exactly the committed events, in order");
    assert!(!received.contains(&lost_id));
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 0, parked: 0, delivered: 4 });
    assert_eq!(relay.stats().delivered, 4);
    stopping.cancel();
}

#[tokio::test]
async fn nothing_is_delivered_while_the_sink_fails_and_everything_once_it_recovers() {
    let db = open_database().await;
    let sink = Arc::new(Sink::default());
    sink.set(|s| s.failing = true);
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(
        db.clone(),
        sink.clone(),
        AuditRelaySettings { poll_interval: Duration::from_millis(10), ..settings() },
        stopping.clone(),
    );

    let mut expected = write(&db, (0..5).map(event).collect()).await;
    // Commits during the failure do not wake the relay out of its backoff.
    let window = Instant::now();
    for n in 5..15 {
        expected.extend(write(&db, vec![event(n)]).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(window.elapsed())).await;
    let calls = sink.calls();
    // Backoff 50, 100, 200, 200, … ms (a quarter less at most): about 7 calls in a second; a
    // loop without backoff would have made hundreds.
    assert!((2..=12).contains(&calls), "{calls} calls in one second");
    let b = backlog(&db).await;
    assert_eq!((b.pending, b.delivered), (15, 0), "nothing is marked delivered without an acknowledgement");
    let least_attempts: i64 =
        sqlx::query_scalar("SELECT MIN(attempts) FROM audit_outbox").fetch_one(db.pool()).await.unwrap();
    assert!(least_attempts >= 1, "every event's failed attempt is counted");
    assert_eq!(relay.stats().failed_attempts, calls as u64);

    sink.set(|s| s.failing = false);
    drained(&relay).await;
    assert_eq!(sink.received_ids(), expected, "all of them, in order, once audit-svc answers");
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 0, parked: 0, delivered: 15 });
    stopping.cancel();
}

#[tokio::test]
async fn a_rejected_event_is_parked_with_its_reason_and_the_rest_of_its_batch_delivered() {
    let db = open_database().await;
    let sink = Arc::new(Sink::default());
    let events: Vec<AuditEvent> = (0..3).map(event).collect();
    let bad = events[1].event_id.clone();
    sink.set(|s| {
        s.reject.insert(bad.clone());
    });
    let ids = write(&db, events).await;
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(db.clone(), sink.clone(), settings(), stopping.clone());
    drained(&relay).await;
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 0, parked: 1, delivered: 2 });
    let row = sqlx::query("SELECT parked_at, parked_reason, delivered_at FROM audit_outbox WHERE event_id = $1")
        .bind(bad.clone())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(row.get::<Option<i64>, _>(0).is_some());
    let reason: String = row.get(1);
    assert!(reason.contains("FIELD_TOO_LONG") && reason.contains("metadata_json"), "{reason}");
    assert_eq!(row.get::<Option<i64>, _>(2), None, "a parked event is not delivered");

    // Later batches never carry it again.
    let later = write(&db, vec![event(3)]).await;
    drained(&relay).await;
    let received = sink.received_ids();
    assert_eq!(received, [ids.clone(), later].concat());
    assert_eq!(received.iter().filter(|id| **id == bad).count(), 1, "sent once, not retried");
    assert_eq!(relay.stats().rejected, 1);
    assert_eq!(relay.stats().delivered, 3);
    stopping.cancel();
}

#[tokio::test]
async fn an_unreadable_payload_is_parked_locally_and_blocks_nothing() {
    let db = open_database().await;
    let now = now_micros();
    sqlx::query(
        "INSERT INTO audit_outbox (event_id, payload, created_at, next_attempt_at) VALUES ('broken', 'zz', $1, $1)",
    )
    .bind(now - 1_000_000)
    .execute(db.pool())
    .await
    .unwrap();
    let ids = write(&db, vec![event(1)]).await;
    let sink = Arc::new(Sink::default());
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(db.clone(), sink.clone(), settings(), stopping.clone());
    drained(&relay).await;
    assert_eq!(sink.received_ids(), ids);
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT parked_reason FROM audit_outbox WHERE event_id = 'broken' AND parked_at IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(reason.unwrap_or_default().contains("hex"));
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 0, parked: 1, delivered: 1 });
    stopping.cancel();
}

#[tokio::test]
async fn batches_hold_at_most_batch_size_events() {
    let db = open_database().await;
    let expected = write(&db, (0..10).map(event).collect()).await;
    let sink = Arc::new(Sink::default());
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(
        db.clone(),
        sink.clone(),
        AuditRelaySettings { batch_size: 3, ..settings() },
        stopping.clone(),
    );
    drained(&relay).await;
    assert_eq!(sink.batch_sizes(), [3, 3, 3, 1]);
    assert_eq!(sink.received_ids(), expected);
    stopping.cancel();
}

#[tokio::test]
async fn batches_stay_within_4_mib_and_an_event_larger_than_that_is_parked() {
    let db = open_database().await;
    let large = |n: usize, mib: usize| {
        let mut e = event(n);
        e.metadata_json = format!("\"{}\"", "x".repeat(mib * 1024 * 1024));
        e
    };
    let expected = write(&db, (0..5).map(|n| large(n, 1)).collect()).await;
    let huge = write(&db, vec![large(5, 5)]).await.remove(0);
    let sink = Arc::new(Sink::default());
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(db.clone(), sink.clone(), settings(), stopping.clone());
    drained(&relay).await;
    // Four events of 1 MiB and their framing are more than 4 MiB.
    assert_eq!(sink.batch_sizes(), [3, 2]);
    assert_eq!(sink.received_ids(), expected);
    let reason: Option<String> = sqlx::query_scalar("SELECT parked_reason FROM audit_outbox WHERE event_id = $1")
        .bind(huge)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(reason.unwrap_or_default().contains("more than an Ingest batch"));
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 0, parked: 1, delivered: 5 });
    stopping.cancel();
}

#[tokio::test]
async fn delivered_rows_past_retention_are_purged_and_pending_and_parked_rows_are_kept() {
    let db = open_database().await;
    let sink = Arc::new(Sink::default());
    let events: Vec<AuditEvent> = (0..3).map(event).collect();
    let (old, recent, parked) = (events[0].event_id.clone(), events[1].event_id.clone(), events[2].event_id.clone());
    sink.set(|s| {
        s.reject.insert(parked.clone());
    });
    write(&db, events).await;
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(
        db.clone(),
        sink.clone(),
        AuditRelaySettings {
            retention: Duration::from_secs(3600),
            purge_interval: Duration::from_millis(100),
            ..settings()
        },
        stopping.clone(),
    );
    drained(&relay).await;
    sink.set(|s| s.failing = true);
    let pending = write(&db, vec![event(3)]).await.remove(0);
    let two_hours_ago = now_micros() - 2 * 3600 * 1_000_000;
    for (sql, id) in [
        ("UPDATE audit_outbox SET delivered_at = $1 WHERE event_id = $2", &old),
        ("UPDATE audit_outbox SET parked_at = $1 WHERE event_id = $2", &parked),
        ("UPDATE audit_outbox SET created_at = $1 WHERE event_id = $2", &pending),
    ] {
        sqlx::query(sql).bind(two_hours_ago).bind(id.clone()).execute(db.pool()).await.unwrap();
    }
    let count = async |id: &str| -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_outbox WHERE event_id = $1")
            .bind(id.to_owned())
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    eventually("the old delivered row is purged", async || count(&old).await == 0).await;
    assert_eq!(count(&recent).await, 1, "delivered within retention: kept");
    assert_eq!(count(&parked).await, 1, "parked: kept until a person looks");
    assert_eq!(count(&pending).await, 1, "pending: never purged");
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 1, parked: 1, delivered: 1 });
    stopping.cancel();
}

#[tokio::test]
async fn a_batch_in_flight_at_shutdown_stays_pending_and_the_next_start_sends_it() {
    let db = open_database().await;
    let ids = write(&db, (0..3).map(event).collect()).await;
    let hung = Arc::new(Sink::default());
    hung.set(|s| s.hanging = true);
    let stopping = CancellationToken::new();
    spawn_audit_relay(db.clone(), hung.clone(), settings(), stopping.clone());
    eventually("the batch is in flight", async || hung.calls() == 1).await;
    stopping.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backlog(&db).await, OutboxBacklog { pending: 3, parked: 0, delivered: 0 });

    // The claim was given back: the next start sends at once, not after the lease.
    let sink = Arc::new(Sink::default());
    let stopping = CancellationToken::new();
    let relay = spawn_audit_relay(db.clone(), sink.clone(), settings(), stopping.clone());
    tokio::time::timeout(Duration::from_secs(5), relay.drained()).await.expect("sent without waiting out the lease");
    assert_eq!(sink.received_ids(), ids);
    stopping.cancel();
}

#[test]
fn relay_settings_default_and_a_bad_value_names_its_key() {
    let defaults = AuditRelaySettings::load(&ConfigSource::default(), "tenancy").unwrap();
    assert_eq!(defaults.batch_size, 500);
    assert_eq!(defaults.poll_interval, Duration::from_secs(1));
    assert_eq!(defaults.backoff_min, Duration::from_millis(100));
    assert_eq!(defaults.backoff_max, Duration::from_secs(30));
    assert_eq!(defaults.retention, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(defaults.purge_interval, Duration::from_secs(600));

    let set = ConfigSource::from_pairs([
        ("TETHER_AUTHZ_AUDIT_RELAY_BATCH_SIZE", "100"),
        ("TETHER_AUTHZ_AUDIT_OUTBOX_RETENTION_HOURS", "24"),
    ]);
    let s = AuditRelaySettings::load(&set, "authz").unwrap();
    assert_eq!((s.batch_size, s.retention), (100, Duration::from_secs(24 * 3600)));

    for (key, value) in [
        ("TETHER_IDENTITY_AUDIT_RELAY_BATCH_SIZE", "501"),
        ("TETHER_IDENTITY_AUDIT_RELAY_BATCH_SIZE", "0"),
        ("TETHER_IDENTITY_AUDIT_RELAY_POLL_MS", "soon"),
        ("TETHER_IDENTITY_AUDIT_RELAY_BACKOFF_MIN_MS", "0"),
        ("TETHER_IDENTITY_AUDIT_RELAY_BACKOFF_MAX_MS", "-1"),
        ("TETHER_IDENTITY_AUDIT_OUTBOX_RETENTION_HOURS", "a week"),
        ("TETHER_IDENTITY_AUDIT_OUTBOX_PURGE_INTERVAL_MS", "0"),
    ] {
        let err = AuditRelaySettings::load(&ConfigSource::from_pairs([(key, value)]), "identity").unwrap_err();
        assert!(err.to_string().contains(key), "{key}={value}: {err}");
    }
    let inverted = ConfigSource::from_pairs([
        ("TETHER_IDENTITY_AUDIT_RELAY_BACKOFF_MIN_MS", "5000"),
        ("TETHER_IDENTITY_AUDIT_RELAY_BACKOFF_MAX_MS", "1000"),
    ]);
    let err = AuditRelaySettings::load(&inverted, "identity").unwrap_err();
    assert!(err.to_string().contains("TETHER_IDENTITY_AUDIT_RELAY_BACKOFF_MAX_MS"), "{err}");
}
