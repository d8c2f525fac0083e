"""Outages of the real PostgreSQL and S3, and a kill -9 mid-write: nothing lost, nothing twice.

The invariant checked throughout: for every partition, each offset below the stored offset is
either an invocation in `tail_events` or a dead letter in an indexed object, and never both.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from pipeline.deadletters.record import partition_prefix
from pipeline.deadletters.store import open_store
from pipeline.kafka import clients, synth
from pipeline.kafka.publisher import BulkPublisher
from pipeline.postgres.connect import connect
from pipeline.settings import Settings
from tests.support.faults import (
    TcpProxy,
    kafka_down,
    kafka_up,
    leaders_elected,
    peak_rss_mib,
    postgres_down,
    postgres_up,
    wait_for,
)
from tests.support.replica import (
    START,
    Replica,
    assert_exactly_once,
    assert_rollups_match_raw_rows,
    dead_letters_in_store,
    produce,
    stored_messages,
    stored_total,
    wait_stored,
)

OUTAGE_S = 20.0


async def assert_accounted(settings: Settings, db: asyncpg.Connection) -> int:
    """Every offset below each stored offset is stored or dead-lettered, once; returns the
    total stored offset."""
    async with db.transaction(isolation="repeatable_read", readonly=True):
        offsets = {
            r[0]: r[1]
            for r in await db.fetch(
                "SELECT partition, next_offset FROM pipeline_offsets WHERE topic = $1",
                settings.topic,
            )
        }
        stored = await stored_messages(db)
        dead = await dead_letters_in_store(settings, db)
    assert max(dead.values(), default=1) == 1, "a dead letter in two objects"
    assert not stored & dead.keys(), "a message both stored and dead-lettered"
    for partition, next_offset in offsets.items():
        below = {(p, o) for p, o in stored | dead.keys() if p == partition and o < next_offset}
        assert len(below) == next_offset, f"partition {partition}: offsets unaccounted for"
    return sum(offsets.values())


@pytest.fixture
async def s3_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    endpoint = urlsplit(settings.s3_endpoint)
    async with TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80) as proxy:
        yield proxy


def through(settings: Settings, proxy: TcpProxy) -> dict[str, str]:
    return {"TAILPIPE_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}"}


async def test_postgres_stopped_mid_stream_nothing_lost_stays_in_group(
    migrated: Settings, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 3})
    first = await produce(settings, 10_000, seed=31, poison_ratio=0.01)
    replicas.append(Replica(settings))
    replica = replicas[0]
    db = await connect(settings)
    await wait_stored(db, settings.topic, first.count, 90)
    await db.close()

    postgres_down()
    try:
        started = time.monotonic()
        # Produced while PostgreSQL is down: the replica reads until its queue is full, then
        # pauses its partitions and keeps polling.
        second = await produce(settings, 20_000, seed=32, poison_ratio=0.01)
        await wait_for(
            lambda: "postgres" in replica.readiness()["failing"], 60, "replica sees the outage"
        )
        await wait_for(
            lambda: replica.scrape()["tailpipe_paused_partitions"] > 0, 60, "partitions paused"
        )
        assert replica.readiness()["ready"] is False
        remaining = OUTAGE_S - (time.monotonic() - started)
        if remaining > 0:  # the scenario's length, longer than Kafka's session timeout
            await asyncio.sleep(remaining)
    finally:
        postgres_up()

    db = await connect(settings)
    try:
        await wait_stored(db, settings.topic, first.count + second.count, 120)
        await wait_for(lambda: replica.readiness()["ready"], 30, "ready again")
        metrics = replica.scrape()
        rss = peak_rss_mib(replica.proc.pid)
        assert replica.terminate() == 0
        await assert_exactly_once(db, first + second)
        await assert_accounted(settings, db)
    finally:
        await db.close()
    assert metrics["tailpipe_partition_assignments_total"] == 1, "the replica left its group"
    assert metrics['tailpipe_retries_total{dependency="postgres"}'] >= 1
    assert metrics['tailpipe_dependency_up{dependency="postgres"}'] == 1
    assert metrics['tailpipe_flush_failures_total{kind="postgres"}'] >= 1
    print(f"replica peak RSS through the outage: {rss:.0f} MiB")
    assert rss < 400, f"peak RSS {rss:.0f} MiB"


async def test_idle_replica_not_ready_while_postgres_is_stopped(
    migrated: Settings, replicas: list[Replica]
) -> None:
    """No traffic, so no flush fails: the replica's own probe must notice."""
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 1})
    replicas.append(Replica(settings))
    replica = replicas[0]
    await wait_for(lambda: replica.readiness()["ready"], 60, "ready with nothing to do")
    postgres_down()
    try:
        await wait_for(lambda: not replica.readiness()["ready"], 30, "not ready")
        assert "postgres" in replica.readiness()["failing"]
        assert replica.get("/healthz") == 200, "the process and its loop still answer"
        # What a container health check runs: `tailpipe probe` says the same by exit code.
        assert probe("ready", replica.port) == 1
        assert probe("live", replica.port) == 0
    finally:
        postgres_up()
    await wait_for(lambda: replica.readiness()["ready"], 30, "ready again")
    assert probe("ready", replica.port) == 0
    assert replica.terminate() == 0


def probe(what: str, port: int) -> int:
    command = [sys.executable, "-m", "pipeline", "probe", what, "--port", str(port)]
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode


async def test_kafka_broker_restarted_mid_stream_nothing_lost_nothing_twice(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 3})
    first = await produce(settings, 5000, seed=36, poison_ratio=0.01)
    replicas.append(Replica(settings))
    replica = replicas[0]
    await wait_stored(db, settings.topic, first.count, 90)
    kafka_down()
    try:
        # The replica keeps running without its broker: polling returns nothing, no offset
        # moves, nothing is dead-lettered for it.
        await wait_for(lambda: "partitions" in replica.readiness(), 10, "/readyz answers")
        assert replica.proc.poll() is None
        assert await stored_total(db, settings.topic) == first.count
    finally:
        kafka_up()
    await leaders_elected(settings, settings.topic, 3)
    second = await produce(settings, 5000, seed=37, poison_ratio=0.01)
    await wait_stored(db, settings.topic, first.count + second.count, 180)
    assert replica.terminate() == 0
    await assert_exactly_once(db, first + second)
    await assert_accounted(settings, db)


async def test_s3_stopped_offsets_never_pass_held_dead_letters(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica], s3_proxy: TcpProxy
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 2})
    first = await produce(settings, 2000, seed=33, poison_ratio=0.02)
    replicas.append(Replica(settings, **through(settings, s3_proxy)))
    replica = replicas[0]
    await wait_stored(db, settings.topic, first.count, 90)

    await s3_proxy.refuse()
    second = await produce(settings, 3000, seed=34, poison_ratio=0.02)
    await wait_for(lambda: "held" in replica.readiness(), 60, "partitions held")
    assert "s3" in replica.readiness()["failing"]
    # Held, not passed: the offsets stop short of the dead letters that could not be written,
    # and everything below them is accounted for. Checked twice, a retry apart.
    for _ in range(2):
        assert await assert_accounted(settings, db) < first.count + second.count
        retries = replica.scrape()['tailpipe_retries_total{dependency="s3"}']

        def another_retry(n: float = retries) -> bool:
            return replica.scrape()['tailpipe_retries_total{dependency="s3"}'] > n

        await wait_for(another_retry, 60, "another retry of the store")
    await s3_proxy.restore()

    total = first.count + second.count
    await wait_stored(db, settings.topic, total, 120)
    assert replica.terminate() == 0
    assert await assert_accounted(settings, db) == total
    dead = await dead_letters_in_store(settings, db)
    assert len(dead) == first.poison + second.poison
    await assert_rollups_match_raw_rows(db)


async def test_kill_9_during_a_dead_letter_write_no_duplicate_object_no_loss(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica], s3_proxy: TcpProxy
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 1})
    good = [m for m in itertools.islice(synth.messages(35, START), 500)]
    # Random, so the object stays large once gzip'd: its upload is long enough to hold halfway.
    bad = [b"{" + base64.b64encode(os.urandom(90_000)) for _ in range(3)]
    async with BulkPublisher(settings, settings.topic) as publisher:
        for m in good[:250]:
            await publisher.add(m.key, m.value)
    replicas.append(Replica(settings, **through(settings, s3_proxy)))
    await wait_stored(db, settings.topic, 250, 90)

    s3_proxy.hold_after(100_000)  # inside the upload of the object: it arrives, its answer not
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n, m in enumerate(good[250:]):
            await publisher.add(m.key, m.value)
            if n % 100 == 0:
                await publisher.add(None, bad[n // 100 % len(bad)])
    await wait_for(lambda: s3_proxy.bytes_held > 0, 60, "the store answered a held write")
    replicas[0].kill()
    assert await stored_total(db, settings.topic) == 250, "stored past an unacknowledged write"
    s3_proxy.release()

    replicas.append(Replica(settings, **through(settings, s3_proxy)))
    total = len(good) + 3
    await wait_stored(db, settings.topic, total, 120)
    assert replicas[1].terminate() == 0
    assert await assert_accounted(settings, db) == total
    indexed = {r[0] for r in await db.fetch("SELECT object_key FROM dead_letters")}
    async with open_store(settings) as store:
        prefix = partition_prefix(store.prefix, settings.topic, 0)
        in_store = set(await store.keys_after(prefix, None))
    assert in_store == indexed, "an object nothing indexes (a duplicate) or one missing"
    assert len(await dead_letters_in_store(settings, db)) == 3


async def test_a_stalled_replica_raises_an_alert_while_lag_grows(
    migrated: Settings,
    db: asyncpg.Connection,
    replicas: list[Replica],
    s3_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 1, settings.alerts_topic: 1})
    rules = tmp_path / "rules.toml"
    rules.write_text('[stalled]\nafter = "2s"\n')
    replicas.append(
        Replica(settings, **through(settings, s3_proxy), TAILPIPE_ALERT_RULES=str(rules))
    )
    first = await produce(settings, 200, seed=38)
    await wait_stored(db, settings.topic, first.count, 60)
    await s3_proxy.refuse()  # dead letters cannot be written: the partition is held
    await produce(settings, 200, seed=39, poison_ratio=0.05)
    replica = replicas[0]
    await wait_for(lambda: "held" in replica.readiness(), 60, "partition held")

    def lag() -> float:
        return sum(v for k, v in replica.scrape().items() if k.startswith("tailpipe_consumer_lag"))

    # The rule wants the lag to grow after the replica saw it stuck: let it see the lag first,
    # then add to it.
    await wait_for(lambda: lag() == 200, 30, "the held messages counted as lag")
    await produce(settings, 200, seed=40)
    await wait_for(
        lambda: db.fetchval("SELECT count(*) > 0 FROM critical_alerts WHERE rule = 'stalled'"),
        60,
        "a stalled alert",
    )
    summary = await db.fetchval("SELECT summary FROM critical_alerts WHERE rule = 'stalled'")
    assert "stored nothing" in summary
    assert lag() > 0
    await s3_proxy.restore()
    await wait_stored(db, settings.topic, 600, 120)
    assert replica.terminate() == 0
