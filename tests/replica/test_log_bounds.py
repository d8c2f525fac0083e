"""Stored offsets outside a partition's log, on the real Kafka and PostgreSQL.

Past the log's end (the topic was deleted and made again while PostgreSQL kept its offsets):
before, the replica sought there, aiokafka reset the position to the log's start, and every
message up to the stored offset was skipped as stored, silently. Now the partition is
stranded: not read, named in an error and counted, until an operator removes the offset.
Before the log's start (retention deleted messages before they were stored): reading goes
on from the start and the messages lost are counted."""

from __future__ import annotations

import asyncpg
import orjson
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.support.faults import wait_for
from tests.support.replica import START, Replica, stored_total, wait_stored


def item(n: int) -> bytes:
    return orjson.dumps({"scriptName": "w", "outcome": "ok", "eventTimestamp": START + n})


async def publish(settings: Settings, numbers: range) -> None:
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n in numbers:
            await publisher.add(None, item(n))


async def store_offset(db: asyncpg.Connection, topic: str, offset: int) -> None:
    await db.execute(
        "INSERT INTO pipeline_offsets (topic, partition, next_offset) VALUES ($1, 0, $2)",
        topic,
        offset,
    )


async def test_a_stored_offset_past_the_log_strands_the_partition_instead_of_skipping(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 1})
    # PostgreSQL remembers 40 messages stored from an earlier topic of this name; this one
    # holds 10, and 5 more come while the replica runs.
    await store_offset(db, settings.topic, 40)
    await publish(settings, range(10))
    replica = Replica(settings)
    replicas.append(replica)

    def stranded() -> bool:
        try:
            return replica.scrape().get("tailpipe_stranded_partitions") == 1
        except OSError:  # its status port is not up yet
            return False

    await wait_for(stranded, 60, "the partition stranded")
    await publish(settings, range(10, 15))
    assert replica.scrape()["tailpipe_messages_total"] == 0
    assert replica.terminate() == 0
    errors = [line for line in replica.log_lines() if line["level"] == "error"]
    assert any(
        f"partition {settings.topic}[0] stranded: its stored offset 40 is past the end"
        in line["event"]
        for line in errors
    ), errors
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 0
    assert await stored_total(db, settings.topic) == 40, "the stored offset is left as it was"

    # The remedy docs/operations.md gives: forget the old offset; everything is then stored.
    await db.execute("DELETE FROM pipeline_offsets WHERE topic = $1", settings.topic)
    again = Replica(settings)
    replicas.append(again)
    await wait_stored(db, settings.topic, 15, 90)
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 15
    assert again.scrape().get("tailpipe_stranded_partitions") == 0


async def test_messages_deleted_before_they_were_stored_are_counted_as_lost(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 1})
    await publish(settings, range(10))
    await store_offset(db, settings.topic, 2)  # 0 and 1 stored; 2 to 9 not yet
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:  # retention, brought forward: the log now starts at 6
        await admin.delete_records(
            {TopicPartition(settings.topic, 0): RecordsToDelete(before_offset=6)}, timeout_ms=30_000
        )
    finally:
        await admin.close()
    replica = Replica(settings)
    replicas.append(replica)
    await wait_stored(db, settings.topic, 10, 90)
    metrics = replica.scrape()
    assert metrics["tailpipe_messages_expired_total"] == 4  # offsets 2 to 5
    assert metrics["tailpipe_messages_total"] == 4  # offsets 6 to 9
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 4
    assert replica.terminate() == 0
    warnings = [line["event"] for line in replica.log_lines() if line["level"] == "warning"]
    assert any("4 messages (offsets 2 to 5) were deleted by retention" in w for w in warnings)
