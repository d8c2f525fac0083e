"""The conditions, evaluated on a clock over the rollups: each alert's state moved, once.

Every replica runs one (`Evaluator.run`), every `TAILPIPE_ALERT_EVALUATE_INTERVAL`. A round
takes each condition in its own transaction:

    advisory lock for the rule ─> the window's rollups per script (tail_metrics_hourly, the
    per-script totals) ─> the stored states (alert_states) ─> `state.step` per script, with
    the round's time ─> changed states saved, every change kept (alert_changes), a firing or
    resolved one into the outbox (critical_alerts) ─> COMMIT

The lock makes replicas take a rule one after another, so the second reads what the first
stored: one notification per change, whatever the number of replicas. A script with no data in
the window does not hold: a firing alert whose script went quiet is resolved. Its time is the
evaluator's clock, given to `evaluate`, so a test drives it.

A notification is an alert of the outbox, keyed by `rule:script` (PagerDuty and Opsgenie take
the key as their dedup key, so firing and resolved meet there), its window the time it fired
(firing) or was resolved (resolved): two rows of `critical_alerts` per episode, published
once each. `details.state` says which. A silenced rule and group (`alert_silences`) changes
state all the same, and its changes are kept marked `silenced`, but it notifies no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from pipeline.alerts.conditions import Aggregate, Condition
from pipeline.alerts.detect import Candidate, Candidates
from pipeline.alerts.forecast import Memo, advance, minutes_left
from pipeline.alerts.outbox import Outbox
from pipeline.alerts.state import NORMAL, AlertState, Change, step
from pipeline.postgres.connect import connect
from pipeline.postgres.rollup_upserts import record_alerts
from pipeline.settings import Settings
from pipeline.transform.sketch import LatencySketch

log = logging.getLogger("tailpipe.alerts")

HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tailpipe.alert-state:' || $1))"
_WINDOW = """
SELECT script, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
       counts_sum(outcomes)::text AS outcomes, counts_sum(wall_sketch)::text AS wall,
       counts_sum(cpu_sketch)::text AS cpu
FROM tail_metrics_hourly
WHERE event_type = '*' AND script <> '*' AND hour > $1 AND hour <= $2
GROUP BY script
"""
# The newest event of each script in the window (tail_events (script, ts DESC): one probe each),
# and when the pipeline last stored anything at all (the group `*`).
_LAST_EVENTS = """
SELECT s.script, (SELECT e.ts FROM tail_events e WHERE e.script = s.script AND e.ts > $2
                  ORDER BY e.ts DESC LIMIT 1) AS last
FROM unnest($1::text[]) AS s(script)
"""
_LAST_STORED = "SELECT max(updated_at) FROM pipeline_offsets"
_ALL = """
SELECT '*' AS script, coalesce(sum(requests), 0)::bigint AS requests,
       coalesce(sum(errors), 0)::bigint AS errors
FROM tail_metrics_hourly
WHERE event_type = '*' AND script = '*' AND hour > $1 AND hour <= $2
"""
_READINGS = """
SELECT provider, remaining, remaining_at, latest_reset FROM rate_limit_readings_daily
WHERE day = $1 AND remaining IS NOT NULL
"""
_COSTS = """
SELECT script, sum(cost_usd)::float8 AS cost FROM cost_hourly
WHERE hour > $1 AND hour <= $2 GROUP BY script
"""
_STATES = """
SELECT group_key, status, since, fired_at, memo::text AS memo FROM alert_states WHERE rule = $1
"""
_SAVE = """
INSERT INTO alert_states (rule, group_key, status, since, fired_at, value, memo)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
ON CONFLICT (rule, group_key) DO UPDATE SET
    status = excluded.status, since = excluded.since, fired_at = excluded.fired_at,
    value = excluded.value, memo = excluded.memo, updated_at = now()
"""
_CHANGE = """
INSERT INTO alert_changes (rule, group_key, before, after, at, notify, value, silenced)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_SILENCED = """
SELECT coalesce(group_key, '') AS group_key FROM alert_silences
WHERE rule = $1 AND until > $2 AND ended_at IS NULL
"""


async def evaluate(
    conn: asyncpg.Connection, conditions: tuple[Condition, ...], now_ms: int
) -> Counter[str]:
    """One round at `now_ms`; the notifications it made, by kind (firing, resolved)."""
    made: Counter[str] = Counter()
    for condition in conditions:
        if condition.enabled:
            async with conn.transaction():
                made += await _condition(conn, condition, now_ms)
    return made


async def _condition(conn: asyncpg.Connection, c: Condition, now_ms: int) -> Counter[str]:
    await conn.execute(_LOCK, c.name)
    hour = now_ms - now_ms % HOUR_MS
    stored = await conn.fetch(_STATES, c.name)
    states = {
        r["group_key"]: AlertState(r["status"], _ms(r["since"]),
                                   _ms(r["fired_at"]) if r["fired_at"] else None)
        for r in stored
    }  # fmt: skip
    memos = {r["group_key"]: Memo.from_json(orjson.loads(r["memo"] or "null")) for r in stored}
    kept = dict(memos)
    if c.metric.startswith("rate_limit"):
        windows, memos = await _forecasts(conn, memos, now_ms)
    elif c.metric == "cost_per_hour":
        rows = await conn.fetch(_COSTS, _at(hour - c.window_h * HOUR_MS), _at(hour))
        windows = {r["script"]: Aggregate(cost_usd=r["cost"]) for r in rows}
    else:
        rows = await conn.fetch(_WINDOW, _at(hour - c.window_h * HOUR_MS), _at(hour))
        windows = {r["script"]: _aggregate(r, c.metric) for r in rows}
    if c.metric == "silence_minutes":
        windows = await _silences(conn, windows, _at(hour - c.window_h * HOUR_MS), _at(hour),
                                  now_ms)  # fmt: skip
    silenced = {r["group_key"] for r in await conn.fetch(_SILENCED, c.name, _at(now_ms))}
    found: Candidates = {}
    made: Counter[str] = Counter()
    for script in sorted(windows.keys() | states.keys()):
        if not c.watches(script):
            continue
        agg = windows.get(script, Aggregate())
        before = states.get(script, NORMAL)
        after, changes = step(before, c.holds(agg), now_ms, c.timing)
        memo = memos.get(script)
        if not changes and memo == kept.get(script):
            continue
        value = c.value(agg)
        fired_at = _at(after.fired_ms) if after.fired_ms is not None else None
        memo_json = orjson.dumps(memo.to_json()).decode() if memo is not None else None
        await conn.execute(
            _SAVE, c.name, script, after.status, _at(after.since_ms), fired_at, value, memo_json
        )
        quiet = "" in silenced or script in silenced
        for change in changes:
            await conn.execute(_CHANGE, c.name, script, change.before, change.after,
                               _at(change.at_ms), change.notify, value, quiet)  # fmt: skip
            if change.notify is not None and not quiet:
                fired = after.fired_ms if after.fired_ms is not None else before.fired_ms
                candidate = _notification(c, script, change, fired or change.at_ms, value)
                found[(candidate.dedup_key, candidate.window_ms)] = candidate
                made[change.notify] += 1
    await record_alerts(conn, found)
    return made


def _notification(
    c: Condition, script: str, change: Change, fired_ms: int, value: float | None
) -> Candidate:
    shown = "no data" if value is None else f"{value:.4g}"
    side = "above" if c.above else "below"
    told = f"{c.metric} {shown} ({side} {c.threshold:g} over the last {c.window_h}h)"
    if c.metric == "rate_limit_minutes":
        told = (f"rate limit: 0 in about {value:.0f} min at the current rate"
                if value is not None else "rate limit no longer running out")  # fmt: skip
    elif c.metric == "rate_limit_remaining":
        told = f"rate limit: {shown} left (below {c.threshold:g})"
    elif c.metric == "cost_per_hour" and value is not None:
        told = f"${value:.2f} an hour over the last {c.window_h}h ({side} ${c.threshold:g})"
    if change.notify == "firing":
        summary = f"{script}: {c.name} firing: {told}"
    else:
        lasted = timedelta(milliseconds=change.at_ms - fired_ms)
        summary = f"{script}: {c.name} resolved after {lasted}: {told}"
    details = {
        "state": change.notify, "condition": c.name, "metric": c.metric, "value": value,
        "threshold": c.threshold, "above": c.above, "window_h": c.window_h,
        "fired_at": _at(fired_ms).isoformat(), "query": f"/api/logs/recent?script={script}",
    }  # fmt: skip
    return Candidate(
        c.name, c.severity, script, f"{c.name}:{script}", change.at_ms if change.notify ==
        "resolved" else fired_ms, fired_ms, change.at_ms, summary[:300], details,
    )  # fmt: skip


async def _forecasts(
    conn: asyncpg.Connection, memos: dict[str, Memo | None], now_ms: int
) -> tuple[dict[str, Aggregate], dict[str, Memo | None]]:
    """Each provider's reading of today, its memo advanced, and its forecast."""
    day = _at(now_ms).date()
    windows: dict[str, Aggregate] = {}
    out = dict(memos)
    for r in await conn.fetch(_READINGS, day):
        provider = r["provider"]
        memo = advance(memos.get(provider), int(r["remaining"]), _ms(r["remaining_at"]))
        out[provider] = memo
        reset = _ms(r["latest_reset"]) if r["latest_reset"] is not None else None
        windows[provider] = Aggregate(
            minutes_left=minutes_left(memo, now_ms, reset), remaining=float(r["remaining"])
        )
    return windows, out


async def _silences(
    conn: asyncpg.Connection,
    windows: dict[str, Aggregate],
    since: datetime,
    until: datetime,
    now_ms: int,
) -> dict[str, Aggregate]:
    """The windows with each script's minutes of silence, and the pipeline's as script `*`."""
    out: dict[str, Aggregate] = {}
    rows = await conn.fetch(_LAST_EVENTS, sorted(windows), since)
    for r in rows:
        agg = windows[r["script"]]
        silence = (now_ms - _ms(r["last"])) / 60_000 if r["last"] is not None else None
        out[r["script"]] = replace(agg, silence_min=silence)
    total = await conn.fetchrow(_ALL, since, until)
    stored = await conn.fetchval(_LAST_STORED)
    if total is not None and stored is not None:
        out["*"] = Aggregate(total["requests"], total["errors"],
                             silence_min=(now_ms - _ms(stored)) / 60_000)  # fmt: skip
    return out


def _aggregate(row: asyncpg.Record, metric: str) -> Aggregate:
    percentiles: dict[str, float] = {}
    if metric.startswith("p9"):
        for kind in ("wall", "cpu"):
            sketch = LatencySketch.from_json(orjson.loads(row[kind]))
            for q, name in ((0.95, f"p95_{kind}_ms"), (0.99, f"p99_{kind}_ms")):
                found = sketch.quantile(q)
                if found is not None:
                    percentiles[name] = found
    return Aggregate(row["requests"], row["errors"], Counter(orjson.loads(row["outcomes"])),
                     percentiles)  # fmt: skip


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


class Evaluator:
    """The round, every `interval_s` on the wall clock, on a connection of its own; a failed
    round (PostgreSQL away) is logged and tried again at the next."""

    def __init__(
        self, settings: Settings, conditions: tuple[Condition, ...], outbox: Outbox
    ) -> None:
        self.settings = settings
        self.conditions = conditions
        self.outbox = outbox
        self.interval_s = settings.alert_evaluate_interval
        self._conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        if not any(c.enabled for c in self.conditions):
            return
        try:
            while True:
                await self.round()
                await asyncio.sleep(self.interval_s)
        finally:
            if self._conn is not None:
                self._conn.terminate()

    async def round(self, now_ms: int | None = None) -> Counter[str]:
        now = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self.settings)
            made = await evaluate(self._conn, self.conditions, now)
        except Exception as exc:  # PostgreSQL away: the next round tries again
            log.warning("alert conditions not evaluated", extra={"error": str(exc)[:300]})
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.terminate()
                self._conn = None
            return Counter()
        if made:
            self.outbox.wake()
        return made
