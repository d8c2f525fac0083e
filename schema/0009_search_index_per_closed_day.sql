-- The log search index moves from the whole of tail_logs to each day that has ended
-- (pipeline/postgres/search_index.py): kept up to date row by row, the trigram GIN index nearly
-- tripled PostgreSQL's CPU per stored log row and halved ingest; built once per finished day
-- it costs about a third of that, off the ingest path. Dropping the partitioned index drops
-- every partition's; `tailpipe migrate` then builds the finished days' own indexes, and
-- `tailpipe retention` (daily) each new one. The API's queries do not
-- change: the planner uses each partition's index where it has one.
SET LOCAL lock_timeout = '30s';
DROP INDEX IF EXISTS tail_logs_message_trgm;
