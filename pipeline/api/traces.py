"""GET /api/traces/{trace_id} and /api/traces/operations: the spans of one trace as a
waterfall, and per operation how often, how slow and how often failing, from the rollups.

A trace's spans are found through `tail_spans (trace_id)` in every day partition retention
kept: a trace is a few spans to a few thousand, and the index probe per day costs less than
knowing its day. The tree is built here: depth first from each root, siblings in the order they
started, which is the order a waterfall draws. A span whose parent is not stored (not exported,
or still to come) is drawn as a root rather than dropped.

The root span of a Worker's invocation carries its outcome and its CPU and wall time as
attributes; Cloudflare's docs name them `cloudflare.cpu_time` and `cloudflare.wall_time`, and
real exports `cpu_time_ms` and `wall_time_ms`: each is read (docs/events.md).

Operations are `span_operations_hourly`, whose sketches PostgreSQL merges bucket by bucket, as
for the scripts' wall time (pipeline/api/performance.py). Their route is declared first: the
first route that matches answers, and `operations` would match `{trace_id}` (then a 422).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Request

from pipeline.api import models
from pipeline.api.params import Hours, Limit, Script, Window
from pipeline.formats.invocation import SPAN_KINDS, SPAN_STATUSES
from pipeline.transform.completion import told
from pipeline.transform.sketch import LatencySketch

router = APIRouter()

_US = timedelta(microseconds=1)
MAX_SPANS = 10_000
"""The most spans a trace answer holds: the earliest, with `truncated` set."""
_HEX_TRACE = re.compile(r"[0-9a-fA-F]{32}")

TraceParam = Annotated[str, Path(description="the W3C trace id: 32 hex digits")]

_OPERATIONS = """
SELECT script, operation, sum(spans)::bigint AS spans, sum(errors)::bigint AS errors,
       sum(duration_us_sum)::bigint AS duration_us_sum, max(duration_us_max) AS duration_us_max
FROM span_operations_hourly
WHERE ($1::text IS NULL OR script = $1) AND hour >= $2 AND hour <= $3
GROUP BY script, operation ORDER BY spans DESC, script, operation LIMIT $4
"""
_BUCKETS = """
SELECT o.script, o.operation, b.key, sum(b.value::bigint)::bigint AS n
FROM span_operations_hourly o, jsonb_each_text(o.duration_sketch) b
WHERE o.script = ANY($1::text[]) AND o.operation = ANY($2::text[])
  AND o.hour >= $3 AND o.hour <= $4
GROUP BY o.script, o.operation, b.key
"""


@router.get("/api/traces/operations", response_model=models.Operations)
async def operations(
    request: Request, hours: Hours = 24, script: Script = None, limit: Limit = 50
) -> dict[str, Any]:
    """Per script and operation (`d1_all`, `kv_get`, `fetch api.github.com`...): spans,
    errors and duration percentiles over the window, busiest first."""
    window = Window.last(hours)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(_OPERATIONS, script, window.first_hour, window.until, limit)
        buckets = await conn.fetch(
            _BUCKETS,
            list({r["script"] for r in rows}),
            list({r["operation"] for r in rows}),
            window.first_hour,
            window.until,
        )
    merged: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for b in buckets:
        merged[b["script"], b["operation"]][b["key"]] = b["n"]
    out = []
    for r in rows:
        sketch = LatencySketch.from_json(merged[r["script"], r["operation"]])
        spans, errors = r["spans"], r["errors"]
        out.append({
            "script": r["script"], "operation": r["operation"], "spans": spans,
            "errors": errors, "error_rate": round(errors / spans, 6) if spans else None,
            "duration_ms": {
                "avg": round(r["duration_us_sum"] / spans / 1000, 3) if spans else None,
                "p50": sketch.quantile(0.50), "p95": sketch.quantile(0.95),
                "p99": sketch.quantile(0.99),
                "max": r["duration_us_max"] / 1000 if spans else None,
            },
        })  # fmt: skip
    return {
        "window": {"since": window.first_hour, "until": window.until},
        "script": script,
        "operations": out,
    }


_SPANS = """
SELECT ts, script, encode(span_id, 'hex') AS span_id,
       encode(parent_span_id, 'hex') AS parent_span_id, name, kind, duration_us, status,
       status_message, invocation_id, attributes::text AS attributes,
       resource::text AS resource, events::text AS events, links::text AS links
FROM tail_spans
WHERE trace_id = $1
ORDER BY ts, span_id
LIMIT $2
"""


@router.get(
    "/api/traces/{trace_id}",
    response_model=models.Trace,
    responses={404: {"description": "no span of this trace is stored", "model": models.Problem}},
)
async def trace(request: Request, trace_id: TraceParam) -> dict[str, Any]:
    """Every span of one trace, as a tree drawn depth first: the waterfall of one request."""
    if not _HEX_TRACE.fullmatch(trace_id):
        raise HTTPException(422, "trace_id: expected 32 hex digits")
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(_SPANS, bytes.fromhex(trace_id), MAX_SPANS + 1)
    if not rows:
        raise HTTPException(404, "no span of this trace is stored (or its day was dropped)")
    truncated = len(rows) > MAX_SPANS
    rows = rows[:MAX_SPANS]
    start: datetime = rows[0]["ts"]
    end_us = max(_offset_us(r["ts"], start) + r["duration_us"] for r in rows)
    spans = [_span(r, start) for r in rows]
    ordered = _waterfall(spans)
    root = next((s for s in ordered if s["depth"] == 0), None)
    return {
        "trace_id": trace_id.lower(),
        "start": start,
        "duration_ms": end_us / 1000,
        "root": None if root is None else _root(root),
        "span_count": len(ordered),
        "truncated": truncated,
        "spans": ordered,
    }


def _offset_us(ts: datetime, start: datetime) -> int:
    return (ts - start) // _US


def _span(r: Any, start: datetime) -> dict[str, Any]:
    attributes = _json(r["attributes"]) or {}
    kind, status = r["kind"], r["status"]
    return {
        "span_id": r["span_id"],
        "parent_span_id": r["parent_span_id"],
        "depth": 0,
        "name": r["name"],
        "kind": SPAN_KINDS[kind] if 0 <= kind < len(SPAN_KINDS) else SPAN_KINDS[0],
        "script": r["script"],
        "start": r["ts"],
        "offset_ms": _offset_us(r["ts"], start) / 1000,
        "duration_ms": r["duration_us"] / 1000,
        "status": SPAN_STATUSES[status] if 0 <= status < len(SPAN_STATUSES) else "unset",
        "status_message": r["status_message"],
        "error": status == 2 or "error.type" in attributes,
        "invocation_id": r["invocation_id"],
        "attributes": attributes,
        "resource": _json(r["resource"]) or {},
        "events": _json(r["events"]) or [],
        "links": _json(r["links"]) or [],
    }


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _waterfall(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Depth first from each root, children in start order (the rows come in start order).
    Iterative: a chain of thousands of spans must not exhaust the stack. A span seen twice
    (the same span id exported twice) is drawn once."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    roots = []
    for s in spans:
        parent = s["parent_span_id"]
        if parent is None or parent not in ids or parent == s["span_id"]:
            roots.append(s)
        else:
            children[parent].append(s)
    out: list[dict[str, Any]] = []
    drawn: set[str] = set()
    stack = [(s, 0) for s in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        if span["span_id"] in drawn:
            continue
        drawn.add(span["span_id"])
        span["depth"] = depth
        out.append(span)
        stack += [(c, depth + 1) for c in reversed(children.get(span["span_id"], ()))]
    return out


def _root(span: dict[str, Any]) -> dict[str, Any]:
    says = told(span["attributes"], round(span["duration_ms"] * 1000))
    return {"script": span["script"], "name": span["name"], **says._asdict()}
