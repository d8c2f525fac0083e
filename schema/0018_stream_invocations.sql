-- Streaming Tail Workers (pipeline/formats/tail_stream.py, pipeline/transform/stream.py).
--
-- An invocation told in streamed events arrives in many messages over up to hours; its lines
-- are stored as they come, its `tail_events` row when all its events up to the outcome are in.
-- Meanwhile what is known of it waits here, written in the flush's transaction with the
-- offsets, so a restart or a rebalance loses none of it. One row per invocation still open
-- (and a tombstone, `closed`, for one closed at its timeout, so that a late event adds no
-- second row), on the partition its messages are keyed to: only that partition's owner, in
-- the flush that compares and sets its offset, touches it. Small: a row lives from an
-- invocation's first flush to its outcome, or to TAILPIPE_STREAM_TIMEOUT without an event.
SET LOCAL lock_timeout = '30s';
CREATE TABLE stream_invocations (
    invocation_id    text        PRIMARY KEY,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    state            jsonb       NOT NULL,
    closed           boolean     NOT NULL DEFAULT false,
    touched_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_invocations_idle ON stream_invocations (topic, kafka_partition, touched_at);

-- A streamed invocation's lines name it, since they come in other messages than its row.
-- NULL for every other source; partial, so their rows cost nothing more.
ALTER TABLE tail_logs ADD COLUMN invocation_id text;
CREATE INDEX tail_logs_invocation ON tail_logs (invocation_id, ts) WHERE invocation_id IS NOT NULL;

-- A streamed invocation's row, found by its id: from one of its lines (`/api/logs/recent`).
CREATE INDEX tail_events_stream_invocation ON tail_events ((extra->>'invocationId'), ts)
    WHERE source = 'stream';
