-- The OTLP invocations still awaiting their trace's root span: a Workers Observability logs
-- export says neither the outcome nor the CPU and wall time, which the traces export's root
-- span carries (pipeline/postgres/completion.py). The flush looks them up by trace id when
-- either half arrives, and a filled row leaves the index (it has a wall time), so each is
-- completed once. Partial: only OTLP rows without times are in it, and not an SDK's log
-- groups (`otel`), so Workers trace items, Logpush records and the logger's envelopes, nearly
-- every row, cost nothing more to store. `SET LOCAL lock_timeout` bounds the wait for the
-- writers' locks, as in 0015.
SET LOCAL lock_timeout = '30s';
CREATE INDEX tail_events_awaiting_root_span ON tail_events (trace_id)
    WHERE source = 'otlp' AND cpu_ms IS NULL AND wall_ms IS NULL AND event_type <> 'otel';
