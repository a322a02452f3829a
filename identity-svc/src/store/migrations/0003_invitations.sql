-- Invitations: a pending account plus a single-use link. Portable SQL.
CREATE TABLE invitations (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    email         TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    role          TEXT NOT NULL,
    is_msp_staff  BIGINT NOT NULL,
    -- pending | accepted | revoked (expiry is computed from expires_at)
    status        TEXT NOT NULL,
    invited_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_sent_at  BIGINT NOT NULL,
    send_count    BIGINT NOT NULL,
    accepted_at   BIGINT,
    request_id    TEXT
);
CREATE INDEX invitations_by_status ON invitations (status, created_at);

-- Every link ever issued, by SHA-256 of its token; a resend voids the previous one.
CREATE TABLE invitation_tokens (
    token_hash    TEXT PRIMARY KEY,
    invitation_id TEXT NOT NULL,
    voided        BIGINT NOT NULL DEFAULT 0
);
