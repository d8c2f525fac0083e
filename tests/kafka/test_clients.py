"""Kafka round trip against the real local broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.kafka import clients
from pipeline.settings import Settings
from tests.conftest import env_of, free_port, tailpipe


async def test_produce_n_and_consume_exactly_those_n(settings: Settings) -> None:
    created = await clients.ensure_topics(settings, {settings.topic: 3})
    assert created == [settings.topic]
    assert await clients.ensure_topics(settings, {settings.topic: 3}) == []

    n = 500
    sent = {f"message-{i}".encode() for i in range(n)}
    producer = AIOKafkaProducer(**clients.client_options(settings), acks="all")
    await producer.start()
    try:
        await asyncio.gather(*(producer.send_and_wait(settings.topic, value) for value in sent))
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        **clients.client_options(settings),
        group_id=settings.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        consumer.subscribe([settings.topic])
        async with asyncio.timeout(60):
            while len(received) < n:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    received.extend(r.value for r in records)
        # Nothing beyond the n: every partition's position is at its end.
        partitions = [TopicPartition(settings.topic, p) for p in range(3)]
        ends = await consumer.end_offsets(partitions)
        positions = {tp: await consumer.position(tp) for tp in partitions}
    finally:
        await consumer.stop()
    assert len(received) == n
    assert set(received) == sent
    assert positions == ends
    assert sum(ends.values()) == n


async def test_describe_sees_created_topics(settings: Settings) -> None:
    await clients.ensure_topics(settings, {settings.topic: 1, settings.alerts_topic: 1})
    info = await clients.describe(settings)
    assert info.brokers == 1
    assert {settings.topic, settings.alerts_topic} <= info.topics


@pytest.mark.parametrize("command", [("run",), ("alerts", "forward")])
def test_kafka_unreachable_at_start_is_one_line_not_a_traceback(
    migrated: Settings, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """`tailpipe run` and `tailpipe alerts forward` died with aiokafka's traceback and an
    "Unclosed AIOKafkaConsumer" when Kafka did not answer at start."""
    destinations = tmp_path / "destinations.toml"
    destinations.write_text('[[destination]]\nname = "hook"\nkind = "webhook"\n'
                            'url = "http://127.0.0.1:9/alerts"\n')  # fmt: skip
    nowhere = f"127.0.0.1:{free_port()}"
    env = {
        **env_of(migrated),
        "TAILPIPE_KAFKA_BOOTSTRAP": nowhere,
        "TAILPIPE_METRICS_PORT": "0",
        "TAILPIPE_CONNECT_TIMEOUT": "2",
        "TAILPIPE_ALERT_DESTINATIONS": str(destinations),
    }
    done = tailpipe(*command, env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"tailpipe: Kafka at {nowhere} did not answer")
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr
