"""A service whose lifespan starts a `KafkaPublisher` boots and answers while Kafka is down; when
Kafka comes up, what was logged meanwhile arrives once each, the oldest beyond `max_queue`
dropped and counted.

The broker is a private one (tests/support/broker.py) that is not running when the service
boots, and whose topic does not exist yet when it starts: the publisher must ride out both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline.backoff import Backoff
from pipeline.formats.identity import value_key
from pipeline.kafka.clients import ensure_topics
from pipeline.logger import KafkaPublisher, TailpipeMiddleware, tailpipe_logger
from pipeline.settings import Settings
from tests.conftest import free_port, read_topic
from tests.logger.test_publisher_outage import until
from tests.support.broker import Broker

MAX_QUEUE = 50
LOGGED = 80  # requests answered while Kafka is down: the oldest 30 cannot be kept


@pytest.mark.stack
async def test_the_service_boots_and_answers_while_kafka_is_down_and_delivers_after(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tailpipe.logger")
    broker = Broker(tmp_path)  # formatted, not running
    own = replace(settings, kafka_bootstrap=broker.bootstrap, connect_timeout=2)
    publisher = KafkaPublisher(own, max_queue=MAX_QUEUE, backoff=Backoff(0.1, 1.0))
    log = tailpipe_logger("outage-svc", publisher=publisher)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()  # as a service would: it must not raise, nor wait for Kafka
        yield
        await publisher.close(grace=30)

    async def hello(request: Request) -> JSONResponse:
        n = int(request.path_params["n"])
        log.bind(n=n).info("hello %d", n)
        return JSONResponse({"n": n})

    app = Starlette(routes=[Route("/hello/{n:int}", hello)], lifespan=lifespan)
    port = free_port()
    config = uvicorn.Config(
        TailpipeMiddleware(app, log), host="127.0.0.1", port=port, log_level="warning",
        lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not serving.done(), "the service stopped during start-up"
                await asyncio.sleep(0.05)
        assert not publisher.connected

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for n in range(LOGGED):
                response = await client.get(f"/hello/{n}")
                assert response.status_code == 200, response.text
                assert response.json() == {"n": n}
            peak = publisher.queued
            assert peak == MAX_QUEUE
            assert publisher.dropped == LOGGED - MAX_QUEUE
            assert (publisher.published, publisher.failed) == (0, 0)
            assert not publisher.connected
            assert publisher.last_error is not None

            await broker.start()
            await ensure_topics(own, {own.topic: 1})
            async with asyncio.timeout(120):
                await publisher.flush()
            assert publisher.connected
            assert publisher.published == MAX_QUEUE
            assert (publisher.failed, publisher.queued) == (0, 0)
            assert publisher.dropped == LOGGED - MAX_QUEUE

            response = await client.get(f"/hello/{LOGGED}")  # and after the outage, as usual
            assert response.status_code == 200
            async with asyncio.timeout(60):
                await publisher.flush()
        delivered = await read_topic(own, MAX_QUEUE + 1)  # exactly these, nothing after

        server.should_exit = True
        await serving
    finally:
        server.should_exit = True
        broker.kill()
        if not serving.done():
            await serving

    assert all(key == value_key(value) for key, value in delivered)
    messages = [orjson.loads(value)["logs"][0]["message"][0] for _, value in delivered]
    # The newest MAX_QUEUE of the outage, in order, once each; then the one after it.
    expected = [f"hello {n}" for n in range(LOGGED - MAX_QUEUE, LOGGED + 1)]
    assert messages == expected
    assert publisher.published == MAX_QUEUE + 1
    assert publisher.dropped == LOGGED - MAX_QUEUE

    said = [r.getMessage() for r in caplog.records if r.name == "tailpipe.logger"]
    assert len([m for m in said if "unreachable (" in m]) == 1
    assert len([m for m in said if "dropping the oldest" in m]) == 1
    assert len([m for m in said if "reachable again" in m]) == 1
    print(
        f"boot test: logged {LOGGED + 1}, buffered at peak {peak}, delivered "
        f"{publisher.published}, dropped {publisher.dropped}"
    )


@pytest.mark.stack
async def test_kafka_going_away_later_keeps_what_the_producer_holds_and_the_newest(
    settings: Settings, tmp_path: Path
) -> None:
    """After connecting, an outage shows as records left unacknowledged. The idempotent
    producer keeps (and retries) up to `max_queue` of them, the buffer the newest `max_queue`
    of the rest; when Kafka is back each of those arrives once, and only the ones in between
    are dropped."""
    broker = Broker(tmp_path)
    await broker.start()
    own = replace(settings, kafka_bootstrap=broker.bootstrap, connect_timeout=2)
    publisher = KafkaPublisher(own, max_queue=MAX_QUEUE, linger_ms=5, backoff=Backoff(0.1, 1.0))
    try:
        await ensure_topics(own, {own.topic: 1})
        await publisher.start()
        before = [f"before {i}".encode() for i in range(5)]
        for value in before:
            publisher.publish(value)
        async with asyncio.timeout(60):
            await publisher.flush()
        assert publisher.published == len(before)

        broker.kill()
        publisher.publish(b"in flight")
        await until(lambda: not publisher.connected, 60, "the outage noticed")
        during = [f"during {i}".encode() for i in range(120)]
        for value in during[: MAX_QUEUE - 1]:  # into the producer, with "in flight"
            publisher.publish(value)
        await until(lambda: publisher.queued == 0, 30, "the producer taking them")
        for value in during[MAX_QUEUE - 1 :]:  # into the buffer, which keeps the newest
            publisher.publish(value)
        assert publisher.queued == MAX_QUEUE
        assert publisher.dropped == len(during) - 2 * MAX_QUEUE + 1
        assert (publisher.published, publisher.failed) == (len(before), 0)

        await broker.start()
        async with asyncio.timeout(120):
            await publisher.flush()
        assert publisher.connected
        kept = [b"in flight", *during[: MAX_QUEUE - 1], *during[-MAX_QUEUE:]]
        delivered = await read_topic(own, len(before) + len(kept))
        assert [value for _, value in delivered] == before + kept  # in order, once each
        assert publisher.published == len(delivered)
        assert (publisher.failed, publisher.dropped) == (0, len(during) - 2 * MAX_QUEUE + 1)

        broker.kill()  # away for good: `close` must end all the same, and count what it gave up
        for value in (b"last 1", b"last 2", b"last 3"):
            publisher.publish(value)
        await until(lambda: not publisher.connected, 60, "the second outage noticed")
        async with asyncio.timeout(30):
            await publisher.close(grace=0.5)
        assert publisher.failed == 3
        assert "closed before Kafka acknowledged" in str(publisher.last_error)
    finally:
        await publisher.close(grace=5)
        broker.kill()
