-- An invocation whose producer named no script (`scriptName: null`, Logpush's "") was stored
-- with script ''. Alert summaries then began with ": ", and their links (`?script=`) were
-- refused. It is now stored as '(unnamed)' everywhere (pipeline.records.UNNAMED); this moves
-- the rows stored before. No row can have '(unnamed)' yet, so no rollup key collides.
UPDATE tail_events SET script = '(unnamed)' WHERE script = '';
UPDATE tail_logs SET script = '(unnamed)' WHERE script = '';
UPDATE tail_metrics_hourly SET script = '(unnamed)' WHERE script = '';
UPDATE scan_activity_hourly SET script = '(unnamed)' WHERE script = '';
UPDATE error_summary SET scripts = array_replace(scripts, '', '(unnamed)')
WHERE '' = ANY (scripts);
UPDATE critical_alerts
SET script = '(unnamed)',
    summary = CASE WHEN summary LIKE ': %' THEN '(unnamed)' || summary ELSE summary END,
    details = CASE
        WHEN details ? 'query' THEN jsonb_set(details, '{query}',
            to_jsonb(regexp_replace(details->>'query', 'script=(&|$)', 'script=%28unnamed%29\1')))
        ELSE details END
WHERE script = '';
