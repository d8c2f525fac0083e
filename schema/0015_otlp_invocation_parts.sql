-- The parts of one OTLP invocation told in several messages (a Workers Observability logs
-- export that cut an invocation's records in two): `/api/invocations/{id}` finds them by
-- `faas.invocation_id` within a day of the one asked for (pipeline/api/invocations.py).
-- Partial: only OTLP rows are in it, so Workers trace items, Logpush records and the logger's
-- envelopes, nearly every row, cost nothing more to store. On a partitioned table the index is
-- built on every partition; `SET LOCAL lock_timeout` bounds the wait for the writers' locks.
SET LOCAL lock_timeout = '30s';
CREATE INDEX tail_events_otlp_invocation ON tail_events ((extra->>'faas.invocation_id'), ts)
    WHERE source = 'otlp';
