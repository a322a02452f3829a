//! Audit events: built here, recorded through authz's outbox (delivery is the relay's job).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tether_proto::common::v1::{Actor, ActorKind, AuditEvent, AuditOutcome};
use tether_runtime::{
    access::Caller,
    db::{Database, now_micros},
};
use tokio::sync::mpsc;

use super::timestamp_from_micros;
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
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(timestamp_from_micros(now_micros())),
        source_service: SOURCE.to_owned(),
        actor: Some(actor(caller)),
        action: c.action.to_owned(),
        resource_type: c.resource_type.to_owned(),
        resource_id: c.resource_id,
        tenant_id: c.tenant_id,
        client_ip: caller.map(|c| c.client_ip.clone()).unwrap_or_default(),
        outcome: AuditOutcome::Success as i32,
        reason: String::new(),
        trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
        before_json: c.before.map(|v| v.to_string()).unwrap_or_default(),
        after_json: c.after.map(|v| v.to_string()).unwrap_or_default(),
        metadata_json: String::new(),
    }
}

/// What a decision event says.
pub struct DecisionFacts<'a> {
    pub decision_id: &'a str,
    pub user_id: &'a str,
    pub permission: &'a str,
    pub tenant_id: &'a str,
    pub resource_id: &'a str,
    pub allowed: bool,
    /// A `DecisionReason` name.
    pub reason: &'a str,
}

pub fn decision_event(f: DecisionFacts<'_>) -> AuditEvent {
    let metadata = serde_json::json!({
        "decision_id": f.decision_id,
        "subject_user_id": f.user_id,
        "permission": f.permission,
        "resource_id": f.resource_id,
    });
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(timestamp_from_micros(now_micros())),
        source_service: SOURCE.to_owned(),
        actor: Some(actor(None)),
        action: if f.allowed { "authz.check_allowed" } else { "authz.check_denied" }.to_owned(),
        resource_type: "permission".to_owned(),
        resource_id: f.permission.to_owned(),
        tenant_id: f.tenant_id.to_owned(),
        client_ip: String::new(),
        outcome: if f.allowed { AuditOutcome::Success } else { AuditOutcome::Denied } as i32,
        reason: f.reason.to_owned(),
        trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
        before_json: String::new(),
        after_json: String::new(),
        metadata_json: metadata.to_string(),
    }
}

/// Hands decision events to a background writer so a check never waits for the database.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
    allowed_every: u64,
    allowed_seen: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink {
    /// Starts the writer; it drains what is queued and stops at `stopping`.
    pub fn start(database: Database, allowed_every: usize, stopping: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(65_536);
        tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(512);
            let mut closing = false;
            loop {
                let got = if closing {
                    rx.recv_many(&mut buffer, 512).await
                } else {
                    tokio::select! {
                        n = rx.recv_many(&mut buffer, 512) => n,
                        _ = stopping.cancelled() => {
                            // Take no more, but write what is queued.
                            rx.close();
                            closing = true;
                            continue;
                        }
                    }
                };
                if got == 0 {
                    return;
                }
                if let Err(e) = crate::store::record_decisions(&database, &buffer).await {
                    tracing::error!(error = %e, count = buffer.len(), "cannot record decision audit events");
                }
                buffer.clear();
            }
        });
        Self {
            tx,
            allowed_every: allowed_every as u64,
            allowed_seen: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether this allowed decision is in the sample.
    pub fn sample_allowed(&self) -> bool {
        self.allowed_every > 0 && self.allowed_seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.allowed_every)
    }

    pub fn record(&self, event: AuditEvent) {
        if self.tx.try_send(event).is_err() {
            // Overload: shedding audit events beats stalling every decision; counted and logged.
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "decision audit queue full; events dropped");
            }
        }
    }
}
