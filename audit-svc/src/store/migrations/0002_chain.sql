-- The chained trail. 0001's audit_events never held a row (Ingest answered UNIMPLEMENTED until
-- this migration's release), so it is replaced rather than altered. Portable SQL (SQLite and
-- PostgreSQL); times are unix microseconds. Every field of a stored event is a column, so the
-- hash covers exactly what readers see (see domain::chain).

DROP TABLE audit_events;

-- The last stored record. Its row lock serialises writers across replicas, which is how
-- sequence numbers stay gap-free and the chain never forks.
CREATE TABLE audit_chain_head (
    id   BIGINT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_events (
    seq                BIGINT PRIMARY KEY,
    -- The producer's idempotency key: an event delivered twice is stored once.
    event_id           TEXT NOT NULL UNIQUE,
    occurred_at        BIGINT NOT NULL,
    received_at        BIGINT NOT NULL,
    source_service     TEXT NOT NULL,
    actor_kind         BIGINT NOT NULL,
    actor_user_id      TEXT NOT NULL,
    actor_name         TEXT NOT NULL,
    actor_email        TEXT NOT NULL,
    actor_is_msp_staff BIGINT NOT NULL,
    actor_session_id   TEXT NOT NULL,
    actor_system_name  TEXT NOT NULL,
    action             TEXT NOT NULL,
    resource_type      TEXT NOT NULL,
    resource_id        TEXT NOT NULL,
    tenant_id          TEXT NOT NULL,
    client_ip          TEXT NOT NULL,
    user_agent         TEXT NOT NULL,
    -- tether.common.v1.AuditOutcome
    outcome            BIGINT NOT NULL,
    reason             TEXT NOT NULL,
    trace_id           TEXT NOT NULL,
    span_id            TEXT NOT NULL,
    before_json        TEXT NOT NULL,
    after_json         TEXT NOT NULL,
    metadata_json      TEXT NOT NULL,
    -- Lower-cased action, resource type and id, actor name and email, client address: what
    -- free-text search looks in (derived, not hashed).
    search_text        TEXT NOT NULL,
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL
);

-- Newest first over a time range (the audit page, stats windows, exports).
CREATE INDEX audit_events_by_time ON audit_events (occurred_at, seq);
-- The page's action and resource dropdowns, a user's trail, a tenant's trail.
CREATE INDEX audit_events_by_action ON audit_events (action, occurred_at);
CREATE INDEX audit_events_by_resource ON audit_events (resource_type, occurred_at);
CREATE INDEX audit_events_by_actor ON audit_events (actor_user_id, occurred_at);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, occurred_at);
-- An SRE's trace id to every event of that request.
CREATE INDEX audit_events_by_trace ON audit_events (trace_id);
-- VerifyIntegrity by receive time.
CREATE INDEX audit_events_by_received ON audit_events (received_at);

-- Signed statements of the chain's state (domain::checkpoint).
CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    chain_hash TEXT NOT NULL,
    signed_at  BIGINT NOT NULL,
    note       TEXT NOT NULL
);
