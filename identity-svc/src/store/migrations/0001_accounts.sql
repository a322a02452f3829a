-- Accounts: who a person is and how they prove it. Portable SQL (SQLite and PostgreSQL):
-- ids are UUID text, times are unix microseconds, flags are 0/1.
CREATE TABLE accounts (
    id                   TEXT PRIMARY KEY,
    -- NULL once the account is deleted: the tombstone keeps id and display name only.
    email                TEXT,
    email_normalized     TEXT UNIQUE,
    display_name         TEXT NOT NULL,
    -- pending | active | suspended | deleted
    status               TEXT NOT NULL,
    is_msp_staff         BIGINT NOT NULL DEFAULT 0,
    primary_tenant_id    TEXT,
    job_title            TEXT,
    notes                TEXT,
    password_hash        TEXT,
    must_change_password BIGINT NOT NULL DEFAULT 0,
    totp_enabled         BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    joined_at            BIGINT,
    last_login_at        BIGINT
);

CREATE INDEX accounts_by_tenant ON accounts (primary_tenant_id);

-- One-time start-up facts, such as which account is the bootstrap owner.
CREATE TABLE bootstrap (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
