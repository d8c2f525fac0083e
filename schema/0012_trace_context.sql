-- The W3C trace context of each invocation, and each log line's link to its invocation.
--
-- trace_id (16 bytes) and span_id (8 bytes) are bytea, not hex text or uuid: OTLP carries them
-- as 16 and 8 bytes (hex only in its JSON mapping), bytea holds both sizes at half the bytes of
-- hex text, with no case to normalise, and `encode(trace_id, 'hex')` gives the W3C form back
-- (uuid fits only the trace id, and prints dashes). NULL where the producer sent none: Workers
-- trace items and Logpush records today.
--
-- tail_logs.invocation_ts is the ts of the line's invocation (its tail_events row): with the
-- origin (topic, kafka_partition, kafka_offset, item) it is that row's primary key, so a line
-- finds its request (method, URL, status, request id) with one index probe in one day
-- partition at query time, rather than a copy of them on every line. NULL for lines stored
-- before this migration.
--
-- Nullable columns without a default: adding them rewrites nothing and costs a stored row
-- only its null bitmap until a value is there.
SET LOCAL lock_timeout = '30s';
ALTER TABLE tail_events
    ADD COLUMN trace_id bytea,
    ADD COLUMN span_id bytea;
ALTER TABLE tail_logs
    ADD COLUMN trace_id bytea,
    ADD COLUMN span_id bytea,
    ADD COLUMN invocation_ts timestamptz;
