-- Memberships, technician assignments, ownership; the tenant columns the tree needs.
-- Portable SQL (SQLite and PostgreSQL): ids are UUID text, times are unix microseconds.

-- The client at the top of a tenant's branch (a client: itself; NULL for the admin tenancy).
ALTER TABLE tenants ADD COLUMN client_id TEXT;
-- Materialised path of ids from the root, '/<admin>/<client>/<dept>/': subtrees by prefix,
-- ancestors by splitting.
ALTER TABLE tenants ADD COLUMN path TEXT NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
-- CreateTenant's idempotency key.
ALTER TABLE tenants ADD COLUMN request_id TEXT;
UPDATE tenants SET path = '/' || id || '/', updated_at = created_at WHERE kind = 'admin';
CREATE UNIQUE INDEX tenants_by_request ON tenants (request_id);
CREATE INDEX tenants_by_parent_name ON tenants (parent_id, name, id);
CREATE INDEX tenants_by_path ON tenants (path);

-- (user, tenant, kind) -> role. kind: direct | shadow | assigned.
CREATE TABLE memberships (
    user_id    TEXT NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    kind       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, tenant_id, kind)
);
-- The directory (direct members of a tenant by user id) and the shadow copy at tenant creation.
CREATE INDEX memberships_by_tenant ON memberships (tenant_id, kind, user_id);

-- Each user's default (landing) tenant.
CREATE TABLE default_tenants (
    user_id   TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id)
);

-- Client tenants assigned to MSP technicians.
CREATE TABLE technician_assignments (
    technician_user_id  TEXT NOT NULL,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    assigned_by_user_id TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (technician_user_id, tenant_id)
);
CREATE INDEX technician_assignments_by_tenant ON technician_assignments (tenant_id, technician_user_id);

-- The MSP's owner: one row (id = 1) once the owner is known.
CREATE TABLE ownership (
    id                     BIGINT PRIMARY KEY,
    owner_user_id          TEXT NOT NULL,
    since                  BIGINT NOT NULL,
    previous_owner_user_id TEXT NOT NULL
);
