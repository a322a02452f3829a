-- The audit trail: append-only, each row chained to the previous one by hash so tampering is
-- detectable. Portable SQL (SQLite and PostgreSQL); times are unix microseconds.
CREATE TABLE audit_events (
    seq            BIGINT PRIMARY KEY,
    -- The producer's idempotency key: an event delivered twice is stored once.
    event_id       TEXT NOT NULL UNIQUE,
    occurred_at    BIGINT NOT NULL,
    received_at    BIGINT NOT NULL,
    source_service TEXT NOT NULL,
    actor_user_id  TEXT,
    actor_name     TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    tenant_id      TEXT,
    client_ip      TEXT,
    -- success | failure | denied
    outcome        TEXT NOT NULL,
    reason         TEXT,
    trace_id       TEXT,
    before_json    TEXT,
    after_json     TEXT,
    metadata_json  TEXT,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);

CREATE INDEX audit_events_by_time ON audit_events (occurred_at);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, occurred_at);
CREATE INDEX audit_events_by_actor ON audit_events (actor_user_id, occurred_at);
