"""Rollups into PostgreSQL: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE` per
rollup table, the last step of a flush's transaction.

Rows are sorted by key, and the tables are merged in one fixed order (tail_metrics_hourly,
api_calls_daily, rate_limit_readings_daily, error_summary, error_hourly, scan_activity_hourly,
span_operations_hourly, then critical_alerts), so replicas merging the same rows lock them in
the same order and never deadlock. `tail_metrics_hourly` also gets, per hour, the totals of
each script and of every script (`Rollups.with_totals`), which the API reads for spans of hours.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from pipeline.alerts import windows
from pipeline.alerts.detect import Candidates, note
from pipeline.alerts.rules import Rules
from pipeline.transform.batch import Batch
from pipeline.transform.rollup import HOUR_MS, Rollups

_HOURLY = """
INSERT INTO tail_metrics_hourly AS m
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::jsonb[], $7::jsonb[], $8::bigint[], $9::int[], $10::bigint[],
                     $11::int[], $12::jsonb[], $13::jsonb[])
ORDER BY 1, 2, 3
ON CONFLICT (hour, script, event_type) DO UPDATE SET
    requests = m.requests + excluded.requests,
    errors = m.errors + excluded.errors,
    outcomes = counts_add(m.outcomes, excluded.outcomes),
    levels = counts_add(m.levels, excluded.levels),
    wall_ms_sum = m.wall_ms_sum + excluded.wall_ms_sum,
    wall_ms_max = greatest(m.wall_ms_max, excluded.wall_ms_max),
    cpu_ms_sum = m.cpu_ms_sum + excluded.cpu_ms_sum,
    cpu_ms_max = greatest(m.cpu_ms_max, excluded.cpu_ms_max),
    wall_sketch = counts_add(m.wall_sketch, excluded.wall_sketch),
    cpu_sketch = counts_add(m.cpu_sketch, excluded.cpu_sketch)
"""
# Calls per day x provider x model (LLM calls) or endpoint (the others); NULL is "none", and
# the unique key treats NULLs as equal (NULLS NOT DISTINCT), so they merge like names.
_API = """
INSERT INTO api_calls_daily AS u (day, provider, model, endpoint, calls, failures, rate_limited,
                                  tokens_in, tokens_out, cache_read_tokens, cache_write_tokens,
                                  cost_usd, unpriced_calls)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                     $12::numeric[], $13::bigint[])
ORDER BY 1, 2, 3, 4
ON CONFLICT (day, provider, model, endpoint) DO UPDATE SET
    calls = u.calls + excluded.calls,
    failures = u.failures + excluded.failures,
    rate_limited = u.rate_limited + excluded.rate_limited,
    tokens_in = u.tokens_in + excluded.tokens_in,
    tokens_out = u.tokens_out + excluded.tokens_out,
    cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
    cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
    cost_usd = CASE WHEN u.cost_usd IS NULL THEN excluded.cost_usd
                    WHEN excluded.cost_usd IS NULL THEN u.cost_usd
                    ELSE u.cost_usd + excluded.cost_usd END,
    unpriced_calls = u.unpriced_calls + excluded.unpriced_calls
"""
_RATE_LIMITS = """
INSERT INTO rate_limit_readings_daily AS r (day, provider, limited, remaining, remaining_at,
                                            largest_limit, latest_reset)
SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[],
                     $6::bigint[], $7::timestamptz[])
ORDER BY 1, 2
ON CONFLICT (day, provider) DO UPDATE SET
    limited = r.limited + excluded.limited,
    remaining = CASE
        WHEN excluded.remaining_at >= coalesce(r.remaining_at, '-infinity')
        THEN excluded.remaining ELSE r.remaining END,
    remaining_at = greatest(r.remaining_at, excluded.remaining_at),
    largest_limit = greatest(r.largest_limit, excluded.largest_limit),
    latest_reset = greatest(r.latest_reset, excluded.latest_reset)
"""
# A resolved error that occurs again after it was resolved is reopened: a regression.
_ERRORS = """
INSERT INTO error_summary AS e (fingerprint, name, template, first_seen, last_seen, occurrences,
                                scripts, sample_message, sample_stack)
SELECT fp, name, tpl, first_seen, last_seen, n,
       ARRAY(SELECT jsonb_array_elements_text(scripts)), msg, stack
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::bigint[], $7::jsonb[], $8::text[], $9::text[])
     AS i(fp, name, tpl, first_seen, last_seen, n, scripts, msg, stack)
ORDER BY fp
ON CONFLICT (fingerprint) DO UPDATE SET
    first_seen = least(e.first_seen, excluded.first_seen),
    last_seen = greatest(e.last_seen, excluded.last_seen),
    occurrences = e.occurrences + excluded.occurrences,
    scripts = ARRAY(SELECT DISTINCT s FROM unnest(e.scripts || excluded.scripts) AS s
                    ORDER BY s LIMIT 50),
    sample_message = CASE WHEN excluded.last_seen >= e.last_seen
                          THEN excluded.sample_message ELSE e.sample_message END,
    sample_stack = CASE WHEN excluded.last_seen >= e.last_seen
                        THEN excluded.sample_stack ELSE e.sample_stack END,
    status = CASE WHEN e.status = 'resolved' AND excluded.last_seen > e.resolved_at
                  THEN 'open' ELSE e.status END,
    regressions = e.regressions + CASE WHEN e.status = 'resolved'
                  AND excluded.last_seen > e.resolved_at THEN 1 ELSE 0 END,
    last_regression = CASE WHEN e.status = 'resolved' AND excluded.last_seen > e.resolved_at
                           THEN excluded.last_seen ELSE e.last_regression END,
    resolved_at = CASE WHEN e.status = 'resolved' AND excluded.last_seen > e.resolved_at
                       THEN NULL ELSE e.resolved_at END
RETURNING fingerprint, (xmax = 0) AS inserted, last_regression
"""
_ERROR_HOURS = """
INSERT INTO error_hourly AS e
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[]) ORDER BY 1, 2
ON CONFLICT (hour, fingerprint) DO UPDATE SET occurrences = e.occurrences + excluded.occurrences
"""
_SCANS = """
INSERT INTO scan_activity_hourly AS s
SELECT hour, script, started, completed, failed,
       ARRAY(SELECT jsonb_array_elements_text(repos)), files, dsum, dmax
FROM unnest($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
            $6::jsonb[], $7::bigint[], $8::bigint[], $9::int[])
     AS i(hour, script, started, completed, failed, repos, files, dsum, dmax)
ORDER BY 1, 2
ON CONFLICT (hour, script) DO UPDATE SET
    started = s.started + excluded.started,
    completed = s.completed + excluded.completed,
    failed = s.failed + excluded.failed,
    repositories = ARRAY(SELECT DISTINCT r FROM unnest(s.repositories || excluded.repositories)
                         AS r ORDER BY r LIMIT 200),
    files = s.files + excluded.files,
    duration_ms_sum = s.duration_ms_sum + excluded.duration_ms_sum,
    duration_ms_max = greatest(s.duration_ms_max, excluded.duration_ms_max)
"""
_OPERATIONS = """
INSERT INTO span_operations_hourly AS o
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::jsonb[])
ORDER BY 1, 2, 3
ON CONFLICT (hour, script, operation) DO UPDATE SET
    spans = o.spans + excluded.spans,
    errors = o.errors + excluded.errors,
    duration_us_sum = o.duration_us_sum + excluded.duration_us_sum,
    duration_us_max = greatest(o.duration_us_max, excluded.duration_us_max),
    duration_sketch = counts_add(o.duration_sketch, excluded.duration_sketch)
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _day(ms: int) -> date:
    return _ts(ms).date()


def _js(value: object) -> str:
    return orjson.dumps(value).decode()


_COSTS = """
INSERT INTO cost_hourly AS c (hour, script, cost_usd)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::numeric[])
ON CONFLICT (hour, script) DO UPDATE SET cost_usd = c.cost_usd + excluded.cost_usd
"""


async def _rollups(conn: asyncpg.Connection, r: Rollups) -> list[Any]:
    """Upsert every rollup; returns the error_summary rows it touched (for the alert rules)."""
    changed: list[Any] = []
    if r.hourly:
        hourly = r.with_totals()
        keys = sorted(hourly)
        h = [hourly[k] for k in keys]
        await conn.execute(
            _HOURLY,
            [_ts(k[0]) for k in keys], [k[1] for k in keys], [k[2] for k in keys],
            [x.requests for x in h], [x.errors for x in h],
            [_js(x.outcomes) for x in h], [_js(x.levels) for x in h],
            [x.wall_sum for x in h], [x.wall_max for x in h],
            [x.cpu_sum for x in h], [x.cpu_max for x in h],
            [_js(x.wall.to_json()) for x in h], [_js(x.cpu.to_json()) for x in h],
        )  # fmt: skip
    if r.api:
        keys_a = sorted(r.api)
        a = [r.api[k] for k in keys_a]
        await conn.execute(
            _API,
            [_day(k[0]) for k in keys_a], [k[1] for k in keys_a],
            [k[2] or None for k in keys_a], [k[3] or None for k in keys_a],
            [x.calls for x in a], [x.failures for x in a], [x.rate_limited for x in a],
            [x.tokens_in for x in a], [x.tokens_out for x in a],
            [x.cache_read for x in a], [x.cache_write for x in a],
            [x.cost for x in a], [x.unpriced for x in a],
        )  # fmt: skip
    if r.costs:
        keys_c = sorted(r.costs)
        await conn.execute(
            _COSTS, [_ts(k[0]) for k in keys_c], [k[1] for k in keys_c],
            [r.costs[k] for k in keys_c],
        )  # fmt: skip
    if r.rate_limits:
        keys_l = sorted(r.rate_limits)
        lim = [r.rate_limits[k] for k in keys_l]
        await conn.execute(
            _RATE_LIMITS,
            [_day(k[0]) for k in keys_l], [k[1] for k in keys_l],
            [x.limited for x in lim], [x.remaining for x in lim],
            [_ts(x.remaining_at_ms) if x.remaining is not None else None for x in lim],
            [x.limit for x in lim],
            [_ts(x.reset_ms) if x.reset_ms is not None else None for x in lim],
        )  # fmt: skip
    if r.errors:
        fps = sorted(r.errors)
        e = [r.errors[k] for k in fps]
        changed = await conn.fetch(
            _ERRORS,
            fps, [x.name for x in e], [x.template for x in e],
            [_ts(x.first_ms) for x in e], [_ts(x.last_ms) for x in e],
            [x.occurrences for x in e], [_js(sorted(x.scripts)) for x in e],
            [x.sample_message for x in e], [x.sample_stack for x in e],
        )  # fmt: skip
    if r.error_hours:
        keys_e = sorted(r.error_hours)
        await conn.execute(
            _ERROR_HOURS,
            [_ts(k[0]) for k in keys_e], [k[1] for k in keys_e],
            [r.error_hours[k] for k in keys_e],
        )  # fmt: skip
    if r.scans:
        keys_s = sorted(r.scans)
        s = [r.scans[k] for k in keys_s]
        await conn.execute(
            _SCANS,
            [_ts(k[0]) for k in keys_s], [k[1] for k in keys_s],
            [x.started for x in s], [x.completed for x in s], [x.failed for x in s],
            [_js(sorted(x.repositories)) for x in s], [x.files for x in s],
            [x.duration_sum for x in s], [x.duration_max for x in s],
        )  # fmt: skip
    if r.operations:
        keys_o = sorted(r.operations)
        o = [r.operations[k] for k in keys_o]
        await conn.execute(
            _OPERATIONS,
            [_ts(k[0]) for k in keys_o], [k[1] for k in keys_o], [k[2] for k in keys_o],
            [x.spans for x in o], [x.errors for x in o],
            [x.duration_us_sum for x in o], [x.duration_us_max for x in o],
            [_js(x.duration.to_json()) for x in o],
        )  # fmt: skip
    return changed


async def merge_rollups(
    conn: asyncpg.Connection,
    batch: Batch,
    rules: Rules | None = None,
    also: Rollups | None = None,
) -> Counter[str]:
    """The last step of a flush: merge the batch's rollups (and `also`: the difference the
    completed invocations make, `pipeline.postgres.completion`), in key order, then its alerts
    (with `rules`); returns how many alerts this merge created, by rule (to publish)."""
    r = Rollups.combine([*(p.rollups for p in batch.parts.values()), *([also] if also else [])])
    changed = await _rollups(conn, r)
    if rules is None:
        return Counter()
    found = dict(r.alerts)
    _error_alerts(found, rules, r, changed)
    _rate_limit_alerts(found, rules, r)
    if r.hourly:
        newest = max(hour for hour, _, _ in r.hourly) + HOUR_MS - 1
        await windows.evaluate(conn, found, rules, {s for _, s, _ in r.hourly}, newest)
    return await record_alerts(conn, found)


def _error_alerts(found: Candidates, rules: Rules, r: Rollups, changed: list[Any]) -> None:
    for row in changed:
        group = r.errors[row["fingerprint"]]
        fp = row["fingerprint"]
        # Its occurrences: a text search for the template would find none once the template
        # has a placeholder (`step <n>`) the messages do not.
        query = {"level": "exception", "fingerprint": fp}
        if row["inserted"] and rules.new_error.enabled:
            note(found, rules.new_error, f"new_error:{fp}", None, group.first_ms,
                 f"new error {group.name}: {group.sample_message}", query)  # fmt: skip
        elif rules.regression.enabled and row["last_regression"] == _ts(group.last_ms):
            summary = f"resolved error seen again: {group.name}: {group.sample_message}"
            note(found, rules.regression, f"regression:{fp}", None, group.last_ms, summary, query)


def _rate_limit_alerts(found: Candidates, rules: Rules, r: Rollups) -> None:
    if not rules.rate_limit.enabled:
        return
    for (_, provider), limits in r.rate_limits.items():
        threshold = rules.rate_limit_threshold(provider)
        if limits.remaining is not None and threshold is not None and limits.remaining < threshold:
            summary = f"{provider} rate limit remaining {limits.remaining} (below {threshold})"
            key = f"rate_limit:{provider}"
            note(found, rules.rate_limit, key, None, limits.remaining_at_ms, summary)


_ALERTS = """
INSERT INTO critical_alerts AS a (id, rule, severity, script, dedup_key, window_start, first_at,
                                  last_at, occurrences, summary, details)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::bigint[],
                     $10::text[], $11::jsonb[])
ORDER BY 5, 6
ON CONFLICT (dedup_key, window_start) DO UPDATE SET
    first_at = least(a.first_at, excluded.first_at),
    last_at = greatest(a.last_at, excluded.last_at),
    occurrences = a.occurrences + excluded.occurrences,
    summary = CASE WHEN excluded.last_at >= a.last_at THEN excluded.summary ELSE a.summary END
RETURNING rule, (xmax = 0) AS created
"""


async def record_alerts(conn: asyncpg.Connection, found: Candidates) -> Counter[str]:
    """Merge alert candidates into the outbox, `critical_alerts`; how many alerts are new, by
    rule (an occurrence merged into an open alert is not a new one)."""
    if not found:
        return Counter()
    c = [found[k] for k in sorted(found)]
    rows = await conn.fetch(
        _ALERTS,
        [x.id for x in c], [x.rule for x in c], [x.severity for x in c], [x.script for x in c],
        [x.dedup_key for x in c], [_ts(x.window_ms) for x in c], [_ts(x.first_ms) for x in c],
        [_ts(x.last_ms) for x in c], [x.occurrences for x in c], [x.summary for x in c],
        [_js(x.details) for x in c],
    )  # fmt: skip
    return Counter(row["rule"] for row in rows if row["created"])
