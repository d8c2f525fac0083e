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
