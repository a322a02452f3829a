-- Fixed-window request counters (e.g. password-reset requests per client address). Portable SQL.
CREATE TABLE rate_limits (
    bucket       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    -- start of the current window, unix micros
    window_start BIGINT NOT NULL,
    hits         BIGINT NOT NULL,
    PRIMARY KEY (bucket, subject)
);
