-- Where each Kafka partition's stored data ends. The consumer advances `next_offset` in the
-- same transaction as the rows it covers (compare-and-set on the previous value), so this
-- table, not Kafka's group offsets, is the source of truth for exactly-once ingest.
CREATE TABLE pipeline_offsets (
    topic        text    NOT NULL,
    partition    integer NOT NULL CHECK (partition >= 0),
    next_offset  bigint  NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
