"""GET /api/logs/api-usage, /api/logs/scan-activity and /api/logs/critical-alerts: small
rollup tables, read for the window and summed here."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from fastapi import APIRouter, Request

from pipeline.api import models
from pipeline.api.params import Hours, Limit, Script, Window

router = APIRouter()

_USAGE_FIELDS = (
    "calls",
    "failures",
    "rate_limited",
    "tokens_in",
    "tokens_out",
    "cache_read_tokens",
    "cache_write_tokens",
    "unpriced_calls",
)


def _usage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {f: sum(r[f] for r in rows) for f in _USAGE_FIELDS}
    costs = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
    out["cost_usd"] = round(float(sum(costs)), 6) if costs else None
    return out


@router.get("/api/logs/api-usage", response_model=models.ApiUsageReport)
async def api_usage(request: Request, hours: Hours = 24) -> dict[str, Any]:
    """Calls per day (UTC) x provider x model (LLM calls) or endpoint (the others), with
    totals, and apart from them what rate-limit readings said per day and provider. Days are
    whole: the window starts at the beginning of the day holding its start."""
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        rows = [dict(r) for r in await conn.fetch(
            "SELECT * FROM api_calls_daily WHERE day >= $1::date AND day <= $2::date"
            " ORDER BY day, provider, model NULLS FIRST, endpoint NULLS FIRST",
            window.since, window.until,
        )]  # fmt: skip
        readings = await conn.fetch(
            "SELECT * FROM rate_limit_readings_daily WHERE day >= $1::date AND day <= $2::date"
            " ORDER BY day, provider",
            window.since, window.until,
        )  # fmt: skip
    by_name: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_name[(r["provider"], r["model"] or "", r["endpoint"] or "")].append(r)
    return {
        "window": {"since": window.since, "until": window.until},
        "days": [
            {
                **_usage([r]),
                "day": r["day"],
                "provider": r["provider"],
                "model": r["model"],
                "endpoint": r["endpoint"],
            }
            for r in rows
        ],
        "by_model": [
            {
                **_usage(group),
                "provider": provider,
                "model": group[0]["model"],
                "endpoint": group[0]["endpoint"],
            }
            for (provider, _, _), group in sorted(by_name.items())
        ],
        "rate_limits": [
            {
                "day": r["day"],
                "provider": r["provider"],
                "remaining": r["remaining"],
                "remaining_at": r["remaining_at"],
                "limit": r["largest_limit"],
                "reset": r["latest_reset"],
                "limited": r["limited"],
            }
            for r in readings
        ],
        "total": _usage(rows),
    }


def _scans(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ended = sum(r["completed"] + r["failed"] for r in rows)
    return {
        "started": sum(r["started"] for r in rows),
        "completed": sum(r["completed"] for r in rows),
        "failed": sum(r["failed"] for r in rows),
        "repositories": sorted({repo for r in rows for repo in r["repositories"]}),
        "files": sum(r["files"] for r in rows),
        "duration_ms_avg": round(sum(r["duration_ms_sum"] for r in rows) / ended, 3)
        if ended
        else None,
        "duration_ms_max": max((r["duration_ms_max"] for r in rows), default=None)
        if ended
        else None,
    }


@router.get("/api/logs/scan-activity", response_model=models.ScanReport)
async def scan_activity(
    request: Request, hours: Hours = 24, script: Script = None
) -> dict[str, Any]:
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        rows = [dict(r) for r in await conn.fetch(
            "SELECT * FROM scan_activity_hourly WHERE hour >= $1 AND hour <= $2"
            " AND ($3::text IS NULL OR script = $3) ORDER BY hour, script",
            window.first_hour, window.until, script,
        )]  # fmt: skip
    return {
        "window": {"since": window.first_hour, "until": window.until},
        "hours": [{**_scans([r]), "hour": r["hour"], "script": r["script"]} for r in rows],
        "total": _scans(rows),
    }


@router.get("/api/logs/critical-alerts", response_model=models.Alerts)
async def critical_alerts(
    request: Request, hours: Hours = 24, limit: Limit = 100, script: Script = None
) -> dict[str, Any]:
    """Alerts whose last occurrence is in the window, newest first; with `script`, that
    script's (alerts about the pipeline itself have none)."""
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id::text, rule, severity, script, dedup_key, first_at, last_at, occurrences,"
            " summary, details::text AS details FROM critical_alerts"
            " WHERE last_at >= $1 AND ($3::text IS NULL OR script = $3)"
            " ORDER BY last_at DESC, id LIMIT $2",
            window.since, limit, script,
        )  # fmt: skip
    return {
        "window": {"since": window.since, "until": window.until},
        "alerts": [{**dict(r), "details": orjson.loads(r["details"])} for r in rows],
    }
