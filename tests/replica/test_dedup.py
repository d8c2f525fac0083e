"""A sender's retries stored once, by real replicas in the real PostgreSQL: re-serialised,
inside one batch or after the first copy was committed, across a kill -9 and a new replica;
and stored twice with TAILPIPE_DEDUP=off, for producers that never retry."""

from __future__ import annotations

import itertools
import json
import random
import time
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.formats.identity import item_key
from pipeline.kafka import clients, synth
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.api.test_traces import FIXTURE, TRACE, logs_of_the_same_invocation, moved
from tests.formats.test_identity import shuffled
from tests.replica.test_completion import NOW_NS
from tests.support.faults import wait_for
from tests.support.replica import (
    START,
    Replica,
    assert_exactly_once,
    assert_rollups_match_raw_rows,
    produce,
    wait_stored,
)

DUPLICATES = 'tailpipe_duplicates_total{kind="invocation"}'
SPAN_DUPLICATES = 'tailpipe_duplicates_total{kind="span"}'


def retries(seed: int, n: int, every: int) -> list[tuple[bytes, bytes]]:
    """Every `every`-th of the first n messages of `produce(seed)`, as a sender would send it
    again: another key order and whitespace, keyed as producers key it."""
    rng = random.Random(seed)
    out = []
    for i, m in enumerate(itertools.islice(synth.messages(seed, START), n)):
        if i % every == 0 and not m.poison:
            again = json.dumps(shuffled(orjson.loads(m.value), rng), indent=1).encode()
            out.append((item_key(orjson.loads(again)), again))
    return out


async def publish(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    async with BulkPublisher(settings, settings.topic) as publisher:
        for key, value in messages:
            await publisher.add(key, value)


@pytest.fixture
async def topic(migrated: Settings) -> Settings:
    await clients.ensure_topics(migrated, {migrated.topic: 3})
    return migrated


async def test_retries_are_stored_once_and_counted(
    topic: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    # Retries of 10%: some in the same batches as their first copies, the rest after those
    # were committed.
    produced = await produce(topic, 400, seed=31)
    early = retries(31, 200, 10)
    await publish(topic, early)
    replicas.append(Replica(topic))
    await wait_stored(db, topic.topic, 400 + len(early), 90)
    late = retries(31, 400, 10)
    await publish(topic, late)
    total = 400 + len(early) + len(late)
    await wait_stored(db, topic.topic, total, 90)
    await wait_for(
        lambda: replicas[0].scrape().get(DUPLICATES) == len(early) + len(late), 30, "counted"
    )
    assert replicas[0].terminate() == 0
    await assert_exactly_once(db, produced)
    await assert_rollups_match_raw_rows(db)
    identities = await db.fetchval("SELECT count(*) FROM ingest_keys")
    assert identities == produced.invocations


async def test_a_retry_after_a_kill_and_a_new_replica_is_caught(
    topic: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """The identities were committed with the rows: a replica killed with SIGKILL leaves
    nothing the next one would not see."""
    produced = await produce(topic, 300, seed=32)
    replicas.append(Replica(topic))
    await wait_stored(db, topic.topic, 300, 90)
    replicas[0].kill()
    again = retries(32, 300, 5)
    await publish(topic, again)
    replicas.append(Replica(topic))
    await wait_stored(db, topic.topic, 300 + len(again), 90)
    assert replicas[1].terminate() == 0
    await assert_exactly_once(db, produced)
    await assert_rollups_match_raw_rows(db)


async def test_otlp_retries_of_logs_and_spans_are_caught(
    topic: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    logs = logs_of_the_same_invocation(NOW_NS)
    trace = moved(orjson.loads(FIXTURE.read_bytes()), NOW_NS)
    first = [(TRACE.encode(), orjson.dumps(logs)), (TRACE.encode(), orjson.dumps(trace))]
    # The OTLP client's retry: re-encoded, the spans in another order.
    spans: list[Any] = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.reverse()
    retry = [
        (TRACE.encode(), json.dumps(logs, indent=2).encode()),
        (TRACE.encode(), json.dumps(trace).encode()),
    ]
    await publish(topic, first)
    replicas.append(Replica(topic))
    await wait_stored(db, topic.topic, 2, 90)
    await publish(topic, retry)
    await wait_stored(db, topic.topic, 4, 90)
    await wait_for(lambda: replicas[0].scrape().get(SPAN_DUPLICATES) == 4, 30, "counted")
    assert replicas[0].scrape().get(DUPLICATES) == 1
    assert replicas[0].terminate() == 0
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 1
    assert await db.fetchval("SELECT count(*) FROM tail_spans") == 4
    assert await db.fetchval("SELECT sum(spans) FROM span_operations_hourly") == 4
    requests = await db.fetchval(
        "SELECT sum(requests) FROM tail_metrics_hourly WHERE event_type <> '*'"
    )
    assert requests == 1


async def test_with_dedup_off_a_retry_is_stored_again(
    topic: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    produced = await produce(topic, 100, seed=33)
    again = retries(33, 100, 10)
    await publish(topic, again)
    replicas.append(Replica(topic, TAILPIPE_DEDUP="off"))
    await wait_stored(db, topic.topic, 100 + len(again), 90)
    assert replicas[0].terminate() == 0
    events = await db.fetchval("SELECT count(*) FROM tail_events")
    assert events == produced.invocations + len(again)
    assert await db.fetchval("SELECT count(*) FROM ingest_keys") == 0
    await assert_rollups_match_raw_rows(db)


async def test_a_retry_raises_no_alert_again(
    topic: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """An invocation that alerts (it ended with `exceededCpu`, an outcome rule; and an error
    line), sent again after its first copy was committed: each alert keeps one occurrence."""
    now = int(time.time() * 1000) - 60_000
    item = {"scriptName": "billing", "outcome": "exceededCpu", "eventTimestamp": now,
            "event": {"request": {"url": "https://billing.example/run", "method": "POST"}},
            "logs": [{"timestamp": now, "level": "error",
                      "message": ["ERROR: charge failed"]}]}  # fmt: skip
    again = json.dumps(shuffled(item, random.Random(3)), indent=2).encode()
    replicas.append(Replica(topic))
    await publish(topic, [(item_key(item), orjson.dumps(item))])
    await wait_stored(db, topic.topic, 1, 90)
    alerts = "SELECT rule, occurrences FROM critical_alerts ORDER BY rule"
    first = [tuple(r) for r in await db.fetch(alerts)]
    assert ("outcome", 1) in first
    await publish(topic, [(item_key(orjson.loads(again)), again)])
    await wait_stored(db, topic.topic, 2, 90)
    assert [tuple(r) for r in await db.fetch(alerts)] == first
    assert replicas[0].scrape().get(DUPLICATES) == 1
    assert replicas[0].terminate() == 0
