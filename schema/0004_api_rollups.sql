-- What the query API reads, so that no answer scans raw rows for a span of hours.

-- Totals in tail_metrics_hourly: event_type '*' sums a script's event types, and script '*'
-- with event_type '*' sums every script. Written by each flush beside the detailed rows, so
-- a span of 720 hours is 720 rows and 720 sketches to merge, whatever the number of scripts.
-- (Script names are Worker names, which cannot be '*'.)
INSERT INTO tail_metrics_hourly
SELECT hour, script, '*', sum(requests), sum(errors), counts_sum(outcomes), counts_sum(levels),
       sum(wall_ms_sum), max(wall_ms_max), sum(cpu_ms_sum), max(cpu_ms_max),
       counts_sum(wall_sketch), counts_sum(cpu_sketch)
FROM tail_metrics_hourly WHERE event_type <> '*' GROUP BY hour, script;
INSERT INTO tail_metrics_hourly
SELECT hour, '*', '*', sum(requests), sum(errors), counts_sum(outcomes), counts_sum(levels),
       sum(wall_ms_sum), max(wall_ms_max), sum(cpu_ms_sum), max(cpu_ms_max),
       counts_sum(wall_sketch), counts_sum(cpu_sketch)
FROM tail_metrics_hourly WHERE script <> '*' AND event_type = '*' GROUP BY hour;

-- Occurrences of each error fingerprint per hour: the trend of GET /api/logs/errors.
CREATE TABLE error_hourly (
    hour         timestamptz NOT NULL,
    fingerprint  text        NOT NULL,
    occurrences  bigint      NOT NULL,
    PRIMARY KEY (hour, fingerprint)
);
INSERT INTO error_hourly
SELECT date_trunc('hour', ts), fingerprint, count(*)
FROM tail_logs WHERE level = 'exception' AND fingerprint IS NOT NULL GROUP BY 1, 2;
CREATE INDEX error_hourly_fingerprint ON error_hourly (fingerprint, hour);

-- Critical alerts, written by the alert rules in the flush transaction (an outbox) and read by
-- GET /api/logs/critical-alerts.
CREATE TABLE critical_alerts (
    id            uuid        PRIMARY KEY,
    rule          text        NOT NULL,
    severity      text        NOT NULL CHECK (severity IN ('critical', 'warning')),
    script        text,
    dedup_key     text        NOT NULL,
    first_at      timestamptz NOT NULL,
    last_at       timestamptz NOT NULL,
    occurrences   bigint      NOT NULL DEFAULT 1,
    summary       text        NOT NULL,
    details       jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX critical_alerts_last_at ON critical_alerts (last_at DESC);
CREATE INDEX critical_alerts_unpublished ON critical_alerts (created_at) WHERE published_at IS NULL;
