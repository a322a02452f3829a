//! authz-svc's own schema.

use tether_runtime::db::EmbeddedMigration;

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] =
    &[EmbeddedMigration { version: 1, description: "policy", sql: include_str!("migrations/0001_policy.sql") }];
