//! audit-svc's own schema and SQL: appending to the chain ([`chain`]), reading it back
//! ([`search`]), checkpoints ([`checkpoints`]) and retention ([`retention`]).
//!
//! Rules:
//!
//! 1. Appends take the chain head's row lock first (`UPDATE audit_chain_head`), then skip the
//!    event ids already stored, then number, hash and insert the rest, and move the head, in one
//!    transaction: replicas queue on the lock, so sequences stay gap-free and every record links
//!    to the one before it, and a redelivered event is found as already stored.
//! 2. Every query a caller's filter reaches binds its values as parameters; no caller text is
//!    ever part of SQL.

pub mod chain;
pub mod checkpoints;
mod records;
pub mod retention;
pub mod search;

pub use records::StoredRecord;
use tether_runtime::{
    db::EmbeddedMigration,
    events::{OUTBOX_MIGRATION, OUTBOX_PARKING_MIGRATION},
};

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration { version: 1, description: "events", sql: include_str!("migrations/0001_events.sql") },
    EmbeddedMigration { version: 2, description: "chain", sql: include_str!("migrations/0002_chain.sql") },
    EmbeddedMigration { version: 3, description: "retention", sql: include_str!("migrations/0003_retention.sql") },
    EmbeddedMigration { version: 4, description: "stats", sql: include_str!("migrations/0004_stats.sql") },
    OUTBOX_MIGRATION,
    OUTBOX_PARKING_MIGRATION,
];
