-- GetStats over a window reads only the time, action, outcome and actor of each event: with
-- them in one index, a window's counts come from the index alone instead of one table row per
-- event (a 24-hour window holds hundreds of thousands). Portable SQL (SQLite and PostgreSQL).
CREATE INDEX audit_events_for_stats ON audit_events (occurred_at, action, outcome, actor_user_id);
