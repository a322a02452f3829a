//! The outbox: changes and audit events committed in the same transaction as the write that
//! caused them, and the `Watch(from_revision)` stream that serves the changes.
//!
//! Every service that publishes events includes [`OUTBOX_MIGRATION`] in its own migrations, so
//! the tables live in its own schema. Every write goes through [`Write`]: begin (the write
//! transaction and the next revision: a one-row counter whose row lock serialises writers, so
//! revisions become visible in commit order and a reader that has seen revision N has seen
//! everything before it), make the change, name its change-stream and audit events, commit
//! (events and change in one transaction), notify (local watchers wake at once; watchers on
//! other replicas find the change on their next poll).
//!
//! Guarantees: nothing is published that did not commit, and nothing that committed is lost.
//! identity, tenancy and authz number their changes this way; identity and tenancy serve them on
//! `Watch`. Audit events wait, committed, in each service's `audit_outbox` until the audit relay
//! ([`relay`], started by each service with [`spawn_audit_relay`]) has delivered them to
//! audit-svc's `Ingest`: at least once, retrying with backoff until acknowledged (audit-svc
//! stores each `event_id` once), parking the events audit-svc rejects as invalid. Services
//! include [`OUTBOX_PARKING_MIGRATION`] after [`OUTBOX_MIGRATION`].

pub mod audit;
mod changes;
pub mod consistency;
pub mod relay;
mod watch;
mod write;

pub use audit::Audit;
pub use changes::{
    ChangeFeed, ChangeMessage, OUTBOX_MIGRATION, StoredChange, current_revision, next_revision, record_audit,
    record_changes,
};
pub use relay::{
    AuditRelay, AuditRelaySettings, AuditSink, GrpcAuditSink, OUTBOX_PARKING_MIGRATION, OutboxBacklog, RelayStats,
    audit_outbox_backlog, spawn_audit_relay,
};
pub use watch::{WatchMessage, WatchOptions, watch_stream};
pub use write::{NoChanges, Write, record_audit_only};
