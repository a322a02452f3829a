-- authz-svc's own data: custom roles (built-in ones come from the role pack file) and
-- per-user overrides. Portable SQL (SQLite and PostgreSQL); times are unix microseconds.
CREATE TABLE custom_roles (
    name           TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    description    TEXT NOT NULL,
    -- all_tenants | assigned_tenants | own_tenant
    scope          TEXT NOT NULL,
    rank           BIGINT NOT NULL,
    assignable     BIGINT NOT NULL,
    msp_staff_only BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE custom_role_permissions (
    role_name  TEXT NOT NULL REFERENCES custom_roles (name) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    PRIMARY KEY (role_name, permission)
);

-- Grant or deny one permission to one user, everywhere ('' tenant) or in one tenant.
CREATE TABLE overrides (
    user_id    TEXT NOT NULL,
    permission TEXT NOT NULL,
    tenant_id  TEXT NOT NULL DEFAULT '',
    -- grant | deny
    effect     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, permission, tenant_id)
);
