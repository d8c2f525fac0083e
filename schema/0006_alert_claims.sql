-- The outbox claims alerts for a short lease instead of holding row locks while it talks to
-- Kafka: a flush merging into the same alert row must never wait on a publish.
ALTER TABLE critical_alerts ADD COLUMN claimed_until timestamptz;
