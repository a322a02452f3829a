-- The tenant tree: exactly one admin tenancy (the MSP), clients under it, departments below.
-- Portable SQL (SQLite and PostgreSQL): ids are UUID text, times are unix microseconds.
CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    slug       TEXT NOT NULL UNIQUE,
    -- admin | client | department
    kind       TEXT NOT NULL,
    -- active | suspended | archived
    status     TEXT NOT NULL,
    parent_id  TEXT REFERENCES tenants (id),
    -- 0 for the admin tenancy, 1 for clients, 2+ for departments
    depth      BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX tenants_by_parent ON tenants (parent_id);

-- At most one admin tenancy.
CREATE UNIQUE INDEX tenants_one_admin ON tenants (kind) WHERE kind = 'admin';
