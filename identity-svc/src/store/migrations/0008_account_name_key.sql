-- The sort and search key of a display name, computed by the service (the databases' LOWER
-- differ beyond ASCII); filled for existing rows at start-up. Indexed with the id for keyset
-- pages of the user list.
ALTER TABLE accounts ADD COLUMN name_key TEXT;
CREATE INDEX accounts_by_name_key ON accounts (name_key, id);
