-- Resource hierarchies (seed 001's channels), resource grants, and the fields overrides and
-- custom roles were missing. Portable SQL (SQLite and PostgreSQL); times are unix microseconds.
ALTER TABLE custom_roles ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE overrides ADD COLUMN note TEXT NOT NULL DEFAULT '';
ALTER TABLE overrides ADD COLUMN created_by TEXT NOT NULL DEFAULT '';

CREATE TABLE resources (
    tenant_id     TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    -- '' for a root
    parent_id     TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, resource_id)
);

-- A user's access to a resource and its descendants: a role or one permission ('' for the other).
CREATE TABLE resource_grants (
    grant_id    TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    role        TEXT NOT NULL,
    permission  TEXT NOT NULL,
    granted_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (user_id, tenant_id, resource_id, role, permission)
);
CREATE INDEX resource_grants_by_resource ON resource_grants (tenant_id, resource_id);
