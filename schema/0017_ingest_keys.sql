-- The identity of every invocation and span stored, so that a sender's retry stores nothing
-- new (pipeline/transform/dedup.py says what an identity is; pipeline/postgres/dedup.py how
-- the flush claims them, in its transaction with the rows and the offsets).
--
-- (ts, digest): the event time and a 64-bit BLAKE2b digest, 16 bytes, no payload. The primary
-- key on both is the check: a retry has its first copy's event time, so it meets it in the
-- same day partition. Day-partitioned like the raw tables (the replicas create the days ahead
-- of need), so `tailpipe retention` ends the window by dropping whole days older than
-- TAILPIPE_DEDUP_WINDOW (24 h by default), with no deletes to vacuum. The index grows at its
-- right edge, since event times mostly increase, and its hot end stays in memory.
SET LOCAL lock_timeout = '30s';
CREATE TABLE ingest_keys (
    ts      timestamptz NOT NULL,
    digest  bigint      NOT NULL,
    PRIMARY KEY (ts, digest)
) PARTITION BY RANGE (ts);
