"""GET /api/invocations/{id}: one invocation with all its lines and exceptions, and what a log
line of `/api/logs/recent` shows of its request.

An invocation's id is its `tail_events` primary key written out,
`<ts in µs>-<partition>-<offset>-<item>-<topic>`: every input format (Workers trace items,
Logpush, the logger's envelope) has one, since every invocation came from a Kafka message, and
the lookup is one probe of the primary key in the one day partition its ts names. A log line
knows it from its origin and its `invocation_ts` (schema/0012).

What a line shows of its request (method, path, status, request id) is read from its
invocation's row when the page is read, not copied onto every line when it is stored: a page
is at most 1,000 lines, each one index probe in one partition, while ingest stores millions.

An invocation's lines are found through `tail_logs (script, ts)` in the invocation's time
(from its start to its end, with a minute's slack either side for clock skew), then, if any of
the `log_count + exception_count` is missing, a day either side; `complete` says whether all
were found. tail_logs has no index on the origin: one would cost every stored line a btree
insert, for a view opened by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, HTTPException, Path, Request

from pipeline.api import models
from pipeline.formats.otlp_logs import UNREPORTED
from pipeline.transform.completion import Told, completed, filled, told

router = APIRouter()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
ID_PATTERN = r"^(\d{1,17})-(\d{1,10})-(\d{1,19})-(\d{1,10})-([A-Za-z0-9._-]{1,249})$"
"""A Kafka topic name is at most 249 of `[A-Za-z0-9._-]`."""
_ID = re.compile(ID_PATTERN)
SLACK = timedelta(minutes=1)
WIDE = timedelta(days=1)

InvocationParam = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        description="`<ts µs>-<partition>-<offset>-<item>-<topic>`: the `invocation` of a log "
        "line in `/api/logs/recent`",
    ),
]

REQUEST_ID = (
    "coalesce(e.extra #>> '{headers,x-request-id}', e.extra #>> '{headers,cf-ray}',"
    " e.extra ->> 'RayID', e.extra ->> 'cloudflare.ray_id')"
)
"""The request id a user quotes: the logger's `x-request-id`, a Worker's `cf-ray` header,
Logpush's `RayID`, or the OTLP export's `cloudflare.ray_id` attribute."""

LINE_COLUMNS = (
    "encode(trace_id, 'hex') AS trace_id, encode(span_id, 'hex') AS span_id, invocation_ts,"
    " invocation_id"
)
"""What `/api/logs/recent` reads besides the line itself to link it to its invocation."""

_REQUEST = f"""e.method, e.url, e.status, {REQUEST_ID} AS request_id, e.script_version,
           e.script_tags, e.ts AS e_ts, e.topic AS e_topic, e.kafka_partition AS e_partition,
           e.kafka_offset AS e_offset, e.item AS e_item"""
# A line's invocation: the row of its own origin, or a streamed invocation's row, found by
# its id (schema/0018's partial index) once it is whole. Which branch runs is known per line
# (a one-time filter), so the usual line costs one primary-key probe, as before.
_REQUEST_OF_LINE = f"""
LEFT JOIN LATERAL (
    SELECT {_REQUEST}
    FROM tail_events e
    WHERE l.invocation_id IS NULL
      AND e.kafka_offset = l.kafka_offset AND e.kafka_partition = l.kafka_partition
      AND e.item = l.item AND e.topic = l.topic AND e.ts = l.invocation_ts
    UNION ALL
    SELECT {_REQUEST}
    FROM tail_events e
    WHERE l.invocation_id IS NOT NULL AND e.source = 'stream'
      AND (e.extra->>'invocationId') = l.invocation_id
      AND e.ts >= l.invocation_ts - interval '1 day' AND e.ts <= l.invocation_ts + interval '1 day'
    LIMIT 1
) AS e ON true
"""


def with_requests(lines_sql: str, order: str) -> str:
    """`lines_sql` (a page of `tail_logs` rows with `LINE_COLUMNS`) with each line's request
    joined, in `order` again."""
    return (
        "SELECT l.*, e.method, e.url, e.status, e.request_id, e.script_version, e.script_tags,"
        " e.e_ts, e.e_topic, e.e_partition, e.e_offset, e.e_item"
        f" FROM ({lines_sql}) AS l"
        f" {_REQUEST_OF_LINE} {order}"
    )


@dataclass(frozen=True, slots=True)
class InvocationId:
    ts: datetime
    partition: int
    offset: int
    item: int
    topic: str

    def __str__(self) -> str:
        micros = (self.ts - _EPOCH) // _US
        return f"{micros}-{self.partition}-{self.offset}-{self.item}-{self.topic}"

    @classmethod
    def parse(cls, text: str) -> InvocationId | None:
        found = _ID.match(text)
        if found is None:
            return None
        micros, partition, offset, item, topic = found.groups()
        try:
            ts = _EPOCH + int(micros) * _US
        except OverflowError:
            return None
        if int(partition) >= 2**31 or int(offset) >= 2**63 or int(item) >= 2**31:
            return None
        return cls(ts, int(partition), int(offset), int(item), topic)


def path_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).path or "/"
    except ValueError:  # not a URL after all (a bracket where a host goes): show none
        return None


def line_links(r: Any) -> dict[str, Any]:
    """A `/api/logs/recent` row's link to its invocation and what it shows of the request."""
    invocation = None
    if r["invocation_id"] is not None:  # streamed: its row, once the invocation is whole
        if r["e_ts"] is not None:
            at = InvocationId(r["e_ts"], r["e_partition"], r["e_offset"], r["e_item"],
                              r["e_topic"])  # fmt: skip
            invocation = str(at)
    elif r["invocation_ts"] is not None:
        at = InvocationId(r["invocation_ts"], r["kafka_partition"], r["kafka_offset"], r["item"],
                          r["topic"])  # fmt: skip
        invocation = str(at)
    request = None
    if r["method"] is not None or r["status"] is not None or r["url"] is not None:
        request = {"method": r["method"], "path": path_of(r["url"]), "status": r["status"],
                   "request_id": r["request_id"]}  # fmt: skip
    return {
        "invocation": invocation,
        "trace_id": r["trace_id"],
        "span_id": r["span_id"],
        "request": request,
        "release": r["script_version"],
        "environment": environment_of(r["script_tags"]),
    }


ENVIRONMENT_TAG = "environment:"
"""How an environment is stored: the script tag `environment:<name>` (the logger's `init`)."""


def environment_of(tags: list[str] | None) -> str | None:
    """The environment a script's tags name, if one does."""
    for tag in tags or ():
        if tag.startswith(ENVIRONMENT_TAG):
            return tag[len(ENVIRONMENT_TAG) :]
    return None


_EVENT_COLUMNS = f"""
SELECT ts, script, event_type, outcome, method, url, status, cpu_ms, wall_ms, log_count,
       exception_count, truncated, script_version, entrypoint, dispatch_namespace, script_tags,
       source, extra::text AS extra, {REQUEST_ID} AS request_id,
       encode(trace_id, 'hex') AS trace_id, encode(span_id, 'hex') AS span_id,
       topic, kafka_partition, kafka_offset, item
FROM tail_events e
"""
_EVENT = (
    _EVENT_COLUMNS
    + "WHERE kafka_offset = $1 AND kafka_partition = $2 AND item = $3 AND topic = $4 AND ts = $5"
)
# Every part of an OTLP invocation whose records came in several messages: the rows of one
# `faas.invocation_id` and script within a day (schema/0015's partial index).
_PARTS = (
    _EVENT_COLUMNS
    + """WHERE source = 'otlp' AND extra->>'faas.invocation_id' = $1 AND script = $2
  AND ts >= $3 AND ts <= $4
ORDER BY ts, kafka_partition, kafka_offset, item"""
)
# The root span of the invocation's trace, of the same script and within a day of it: a
# Workers Observability logs export may lack the outcome and the CPU and wall time, which its
# traces export's root span carries (pipeline/api/traces.py reads the same attributes).
_ROOT_SPAN = """
SELECT attributes::text AS attributes, duration_us
FROM tail_spans
WHERE trace_id = decode($1, 'hex') AND parent_span_id IS NULL AND script = $2
  AND ts >= $3 AND ts <= $4
ORDER BY ts
LIMIT 1
"""
_TRACE_SPANS = """
SELECT count(*) FROM tail_spans WHERE trace_id = decode($1, 'hex') AND ts >= $2 AND ts <= $3
"""
_SELECT_LINES = """
SELECT ts, level, message, data::text AS data, kind, exception_name, stack, fingerprint, seq
FROM tail_logs
"""
_STREAM_LINES = _SELECT_LINES + "WHERE invocation_id = $1 AND ts >= $2 AND ts <= $3\nORDER BY seq\n"
_LINES = (
    _SELECT_LINES
    + """WHERE script = $1 AND ts >= $2 AND ts <= $3
  AND kafka_offset = $4 AND kafka_partition = $5 AND item = $6 AND topic = $7
ORDER BY seq
"""
)


@router.get(
    "/api/invocations/{invocation}",
    response_model=models.InvocationDetail,
    responses={404: {"description": "no such invocation", "model": models.Problem}},
)
async def invocation(request: Request, invocation: InvocationParam) -> dict[str, Any]:
    """One invocation (a request, a job run, a cron trigger...) with every log line and
    exception it stored, in the order it emitted them."""
    at = InvocationId.parse(invocation)
    if at is None:
        raise HTTPException(422, "invocation: not an invocation id")
    key = (at.offset, at.partition, at.item, at.topic)
    async with request.app.state.pool.acquire() as conn:
        found = await conn.fetchrow(_EVENT, *key, at.ts)
        if found is None:
            raise HTTPException(404, "no such invocation (or its day was dropped by retention)")
        parts = [found]
        joined = _invocation_id(found)
        if joined is not None:
            parts = await conn.fetch(_PARTS, joined, found["script"], at.ts - WIDE, at.ts + WIDE)
        # The part that says what the invocation was (its invocation record), else this one.
        event = next((p for p in parts if p["event_type"] != "unknown"), found)
        expected = lines_found = 0
        lines: list[Any] = []
        for part in parts:
            part_lines = await _lines_of(conn, part)
            expected += part["log_count"] + part["exception_count"]
            lines_found += len(part_lines)
            lines += part_lines
        if len(parts) > 1:  # each part numbers its own lines: interleave them by time
            lines.sort(key=lambda r: r["ts"])
        shown = {k: event[k] for k in ("outcome", "cpu_ms", "wall_ms")}
        filled: list[str] = []
        spans = 0
        if event["trace_id"] is not None:
            spans = await conn.fetchval(_TRACE_SPANS, event["trace_id"], at.ts - WIDE, at.ts + WIDE)
        if spans and _lacking(shown):
            root = await conn.fetchrow(
                _ROOT_SPAN, event["trace_id"], event["script"], at.ts - WIDE, at.ts + WIDE
            )
            if root is not None:
                filled = _fill(shown, orjson.loads(root["attributes"] or "{}"), root["duration_us"])
    extra = orjson.loads(event["extra"]) if event["extra"] is not None else None
    return {
        "id": str(at),
        **{k: event[k] for k in ("ts", "script", "event_type", "method", "url",
                                 "status", "truncated", "script_version",
                                 "entrypoint", "dispatch_namespace", "source", "request_id",
                                 "trace_id", "span_id")},
        "log_count": sum(p["log_count"] for p in parts),
        "exception_count": sum(p["exception_count"] for p in parts),
        **shown,
        "from_root_span": filled,
        "trace_spans": spans,
        "path": path_of(event["url"]),
        "script_tags": event["script_tags"] or [],
        "extra": extra,
        "dropped_events": _dropped(extra),
        "origin": {"topic": at.topic, "partition": at.partition, "offset": at.offset,
                   "item": at.item},
        "logs": [_line(r) for r in lines if r["level"] != "exception"],
        "exceptions": [_line(r) for r in lines if r["level"] == "exception"],
        "complete": lines_found >= expected,
        "parts": [str(_id_of(p)) for p in parts],
    }  # fmt: skip


def _dropped(extra: Any) -> int:
    """The events the runtime said it dropped (`droppedEvents`, a streamed invocation's)."""
    found = extra.get("droppedEvents") if isinstance(extra, dict) else None
    return found if isinstance(found, int) and found > 0 else 0


def _invocation_id(event: Any) -> str | None:
    """An OTLP invocation's `faas.invocation_id`, which joins the parts of one told in several
    messages; None for every other source."""
    if event["source"] != "otlp" or event["extra"] is None:
        return None
    value = orjson.loads(event["extra"]).get("faas.invocation_id")
    return value if isinstance(value, str) and value else None


def _id_of(event: Any) -> InvocationId:
    return InvocationId(
        event["ts"], event["kafka_partition"], event["kafka_offset"], event["item"], event["topic"]
    )


async def _lines_of(conn: Any, event: Any) -> list[Any]:
    """A stored invocation's lines, found through `tail_logs (script, ts)` over its own time,
    widened to a day either side only if a line is missing (its clock was off). A streamed
    invocation's came in other messages than its row: found by its invocation id."""
    at = _id_of(event)
    if event["source"] == "stream":
        end = at.ts + timedelta(milliseconds=event["wall_ms"] or 0)
        invocation_id = orjson.loads(event["extra"] or "{}").get("invocationId")
        return list(await conn.fetch(_STREAM_LINES, invocation_id, at.ts - WIDE, end + WIDE))
    key = (at.offset, at.partition, at.item, at.topic)
    end = at.ts + timedelta(milliseconds=event["wall_ms"] or 0)
    lines: list[Any] = await conn.fetch(_LINES, event["script"], at.ts - SLACK, end + SLACK, *key)
    if len(lines) < event["log_count"] + event["exception_count"]:
        lines = await conn.fetch(_LINES, event["script"], at.ts - WIDE, end + WIDE, *key)
    return lines


def _lacking(shown: dict[str, Any]) -> bool:
    return shown["outcome"] == UNREPORTED or shown["cpu_ms"] is None or shown["wall_ms"] is None


def _fill(shown: dict[str, Any], attributes: dict[str, Any], duration_us: int) -> list[str]:
    """Fill what the invocation lacks from its root span; the fields filled. The flush fills
    the rows it can (`pipeline.postgres.completion`); these are the others: stored before it
    did, or their halves keyed to different partitions."""
    before = Told(shown["outcome"], shown["cpu_ms"], shown["wall_ms"])
    after = completed(before, told(attributes, duration_us))
    if after is None:
        return []
    shown.update(after._asdict())
    return filled(before, after)


def _line(r: Any) -> dict[str, Any]:
    return {
        **{k: r[k] for k in ("ts", "seq", "level", "message", "kind", "exception_name", "stack",
                             "fingerprint")},
        "data": orjson.loads(r["data"]) if r["data"] is not None else None,
    }  # fmt: skip
