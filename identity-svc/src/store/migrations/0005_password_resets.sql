-- Password-reset links: single use, stored as SHA-256; a newer link voids older ones.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    voided     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX password_resets_by_account ON password_resets (account_id);
