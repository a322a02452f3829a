//! identity-svc's own schema and the SQL that reads and writes it.

use tether_runtime::{
    db::EmbeddedMigration,
    events::{OUTBOX_MIGRATION, OUTBOX_PARKING_MIGRATION},
};

pub mod accounts;
pub mod intents;
pub mod invitations;
pub mod lockouts;
pub mod purge;
pub mod rate_limits;
pub mod resets;
pub mod sessions;
pub mod two_factor;

/// Applied in order at start-up; a migration, once released, is never edited.
pub const MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration { version: 1, description: "accounts", sql: include_str!("migrations/0001_accounts.sql") },
    EmbeddedMigration {
        version: 2,
        description: "sessions and provisioning",
        sql: include_str!("migrations/0002_sessions_and_provisioning.sql"),
    },
    EmbeddedMigration { version: 3, description: "invitations", sql: include_str!("migrations/0003_invitations.sql") },
    EmbeddedMigration { version: 4, description: "two factor", sql: include_str!("migrations/0004_two_factor.sql") },
    EmbeddedMigration {
        version: 5,
        description: "password resets",
        sql: include_str!("migrations/0005_password_resets.sql"),
    },
    EmbeddedMigration { version: 6, description: "rate limits", sql: include_str!("migrations/0006_rate_limits.sql") },
    EmbeddedMigration {
        version: 7,
        description: "two factor policy in force",
        sql: include_str!("migrations/0007_two_factor_policy_in_force.sql"),
    },
    EmbeddedMigration {
        version: 8,
        description: "account name key",
        sql: include_str!("migrations/0008_account_name_key.sql"),
    },
    EmbeddedMigration {
        version: 9,
        description: "account request id unique",
        sql: include_str!("migrations/0009_account_request_id_unique.sql"),
    },
    EmbeddedMigration {
        version: 10,
        description: "totp secret key id",
        sql: include_str!("migrations/0010_totp_secret_key_id.sql"),
    },
    EmbeddedMigration {
        version: 11,
        description: "intent tenancy revision",
        sql: include_str!("migrations/0011_intent_tenancy_revision.sql"),
    },
    OUTBOX_MIGRATION,
    OUTBOX_PARKING_MIGRATION,
];
