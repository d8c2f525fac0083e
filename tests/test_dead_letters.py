"""Bad data against the real Kafka, PostgreSQL and S3: only the bad part is dead-lettered,
exactly once; the guard rail stops a flood; replay brings fixed messages back, once."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from pipeline import kafka, synth
from pipeline.partitions import PartitionManager
from pipeline.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.conftest import env_of, read_topic, tailpipe
from tests.faults import wait_for
from tests.replica import (
    START,
    Replica,
    assert_rollups_match_raw_rows,
    dead_letters_in_store,
    produce,
    stored_messages,
    stored_total,
    wait_stored,
)


async def test_poison_mix_every_message_stored_or_dead_lettered_once(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 3})
    produced = await produce(settings, 50_000, seed=21, poison_ratio=0.01, reject_ratio=0.01)
    assert produced.poison > 400
    assert produced.rejected > 400
    replicas.append(Replica(settings, TAILPIPE_BATCH_MAX_ROWS="20000"))
    await wait_stored(db, settings.topic, produced.count, 240)
    metrics = replicas[0].scrape()
    assert replicas[0].terminate() == 0

    stored = await stored_messages(db)
    dead = await dead_letters_in_store(settings, db)
    assert max(dead.values()) == 1, "a message dead-lettered twice"
    assert not stored & dead.keys(), "a message both stored and dead-lettered"
    assert len(stored) + len(dead) == produced.count
    assert await db.fetchval("SELECT count(*) FROM tail_events") == produced.invocations
    assert await db.fetchval("SELECT count(*) FROM tail_logs") == produced.log_rows
    classes = Counter(
        c for r in await db.fetch("SELECT error_classes, messages FROM dead_letters")
        for c in r[0]
        for _ in range(r[1] if len(r[0]) == 1 else 0)
    )  # fmt: skip
    mixed = await db.fetchval(
        "SELECT coalesce(sum(messages), 0) FROM dead_letters WHERE cardinality(error_classes) > 1"
    )
    assert classes["DecodeError"] + classes["CharacterNotInRepertoireError"] + mixed == len(dead)
    assert metrics['tailpipe_dead_letters_total{reason="DecodeError"}'] == produced.poison
    assert (
        metrics['tailpipe_dead_letters_total{reason="CharacterNotInRepertoireError"}']
        == produced.rejected
    )
    await assert_rollups_match_raw_rows(db)


async def test_guard_rail_stops_a_flood_of_bad_messages(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 2, settings.alerts_topic: 1})
    async with BulkPublisher(settings, settings.topic) as publisher:
        for message in itertools.islice(synth.messages(22, START), 200):
            await publisher.add(message.key, message.value)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 200, 90)
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n in range(3000):
            await publisher.add(None, b'{"not a trace item": %d' % n)
    replica = replicas[0]
    async with asyncio.timeout(60):
        # Another process trips; its /readyz is where it shows, so poll it.
        while (state := replica.readiness())["ready"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert "dead letters" in state["guard_rail"]
    assert replica.scrape()["tailpipe_guard_rail_tripped"] == 1
    # Nothing of the flood was dead-lettered or passed: the offsets stayed where they were.
    assert await stored_total(db, settings.topic) == 200
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
    # And a critical alert says so, on the alerts topic.
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) = 1 FROM critical_alerts"
            " WHERE rule = 'guard_rail' AND published_at IS NOT NULL"
        ),
        60,
        "guard rail alert published",
    )
    total = await db.fetchval("SELECT count(*) FROM critical_alerts")
    published = await read_topic(replace(settings, topic=settings.alerts_topic), total)
    [alert] = [
        orjson.loads(v) for k, v in published if k == f"guard_rail:{settings.topic}".encode()
    ]
    assert alert["severity"] == "critical"
    assert "guard rail" in alert["summary"]
    assert replica.terminate() == 0


def _item(script: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "scriptName": script,
            "outcome": "ok",
            "eventTimestamp": START + n,
            "event": {"request": {"url": f"https://x.test/{n}", "method": "GET"}},
            "logs": [{"level": "log", "message": [f"hello {n}"], "timestamp": START + n}],
            "exceptions": [],
        }
    )


async def test_replay_after_the_cause_is_fixed_stores_each_message_once(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 2})
    # A constraint the data breaks (as a bad migration would), on partitions that exist.
    await PartitionManager().ensure(db, {datetime.fromtimestamp(START / 1000, UTC).date()})
    await db.execute(
        "ALTER TABLE tail_events ADD CONSTRAINT no_blocked CHECK (script <> 'blocked-worker')"
    )
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n in range(600):
            script = "blocked-worker" if n % 20 == 0 else "fine-worker"
            await publisher.add(script.encode(), _item(script, n))
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 600, 90)
    assert replicas[0].terminate() == 0
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 570
    dead = await db.fetchval("SELECT sum(messages) FROM dead_letters")
    assert dead == 30

    env = env_of(settings)
    listed = tailpipe("dlq", "list", "--error", "CheckViolationError", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "30 dead letters" in listed.stdout
    dry = tailpipe("dlq", "replay", "--dry-run", env=env)
    assert dry.returncode == 1  # still failing: the cause is not fixed yet
    assert "would replay 0 messages" in dry.stdout
    assert "30 still failing" in dry.stdout
    await db.execute("ALTER TABLE tail_events DROP CONSTRAINT no_blocked")
    replayed = tailpipe("dlq", "replay", env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 30 messages" in replayed.stdout
    again = tailpipe("dlq", "replay", env=env)
    assert "replayed 0 messages from 0 objects" in again.stdout

    assert await db.fetchval("SELECT count(*) FROM tail_events") == 600
    distinct = await db.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM tail_events) d"
    )
    assert distinct == 600
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL") == 0
    await assert_rollups_match_raw_rows(db)


async def test_a_directory_as_the_dead_letter_store(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica], tmp_path: Path
) -> None:
    settings = replace(migrated, dlq_url=f"file://{tmp_path}/dlq")
    await kafka.ensure_topics(settings, {settings.topic: 2})
    produced = await produce(settings, 1000, seed=23, poison_ratio=0.05)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 90)
    assert replicas[0].terminate() == 0
    files = sorted((tmp_path / "dlq" / settings.topic).rglob("*.jsonl.gz"))
    indexed = {r[0] for r in await db.fetch("SELECT object_key FROM dead_letters")}
    assert {str(f.relative_to(tmp_path / "dlq")) for f in files} == indexed
    assert not list((tmp_path / "dlq").rglob(".*.partial"))
    dead = await dead_letters_in_store(settings, db)
    assert len(dead) == sum(dead.values()) == produced.poison
