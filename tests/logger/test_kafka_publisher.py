"""The Kafka publisher: bounded buffer, drop counting, blocking mode, and a real round trip
through the local stack's broker."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.backoff import Backoff
from pipeline.formats.decode import decode
from pipeline.formats.identity import value_key
from pipeline.kafka import clients
from pipeline.logger import KafkaPublisher, tailpipe_logger
from pipeline.settings import Settings
from tests.conftest import free_port
from tests.logger.test_envelope import validate
from tests.logger.test_publisher_outage import until


async def read_back(settings: Settings, n: int) -> list[tuple[bytes | None, bytes]]:
    """The first `n` messages of the test's topic, as (key, value)."""
    consumer = AIOKafkaConsumer(
        settings.topic,
        **clients.client_options(settings),
        group_id=settings.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < n:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    received.extend((r.key, r.value) for r in records)
        # Nothing beyond the n.
        extra = await consumer.getmany(timeout_ms=500)
        received.extend((r.key, r.value) for records in extra.values() for r in records)
    finally:
        await consumer.stop()
    return received


# --- without a broker ---------------------------------------------------------------------


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    publisher = KafkaPublisher(Settings(), max_queue=3)  # never started: nothing drains
    log = tailpipe_logger("svc", publisher=publisher)
    for i in range(5):
        log.info("record %d", i)
    assert publisher.queued == 3
    assert publisher.dropped == 2
    assert log.errors == 0
    await publisher.close()
    assert publisher.dropped == 5  # closing drops (and counts) what never went out
    log.info("after close")
    assert publisher.dropped == 6


async def test_start_against_no_broker_returns_and_keeps_retrying() -> None:
    """A service's lifespan awaits `start`: Kafka being down must not stop it from booting
    (tests/logger/test_publisher_outage*.py say what happens to the records meanwhile)."""
    settings = replace(Settings(), kafka_bootstrap=f"127.0.0.1:{free_port()}", connect_timeout=1)
    publisher = KafkaPublisher(settings, backoff=Backoff(0.05, 0.2))
    async with asyncio.timeout(5):
        await publisher.start()  # no DependencyError: it connects in the background
    try:
        publisher.publish(b"{}")  # still never raises
        await until(lambda: publisher.last_error is not None, 30, "a failed connection attempt")
        assert not publisher.connected
        assert publisher.queued == 1
    finally:
        await publisher.close(grace=0.1)
    assert publisher.dropped == 1


# --- against the local stack --------------------------------------------------------------


async def test_records_round_trip_through_kafka(settings: Settings) -> None:
    await clients.ensure_topics(settings, {settings.topic: 1})
    publisher = KafkaPublisher(settings, linger_ms=5)
    log = tailpipe_logger("kafka-svc", publisher=publisher)
    log.info("published before start")  # waits in the buffer
    await publisher.start()
    try:
        for i in range(200):
            log.bind(i=i).info("record %d", i)
        log.api_call("github", "/repos/{owner}/{repo}", status=200, duration_ms=12.5)

        @log.job("kafka-job", run_id="r1")
        async def job() -> None:
            log.info("in the job", password="must-not-leave")
            raise ValueError("job failed")

        with pytest.raises(ValueError, match="job failed"):
            await job()
        # Threads publish through the cross-thread wake-up.
        await asyncio.gather(*(asyncio.to_thread(log.info, f"thread {i}") for i in range(20)))
        await publisher.flush()
        sent = 1 + 200 + 1 + 1 + 20
        assert (publisher.published, publisher.dropped, publisher.failed) == (sent, 0, 0)
    finally:
        await publisher.close()

    received = await read_back(settings, sent)
    assert len(received) == sent
    assert all(key == value_key(value) for key, value in received)  # keyed by identity
    items: list[dict[str, Any]] = [validate(orjson.loads(value)) for _, value in received]
    messages = [item["logs"][0]["message"][0] for item in items if item["logs"]]
    assert messages[0] == "published before start"
    # One partition, one producer: the records of one thread stay in order.
    assert messages[1:201] == [f"record {i}" for i in range(200)]
    assert {f"thread {i}" for i in range(20)} <= set(messages)
    job_item = next(item for item in items if "job" in item["event"])
    assert job_item["outcome"] == "exception"
    assert job_item["logs"][0]["context"] == {"password": "[REDACTED:field]"}
    assert b"must-not-leave" not in b"".join(value for _, value in received)
    for _, value in received:
        (invocation,) = decode(value)
        assert invocation.source == "envelope"


async def test_the_event_loop_never_waits_for_kafka(settings: Settings) -> None:
    await clients.ensure_topics(settings, {settings.topic: 1})
    async with KafkaPublisher(settings, max_queue=10) as publisher:
        log = tailpipe_logger("burst", publisher=publisher)
        # A burst with no await in it: the sender cannot run, so past 10 records are dropped.
        for i in range(1000):
            log.info("burst %d", i)
        assert publisher.dropped == 990
        await publisher.flush()
        assert publisher.published == 10
    received = await read_back(settings, 10)
    assert len(received) == 10


async def test_blocking_mode_makes_other_threads_wait_and_loses_nothing(
    settings: Settings,
) -> None:
    await clients.ensure_topics(settings, {settings.topic: 1})
    n = 300
    async with KafkaPublisher(settings, max_queue=2, block=True, linger_ms=1) as publisher:
        log = tailpipe_logger("blocking", publisher=publisher)
        waited = threading.Event()

        def produce() -> None:
            for i in range(n):
                if publisher.queued >= 2:
                    waited.set()
                log.info("blocking %d", i)

        await asyncio.to_thread(produce)
        await publisher.flush()
        assert publisher.dropped == 0
        assert publisher.published == n
        assert waited.is_set()  # the queue was full at some point, and nothing was dropped
    received = await read_back(settings, n)
    messages = [orjson.loads(value)["logs"][0]["message"][0] for _, value in received]
    assert messages == [f"blocking {i}" for i in range(n)]
