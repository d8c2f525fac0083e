"""GET /api/logs/performance and /api/logs/scripts: requests, error rate and latency
percentiles, overall, per hour and per script, from the rollups.

Reads one total row per hour (`tail_metrics_hourly` with event type `*`: of one script, or of
all with script `*`), so any span costs its number of hours, never a scan of raw rows. The
percentiles come from merging the hours' sketches: within 1% of the exact values. CPU time is
over the invocations that measured it (a Python service does not: its CPU time is NULL), so a
script that never measures it gets null CPU figures, not zeros.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from fastapi import APIRouter, Request

from pipeline.api import models
from pipeline.api.params import Hours, Limit, Script, Window
from pipeline.transform.rollup import TOTAL
from pipeline.transform.sketch import LatencySketch

router = APIRouter()

_HOURS = """
SELECT hour, requests, errors, wall_ms_sum, wall_ms_max, cpu_ms_sum, cpu_ms_max,
       wall_sketch::text AS wall, cpu_sketch::text AS cpu
FROM tail_metrics_hourly
WHERE script = $1 AND event_type = '*' AND hour >= $2 AND hour <= $3
ORDER BY hour
"""


def _latency(sketch: LatencySketch, total: int, peak: int) -> dict[str, Any]:
    """Over the invocations the sketch holds: those that measured this time. An invocation
    without it (CPU time from a Python service: NULL) is in neither the sketch nor `total`."""
    n = sketch.count
    return {
        "measured": n,
        "avg": round(total / n, 3) if n else None,
        "p50": sketch.quantile(0.50),
        "p95": sketch.quantile(0.95),
        "p99": sketch.quantile(0.99),
        "max": peak if n else None,
    }


def _rate(errors: int, requests: int) -> float | None:
    return round(errors / requests, 6) if requests else None


def _summary(
    requests: int, errors: int, wall: dict[str, Any], cpu: dict[str, Any]
) -> dict[str, Any]:
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": _rate(errors, requests),
        "wall_ms": wall,
        "cpu_ms": cpu,
    }


@router.get("/api/logs/performance", response_model=models.PerformanceReport)
async def performance(request: Request, hours: Hours = 24, script: Script = None) -> dict[str, Any]:
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(_HOURS, script or TOTAL, window.first_hour, window.until)
    all_wall, all_cpu = LatencySketch(), LatencySketch()
    requests = errors = wall_sum = cpu_sum = wall_max = cpu_max = 0
    per_hour = []
    for r in rows:
        wall = LatencySketch.from_json(orjson.loads(r["wall"]))
        cpu = LatencySketch.from_json(orjson.loads(r["cpu"]))
        per_hour.append({
            "hour": r["hour"],
            **_summary(r["requests"], r["errors"],
                       _latency(wall, r["wall_ms_sum"], r["wall_ms_max"]),
                       _latency(cpu, r["cpu_ms_sum"], r["cpu_ms_max"])),
        })  # fmt: skip
        all_wall.merge(wall)
        all_cpu.merge(cpu)
        requests += r["requests"]
        errors += r["errors"]
        wall_sum += r["wall_ms_sum"]
        cpu_sum += r["cpu_ms_sum"]
        wall_max = max(wall_max, r["wall_ms_max"])
        cpu_max = max(cpu_max, r["cpu_ms_max"])
    return {
        "window": {"since": window.first_hour, "until": window.until},
        "script": script,
        "overall": _summary(
            requests,
            errors,
            _latency(all_wall, wall_sum, wall_max),
            _latency(all_cpu, cpu_sum, cpu_max),
        ),
        "hours": per_hour,
    }


_SCRIPTS = """
SELECT script, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
       sum(wall_ms_sum)::bigint AS wall_ms_sum, max(wall_ms_max) AS wall_ms_max
FROM tail_metrics_hourly
WHERE script <> $1 AND event_type = '*' AND hour >= $2 AND hour <= $3
GROUP BY script ORDER BY requests DESC, script LIMIT $4
"""
# The scripts' sketches merged by PostgreSQL, bucket by bucket: a month of hours for every
# script is thousands of sketches, too many to parse and add up one by one here.
_BUCKETS = """
SELECT m.script, b.key, sum(b.value::bigint)::bigint AS n
FROM tail_metrics_hourly m, jsonb_each_text(m.wall_sketch) b
WHERE m.script = ANY($1::text[]) AND m.event_type = '*' AND m.hour >= $2 AND m.hour <= $3
GROUP BY m.script, b.key
"""


@router.get("/api/logs/scripts", response_model=models.Scripts)
async def scripts(request: Request, hours: Hours = 24, limit: Limit = 50) -> dict[str, Any]:
    """The scripts with requests in the window, busiest first, with their error rate and wall
    time: the overview's top scripts and the dashboard's script filter."""
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(_SCRIPTS, TOTAL, window.first_hour, window.until, limit)
        buckets = await conn.fetch(
            _BUCKETS, [r["script"] for r in rows], window.first_hour, window.until
        )
    merged: dict[str, dict[str, int]] = defaultdict(dict)
    for b in buckets:
        merged[b["script"]][b["key"]] = b["n"]
    out = []
    for r in rows:
        wall = LatencySketch.from_json(merged[r["script"]])
        requests, errors = r["requests"], r["errors"]
        out.append({
            "script": r["script"], "requests": requests, "errors": errors,
            "error_rate": _rate(errors, requests),
            "wall_ms": _latency(wall, r["wall_ms_sum"], r["wall_ms_max"]),
        })  # fmt: skip
    return {"window": {"since": window.first_hour, "until": window.until}, "scripts": out}
