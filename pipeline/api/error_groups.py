"""GET /api/logs/errors and PATCH /api/errors/{fingerprint}: the error summary and its status."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from pipeline.api import auth, models
from pipeline.api.params import Hours, Limit, Script, Window

router = APIRouter()

Fingerprint = Annotated[str, Path(pattern="^[0-9a-f]{16}$", description="16 hex characters")]

_TOP = """
WITH top AS (
    SELECT fingerprint, sum(occurrences)::bigint AS n FROM error_hourly
    WHERE hour >= $1 AND ($3::text IS NULL OR fingerprint IN (
        SELECT fingerprint FROM error_summary WHERE $3 = ANY(scripts)))
    GROUP BY fingerprint ORDER BY n DESC, fingerprint LIMIT $2
)
SELECT e.*, top.n FROM top JOIN error_summary e USING (fingerprint) ORDER BY top.n DESC, fingerprint
"""
_TREND = """
SELECT fingerprint, hour, occurrences FROM error_hourly
WHERE fingerprint = ANY($1::text[]) AND hour >= $2 ORDER BY fingerprint, hour
"""


@router.get("/api/logs/errors", response_model=models.Errors)
async def errors(
    request: Request, hours: Hours = 24, limit: Limit = 20, script: Script = None
) -> dict[str, Any]:
    """The most frequent error fingerprints of the window. With `script`, the fingerprints that
    script has raised; their counts are still over every script that raised them."""
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        top = await conn.fetch(_TOP, window.first_hour, limit, script)
        trend_rows = await conn.fetch(_TREND, [r["fingerprint"] for r in top], window.first_hour)
    trend: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in trend_rows:
        trend[r["fingerprint"]].append({"hour": r["hour"], "occurrences": r["occurrences"]})
    return {
        "window": {"since": window.first_hour, "until": window.until},
        "errors": [_group(r, r["n"], trend[r["fingerprint"]]) for r in top],
    }


def _group(r: Any, n: int, trend: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "fingerprint": r["fingerprint"], "name": r["name"], "template": r["template"],
        "occurrences": n, "occurrences_total": r["occurrences"],
        "first_seen": r["first_seen"], "last_seen": r["last_seen"], "scripts": r["scripts"],
        "status": r["status"], "resolved_at": r["resolved_at"],
        "regressions": r["regressions"], "last_regression": r["last_regression"],
        "sample_message": r["sample_message"], "sample_stack": r["sample_stack"],
        "trend": trend,
    }  # fmt: skip


@router.patch(
    "/api/errors/{fingerprint}",
    response_model=models.ErrorGroup,
    dependencies=[Depends(auth.writer)],
    responses={404: {"model": models.Problem}, 403: {"model": models.Problem}},
)
async def set_status(
    request: Request, fingerprint: Fingerprint, change: models.StatusChange
) -> dict[str, Any]:
    """Resolve, ignore or reopen an error. An occurrence after `resolved` reopens it by itself
    and counts as a regression."""
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            """
            UPDATE error_summary SET status = $2,
                resolved_at = CASE WHEN $2 = 'resolved' THEN now() END
            WHERE fingerprint = $1 RETURNING *
            """,
            fingerprint,
            change.status,
        )
    if row is None:
        raise HTTPException(404, f"no error with fingerprint {fingerprint}")
    return _group(row, row["occurrences"], [])
