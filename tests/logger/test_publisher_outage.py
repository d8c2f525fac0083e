"""The Kafka publisher while Kafka cannot be reached, with no broker at all: `start` returns,
the buffer keeps the newest `max_queue` records, each kind of trouble is said once, blocking
mode does not stall threads, and the stdlib bridge does not feed the warnings back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from pipeline.backoff import Backoff
from pipeline.logger import KafkaPublisher, TailpipeHandler, tailpipe_logger
from pipeline.settings import Settings
from tests.conftest import free_port

FAST = Backoff(base_s=0.05, cap_s=0.2)


def nowhere() -> Settings:
    """Settings naming a port nothing listens on: every connection is refused at once."""
    return replace(Settings(), kafka_bootstrap=f"127.0.0.1:{free_port()}", connect_timeout=1)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tailpipe.logger"]


def buffered(publisher: KafkaPublisher) -> list[bytes]:
    """What waits in the buffer, oldest first (the test peeks: no broker to read it back)."""
    return [value for value, _ in publisher._buffer]


async def until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll `condition` (the publisher's state has no event to await); fail naming `what`."""
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"{what} within {deadline_s} s")


@pytest.fixture
def caught(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="tailpipe.logger")
    return caplog


async def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    publisher = KafkaPublisher(Settings(), max_queue=3)  # never started: nothing drains
    for i in range(5):
        publisher.publish(f"r{i}".encode())
    assert buffered(publisher) == [b"r2", b"r3", b"r4"]  # the newest three
    assert (publisher.queued, publisher.dropped) == (3, 2)
    await publisher.close()
    assert publisher.dropped == 5


async def test_start_returns_at_once_and_records_wait_while_kafka_is_down(
    caught: pytest.LogCaptureFixture,
) -> None:
    publisher = KafkaPublisher(nowhere(), max_queue=4, backoff=FAST)
    began = time.monotonic()
    await publisher.start()
    assert time.monotonic() - began < 1.0  # nothing awaited on the network
    assert not publisher.connected
    try:
        await until(lambda: publisher.last_error is not None, 30, "a failed connection attempt")
        attempts_seen = len([m for m in warnings(caught) if "still unreachable" in m])
        for i in range(10):
            publisher.publish(f"r{i}".encode())
        assert buffered(publisher) == [b"r6", b"r7", b"r8", b"r9"]
        assert (publisher.queued, publisher.dropped, publisher.published) == (4, 6, 0)
        # It keeps retrying, and says so once: one warning for the outage, one for the drops.
        await until(
            lambda: (
                len([m for m in warnings(caught) if "still unreachable" in m]) > attempts_seen + 1
            ),
            30,
            "more connection attempts",
        )
        warned = [r for r in caught.records if r.levelno >= logging.WARNING]
        assert len([r for r in warned if "unreachable (" in r.getMessage()]) == 1
        drops = [r.getMessage() for r in warned if "dropping the oldest" in r.getMessage()]
        assert len(drops) == 1
        assert "is unreachable" in drops[0]
        for i in range(10, 20):
            publisher.publish(f"r{i}".encode())
        assert publisher.dropped == 16
        assert len([r for r in caught.records if "dropping the oldest" in r.getMessage()]) == 1
        # `flush` waits for Kafka: bounded by the caller.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await publisher.flush()
    finally:
        await publisher.close(grace=0.2)
    assert (publisher.queued, publisher.dropped, publisher.failed) == (0, 20, 0)
    publisher.publish(b"late")
    assert publisher.dropped == 21


async def test_a_record_before_start_says_start_was_not_called_once(
    caught: pytest.LogCaptureFixture,
) -> None:
    publisher = KafkaPublisher(Settings(), max_queue=2)
    log = tailpipe_logger("never-started", publisher=publisher)
    log.info("first")
    assert len(warnings(caught)) == 1
    assert "before start()" in warnings(caught)[0]
    log.info("second")
    assert len(warnings(caught)) == 1
    log.info("third")  # the buffer is full: that is said once as well
    log.info("fourth")
    assert len(warnings(caught)) == 2
    assert "start() has not been called" in warnings(caught)[1]
    assert (publisher.queued, publisher.dropped) == (2, 2)
    await publisher.close()


async def test_blocking_mode_does_not_stall_threads_during_an_outage() -> None:
    publisher = KafkaPublisher(nowhere(), max_queue=5, block=True, backoff=FAST)
    await publisher.start()
    try:
        await until(lambda: publisher.last_error is not None, 30, "a failed connection attempt")

        def produce() -> None:
            for i in range(50):
                publisher.publish(f"r{i}".encode())

        async with asyncio.timeout(10):
            await asyncio.to_thread(produce)
        assert (publisher.queued, publisher.dropped) == (5, 45)
        assert buffered(publisher) == [f"r{i}".encode() for i in range(45, 50)]
    finally:
        await publisher.close(grace=0.1)


async def test_the_stdlib_bridge_does_not_publish_the_publishers_own_warnings(
    caught: pytest.LogCaptureFixture,
) -> None:
    publisher = KafkaPublisher(nowhere(), max_queue=3, backoff=FAST)
    log = tailpipe_logger("bridged", publisher=publisher)
    handler = TailpipeHandler(log)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        log.info("before start")  # warns that start() was not called
        await publisher.start()
        await until(lambda: publisher.last_error is not None, 30, "a failed connection attempt")
        for i in range(6):
            log.info("record %d", i)  # fills the buffer: warns that it drops
        logging.getLogger("app").warning("the application's own warning")  # bridged
    finally:
        root.removeHandler(handler)
        await publisher.close(grace=0.1)
    assert len(warnings(caught)) >= 3  # not started, unreachable, dropping: all went to stdlib
    assert log.errors == 0
    # 1 + 6 + 1 records reached the publisher, and nothing else: the buffer kept the newest 3
    # of them and dropped 5 at the end, 0 + 5 before it closed.
    assert publisher.dropped == 8
