-- TOTP second factor, recovery codes and 2FA policies. Portable SQL.
CREATE TABLE totp (
    account_id     TEXT PRIMARY KEY,
    -- base32 shared secret (needed in clear to compute codes)
    secret         TEXT NOT NULL,
    confirmed      BIGINT NOT NULL DEFAULT 0,
    -- an unconfirmed enrollment lapses at this time
    expires_at     BIGINT NOT NULL,
    -- the last accepted time step: a code is accepted once
    last_used_step BIGINT
);

CREATE TABLE recovery_codes (
    account_id TEXT NOT NULL,
    -- SHA-256 of the normalised code
    code_hash  TEXT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (account_id, code_hash)
);

-- One row per scope: '' is platform-wide, otherwise a tenant id.
CREATE TABLE two_factor_policies (
    scope             TEXT PRIMARY KEY,
    require_all       BIGINT NOT NULL,
    required_roles    TEXT NOT NULL,
    require_msp_staff BIGINT NOT NULL,
    grace_ms          BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    updated_by        TEXT NOT NULL
);
