"""GET /api/logs/recent: newest first, filtered, searched, a page at a time.

`level` takes one level or several (`level=error,exception`, or the parameter repeated), and
the usual other names of a level (`warning`, `critical`, ...: `params.LEVEL_ALIASES`); an
unknown level is a 422, not an empty page. A list, rather than a shorthand such as `errors`
that would read like one more level: it says exactly what it returns, composes with any level,
and is how OpenAPI describes a multi-valued query parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request

from pipeline.api import cursor, invocations, models
from pipeline.api.params import (
    Environment,
    Hours,
    Levels,
    Limit,
    Release,
    Script,
    Window,
    stored_levels,
)

router = APIRouter()

_COLUMNS = (
    "ts, script, event_type, outcome, level, message, data::text AS data, exception_name, "
    "stack, fingerprint, topic, kafka_partition, kafka_offset, item, seq, "
    + invocations.LINE_COLUMNS
)
# Constant fragments, chosen by which filters are present; every value is a parameter.
_FILTERS = {
    "level": "level = ${}",
    "levels": "level = ANY(${}::text[])",
    "script": "script = ${}",
    "outcome": "outcome = ${}",
    "q": "message ILIKE ${} ESCAPE '\\'",
    "fingerprint": "fingerprint = ${}",
}
# The release and environment are the invocation's: one primary-key probe per candidate line.
_OF_INVOCATION = (
    "EXISTS (SELECT 1 FROM tail_events e WHERE e.kafka_offset = tail_logs.kafka_offset"
    " AND e.kafka_partition = tail_logs.kafka_partition AND e.item = tail_logs.item"
    " AND e.topic = tail_logs.topic AND e.ts = tail_logs.invocation_ts AND {})"
)
_OF = {"release": "e.script_version = ${}", "environment": "e.script_tags @> ARRAY[${}::text]"}
_AFTER = "(ts, kafka_offset, kafka_partition, item, seq, topic) < (${}, ${}, ${}, ${}, ${}, ${})"
_ORDER = (
    "ORDER BY ts DESC, kafka_offset DESC, kafka_partition DESC, item DESC, seq DESC, topic DESC"
)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@router.get("/api/logs/recent", response_model=models.RecentLogs)
async def recent(
    request: Request,
    hours: Hours = 24,
    limit: Limit = 100,
    level: Levels = None,
    script: Script = None,
    outcome: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=200, description="text in the message")
    ] = None,
    release: Release = None,
    environment: Environment = None,
    fingerprint: Annotated[
        str | None,
        Query(
            pattern="^[0-9a-f]{16}$",
            description="an error group's occurrences (the `fingerprint` of `/api/logs/errors`)",
        ),
    ] = None,
    cursor_: Annotated[
        str | None, Query(alias="cursor", max_length=512, description="from `next_cursor`")
    ] = None,
) -> dict[str, Any]:
    key: bytes = request.app.state.cursor_key
    if cursor_ is not None:
        try:
            at = cursor.decode(cursor_, key, datetime.now(UTC))
        except cursor.InvalidCursor as exc:
            raise HTTPException(422, f"cursor: {exc}") from None
        window = Window(at.since, at.until)
    else:
        at, window = None, Window.last(hours)
    args: list[Any] = [window.since, window.until]
    where = ["ts >= $1", "ts <= $2"]
    levels = stored_levels(level)
    if levels is not None:  # one level keeps the plain `=`, which the (level, ts) index orders
        args.append(levels[0] if len(levels) == 1 else levels)
        where.append(_FILTERS["level" if len(levels) == 1 else "levels"].format(len(args)))
    filters = (("script", script), ("outcome", outcome), ("q", q),
               ("fingerprint", fingerprint))  # fmt: skip
    for name, value in filters:
        if value is not None:
            args.append(_like(value) if name == "q" else value)
            where.append(_FILTERS[name].format(len(args)))
    of_invocation = []
    for name, value in (("release", release), ("environment", environment)):
        if value is not None:
            args.append(invocations.ENVIRONMENT_TAG + value if name == "environment" else value)
            of_invocation.append(_OF[name].format(len(args)))
    if of_invocation:
        where.append(_OF_INVOCATION.format(" AND ".join(of_invocation)))
    if at is not None:
        n = len(args)
        args.extend(at.after)
        where.append(_AFTER.format(*range(n + 1, n + 7)))
    args.append(limit + 1)
    sql = invocations.with_requests(
        f"SELECT {_COLUMNS} FROM tail_logs WHERE {' AND '.join(where)} {_ORDER} LIMIT ${len(args)}",
        _ORDER,
    )
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        position = cursor.Position(
            last["ts"], last["kafka_offset"], last["kafka_partition"], last["item"],
            last["seq"], last["topic"],
        )  # fmt: skip
        next_cursor = cursor.encode(cursor.Cursor(window.since, window.until, position), key)
    return {
        "window": {"since": window.since, "until": window.until},
        "logs": [
            {
                **{
                    k: r[k]
                    for k in (
                        "ts",
                        "script",
                        "event_type",
                        "outcome",
                        "level",
                        "message",
                        "exception_name",
                        "stack",
                        "fingerprint",
                    )
                },
                "data": orjson.loads(r["data"]) if r["data"] is not None else None,
                "origin": {
                    "topic": r["topic"],
                    "partition": r["kafka_partition"],
                    "offset": r["kafka_offset"],
                    "item": r["item"],
                    "seq": r["seq"],
                },
                **invocations.line_links(r),
            }
            for r in page
        ],
        "next_cursor": next_cursor,
    }
