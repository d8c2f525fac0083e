-- One alert per dedup key per cooldown window: the window is part of the key, so every
-- replica that sees the same condition in the same window lands on the same row.
ALTER TABLE critical_alerts ADD COLUMN window_start timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE critical_alerts ALTER COLUMN window_start DROP DEFAULT;
ALTER TABLE critical_alerts ADD CONSTRAINT critical_alerts_dedup UNIQUE (dedup_key, window_start);
