-- PostgreSQL: the records table is partitioned by receive time, a month per partition
-- (store::partitions creates them ahead of time), so retention drops whole months and a search
-- from a start time skips the months received before it. Receive time, not occurrence time: it
-- grows with the sequence, so a month of expired records is one contiguous stretch of the
-- chain. Free-text search gets a trigram index (pg_trgm, a trusted extension: the database
-- owner may create it).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Event ids stored, each with its record: the idempotency check of Ingest. A table of its own
-- because a partitioned table (PostgreSQL) can only enforce uniqueness that includes its
-- partition key; SQLite keeps the same layout so both answer the same way.
CREATE TABLE audit_event_ids (
    event_id TEXT PRIMARY KEY,
    seq      BIGINT NOT NULL
);
-- Retention forgets the ids of purged records.
CREATE INDEX audit_event_ids_by_seq ON audit_event_ids (seq);
INSERT INTO audit_event_ids (event_id, seq) SELECT event_id, seq FROM audit_events;

ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
ALTER INDEX audit_events_pkey RENAME TO audit_events_unpartitioned_pkey;
DROP INDEX audit_events_by_time, audit_events_by_action, audit_events_by_resource, audit_events_by_actor,
    audit_events_by_tenant, audit_events_by_trace, audit_events_by_received, audit_events_for_stats;

CREATE TABLE audit_events (
    seq                BIGINT NOT NULL,
    -- The producer's idempotency key (unique through audit_event_ids).
    event_id           TEXT NOT NULL,
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
    hash               TEXT NOT NULL,
    PRIMARY KEY (seq, received_at)
) PARTITION BY RANGE (received_at);
-- Records received outside every monthly partition (before the first one existed).
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
INSERT INTO audit_events SELECT * FROM audit_events_unpartitioned;
DROP TABLE audit_events_unpartitioned;

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
-- GetStats's covering index (migration 4).
CREATE INDEX audit_events_for_stats ON audit_events (occurred_at, action, outcome, actor_user_id);
-- Free text: the page's search box matches a substring anywhere in search_text.
CREATE INDEX audit_events_search_text ON audit_events USING gin (search_text gin_trgm_ops);
