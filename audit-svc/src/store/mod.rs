//! audit-svc's own schema and SQL: appending to the chain ([`chain`]), reading it back
//! ([`search`]), checkpoints ([`checkpoints`]), retention ([`retention`]) and PostgreSQL's
//! monthly partitions ([`partitions`]).
//!
//! Rules:
//!
//! 1. Appends take the chain head's row lock first (`UPDATE audit_chain_head`), then skip the
//!    event ids already stored, then number, hash and insert the rest, and move the head, in one
//!    transaction: replicas queue on the lock, so sequences stay gap-free and every record links
//!    to the one before it, and a redelivered event is found as already stored. Stored event ids
//!    live in `audit_event_ids`, whose key makes a second copy impossible even so.
//! 2. Every query a caller's filter reaches binds its values as parameters; no caller text is
//!    ever part of SQL.

pub mod chain;
pub mod checkpoints;
pub mod partitions;
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
    EmbeddedMigration::portable(1, "events", include_str!("migrations/0001_events.sql")),
    EmbeddedMigration::portable(2, "chain", include_str!("migrations/0002_chain.sql")),
    EmbeddedMigration::portable(3, "retention", include_str!("migrations/0003_retention.sql")),
    EmbeddedMigration::portable(4, "stats", include_str!("migrations/0004_stats.sql")),
    EmbeddedMigration::per_backend(
        5,
        "partitions",
        include_str!("migrations/0005_partitions.sqlite.sql"),
        include_str!("migrations/0005_partitions.postgres.sql"),
    ),
    OUTBOX_MIGRATION,
    OUTBOX_PARKING_MIGRATION,
];
