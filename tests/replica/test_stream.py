"""Streamed invocations (streaming Tail Workers) stored by a real replica in the real PostgreSQL.

The events are the real runtime's (`tests/fixtures/tail_stream/`), published as
`tailpipe collect` publishes them: a message per invocation and post, keyed by the invocation
id. Each invocation ends as one `tail_events` row whatever the batching, its lines as they
come, its state surviving a kill -9; a redelivery stores nothing; an invocation that never
ends is closed at its timeout, once."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.formats.sanitize import loads
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.support.faults import wait_for
from tests.support.replica import Replica, assert_rollups_match_raw_rows, wait_stored

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tail_stream" / "workerd-2026-11-23.jsonl"
SCRIPT = "producer"
CLOSED = "tailpipe_stream_invocations_closed_total"
DROPPED = "tailpipe_stream_dropped_events_total"


def fixture_events() -> list[dict[str, Any]]:
    # A line may escape a lone surrogate, which orjson refuses: read as the collector does.
    return [loads(line)[0] for line in FIXTURE.read_text().splitlines()]


def by_invocation(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        found.setdefault(e["invocationId"], []).append(e)
    for group in found.values():
        group.sort(key=lambda e: e["sequence"])
    return found


def messages(events: list[dict[str, Any]], size: int) -> list[tuple[bytes, bytes]]:
    """The events as the collector publishes posts of `size` events of one invocation."""
    out = []
    for invocation_id, group in by_invocation(events).items():
        for start in range(0, len(group), size):
            doc = {"tailStream": group[start : start + size], "script": SCRIPT}
            out.append((invocation_id.encode(), _dumps(doc)))
    return out


def _dumps(doc: Any) -> bytes:
    import json

    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()


async def publish(settings: Settings, found: list[tuple[bytes, bytes]]) -> None:
    async with BulkPublisher(settings, settings.topic) as publisher:
        for key, value in found:
            await publisher.add(key, value)


async def count(db: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await db.fetchval(sql, *args))


@pytest.fixture
async def settings_2(migrated: Settings) -> Settings:
    settings = replace(migrated)
    await clients.ensure_topics(settings, {settings.topic: 2})
    return settings


async def test_each_invocation_is_one_row_and_a_redelivery_stores_nothing(
    settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    events = fixture_events()
    groups = by_invocation(events)
    lines = Counter(e["invocationId"] for e in events
                    if e["event"]["type"] in ("log", "exception", "diagnosticChannel"))  # fmt: skip
    replicas.append(Replica(settings_2))
    first = messages(events, 5)
    await publish(settings_2, first)
    await wait_stored(db, settings_2.topic, len(first), 90)
    rows = await db.fetch(
        "SELECT extra->>'invocationId' AS id, event_type, outcome, status, log_count,"
        " exception_count, script, source FROM tail_events"
    )
    assert sorted(r["id"] for r in rows) == sorted(groups)
    for r in rows:
        group = groups[r["id"]]
        assert (r["source"], r["script"]) == ("stream", SCRIPT)
        assert r["outcome"] == group[-1]["event"]["outcome"]
        told = [e["event"].get("info", {}).get("statusCode") for e in group
                if e["event"]["type"] == "return"]  # fmt: skip
        assert r["status"] == (told[0] if told else None)
        assert r["log_count"] + r["exception_count"] == lines[r["id"]]
    stored_lines = await db.fetch("SELECT invocation_id, count(*) AS n FROM tail_logs GROUP BY 1")
    assert {r["invocation_id"]: r["n"] for r in stored_lines} == dict(lines)
    # Every line ends with its invocation's outcome only if the invocation had ended when it
    # was stored; its trigger is known from the onset, which came first.
    assert await count(db, "SELECT count(*) FROM tail_logs WHERE event_type = 'unknown'") == 0
    spans = sum(1 for e in events if e["event"]["type"] == "spanClose")
    assert await count(db, "SELECT count(*) FROM tail_spans") == spans
    assert await count(db, "SELECT count(*) FROM stream_invocations") == 0
    await assert_rollups_match_raw_rows(db)

    # The same events again, batched otherwise: nothing new.
    again = messages(events, 3)
    await publish(settings_2, again)
    await wait_stored(db, settings_2.topic, len(first) + len(again), 90)
    assert await count(db, "SELECT count(*) FROM tail_events") == len(groups)
    assert await count(db, "SELECT count(*) FROM tail_logs") == sum(lines.values())
    assert await count(db, "SELECT count(*) FROM tail_spans") == spans
    await wait_for(
        lambda: replicas[0].scrape().get('tailpipe_duplicates_total{kind="event"}') == len(events),
        30, "every redelivered event counted as a duplicate",
    )  # fmt: skip
    assert replicas[0].scrape()[f'{CLOSED}{{how="outcome"}}'] == len(groups)
    await assert_rollups_match_raw_rows(db)
    assert replicas[0].terminate() == 0


def long_invocation(start_ms: int, outcome_first: bool = False) -> list[list[dict[str, Any]]]:
    """A WebSocket-like invocation told in three posts: onset and a line, lines, the end."""
    iid = f"long{start_ms:x}"
    trace = "5" * 32

    def at(seq: int, event: dict[str, Any]) -> dict[str, Any]:
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((start_ms + seq * 1000) / 1000))
        return {"invocationId": iid, "spanContext": {"traceId": trace, "spanId": "6" * 16},
                "timestamp": f"{iso}.000Z", "sequence": seq, "event": event}  # fmt: skip

    onset = {"type": "onset", "executionModel": "durableObject", "spanId": "7" * 16,
             "scriptName": "chat-room", "info": {"type": "hibernatableWebSocket",
                                                  "info": {"type": "message"}}}  # fmt: skip
    posts = [
        [at(0, onset), at(1, {"type": "log", "level": "info", "message": ["joined"]})],
        [at(2, {"type": "log", "level": "warn", "message": ["slow", {"ms": 900}]}),
         at(3, {"type": "log", "level": "log", "message": "x" * 100, "truncated": True})],
        [at(4, {"type": "streamDiagnostic",
                "diagnostic": {"diagnosticsType": "droppedEvents", "count": 7}}),
         at(5, {"type": "outcome", "outcome": "ok", "cpuTime": 12.4, "wallTime": 3600000})],
    ]  # fmt: skip
    return posts[::-1] if outcome_first else posts


def post(events: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    return events[0]["invocationId"].encode(), _dumps({"tailStream": events, "script": None})


async def test_a_long_invocation_survives_a_kill_and_is_completed_at_its_outcome(
    settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    posts = long_invocation(int(time.time() * 1000) - 7_200_000)
    replicas.append(Replica(settings_2))
    await publish(settings_2, [post(posts[0]), post(posts[1])])
    await wait_stored(db, settings_2.topic, 2, 90)
    # The lines are there before the invocation ends, with its trigger, not yet its outcome.
    found = await db.fetch("SELECT event_type, outcome, script, data::text FROM tail_logs")
    assert len(found) == 3
    assert {(r["event_type"], r["outcome"], r["script"]) for r in found} == {
        ("websocket", "unreported", "chat-room")
    }
    assert await count(db, "SELECT count(*) FROM tail_events") == 0
    assert await count(db, "SELECT count(*) FROM stream_invocations") == 1
    replicas[0].kill()
    replicas.append(Replica(settings_2))
    await publish(settings_2, [post(posts[2])])
    await wait_stored(db, settings_2.topic, 3, 90)
    row = await db.fetchrow(
        "SELECT event_type, outcome, cpu_ms, wall_ms, log_count, truncated, script,"
        " extra::text FROM tail_events"
    )
    assert row is not None
    extra = orjson.loads(row["extra"])
    assert (row["event_type"], row["outcome"], row["cpu_ms"], row["wall_ms"]) == (
        "websocket", "ok", 12, 3_600_000,
    )  # fmt: skip
    assert (row["log_count"], row["truncated"], row["script"]) == (3, True, "chat-room")
    assert (extra["droppedEvents"], extra["executionModel"]) == (7, "durableObject")
    assert await count(db, "SELECT count(*) FROM stream_invocations") == 0
    await wait_for(lambda: replicas[1].scrape().get(DROPPED) == 7, 30, "dropped events counted")
    await assert_rollups_match_raw_rows(db)
    assert replicas[1].terminate() == 0


async def test_an_outcome_before_its_onset_completes_it_once(
    settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    posts = long_invocation(int(time.time() * 1000) - 60_000, outcome_first=True)
    replicas.append(Replica(settings_2))
    for n, events in enumerate(posts, start=1):
        await publish(settings_2, [post(events)])
        await wait_stored(db, settings_2.topic, n, 90)
    rows = await db.fetch("SELECT event_type, outcome, wall_ms FROM tail_events")
    assert [tuple(r) for r in rows] == [("websocket", "ok", 3_600_000)]
    assert await count(db, "SELECT count(*) FROM stream_invocations") == 0
    assert await count(db, "SELECT count(*) FROM tail_logs") == 3
    assert replicas[0].terminate() == 0


async def test_an_invocation_with_no_outcome_is_closed_as_unknown_at_its_timeout(
    settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    start = int(time.time() * 1000) - 60_000
    posts = long_invocation(start)
    replicas.append(Replica(settings_2, TAILPIPE_STREAM_TIMEOUT="1s"))
    await publish(settings_2, [post(posts[0])])
    await wait_stored(db, settings_2.topic, 1, 90)
    assert await count(db, "SELECT count(*) FROM stream_invocations") == 1
    # A partition's idle invocations are closed by its next flushes: keep them coming.
    sent = 1
    filler = [e for events in long_invocation(start + 1) for e in events]  # whole: ends at once
    idle_key = post(posts[0])[0]

    async def closed() -> bool:
        nonlocal sent
        if await count(db, "SELECT count(*) FROM tail_events WHERE outcome = 'unknown'"):
            return True
        # Keyed as the idle one, so on its partition.
        await publish(settings_2, [(idle_key, post(filler)[1])])
        sent += 1
        await wait_stored(db, settings_2.topic, sent, 90)
        return False

    await wait_for(closed, 60, "the idle invocation closed as unknown", interval_s=0.5)
    row = await db.fetchrow("SELECT event_type, outcome, log_count FROM tail_events"
                            " WHERE outcome = 'unknown'")  # fmt: skip
    assert row is not None
    assert tuple(row) == ("websocket", "unknown", 1)
    # Its late events add their lines, never a second row.
    await publish(settings_2, [post(posts[1]), post(posts[2])])
    await wait_stored(db, settings_2.topic, sent + 2, 90)
    ended = await db.fetch(
        "SELECT outcome FROM tail_events WHERE extra->>'invocationId' = $1",
        posts[0][0]["invocationId"],
    )
    assert [r["outcome"] for r in ended] == ["unknown"]
    assert replicas[0].scrape()[f'{CLOSED}{{how="timeout"}}'] == 1
    await assert_rollups_match_raw_rows(db)
    assert replicas[0].terminate() == 0


@pytest.mark.parametrize("together", [True, False])
async def test_events_of_one_invocation_on_two_partitions_make_one_row(
    together: bool, settings_2: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """A producer writing to Kafka itself may key an invocation's events otherwise than by its
    id: they land on two partitions, settled one after the other in one batch, or by two
    flushes (`stream.StateRaced` if two replicas race to store its first state)."""
    posts = long_invocation(int(time.time() * 1000) - 60_000)
    # By the default partitioner over two partitions: k0 goes to 1, k3 to 0.
    keyed = [
        (key, post(events)[1]) for key, events in zip((b"k0", b"k3", b"k0"), posts, strict=True)
    ]
    replicas.append(Replica(settings_2))
    if together:
        await publish(settings_2, keyed)
    else:
        for n, message in enumerate(keyed, start=1):
            await publish(settings_2, [message])
            await wait_stored(db, settings_2.topic, n, 90)
    await wait_stored(db, settings_2.topic, len(keyed), 90)
    rows = await db.fetch("SELECT event_type, outcome, log_count FROM tail_events")
    assert [tuple(r) for r in rows] == [("websocket", "ok", 3)]
    assert await count(db, "SELECT count(*) FROM stream_invocations") == 0
    assert await count(db, "SELECT count(*) FROM tail_logs") == 3
    await assert_rollups_match_raw_rows(db)
    assert replicas[0].terminate() == 0
