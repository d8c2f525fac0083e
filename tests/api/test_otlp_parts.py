"""An OTLP invocation whose records came in two messages (a Workers Observability logs export
that cut them in two), stored by a real replica into the real PostgreSQL: one request in the
rollups, and `/api/invocations/{id}` from either part shows the whole invocation."""

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
from tests.api.test_traces import LOGS, READ
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored

INVOCATION = "9c1e5b7a2d4f4e6a8b0c1d2e3f405162"


def halves(start_ns: int) -> list[dict[str, Any]]:
    """The fixture's invocation at `start_ns`: its invocation record and the first two console
    records in one export, the last two console records in another, listed first."""
    doc: dict[str, Any] = orjson.loads(LOGS.read_bytes())
    records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    shift = start_ns - int(records[0]["timeUnixNano"])
    for record in records:
        for key in ("timeUnixNano", "observedTimeUnixNano"):
            if key in record:
                record[key] = str(int(record[key]) + shift)
        # What joins the console records to their invocation when they come alone.
        record["attributes"].append(
            {"key": "faas.invocation_id", "value": {"stringValue": INVOCATION}}
        )
    first, second = copy.deepcopy(doc), copy.deepcopy(doc)
    first["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[:3]
    second["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[3:]
    return [second, first]


@pytest.fixture
async def stored(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> dict[str, Any]:
    settings = replace(migrated, api_read_tokens=(READ,))
    await clients.ensure_topics(settings, {settings.topic: 2})
    exports = halves((int(time.time()) - 600) * 1_000_000_000)
    async with BulkPublisher(settings, settings.topic) as publisher:
        for doc in exports:
            await publisher.add(INVOCATION.encode(), orjson.dumps(doc))
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(exports), 90)
    assert replicas[0].terminate() == 0
    return {"settings": settings}


@pytest.fixture
def client(stored: dict[str, Any]) -> Iterator[TestClient]:
    with signed_in(stored["settings"], READ) as c:
        yield c


async def test_one_invocation_in_two_messages_is_one_request_shown_whole(
    client: TestClient, db: asyncpg.Connection
) -> None:
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 2, "stored as two parts"
    requests = await db.fetchval(
        "SELECT sum(requests) FROM tail_metrics_hourly WHERE script = 'api-gateway'"
        " AND event_type <> '*'"
    )
    assert requests == 1, "counted once: the part without the invocation record is no request"
    lines = get(client, "/api/logs/recent", hours=24, limit=100)["logs"]
    assert len(lines) == 4
    invocations = {line["invocation"] for line in lines}
    assert len(invocations) == 2  # each line links to the part it came in
    views = [get(client, f"/api/invocations/{i}") for i in sorted(invocations)]
    for view in views:
        assert (view["event_type"], view["method"], view["status"]) == ("fetch", "POST", 200)
        assert len(view["parts"]) == 2
        assert view["log_count"] == 4
        assert view["complete"] is True
        assert [line["message"] for line in view["logs"]] == [
            "routing /v1/chat",
            '{"event":"llm_usage","model":"claude-sonnet-4-5",'
            '"usage":{"input_tokens":1834,"output_tokens":412}}',
            "github ratelimit remaining=112 limit=5000",
            "upstream slow: 4.2s",
        ]
    assert views[0]["parts"] == views[1]["parts"]
