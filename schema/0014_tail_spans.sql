-- OTLP spans (`POST /v1/traces`: Workers Observability's traces destination, any OTel SDK),
-- one row per span, and the hourly rollup per operation that the performance view reads.
--
-- tail_spans is day-partitioned by the span's start like the other raw tables, so retention
-- drops it by the day with them (pipeline/postgres/day_partitions.py). Times keep microseconds
-- (a kv_get often takes less than a millisecond): ts is the start, duration_us the length.
-- Ids are bytea as in 0012. kind and status are OTLP's enum numbers (SpanKind: 0 unspecified,
-- 1 internal, 2 server, 3 client, 4 producer, 5 consumer; Status: 0 unset, 1 ok, 2 error).
-- attributes, resource (with the scope as otel.scope.name/version), events and links are kept
-- whole, redacted: Cloudflare's attribute names may still change during its beta.
--
-- Indexes, by the queries that use them: the trace's spans (GET /api/traces/{id}) by
-- trace_id; a day's spans by time (brin, as tail_events). The primary key is the Kafka origin,
-- which makes a replayed message's rows a unique violation rather than a second copy.
SET LOCAL lock_timeout = '30s';

CREATE TABLE tail_spans (
    ts               timestamptz NOT NULL,
    script           text        NOT NULL,
    trace_id         bytea       NOT NULL,
    span_id          bytea       NOT NULL,
    parent_span_id   bytea,
    name             text        NOT NULL,
    kind             smallint    NOT NULL,
    duration_us      bigint      NOT NULL,
    status           smallint    NOT NULL,
    status_message   text,
    invocation_id    text,
    attributes       jsonb,
    resource         jsonb,
    events           jsonb,
    links            jsonb,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    item             integer     NOT NULL,
    PRIMARY KEY (kafka_offset, kafka_partition, item, topic, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX tail_spans_trace ON tail_spans (trace_id);
CREATE INDEX tail_spans_ts ON tail_spans USING brin (ts);

-- Per hour x script x operation: the span's name, and for a client call (kind 3, or
-- Cloudflare's `fetch`) the host it called, so `fetch api.github.com` and `fetch
-- api.openai.com` are two operations. duration_sketch is the latency sketch of 0004, over
-- milliseconds (pipeline/transform/sketch.py), merged with counts_add.
CREATE TABLE span_operations_hourly (
    hour             timestamptz NOT NULL,
    script           text        NOT NULL,
    operation        text        NOT NULL,
    spans            bigint      NOT NULL,
    errors           bigint      NOT NULL,
    duration_us_sum  bigint      NOT NULL,
    duration_us_max  bigint      NOT NULL,
    duration_sketch  jsonb       NOT NULL,
    PRIMARY KEY (hour, script, operation)
);
