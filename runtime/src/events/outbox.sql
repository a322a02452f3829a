-- The outbox (see tether_runtime::events). Portable SQL for SQLite and PostgreSQL.

-- One row: the latest revision. Writers increment it first in their transaction.
CREATE TABLE revision_counter (
    id       BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO revision_counter (id, revision) VALUES (1, 0);

-- The change stream: every change of every revision, in order, as an encoded protobuf message.
CREATE TABLE change_log (
    revision     BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    payload      TEXT NOT NULL,
    committed_at BIGINT NOT NULL,
    PRIMARY KEY (revision, seq)
);

-- Audit events waiting to be delivered to audit-svc (at least once; audit-svc applies each
-- event_id once).
CREATE TABLE audit_outbox (
    event_id        TEXT PRIMARY KEY,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX audit_outbox_pending ON audit_outbox (delivered_at, next_attempt_at);
