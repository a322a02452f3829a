-- Audit events the relay set aside (see tether_runtime::events::relay): audit-svc rejected them
-- as invalid, or their payload cannot be read. They are kept, never resent, until a person looks.
ALTER TABLE audit_outbox ADD COLUMN parked_at BIGINT;
ALTER TABLE audit_outbox ADD COLUMN parked_reason TEXT;

-- The relay's queue: pending events, oldest first.
CREATE INDEX audit_outbox_queue ON audit_outbox (created_at, event_id)
    WHERE delivered_at IS NULL AND parked_at IS NULL;
