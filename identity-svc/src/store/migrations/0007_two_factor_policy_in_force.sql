-- When a 2FA policy's requirement takes effect, kept across edits (an edit that still demands
-- at least as much must not restart the grace period of a policy already in force).
ALTER TABLE two_factor_policies ADD COLUMN in_force_from BIGINT;
UPDATE two_factor_policies SET in_force_from = updated_at + grace_ms * 1000;
