-- One account per CreateUser request_id, so concurrent retries cannot both create one. Accounts
-- made without a request_id keep NULL, which a unique index allows any number of times (SQLite
-- and PostgreSQL alike). Should older rows share a key, the oldest keeps it.
UPDATE accounts SET request_id = NULL
WHERE request_id IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM accounts older
    WHERE older.request_id = accounts.request_id
      AND (older.created_at < accounts.created_at
           OR (older.created_at = accounts.created_at AND older.id < accounts.id))
  );
CREATE UNIQUE INDEX accounts_by_request_id ON accounts (request_id);
