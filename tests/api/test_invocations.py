"""Log lines carry their request, and `/api/invocations/{id}` gives an invocation with all its
lines: for the logger's envelope (with a trace), a Workers trace item and a Logpush record,
stored by a real replica into the real PostgreSQL, read through the real API app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.api.invocations import InvocationId
from pipeline.formats.identity import item_key, value_key
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.logger import TailpipeMiddleware
from pipeline.settings import Settings
from tests.conftest import ROOT
from tests.logger.test_envelope import captured_logger
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored

READ = "read-token-0123456789"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
FIXTURES = ROOT / "tests" / "fixtures" / "events"
SKEW_MS = 3 * 3_600_000


async def logger_envelope() -> bytes:
    """A request through the logger's middleware, with a caller's traceparent."""
    log, captured = captured_logger("orders")

    async def order(request: Request) -> Response:
        log.info("order looked up", order=request.path_params["n"])
        log.warn("stock low")
        return JSONResponse({"ok": True}, status_code=201)

    app = TailpipeMiddleware(Starlette(routes=[Route("/v1/orders/{n}", order)]), log)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://orders.internal") as client:  # fmt: skip
        response = await client.get(
            "/v1/orders/42?token=s3cret-value",
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "x-request-id": "req_7Yq2"},
        )
    assert response.status_code == 201
    return captured.values[0]


def now_item(path: str, at_ms: int, **changes: Any) -> dict[str, Any]:
    """A fixture moved to `at_ms` (its lines keep their offsets from its start)."""
    item: dict[str, Any] = orjson.loads((FIXTURES / path).read_bytes())
    workers = "eventTimestamp" in item
    start = item["eventTimestamp" if workers else "EventTimestampMs"]
    item["eventTimestamp" if workers else "EventTimestampMs"] = at_ms
    for line in item["logs" if workers else "Logs"]:
        key = "timestamp" if workers else "TimestampMs"
        line[key] = at_ms + line[key] - start
    return {**item, **changes}


@pytest.fixture
async def stored(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> dict[str, Any]:
    settings = replace(migrated, api_read_tokens=(READ,))
    await clients.ensure_topics(settings, {settings.topic: 2})
    now = int(time.time() * 1000) - 600_000
    envelope = await logger_envelope()
    trace_item = now_item("trace/fetch.json", now)
    logpush = now_item("logpush/fetch.json", now + 1)
    # A Worker whose second line's clock is three hours off its invocation's.
    skewed = now_item("trace/fetch.json", now + 2, scriptName="skewed-clock")
    skewed["logs"][1]["timestamp"] = now + SKEW_MS
    messages = [(value_key(envelope), envelope)] + [
        (item_key(i), orjson.dumps(i)) for i in (trace_item, logpush, skewed)
    ]
    async with BulkPublisher(settings, settings.topic) as publisher:
        for key, value in messages:
            await publisher.add(key, value)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(messages), 90)
    assert replicas[0].terminate() == 0
    return {"settings": settings, "trace": trace_item, "logpush": logpush, "skewed": skewed}


@pytest.fixture
def client(stored: dict[str, Any]) -> Iterator[TestClient]:
    with signed_in(stored["settings"], READ) as c:
        yield c


async def test_every_log_line_shows_its_request_and_opens_its_invocation(
    client: TestClient, db: asyncpg.Connection, stored: dict[str, Any]
) -> None:
    lines = get(client, "/api/logs/recent", hours=24, limit=1000)["logs"]
    by_script: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_script.setdefault(line["script"], []).append(line)
    assert set(by_script) == {"orders", "api-gateway", "skewed-clock"}

    # The logger's request: its trace, its request id, its path (the query stays out).
    orders = by_script["orders"]
    assert {line["message"] for line in orders} >= {"order looked up", "stock low"}
    for line in orders:
        assert line["trace_id"] == TRACE
        assert line["span_id"] not in (None, PARENT)
        assert line["request"] == {"method": "GET", "path": "/v1/orders/42", "status": 201,
                                   "request_id": "req_7Yq2"}  # fmt: skip
    # Workers (cf-ray) and Logpush (RayID): no trace, a request all the same.
    gateway = by_script["api-gateway"]
    assert len({line["invocation"] for line in gateway}) == 2, "trace item and Logpush record"
    for line in gateway:
        assert (line["trace_id"], line["span_id"]) == (None, None)
        assert line["request"] == {"method": "POST", "path": "/v1/chat", "status": 200,
                                   "request_id": "8f2a1b3c4d5e6f70"}  # fmt: skip

    # Every line's invocation opens with all its lines, as stored.
    for invocation in {line["invocation"] for line in lines}:
        body = get(client, f"/api/invocations/{invocation}")
        at = InvocationId.parse(invocation)
        assert at is not None
        assert body["id"] == invocation
        stored_lines = await db.fetch(
            "SELECT seq, level, message FROM tail_logs WHERE topic = $1 AND kafka_partition = $2"
            " AND kafka_offset = $3 AND item = $4 ORDER BY seq",
            at.topic, at.partition, at.offset, at.item,
        )  # fmt: skip
        shown = body["logs"] + body["exceptions"]
        assert [(x["seq"], x["level"], x["message"]) for x in sorted(shown, key=_seq)] == [
            tuple(r) for r in stored_lines
        ]
        assert len(body["logs"]) == body["log_count"]
        assert len(body["exceptions"]) == body["exception_count"]
        assert body["complete"] is True
        assert {line["invocation"] for line in lines if line["script"] == body["script"]} >= {
            invocation
        }

    [order] = {line["invocation"] for line in orders}
    body = get(client, f"/api/invocations/{order}")
    assert (body["trace_id"], body["request_id"], body["source"]) == (TRACE, "req_7Yq2", "envelope")
    assert body["extra"]["spanContext"] == {"parentSpanId": PARENT}
    assert "s3cret-value" not in body["url"], "the URL as stored: redacted"
    assert body["logs"][0]["data"] == {"order": "42"}


async def test_a_line_far_from_its_invocations_time_is_found(
    client: TestClient, stored: dict[str, Any]
) -> None:
    lines = get(client, "/api/logs/recent", hours=24, script="skewed-clock")["logs"]
    [invocation] = {line["invocation"] for line in lines}
    body = get(client, f"/api/invocations/{invocation}")
    assert body["complete"] is True
    assert len(body["logs"]) == len(stored["skewed"]["logs"])


async def test_unknown_and_malformed_ids(client: TestClient, stored: dict[str, Any]) -> None:
    topic = stored["settings"].topic
    missing = client.get(f"/api/invocations/1767225600123000-0-999999-0-{topic}")
    assert missing.status_code == 404
    assert "no such invocation" in missing.json()["error"]
    refused = ("42", "x-0-0-0-t", "1-0-0-0-a b", f"1-0-{2**63}-0-t", f"{10**18}-0-0-0-t",
               f"1-{2**31}-0-0-t")  # fmt: skip
    for bad in refused:
        response = client.get(f"/api/invocations/{bad}")
        assert response.status_code == 422, (bad, response.text)
    assert client.get("/api/invocations/1-0-0-0-a/b").status_code == 404, "another path"


async def test_lines_stored_before_the_link_have_none(
    client: TestClient, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO tail_logs (ts, script, event_type, outcome, level, message, topic,"
        " kafka_partition, kafka_offset, item, seq)"
        " VALUES (now(), 'old-row', 'fetch', 'ok', 'info', 'from before', 'other', 0, 1, 0, 0)"
    )
    [line] = get(client, "/api/logs/recent", script="old-row")["logs"]
    assert (line["invocation"], line["request"], line["trace_id"]) == (None, None, None)


def _seq(line: dict[str, Any]) -> int:
    return int(line["seq"])


def test_invocation_ids_round_trip() -> None:
    from datetime import UTC, datetime

    at = InvocationId(datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), 3, 18231, 1, "a.b-c_d")
    assert str(at) == "1767225600123456-3-18231-1-a.b-c_d"
    assert InvocationId.parse(str(at)) == at
    assert InvocationId.parse("1-2-3") is None
