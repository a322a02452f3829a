-- Quotas count a tenant's overrides on every new one (resources and resource grants are
-- counted through their primary key and resource_grants_by_resource index).
CREATE INDEX overrides_by_tenant ON overrides (tenant_id);
