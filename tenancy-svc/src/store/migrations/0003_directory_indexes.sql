-- Indexes for the user directory (ListTenantMembers) and the shadow copy at tenant creation.
-- Portable SQL (SQLite and PostgreSQL).

-- Every query that looks memberships up by tenant asks for direct members: a partial index on
-- those alone, carrying the columns the directory returns, answers it from the index (no table
-- seek per member on SQLite), and shadow memberships (most rows, written by the hundred at each
-- tenant creation) no longer maintain a by-tenant index at all.
-- (`kind` is listed too: older SQLite counts a column used only in the index's WHERE as not
-- covered.)
CREATE INDEX memberships_direct_by_tenant ON memberships (tenant_id, user_id, role, created_at, updated_at, kind)
    WHERE kind = 'direct';
DROP INDEX memberships_by_tenant;

-- The directory's default flag: one covering seek per member.
CREATE INDEX default_tenants_by_user_tenant ON default_tenants (user_id, tenant_id);
