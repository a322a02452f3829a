//! tenancy-svc's own schema and the SQL that reads and writes it.

use tether_runtime::db::EmbeddedMigration;

pub mod tenants;

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] =
    &[EmbeddedMigration { version: 1, description: "tenants", sql: include_str!("migrations/0001_tenants.sql") }];
