-- Dead letters now live in the dead-letter store (S3 or a directory), one gzip'd JSON-lines
-- object per partition and flush; this table is their index, written in the transaction that
-- advances the offsets the object covers. It replaces the interim table of raw messages.
DROP TABLE dead_letters;

CREATE TABLE dead_letters (
    object_key       text        PRIMARY KEY,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    first_offset     bigint      NOT NULL,  -- the offset range the object covers, inclusive
    last_offset      bigint      NOT NULL,
    messages         integer     NOT NULL,  -- dead letters in the object
    offsets          bigint[]    NOT NULL,  -- their offsets
    error_classes    text[]      NOT NULL,  -- distinct, sorted
    error            text        NOT NULL,  -- the first error, secrets redacted
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Replay: offsets stored by a replay so far; the object is done when all are.
    replayed_offsets bigint[]    NOT NULL DEFAULT '{}',
    replayed_at      timestamptz,
    replay_error     text,
    last_replay_at   timestamptz,
    CHECK (first_offset <= last_offset),
    CHECK (messages = cardinality(offsets))
);
CREATE INDEX dead_letters_created ON dead_letters (created_at);
CREATE INDEX dead_letters_pending ON dead_letters (created_at) WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_origin ON dead_letters (topic, kafka_partition, first_offset);
