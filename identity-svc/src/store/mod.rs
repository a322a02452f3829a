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
    EmbeddedMigration::portable(1, "accounts", include_str!("migrations/0001_accounts.sql")),
    EmbeddedMigration::portable(
        2,
        "sessions and provisioning",
        include_str!("migrations/0002_sessions_and_provisioning.sql"),
    ),
    EmbeddedMigration::portable(3, "invitations", include_str!("migrations/0003_invitations.sql")),
    EmbeddedMigration::portable(4, "two factor", include_str!("migrations/0004_two_factor.sql")),
    EmbeddedMigration::portable(5, "password resets", include_str!("migrations/0005_password_resets.sql")),
    EmbeddedMigration::portable(6, "rate limits", include_str!("migrations/0006_rate_limits.sql")),
    EmbeddedMigration::portable(
        7,
        "two factor policy in force",
        include_str!("migrations/0007_two_factor_policy_in_force.sql"),
    ),
    EmbeddedMigration::portable(8, "account name key", include_str!("migrations/0008_account_name_key.sql")),
    EmbeddedMigration::portable(
        9,
        "account request id unique",
        include_str!("migrations/0009_account_request_id_unique.sql"),
    ),
    EmbeddedMigration::portable(10, "totp secret key id", include_str!("migrations/0010_totp_secret_key_id.sql")),
    EmbeddedMigration::portable(
        11,
        "intent tenancy revision",
        include_str!("migrations/0011_intent_tenancy_revision.sql"),
    ),
    OUTBOX_MIGRATION,
    OUTBOX_PARKING_MIGRATION,
];
