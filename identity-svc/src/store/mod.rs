//! identity-svc's own schema and the SQL that reads and writes it.

use tether_runtime::db::EmbeddedMigration;

pub mod accounts;

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] =
    &[EmbeddedMigration { version: 1, description: "accounts", sql: include_str!("migrations/0001_accounts.sql") }];
