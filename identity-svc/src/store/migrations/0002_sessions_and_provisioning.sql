-- Sessions, password history, brute-force counters, and the membership intents that identity
-- delivers to tenancy-svc (its outbox for memberships). Portable SQL (SQLite and PostgreSQL).

-- 0 while the account's membership has not yet been acknowledged by tenancy-svc: such an
-- account cannot log in, so a user never works without their membership.
ALTER TABLE accounts ADD COLUMN provisioned BIGINT NOT NULL DEFAULT 1;
ALTER TABLE accounts ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN deleted_at BIGINT;
-- The idempotency key of the CreateUser call that made the account, if any.
ALTER TABLE accounts ADD COLUMN request_id TEXT;
CREATE INDEX accounts_by_status ON accounts (status);

CREATE TABLE password_history (
    account_id    TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX password_history_by_account ON password_history (account_id, created_at);

CREATE TABLE sessions (
    id                     TEXT PRIMARY KEY,
    -- SHA-256 of the opaque token, hex; the token itself is never stored.
    token_hash             TEXT NOT NULL UNIQUE,
    account_id             TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    last_seen_at           BIGINT NOT NULL,
    expires_at             BIGINT NOT NULL,
    client_ip              TEXT NOT NULL,
    user_agent             TEXT NOT NULL,
    second_factor_verified BIGINT NOT NULL DEFAULT 0,
    revoked_at             BIGINT
);
CREATE INDEX sessions_by_account ON sessions (account_id, revoked_at);

-- Bumped in the same transaction as every early end of a session (logout, revoke,
-- deactivation, deletion, password reset). Authenticate caches answer only while it is
-- unchanged, so a revocation on any replica is seen by every replica's next call.
CREATE TABLE auth_generation (
    id         BIGINT PRIMARY KEY,
    generation BIGINT NOT NULL
);
INSERT INTO auth_generation (id, generation) VALUES (1, 0);

-- Single-use tokens of the steps of a login (password change required).
CREATE TABLE login_steps (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    client_ip  TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

-- Brute-force counters: kind 'account' (subject = account id) or 'ip' (subject = address).
CREATE TABLE login_failures (
    kind            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    locked_until    BIGINT,
    PRIMARY KEY (kind, subject)
);

-- Memberships identity owes tenancy-svc, delivered by the relay until acknowledged.
-- op: 'add' (tenant_id may be empty = the admin tenancy), 'clear' (remove every direct
-- membership), 'own' (bootstrap: TransferOwnership to the account).
CREATE TABLE membership_intents (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    op              TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    role            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    delivered_at    BIGINT
);
CREATE INDEX membership_intents_pending ON membership_intents (delivered_at, next_attempt_at);
