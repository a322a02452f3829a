-- TOTP secrets are encrypted at rest: `secret` holds hex(nonce || ciphertext || tag) sealed with
-- the key of this id (TETHER_IDENTITY_TOTP_KEYS). NULL marks a plain-text secret written before
-- encryption; identity seals those at start-up.
ALTER TABLE totp ADD COLUMN secret_key_id TEXT;
