"""Spans stored by a real replica into the real PostgreSQL, read through the real API app:
`/api/traces/{trace_id}` draws one trace as a waterfall (its spans in two Kafka messages, as
two exports of one trace arrive), and `/api/traces/operations` gives each operation's count,
errors and percentiles from the rollup."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest
from fastapi.testclient import TestClient

from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.conftest import ROOT
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored

READ = "read-token-0123456789"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FIXTURE = ROOT / "tests" / "fixtures" / "otlp" / "cloudflare_trace.json"
LOGS = ROOT / "tests" / "fixtures" / "otlp" / "cloudflare_fetch.json"


def moved(document: dict[str, Any], start_ns: int) -> dict[str, Any]:
    """The export with its first span starting at `start_ns`, the others as far from it."""
    doc = copy.deepcopy(document)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    shift = start_ns - int(spans[0]["startTimeUnixNano"])
    for span in spans:
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            span[key] = str(int(span[key]) + shift)
        for event in span.get("events", ()):
            event["timeUnixNano"] = str(int(event["timeUnixNano"]) + shift)
    return doc


def logs_of_the_same_invocation(start_ns: int) -> dict[str, Any]:
    """Its logs export (no outcome, CPU or wall time in it), of the same script and time."""
    doc: dict[str, Any] = orjson.loads(LOGS.read_bytes())
    entry = doc["resourceLogs"][0]
    for attribute in entry["resource"]["attributes"]:
        if attribute["key"] in ("cloudflare.script_name", "service.name", "faas.name"):
            attribute["value"] = {"stringValue": "shop-api"}
    records = entry["scopeLogs"][0]["logRecords"]
    shift = start_ns - int(records[0]["timeUnixNano"])
    for record in records:
        for key in ("timeUnixNano", "observedTimeUnixNano"):
            if key in record:
                record[key] = str(int(record[key]) + shift)
    return doc


@pytest.fixture
async def stored(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> dict[str, Any]:
    settings = replace(migrated, api_read_tokens=(READ,))
    await clients.ensure_topics(settings, {settings.topic: 2})
    start_ns = (int(time.time()) - 600) * 1_000_000_000
    whole = moved(orjson.loads(FIXTURE.read_bytes()), start_ns)
    # Two exports of one trace: the root and the kv_get first, the rest later.
    first, second = copy.deepcopy(whole), copy.deepcopy(whole)
    spans = whole["resourceSpans"][0]["scopeSpans"][0]["spans"]
    first["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[:2]
    second["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[2:]
    async with BulkPublisher(settings, settings.topic) as publisher:
        for doc in (first, second, logs_of_the_same_invocation(start_ns)):
            await publisher.add(TRACE.encode(), orjson.dumps(doc))
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 3, 90)
    assert replicas[0].terminate() == 0
    return {"settings": settings, "spans": spans}


@pytest.fixture
def client(stored: dict[str, Any]) -> Iterator[TestClient]:
    with signed_in(stored["settings"], READ) as c:
        yield c


async def test_a_trace_split_over_two_messages_is_one_waterfall(
    client: TestClient, db: asyncpg.Connection, stored: dict[str, Any]
) -> None:
    assert await db.fetchval("SELECT count(*) FROM tail_spans") == 4
    body = get(client, f"/api/traces/{TRACE.upper()}")
    assert body["trace_id"] == TRACE
    assert body["span_count"] == 4
    assert body["truncated"] is False
    # Depth first, siblings by start: the handler, then kv_get, the GitHub call, d1_all.
    assert [(s["name"], s["depth"]) for s in body["spans"]] == [
        ("fetch", 0),
        ("kv_get", 1),
        ("fetch", 1),
        ("d1_all", 1),
    ]
    root, kv, github, d1 = body["spans"]
    assert root["parent_span_id"] is None
    assert {kv["parent_span_id"], github["parent_span_id"]} == {root["span_id"]}
    assert root["kind"] == "server"
    assert kv["duration_ms"] == 0.45
    assert kv["offset_ms"] == 1.2
    assert d1["error"] is True
    assert d1["events"][0]["name"] == "exception"
    assert body["duration_ms"] == 182.4
    assert body["root"] == {
        "script": "shop-api",
        "name": "fetch",
        "outcome": "ok",
        "cpu_ms": 7.0,
        "wall_ms": 182.0,
    }
    # Redacted before it was stored; identifiers kept.
    assert "sk_live" not in orjson.dumps(body).decode()
    assert root["attributes"]["cloudflare.ray_id"] == "8f2a1b3c4d5e6f70"


async def test_operations_count_every_span_once_with_percentiles(
    client: TestClient, db: asyncpg.Connection
) -> None:
    body = get(client, "/api/traces/operations", hours=24)
    by_name = {o["operation"]: o for o in body["operations"]}
    assert set(by_name) == {"fetch", "kv_get", "fetch api.github.com", "d1_all"}
    assert all(o["script"] == "shop-api" and o["spans"] == 1 for o in by_name.values())
    assert by_name["d1_all"]["errors"] == 1
    assert by_name["d1_all"]["error_rate"] == 1.0
    github = by_name["fetch api.github.com"]["duration_ms"]
    assert github["max"] == 140.5
    assert github["p95"] == pytest.approx(140.5, rel=0.01)
    stored = await db.fetchval("SELECT sum(spans) FROM span_operations_hourly")
    assert stored == 4
    only = get(client, "/api/traces/operations", hours=24, script="elsewhere")
    assert only["operations"] == []


def test_unknown_and_malformed_trace_ids(client: TestClient) -> None:
    missing = client.get(f"/api/traces/{'ab' * 16}")
    assert missing.status_code == 404
    assert "no span of this trace" in missing.json()["error"]
    assert client.get("/api/traces/not-a-trace").status_code == 422


def test_the_root_span_fills_what_the_logs_export_lacks(client: TestClient) -> None:
    lines = get(client, "/api/logs/recent", hours=24, limit=100)["logs"]
    [invocation] = {line["invocation"] for line in lines if line["script"] == "shop-api"}
    body = get(client, f"/api/invocations/{invocation}")
    assert body["trace_id"] == TRACE
    assert (body["outcome"], body["cpu_ms"], body["wall_ms"]) == ("ok", 7, 182)
    # Filled when stored (pipeline/postgres/completion.py): the row holds them, so the API has
    # nothing left to fill.
    assert body["from_root_span"] == []
