"""Windowed rules: a script's error rate and p95 wall time over its last hours, read from the
rollups (`tail_metrics_hourly`, the per-script total rows) inside the flush that changed them,
so the events of the batch count. `decide` is pure; `evaluate` reads the rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import orjson

from pipeline.alerts.detect import Candidates, note
from pipeline.alerts.rules import Rules
from pipeline.transform.rollup import HOUR_MS, TOTAL
from pipeline.transform.sketch import LatencySketch

_WINDOW = """
SELECT script, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
       array_agg(wall_sketch::text) AS sketches
FROM tail_metrics_hourly
WHERE event_type = '*' AND script = ANY($1::text[]) AND hour > $2 AND hour <= $3
GROUP BY script
"""


def decide(
    rules: Rules, requests: int, errors: int, p95_ms: float | None, *, rate: bool, slow: bool
) -> list[tuple[str, str]]:
    """(rule name, summary) for each windowed rule the numbers break. Strictly above the
    threshold, and only with at least the minimum number of requests."""
    out = []
    if rate and rules.error_rate.enabled and requests >= rules.error_rate_min_requests:
        share = errors / requests
        if share > rules.error_rate_above:
            span = f"{rules.error_rate_window_h}h"
            summary = f"error rate {share:.1%} over the last {span} ({errors} of {requests})"
            out.append(("error_rate", summary))
    enough = requests >= rules.slow_min_requests
    if slow and rules.slow.enabled and enough and (p95_ms or 0) > rules.slow_p95_above_ms:
        span = f"{rules.slow_window_h}h"
        summary = f"p95 wall time {p95_ms:.0f} ms over the last {span} ({requests} requests)"
        out.append(("slow", summary))
    return out


def ewma(history: list[float], alpha: float) -> tuple[float, float]:
    """Exponentially weighted mean and standard deviation, oldest value first."""
    mean, variance = history[0], 0.0
    for value in history[1:]:
        diff = value - mean
        increment = alpha * diff
        mean += increment
        variance = (1 - alpha) * (variance + diff * increment)
    return mean, variance**0.5


def anomalous(
    history: list[float], current: float, k: float, alpha: float, min_std: float
) -> tuple[bool, float, float]:
    """Whether `current` is more than k deviations above the baseline of `history`; also the
    baseline's mean and (floored) deviation, for the summary."""
    mean, std = ewma(history, alpha)
    std = max(std, min_std)
    return current > mean + k * std, mean, std


_SAME_HOUR = """
SELECT script, hour, requests, errors, wall_sketch::text AS sketch FROM tail_metrics_hourly
WHERE event_type = '*' AND script = ANY($1::text[]) AND hour = ANY($2::timestamptz[])
ORDER BY script, hour
"""


async def anomalies(
    conn: asyncpg.Connection, found: Candidates, rules: Rules, scripts: list[str], hour_ms: int
) -> None:
    """The anomaly rule: this hour against the same hour of the previous days."""
    days = rules.anomaly_days
    hours = [_at(hour_ms - d * 24 * HOUR_MS) for d in range(days, -1, -1)]
    rows = await conn.fetch(_SAME_HOUR, scripts, hours)
    by_script: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        by_script.setdefault(r["script"], []).append(r)
    now = _at(hour_ms)
    for script, series in by_script.items():
        current = series[-1]
        past = [r for r in series if r["hour"] < now and r["requests"] > 0]
        if current["hour"] != now or current["requests"] < rules.anomaly_min_requests:
            continue
        if len(past) < rules.anomaly_min_days:
            continue
        rate = current["errors"] / current["requests"]
        history = [r["errors"] / r["requests"] for r in past]
        hit, mean, std = anomalous(history, rate, rules.anomaly_k, rules.anomaly_alpha,
                                   rules.anomaly_min_rate_std)  # fmt: skip
        if hit:
            note(found, rules.anomaly, f"anomaly:{script}:error_rate", script, hour_ms,
                 f"{script}: error rate {rate:.1%} this hour, baseline {mean:.1%} "
                 f"± {std:.1%} for this hour of day", {"script": script})  # fmt: skip
        p95s = [_p95(r["sketch"]) for r in past]
        now_p95 = _p95(current["sketch"])
        if now_p95 is None or any(v is None for v in p95s):
            continue
        hit, mean, std = anomalous([v for v in p95s if v is not None], now_p95,
                                   rules.anomaly_k, rules.anomaly_alpha,
                                   rules.anomaly_min_p95_std_ms)  # fmt: skip
        if hit:
            note(found, rules.anomaly, f"anomaly:{script}:p95", script, hour_ms,
                 f"{script}: p95 wall time {now_p95:.0f} ms this hour, baseline {mean:.0f} "
                 f"± {std:.0f} ms for this hour of day", {"script": script})  # fmt: skip


def _p95(text: str) -> float | None:
    return LatencySketch.from_json(orjson.loads(text)).quantile(0.95)


async def evaluate(
    conn: asyncpg.Connection, found: Candidates, rules: Rules, scripts: set[str], newest_ms: int
) -> None:
    """Note windowed alerts for the scripts a batch touched, as of its newest event."""
    scripts.discard(TOTAL)
    if not scripts:
        return
    hour = newest_ms - newest_ms % HOUR_MS
    if rules.anomaly.enabled:
        await anomalies(conn, found, rules, sorted(scripts), hour)
    # Both rules read the same rows when their windows match (the default): one query each
    # distinct window, and the sketches merged only when the p95 rule wants them.
    wanted: dict[int, set[str]] = {}
    if rules.error_rate.enabled:
        wanted.setdefault(rules.error_rate_window_h, set()).add("error_rate")
    if rules.slow.enabled:
        wanted.setdefault(rules.slow_window_h, set()).add("slow")
    for hours, names in wanted.items():
        rows = await conn.fetch(_WINDOW, sorted(scripts), _at(hour - hours * HOUR_MS), _at(hour))
        for r in rows:
            p95 = None
            if "slow" in names:
                sketch = LatencySketch()
                for text in r["sketches"]:
                    sketch.merge(LatencySketch.from_json(orjson.loads(text)))
                p95 = sketch.quantile(0.95)
            broken = decide(
                rules, r["requests"], r["errors"], p95,
                rate="error_rate" in names, slow="slow" in names,
            )  # fmt: skip
            for name, summary in broken:
                script = r["script"]
                note(found, getattr(rules, name), f"{name}:{script}", script, newest_ms,
                     f"{script}: {summary}", {"script": script})  # fmt: skip


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
