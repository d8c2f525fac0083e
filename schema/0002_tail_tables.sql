-- Raw rows and rollups of the ingest pipeline. Raw tables are range-partitioned by day on
-- their event time (partitions are created ahead of need by the consumer and dropped whole by
-- `tailpipe retention`); rollups are small and merged with INSERT ... ON CONFLICT.

-- In public, shared by every schema on the server (each test uses its own schema).
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

-- One row per invocation. (topic, partition, offset, item) is where it came from in Kafka.
CREATE TABLE tail_events (
    ts                  timestamptz NOT NULL,
    script              text        NOT NULL,
    event_type          text        NOT NULL,
    outcome             text        NOT NULL,
    method              text,
    url                 text,
    status              smallint,
    cpu_ms              integer,
    wall_ms             integer,
    log_count           integer     NOT NULL,
    exception_count     integer     NOT NULL,
    truncated           boolean     NOT NULL,
    script_version      text,
    entrypoint          text,
    dispatch_namespace  text,
    script_tags         text[],
    source              text        NOT NULL,
    extra               jsonb,
    topic               text        NOT NULL,
    kafka_partition     integer     NOT NULL,
    kafka_offset        bigint      NOT NULL,
    item                integer     NOT NULL,
    PRIMARY KEY (kafka_offset, kafka_partition, item, topic, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX tail_events_ts ON tail_events USING brin (ts);
CREATE INDEX tail_events_script_ts ON tail_events (script, ts DESC);
CREATE INDEX tail_events_outcome_ts ON tail_events (outcome, ts DESC) WHERE outcome <> 'ok';

-- One row per console log line and per exception (level 'exception'), with the context of
-- its invocation copied in so that log queries need no join.
CREATE TABLE tail_logs (
    ts               timestamptz NOT NULL,
    script           text        NOT NULL,
    event_type       text        NOT NULL,
    outcome          text        NOT NULL,
    level            text        NOT NULL,
    message          text        NOT NULL,
    data             jsonb,
    kind             text,
    exception_name   text,
    stack            text,
    fingerprint      text,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    item             integer     NOT NULL,
    seq              integer     NOT NULL
) PARTITION BY RANGE (ts);

CREATE INDEX tail_logs_ts ON tail_logs (ts DESC);
CREATE INDEX tail_logs_script_ts ON tail_logs (script, ts DESC);
CREATE INDEX tail_logs_level_ts ON tail_logs (level, ts DESC);
CREATE INDEX tail_logs_message_trgm ON tail_logs USING gin (message public.gin_trgm_ops);

-- {"key": count} maps: outcome and level counts, and DDSketches ({"bucket": count, "z": zeros}).
-- Merging adds counts key by key, so rollup rows and spans of hours merge exactly.
CREATE FUNCTION counts_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (
        SELECT key, sum(value::bigint) AS total
        FROM (
            SELECT * FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT * FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) AS both_maps
        GROUP BY key
    ) AS merged
$$;

CREATE AGGREGATE counts_sum(jsonb) (
    SFUNC = counts_add,
    STYPE = jsonb,
    INITCOND = '{}'
);

-- Per hour x script x event type. `outcomes` and `levels` are {"name": count} maps.
CREATE TABLE tail_metrics_hourly (
    hour          timestamptz NOT NULL,
    script        text        NOT NULL,
    event_type    text        NOT NULL,
    requests      bigint      NOT NULL,
    errors        bigint      NOT NULL,
    outcomes      jsonb       NOT NULL,
    levels        jsonb       NOT NULL,
    wall_ms_sum   bigint      NOT NULL,
    wall_ms_max   integer     NOT NULL,
    cpu_ms_sum    bigint      NOT NULL,
    cpu_ms_max    integer     NOT NULL,
    wall_sketch   jsonb       NOT NULL,
    cpu_sketch    jsonb       NOT NULL,
    PRIMARY KEY (hour, script, event_type)
);

CREATE TABLE api_usage_daily (
    day                   date    NOT NULL,
    provider              text    NOT NULL,
    model                 text    NOT NULL,
    calls                 bigint  NOT NULL,
    failures              bigint  NOT NULL,
    rate_limited          bigint  NOT NULL,
    rate_limit_remaining  integer,
    rate_limit_seen_at    timestamptz,
    tokens_in             bigint  NOT NULL,
    tokens_out            bigint  NOT NULL,
    cost_usd              numeric(18, 6),
    unpriced_calls        bigint  NOT NULL,
    PRIMARY KEY (day, provider, model)
);

CREATE TABLE error_summary (
    fingerprint     text        PRIMARY KEY,
    name            text        NOT NULL,
    template        text        NOT NULL,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    occurrences     bigint      NOT NULL,
    scripts         text[]      NOT NULL,
    sample_message  text        NOT NULL,
    sample_stack    text,
    status          text        NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'resolved', 'ignored')),
    resolved_at     timestamptz,
    regressions     integer     NOT NULL DEFAULT 0,
    last_regression timestamptz
);

CREATE INDEX error_summary_last_seen ON error_summary (last_seen DESC);

CREATE TABLE scan_activity_hourly (
    hour          timestamptz NOT NULL,
    script        text        NOT NULL,
    started       bigint      NOT NULL,
    completed     bigint      NOT NULL,
    failed        bigint      NOT NULL,
    repositories  text[]      NOT NULL,
    files         bigint      NOT NULL,
    duration_ms_sum bigint    NOT NULL,
    duration_ms_max integer   NOT NULL,
    PRIMARY KEY (hour, script)
);

-- Interim home of undecodable messages (the dead-letter store replaces it later).
CREATE TABLE dead_letters (
    id               bigserial   PRIMARY KEY,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_timestamp  timestamptz,
    key              bytea,
    value            bytea       NOT NULL,
    error_class      text        NOT NULL,
    error            text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
