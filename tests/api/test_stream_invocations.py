"""Streamed invocations through the API, stored by a real replica into the real PostgreSQL:
each line links to its invocation's row (found by the invocation id, since the line came in
another message), `/api/invocations/{id}` shows every line, and the events the runtime
dropped are said."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from pipeline.kafka import clients
from pipeline.settings import Settings
from tests.api.test_traces import READ
from tests.replica.test_stream import fixture_events, long_invocation, messages, post, publish
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored


@pytest.fixture
async def stored(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> dict[str, Any]:
    settings = replace(migrated, api_read_tokens=(READ,))
    await clients.ensure_topics(settings, {settings.topic: 2})
    sent = messages(fixture_events(), 4)
    sent += [post(events) for events in long_invocation(int(time.time() * 1000) - 600_000)]
    await publish(settings, sent)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(sent), 90)
    assert replicas[0].terminate() == 0
    return {"settings": settings}


@pytest.fixture
def client(stored: dict[str, Any]) -> Iterator[TestClient]:
    with signed_in(stored["settings"], READ) as c:
        yield c


async def test_every_streamed_line_opens_its_whole_invocation(
    client: TestClient, db: asyncpg.Connection
) -> None:
    lines = get(client, "/api/logs/recent", hours=24, limit=500)["logs"]
    assert len(lines) == await db.fetchval("SELECT count(*) FROM tail_logs")
    assert all(line["invocation"] is not None for line in lines)
    fetches = [line for line in lines if line["request"] is not None]
    assert fetches, "a fetch's lines show its request"
    for invocation in {line["invocation"] for line in lines}:
        view = get(client, f"/api/invocations/{invocation}")
        assert view["source"] == "stream"
        assert view["complete"] is True
        assert len(view["logs"]) + len(view["exceptions"]) == (
            view["log_count"] + view["exception_count"]
        )
        mine = [line for line in lines if line["invocation"] == invocation]
        assert len(mine) == view["log_count"] + view["exception_count"]
        if view["event_type"] == "websocket":
            assert view["dropped_events"] == 7
            assert view["wall_ms"] == 3_600_000
        else:
            assert view["dropped_events"] == 0
