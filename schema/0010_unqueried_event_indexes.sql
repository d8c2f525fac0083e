-- Two indexes of tail_events that no query reads: the API answers from tail_logs and the
-- rollups, the dashboards read the rollups, and `dlq replay` looks stored messages up through
-- the primary key. Each cost a btree insert per stored invocation. The BRIN index on ts
-- stays: it costs next to nothing and keeps an ad hoc time-bounded scan cheap.
SET LOCAL lock_timeout = '30s';
DROP INDEX IF EXISTS tail_events_script_ts;
DROP INDEX IF EXISTS tail_events_outcome_ts;
