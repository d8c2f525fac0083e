"""The alerts' states, their history, acknowledgements and silences.

`GET /api/alerts/states`: every alert with a state (a `[[condition]]`'s, per group) and its
changes over the last `days`; `POST /api/alerts/{id}/ack`: who took an alert; silences, a rule
and optionally one group of it that notifies no one until a time (`POST`, `GET`, `DELETE
/api/alerts/silences`). Writing needs a read-write token. A silenced alert still changes state
(`pipeline/alerts/evaluator.py`); its changes are kept, marked silenced.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from pipeline.api import auth, models

router = APIRouter()

MAX_SILENCE = timedelta(days=90)
AlertId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="the alert's id")]
Days = Annotated[int, Query(ge=1, le=90, description="history of the last N days")]
SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]

_STATES = """
SELECT rule, group_key, status, since, fired_at, value FROM alert_states ORDER BY rule, group_key
"""
_CHANGES = """
SELECT rule, group_key, before, after, at, notify, value, silenced FROM alert_changes
WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT 5000
"""
_SILENCES = """
SELECT id, rule, group_key, until, comment, created_at FROM alert_silences
WHERE until > now() AND ended_at IS NULL ORDER BY until
"""


@router.get("/api/alerts/states", response_model=models.AlertStates)
async def states(request: Request, days: Days = 30) -> dict[str, Any]:
    """Each alert with a state, and its changes over the last `days`, newest first."""
    since = datetime.now(UTC) - timedelta(days=days)
    async with request.app.state.pool.acquire() as conn:
        current = await conn.fetch(_STATES)
        changes = await conn.fetch(_CHANGES, since)
        silences = await conn.fetch(_SILENCES)
    return {
        "since": since,
        "states": [dict(r) for r in current],
        "changes": [dict(r) for r in changes],
        "silences": [dict(r) for r in silences],
    }


@router.post(
    "/api/alerts/{alert_id}/ack",
    response_model=models.Ack,
    dependencies=[Depends(auth.writer)],
    responses={404: {"model": models.Problem}, 403: {"model": models.Problem}},
)
async def ack(request: Request, alert_id: AlertId, body: models.AckRequest) -> dict[str, Any]:
    """Acknowledge an alert: the first acknowledgement is kept."""
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "UPDATE critical_alerts SET acked_at = coalesce(acked_at, now()),"
            " acked_by = coalesce(acked_by, nullif($2, '')) WHERE id = $1::uuid"
            " RETURNING id::text, acked_at, acked_by",
            alert_id, body.by,
        )  # fmt: skip
    if row is None:
        raise HTTPException(404, f"no alert {alert_id}")
    return dict(row)


@router.post(
    "/api/alerts/silences",
    response_model=models.Silence,
    status_code=201,
    dependencies=[Depends(auth.writer)],
    responses={422: {"model": models.Problem}, 403: {"model": models.Problem}},
)
async def silence(request: Request, body: models.SilenceRequest) -> dict[str, Any]:
    """Silence a rule (and one group of it, or all) until a time, at most 90 days ahead."""
    now = datetime.now(UTC)
    until = body.until if body.until.tzinfo is not None else body.until.replace(tzinfo=UTC)
    if not now < until <= now + MAX_SILENCE:
        raise HTTPException(422, "until: a time in the next 90 days")
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO alert_silences (rule, group_key, until, comment) VALUES ($1, $2, $3, $4)"
            " RETURNING id, rule, group_key, until, comment, created_at",
            body.rule, body.group, until, body.comment,
        )  # fmt: skip
    assert row is not None
    return dict(row)


@router.delete(
    "/api/alerts/silences/{silence_id}",
    status_code=204,
    dependencies=[Depends(auth.writer)],
    responses={404: {"model": models.Problem}, 403: {"model": models.Problem}},
)
async def end_silence(request: Request, silence_id: SilenceId) -> None:
    """End a silence now."""
    async with request.app.state.pool.acquire() as conn:
        ended = await conn.fetchval(
            "UPDATE alert_silences SET ended_at = now() WHERE id = $1 AND ended_at IS NULL"
            " RETURNING id",
            silence_id,
        )
    if ended is None:
        raise HTTPException(404, f"no silence {silence_id} in force")
