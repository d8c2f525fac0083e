"""Ingest, end to end against the real Kafka and PostgreSQL: exactly once, whatever happens."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from pipeline.deadletters.guard import Guard, GuardPolicy
from pipeline.deadletters.store import FileStore
from pipeline.kafka import clients, synth
from pipeline.postgres import flush
from pipeline.postgres.day_partitions import PartitionManager, ahead, partition_name
from pipeline.postgres.writer import Writer
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer
from tests.support.replica import (
    START,
    Replica,
    assert_exactly_once,
    assert_rollups_match_raw_rows,
    produce,
    stored_total,
    wait_stored,
)


async def test_n_events_stored_exactly_once_and_rollups_match(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 3})
    produced = await produce(settings, 3000, seed=11, poison_ratio=0.02)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 90)
    assert replicas[0].terminate() == 0
    await assert_exactly_once(db, produced)
    await assert_rollups_match_raw_rows(db)
    # Partitions ahead of need: today and the next two days exist before any event needs them.
    attached = {
        r[0]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        )
    }
    today = datetime.now(UTC).date()
    assert {partition_name("tail_logs", d) for d in ahead(today)} <= attached


async def test_kill_9_mid_stream_then_restart(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 3})
    produced = await produce(settings, 20_000, seed=12)
    replicas.append(Replica(settings))
    stored = await wait_stored(db, settings.topic, 1, 90)
    replicas[0].kill()
    assert stored < produced.count, "the replica finished before it could be killed"
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 120)
    assert replicas[1].terminate() == 0
    await assert_exactly_once(db, produced)


async def test_two_replicas_one_stopped_mid_stream(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 6})
    produced = await produce(settings, 20_000, seed=13, poison_ratio=0.01)
    replicas.extend([Replica(settings), Replica(settings)])
    await wait_stored(db, settings.topic, 1, 90)
    assert replicas[0].terminate() == 0
    await wait_stored(db, settings.topic, produced.count, 120)
    assert replicas[1].terminate() == 0
    await assert_exactly_once(db, produced)


def _batch(topic: str, offsets: range) -> Batch:
    transformer = Transformer(Extractor.from_files())
    batch = Batch()
    stream = synth.messages(14, START)
    for offset in offsets:
        message = next(stream)
        transformer.add(batch, topic, 0, offset, START, message.key, message.value)
    return batch


async def test_zombie_flush_is_rejected(
    migrated: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    topic = migrated.topic
    await PartitionManager().ensure(db, flush.days_of(_batch(topic, range(0, 20))))
    writer = Writer(FileStore(tmp_path), Transformer(Extractor.from_files()), Guard(GuardPolicy()))
    await writer.write(db, _batch(topic, range(0, 10)), {})
    # The partition moved on: a new owner stored 10..20.
    await writer.write(db, _batch(topic, range(10, 20)), {(topic, 0): 10})
    before = await db.fetchval("SELECT count(*) FROM tail_events")
    # A zombie that still believes the stored offset is 10 flushes its late batch: rejected.
    with pytest.raises(flush.PartitionsLost) as lost:
        await writer.write(db, _batch(topic, range(10, 20)), {(topic, 0): 10})
    assert lost.value.lost == {(topic, 0)}
    # And one that never saw a stored offset cannot claim the partition either.
    with pytest.raises(flush.PartitionsLost):
        await writer.write(db, _batch(topic, range(0, 10)), {})
    # Nor can a consumer whose batch starts below the stored offset (a stale fetch position).
    with pytest.raises(flush.PartitionsLost, match="below their stored offset"):
        await writer.write(db, _batch(topic, range(15, 25)), {(topic, 0): 20})
    assert await db.fetchval("SELECT count(*) FROM tail_events") == before == 20
    assert await stored_total(db, topic) == 20
