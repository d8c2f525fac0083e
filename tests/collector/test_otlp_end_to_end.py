"""OTLP logs all the way: a Workers Observability export and the OpenTelemetry Python SDK post
to a running collector, a real replica stores what it published, and PostgreSQL and the API
show the invocations, their request and their lines, each once."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
from opentelemetry._logs import SeverityNumber

from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.collector.test_collect import TOKEN, running
from tests.collector.test_otlp_logs import (
    JSON,
    SECRET_HEADER,
    Given,
    cloudflare_entry,
    export,
    export_with_sdk,
    invocation,
)
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored

READ = "otlp-read-token-0123456789"


def at_now(entry: dict[str, Any], now_ns: int) -> dict[str, Any]:
    """An entry's records moved to `now_ns` (keeping their offsets), so the API's window has
    them."""
    records = entry["scopeLogs"][0]["logRecords"]
    base = min(int(r["timeUnixNano"]) for r in records)
    for record in records:
        for key in ("timeUnixNano", "observedTimeUnixNano"):
            record[key] = str(now_ns + int(record[key]) - base)
    return entry


async def stored_settings(migrated: Settings) -> Settings:
    settings = replace(migrated, collect_tokens=(TOKEN,), collect_secret_header=SECRET_HEADER)
    await ensure_topics(settings, {settings.topic: 2})
    return settings


async def test_a_workers_observability_export_becomes_invocations_with_their_lines(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = await stored_settings(migrated)
    now_ns = (time.time_ns() // 1_000_000 - 60_000) * 1_000_000
    invocations = [invocation(n) for n in range(3)]
    body = gzip.compress(export(*(at_now(cloudflare_entry(i), now_ns) for i in invocations)))
    async with running(settings) as client:
        response = await client.post(
            "/v1/logs",
            content=body,
            headers={SECRET_HEADER: TOKEN, "Content-Encoding": "gzip", **JSON},
        )
        assert response.status_code == 200, response.text
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(invocations), 90)
    events = await db.fetch(
        "SELECT script, event_type, method, url, status, source, extra->>'faas.invocation_id'"
        " AS invocation_id FROM tail_events ORDER BY url"
    )
    assert [(e["script"], e["event_type"], e["method"], e["status"]) for e in events] == [
        ("shop", "fetch", "GET", 200)
    ] * 3
    assert {e["invocation_id"] for e in events} == {i.invocation_id for i in invocations}
    assert {e["source"] for e in events} == {"otlp"}
    lines = await db.fetch("SELECT message, data::text AS data FROM tail_logs ORDER BY ts, seq")
    assert len(lines) == 2 * len(invocations)
    logged = [orjson.loads(line["data"]) for line in lines if line["data"] is not None]
    assert {"event": "cart.updated", "items": 3, "user": "u-17"}.items() <= logged[0].items()

    with signed_in(settings, READ) as api:
        recent = get(api, "/api/logs/recent", hours=1, limit=100)["logs"]
    assert len(recent) == 2 * len(invocations)
    ray_ids = {i.invocation_id[:16] for i in invocations}
    for line in recent:
        assert line["request"]["method"] == "GET"
        assert line["request"]["path"].startswith("/items/")
        assert line["request"]["request_id"] in ray_ids  # the ray id a user quotes


async def test_the_opentelemetry_sdk_s_records_are_stored_once_each(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = await stored_settings(migrated)
    now_ns = time.time_ns()
    spans = [(uuid.uuid4().int, uuid.uuid4().int >> 64) for _ in range(2)]
    given = [
        Given(
            body=f"span {s} step {n}",
            severity=SeverityNumber.INFO if n < 2 else SeverityNumber.ERROR,
            attributes={"step": n},
            span=span,
            timestamp=now_ns + 1_000_000 * (3 * s + n),  # a millisecond apart: rows keep ms
        )
        for s, span in enumerate(spans)
        for n in range(3)
    ]
    async with running(settings) as client:
        endpoint = str(client.base_url.join("/v1/logs"))
        await asyncio.to_thread(export_with_sdk, endpoint, given)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(spans), 90)
    events = await db.fetch(
        "SELECT script, event_type, encode(trace_id, 'hex') AS trace_id FROM tail_events"
    )
    assert sorted(e["trace_id"] for e in events) == sorted(f"{t:032x}" for t, _ in spans)
    assert {(e["script"], e["event_type"]) for e in events} == {("otel-roundtrip", "otel")}
    lines = await db.fetch("SELECT message, level FROM tail_logs ORDER BY ts")
    assert [(line["message"], line["level"]) for line in lines] == [
        (g.body, "info" if g.severity == SeverityNumber.INFO else "error") for g in given
    ]
