-- An alert's state per rule and group (pipeline/alerts/state.py: normal, pending, firing,
-- resolving), moved by the conditions' evaluator (pipeline/alerts/evaluator.py) under an
-- advisory lock per rule, in the transaction that records the change and its notification
-- (critical_alerts, the outbox): two replicas never both fire or both resolve one alert, and
-- the state survives restarts and rebalances. A key with no row is normal.
SET LOCAL lock_timeout = '30s';
CREATE TABLE alert_states (
    rule        text        NOT NULL,
    group_key   text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('normal', 'pending', 'firing', 'resolving')),
    since       timestamptz NOT NULL,
    fired_at    timestamptz,
    value       double precision,
    memo        jsonb,      -- what a forecast keeps between rounds (pipeline/alerts/forecast.py)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, group_key)
);

-- Every change of state, kept: an alert's history (the dashboard's last 30 days of changes).
CREATE TABLE alert_changes (
    id          bigserial   PRIMARY KEY,
    rule        text        NOT NULL,
    group_key   text        NOT NULL,
    before      text        NOT NULL,
    after       text        NOT NULL,
    at          timestamptz NOT NULL,
    notify      text        CHECK (notify IN ('firing', 'resolved')),
    value       double precision
);
CREATE INDEX alert_changes_rule ON alert_changes (rule, group_key, at DESC);
CREATE INDEX alert_changes_at ON alert_changes (at DESC);

-- A change made while its rule and group were silenced is kept, and notifies no one.
ALTER TABLE alert_changes ADD COLUMN silenced boolean NOT NULL DEFAULT false;

-- Silences: a rule (and one group of it, or every group) notifies no one until `until`
-- (POST /api/alerts/silences). Its alerts still change state.
CREATE TABLE alert_silences (
    id          bigserial   PRIMARY KEY,
    rule        text        NOT NULL,
    group_key   text,
    until       timestamptz NOT NULL,
    comment     text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz
);
CREATE INDEX alert_silences_rule ON alert_silences (rule, until);

-- Acknowledgements (POST /api/alerts/{id}/ack): who took it, when.
ALTER TABLE critical_alerts ADD COLUMN acked_at timestamptz;
ALTER TABLE critical_alerts ADD COLUMN acked_by text;

-- What priced calls (LLM usage) cost per hour and script: the cost condition reads a window of
-- hours (api_calls_daily keeps the day's by model). Merged by each flush like the other rollups.
CREATE TABLE cost_hourly (
    hour      timestamptz NOT NULL,
    script    text        NOT NULL,
    cost_usd  numeric     NOT NULL,
    PRIMARY KEY (hour, script)
);
