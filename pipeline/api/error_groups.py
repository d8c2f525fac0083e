"""GET /api/logs/errors and PATCH /api/errors/{fingerprint}: the error summary and its status."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from pipeline.api import auth, models
from pipeline.api.invocations import ENVIRONMENT_TAG, InvocationId
from pipeline.api.params import Environment, Hours, Limit, Release, Script, Window

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
# With a release or an environment: counted from the stored exception lines, whose
# invocation's row says both (one primary-key probe each; the rollups have no release).
_OF_DEPLOY = """
    FROM tail_logs l
    WHERE l.level = 'exception' AND l.fingerprint IS NOT NULL AND l.ts >= $1
      AND ($2::text IS NULL OR l.script = $2)
      AND EXISTS (SELECT 1 FROM tail_events e WHERE e.kafka_offset = l.kafka_offset
          AND e.kafka_partition = l.kafka_partition AND e.item = l.item AND e.topic = l.topic
          AND e.ts = l.invocation_ts AND ($3::text IS NULL OR e.script_version = $3)
          AND ($4::text IS NULL OR e.script_tags @> ARRAY[$4]))
"""
_TOP_OF_DEPLOY = f"""
WITH top AS (
    SELECT l.fingerprint, count(*)::bigint AS n {_OF_DEPLOY}
    GROUP BY l.fingerprint ORDER BY n DESC, l.fingerprint LIMIT $5
)
SELECT e.*, top.n FROM top JOIN error_summary e USING (fingerprint) ORDER BY top.n DESC, fingerprint
"""
_TREND_OF_DEPLOY = f"""
SELECT l.fingerprint, date_trunc('hour', l.ts) AS hour, count(*)::bigint AS occurrences
{_OF_DEPLOY} AND l.fingerprint = ANY($5::text[])
GROUP BY 1, 2 ORDER BY 1, 2
"""
# The invocation of each group's latest occurrence: its exception line has the group's
# `last_seen` as its time, so one probe of `tail_logs (level, ts)` at that instant finds it.
_LATEST = """
SELECT f.fp AS fingerprint, l.invocation_ts, l.kafka_partition, l.kafka_offset, l.item, l.topic
FROM unnest($1::text[], $2::timestamptz[]) AS f(fp, at)
CROSS JOIN LATERAL (
    SELECT invocation_ts, kafka_partition, kafka_offset, item, topic FROM tail_logs
    WHERE level = 'exception' AND ts = f.at AND fingerprint = f.fp
      AND invocation_ts IS NOT NULL
    LIMIT 1
) l
"""
_TREND = """
SELECT fingerprint, hour, occurrences FROM error_hourly
WHERE fingerprint = ANY($1::text[]) AND hour >= $2 ORDER BY fingerprint, hour
"""


@router.get("/api/logs/errors", response_model=models.Errors)
async def errors(
    request: Request,
    hours: Hours = 24,
    limit: Limit = 20,
    script: Script = None,
    release: Release = None,
    environment: Environment = None,
) -> dict[str, Any]:
    """The most frequent error fingerprints of the window. With `script`, the fingerprints that
    script has raised; their counts are still over every script that raised them. With
    `release` or `environment`, the occurrences in that release or environment only (of
    `script`, if given), counted from the stored lines: within the raw rows' retention."""
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        if release is None and environment is None:
            top = await conn.fetch(_TOP, window.first_hour, limit, script)
            fingerprints = [r["fingerprint"] for r in top]
            trend_rows = await conn.fetch(_TREND, fingerprints, window.first_hour)
        else:
            tag = None if environment is None else ENVIRONMENT_TAG + environment
            deploy = (window.first_hour, script, release, tag)
            top = await conn.fetch(_TOP_OF_DEPLOY, *deploy, limit)
            fingerprints = [r["fingerprint"] for r in top]
            trend_rows = await conn.fetch(_TREND_OF_DEPLOY, *deploy, fingerprints)
        latest_rows = await conn.fetch(_LATEST, fingerprints, [r["last_seen"] for r in top])
    trend: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in trend_rows:
        trend[r["fingerprint"]].append({"hour": r["hour"], "occurrences": r["occurrences"]})
    latest = {r["fingerprint"]: str(_invocation_of(r)) for r in latest_rows}
    groups = []
    for r in top:
        group = _group(r, r["n"], trend[r["fingerprint"]])
        group["latest_invocation"] = latest.get(r["fingerprint"])
        groups.append(group)
    return {"window": {"since": window.first_hour, "until": window.until}, "errors": groups}


def _invocation_of(r: Any) -> InvocationId:
    return InvocationId(
        r["invocation_ts"], r["kafka_partition"], r["kafka_offset"], r["item"], r["topic"]
    )


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
