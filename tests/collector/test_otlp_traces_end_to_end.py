"""OTLP traces all the way: a Workers Observability traces export and the OpenTelemetry Python
SDK post to a running collector, a real replica stores what it published, and PostgreSQL and
the API show each span once, its trace whole although it came in several requests."""

from __future__ import annotations

import asyncio
import copy
import gzip
import time

import asyncpg
import orjson

from pipeline.settings import Settings
from tests.api.test_traces import FIXTURE, moved
from tests.collector.test_collect import TOKEN, running
from tests.collector.test_otlp_end_to_end import READ, stored_settings
from tests.collector.test_otlp_logs import JSON, SECRET_HEADER
from tests.collector.test_otlp_traces import ROUTE, trace_with_sdk
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored


async def test_a_workers_observability_trace_in_two_exports_is_stored_as_one_trace(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = await stored_settings(migrated)
    whole = moved(orjson.loads(FIXTURE.read_bytes()), (int(time.time()) - 600) * 10**9)
    spans = whole["resourceSpans"][0]["scopeSpans"][0]["spans"]
    [trace] = {span["traceId"] for span in spans}
    first, second = copy.deepcopy(whole), copy.deepcopy(whole)
    first["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[:2]
    second["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[2:]
    destination = {SECRET_HEADER: TOKEN, "Content-Encoding": "gzip", **JSON}
    async with running(settings) as client:
        for export in (first, second):
            body = gzip.compress(orjson.dumps(export))
            response = await client.post(ROUTE, content=body, headers=destination)
            assert (response.status_code, response.json()) == (200, {}), response.text
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 2, 90)
    rows = await db.fetch(
        "SELECT encode(trace_id, 'hex') AS trace, encode(span_id, 'hex') AS span,"
        " encode(parent_span_id, 'hex') AS parent, script, name, kafka_partition FROM tail_spans"
    )
    assert sorted((r["span"], r["parent"], r["name"]) for r in rows) == sorted(
        (s["spanId"], s.get("parentSpanId"), s["name"]) for s in spans
    )
    assert {(r["trace"], r["script"]) for r in rows} == {(trace, "shop-api")}
    assert len({r["kafka_partition"] for r in rows}) == 1  # keyed by the trace id

    with signed_in(settings, READ) as api:
        body = get(api, f"/api/traces/{trace}")
    assert body["span_count"] == len(spans)
    assert [(s["name"], s["depth"]) for s in body["spans"]] == [
        ("fetch", 0),
        ("kv_get", 1),
        ("fetch", 1),
        ("d1_all", 1),
    ]


async def test_the_opentelemetry_sdk_s_spans_are_stored_once_each_with_their_links(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = await stored_settings(migrated)
    async with running(settings) as client:
        exporter = await asyncio.to_thread(trace_with_sdk, str(client.base_url.join(ROUTE)))
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 3, 90)
    rows = await db.fetch(
        "SELECT encode(trace_id, 'hex') AS trace, encode(span_id, 'hex') AS span,"
        " encode(parent_span_id, 'hex') AS parent, script, name, kind, status, status_message,"
        " links::text AS links FROM tail_spans"
    )
    stored = {(r["trace"], r["span"]): r for r in rows}
    assert len(rows) == len(stored) == len(exporter.spans) == 4  # each once
    for given in exporter.spans:
        row = stored[f"{given.context.trace_id:032x}", f"{given.context.span_id:016x}"]
        parent = None if given.parent is None else f"{given.parent.span_id:016x}"
        assert (row["name"], row["parent"], row["script"]) == (given.name, parent, "otel-roundtrip")
        assert row["kind"] == given.kind.value + 1  # OTLP counts UNSPECIFIED as 0
    by_name = {r["name"]: r for r in rows}
    charge = by_name["charge card"]
    assert (charge["status"], charge["status_message"]) == (2, "card declined")
    enqueue = by_name["enqueue"]
    [link] = orjson.loads(charge["links"])
    assert (link["trace_id"], link["span_id"]) == (enqueue["trace"], enqueue["span"])
