"""A Workers Observability invocation completed by its trace's root span, by a real replica in
the real PostgreSQL: whichever of its logs and its trace comes first, in one batch or in two,
the row and the hourly rollups end with the root span's outcome and CPU and wall time, once.
A fragment of the invocation (console records told alone) is not counted, so not completed."""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.api.test_traces import FIXTURE, TRACE, logs_of_the_same_invocation, moved
from tests.support.faults import wait_for
from tests.support.replica import Replica, wait_stored

NOW_NS = (int(time.time()) - 600) * 1_000_000_000
COMPLETED = "tailpipe_invocations_completed_total"


def trace_export(start_ns: int, outcome: str = "ok") -> dict[str, Any]:
    doc = moved(orjson.loads(FIXTURE.read_bytes()), start_ns)
    for span in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for attribute in span.get("attributes", ()):
            if attribute["key"] == "cloudflare.outcome":
                attribute["value"] = {"stringValue": outcome}
    return doc


async def publish(settings: Settings, *docs: dict[str, Any]) -> None:
    async with BulkPublisher(settings, settings.topic) as publisher:
        for doc in docs:
            await publisher.add(TRACE.encode(), orjson.dumps(doc))


async def hour_of(db: asyncpg.Connection) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT requests, errors, outcomes::text, cpu_ms_sum, wall_ms_sum, cpu_sketch::text"
        " FROM tail_metrics_hourly WHERE script = 'shop-api' AND event_type = 'fetch'"
    )
    assert row is not None
    return {**row, "outcomes": orjson.loads(row["outcomes"])}


async def stored_invocation(db: asyncpg.Connection) -> tuple[str, int | None, int | None]:
    rows = await db.fetch("SELECT outcome, cpu_ms, wall_ms FROM tail_events")
    assert len(rows) == 1
    return rows[0]["outcome"], rows[0]["cpu_ms"], rows[0]["wall_ms"]


@pytest.fixture
async def settings_2(migrated: Settings) -> Settings:
    settings = replace(migrated)
    await clients.ensure_topics(settings, {settings.topic: 2})
    return settings


@pytest.mark.parametrize("first", ["logs", "trace"])
async def test_completed_whichever_half_comes_first_in_another_batch(
    first: str, settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    logs, trace = logs_of_the_same_invocation(NOW_NS), trace_export(NOW_NS, "exception")
    replicas.append(Replica(settings_2))
    await publish(settings_2, logs if first == "logs" else trace)
    await wait_stored(db, settings_2.topic, 1, 90)
    if first == "logs":
        assert await stored_invocation(db) == ("unreported", None, None)
    await publish(settings_2, trace if first == "logs" else logs)
    await wait_stored(db, settings_2.topic, 2, 90)
    # Counted just after the commit that stored the second half.
    await wait_for(lambda: replicas[0].scrape().get(COMPLETED) == 1, 30, "counted as completed")
    assert replicas[0].terminate() == 0

    assert await stored_invocation(db) == ("exception", 7, 182)
    hour = await hour_of(db)
    assert hour["requests"] == 1
    assert hour["errors"] == 1, "the root span's outcome counts as the error it is"
    assert {k: v for k, v in hour["outcomes"].items() if v} == {"exception": 1}
    assert (hour["cpu_ms_sum"], hour["wall_ms_sum"]) == (7, 182)
    assert orjson.loads(hour["cpu_sketch"]) != {}, "the CPU percentiles have it"


async def test_a_redelivered_root_span_completes_nothing_again(
    settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    logs, trace = logs_of_the_same_invocation(NOW_NS), trace_export(NOW_NS)
    replicas.append(Replica(settings_2))
    await publish(settings_2, logs, trace)  # one batch: both halves met in it
    await wait_stored(db, settings_2.topic, 2, 90)
    await publish(settings_2, trace)
    await wait_stored(db, settings_2.topic, 3, 90)
    assert replicas[0].terminate() == 0
    assert await stored_invocation(db) == ("ok", 7, 182)
    hour = await hour_of(db)
    assert (hour["requests"], hour["errors"], hour["cpu_ms_sum"], hour["wall_ms_sum"]) == (
        1,
        0,
        7,
        182,
    )


async def test_a_fragment_is_not_completed(
    settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """The invocation record with two console records in one message, the other two console
    records alone in another (a fragment): only the record's row takes the root span's values,
    so the rollups count its CPU and wall time once."""
    logs = logs_of_the_same_invocation(NOW_NS)
    records = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    invocation_id = next(
        a["value"]["stringValue"]
        for a in records[0]["attributes"]
        if a["key"] == "faas.invocation_id"
    )
    for record in records[1:]:
        record["attributes"].append(
            {"key": "faas.invocation_id", "value": {"stringValue": invocation_id}}
        )
    head, tail = copy.deepcopy(logs), copy.deepcopy(logs)
    head["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[:3]
    tail["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[3:]
    replicas.append(Replica(settings_2))
    await publish(settings_2, tail, head, trace_export(NOW_NS))
    await wait_stored(db, settings_2.topic, 3, 90)
    assert replicas[0].terminate() == 0
    rows = await db.fetch("SELECT event_type, outcome, cpu_ms, wall_ms FROM tail_events")
    assert sorted(tuple(r) for r in rows) == [
        ("fetch", "ok", 7, 182),
        ("unknown", "unreported", None, None),
    ]
    hour = await hour_of(db)
    assert (hour["requests"], hour["cpu_ms_sum"], hour["wall_ms_sum"]) == (1, 7, 182)
