-- Retention: legal holds, and where the kept chain starts after purges.

CREATE TABLE audit_legal_holds (
    tenant_id TEXT PRIMARY KEY,
    reason    TEXT NOT NULL,
    set_by    TEXT NOT NULL,
    set_at    BIGINT NOT NULL
);

-- One row. Records at or below purged_through were purged (except held ones); anchor_hash is the
-- chain hash at purged_through, taken from a checkpoint when one covers it, so verification
-- resumes after it.
CREATE TABLE audit_retention (
    id             BIGINT PRIMARY KEY,
    purged_through BIGINT NOT NULL,
    anchor_hash    TEXT NOT NULL
);
INSERT INTO audit_retention (id, purged_through, anchor_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
