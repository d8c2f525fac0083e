"""The collector's one long-lived Kafka producer, kept alive across Kafka outages.

Every request publishes through the same idempotent producer (acks=all), so its items join
the batches of concurrent requests instead of paying for a producer each. A keeper task owns
the producer's life: it opens one (retrying with backoff while Kafka is away), probes Kafka
when no publish has proved it reachable lately, and drops the producer after a failed publish
or probe, then opens a fresh one. While there is none, publishes fail at once, so an outage
answers senders immediately instead of holding every request for the publish timeout.

A dropped producer is aborted, not flushed. Everything still in it belongs to requests already
answered 503, whose senders will post it again; an idempotent aiokafka producer never expires
a batch but retries until Kafka takes it, so flushing would store those items twice once Kafka
returns. A fresh producer also starts with a fresh producer id, clear of sequence numbers the
broker may never have seen.

aiokafka has no public way to abort a producer, so `_close` goes through two of its private
attributes. pyproject.toml pins aiokafka to the releases where they mean what `_close` needs,
and tests/collector/test_collect.py fails when they go or change meaning; an aiokafka without
them is reported as an error, not silently flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerClosed, UnknownTopicOrPartitionError

from pipeline.collector.items import Item
from pipeline.errors import DependencyError
from pipeline.kafka.clients import client_options
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.collect")

RETRY_AFTER_S = 5
"""The `Retry-After` of a 503 for Kafka's being unavailable."""
PUBLISH_TIMEOUT_S = 10.0
"""Longest a request waits for Kafka's acknowledgements before it is answered 503."""
PROBE_INTERVAL_S = 5.0
READY_WINDOW_S = 3 * PROBE_INTERVAL_S
"""Ready while a publish or probe succeeded this recently."""
BACKOFF_S = (0.25, 5.0)
CLOSE_TIMEOUT_S = 15.0
LINGER_MS = 5
"""Long enough to batch the items of concurrent requests, short next to a sender's patience."""
BATCH_BYTES = 256 * 1024
# No compression: aiokafka's lz4, snappy and zstd need the cramjam package, which tailpipe does
# not depend on, and gzip would cost more CPU per request than the network it saves on a LAN.
COMPRESSION = None

Failure = (KafkaError, TimeoutError, OSError)


class Unavailable(DependencyError):
    """Kafka cannot take the items now; the sender should retry later."""


class KafkaSink:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.topic = settings.topic
        self._open_timeout = max(10.0, 3 * settings.connect_timeout)
        self._producer: Any = None
        self._generation = 0
        self._broken_generation = -1
        self._last_ok = -math.inf
        self._wake = asyncio.Event()
        self._dropped: asyncio.Future[None] | None = None
        """Resolved when the current producer is dropped: its requests stop waiting."""
        self._keeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.problem = "connecting to Kafka"

    async def start(self) -> None:
        """Start keeping a producer; returns at once (Kafka may be down at start-up)."""
        self._keeper = asyncio.create_task(self._keep(), name="tailpipe-collect-kafka")

    async def stop(self) -> None:
        """Stop the keeper and close the producer.

        Called after the server answered every request, so nothing still in the producer has a
        sender waiting for it: each such item was answered 503 and will be posted again.
        """
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        self._replace(None, "stopped")
        if self._closing:
            await asyncio.gather(*self._closing)

    @property
    def ready(self) -> bool:
        return (
            self._producer is not None
            and self._broken_generation != self._generation
            and time.monotonic() - self._last_ok < READY_WINDOW_S
        )

    async def publish(self, items: Sequence[Item]) -> None:
        """Return once Kafka acknowledged every item; raise Unavailable otherwise."""
        producer, generation, dropped = self._producer, self._generation, self._dropped
        if producer is None or dropped is None:
            raise Unavailable(self.problem)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                futures = [
                    await producer.send(self.topic, item.value, key=item.key) for item in items
                ]
                acked = _all_acked(futures)
                # asyncio.wait, unlike awaiting, never cancels what it waits for.
                await asyncio.wait([acked, dropped], return_when=asyncio.FIRST_COMPLETED)
            if not acked.done():
                raise Unavailable(self.problem)  # dropped meanwhile: will never be delivered
            acked.result()
        except Failure as exc:
            problem = _describe(exc, f"no acknowledgement within {PUBLISH_TIMEOUT_S:.0f} s")
            self._trouble(generation, problem)
            raise Unavailable(problem) from exc
        self._last_ok = time.monotonic()

    def _trouble(self, generation: int, problem: str) -> None:
        if generation != self._generation or self._broken_generation == generation:
            return  # an older producer, or already being replaced
        log.warning("Kafka: %s; dropping the producer for a fresh one", problem)
        self._broken_generation = generation
        self.problem = problem
        self._wake.set()

    async def _keep(self) -> None:
        backoff = BACKOFF_S[0]
        while True:
            if self._producer is not None and self._broken_generation == self._generation:
                # Dropped before a new one is opened, so requests meanwhile fail at once.
                self._replace(None, self.problem)
            if self._producer is None:
                try:
                    fresh = await self._open()
                except Unavailable as exc:
                    if str(exc) != self.problem:
                        log.warning("Kafka: %s; retrying", exc)
                    self.problem = str(exc)
                    await self._sleep(backoff)
                    backoff = min(2 * backoff, BACKOFF_S[1])
                    continue
                self._replace(fresh, "")
                backoff = BACKOFF_S[0]
                log.info("Kafka: publishing to topic %s", self.topic)
            await self._sleep(PROBE_INTERVAL_S)
            idle = time.monotonic() - self._last_ok >= PROBE_INTERVAL_S
            if idle and self._broken_generation != self._generation:
                await self._probe()

    async def _open(self) -> Any:
        producer = AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            max_batch_size=BATCH_BYTES,
            compression_type=COMPRESSION,
        )
        if not _abortable(producer):
            _report_unabortable()
        try:
            async with asyncio.timeout(self._open_timeout):
                await producer.start()
                await producer.partitions_for(self.topic)
        except UnknownTopicOrPartitionError:
            await _close(producer)
            raise Unavailable(
                f"topic {self.topic} does not exist; `tailpipe topics create` makes it"
            ) from None
        except Failure as exc:
            await _close(producer)
            timeout = f"no answer within {self._open_timeout:.0f} s"
            raise Unavailable(_describe(exc, timeout)) from None
        except BaseException:
            await _close(producer)
            raise
        return producer

    async def _probe(self) -> None:
        producer, generation = self._producer, self._generation
        try:
            updated = await asyncio.wait_for(
                producer.client.force_metadata_update(), self._open_timeout
            )
        except Failure:
            updated = False
        if updated:
            self._last_ok = time.monotonic()
        else:
            self._trouble(generation, "no broker answered a metadata request")

    def _replace(self, fresh: Any, problem: str) -> None:
        old, self._producer = self._producer, fresh
        self._generation += 1
        self.problem = problem
        if self._dropped is not None and not self._dropped.done():
            self._dropped.set_result(None)
        self._dropped = None
        if fresh is not None:
            self._last_ok = time.monotonic()
            self._dropped = asyncio.get_running_loop().create_future()
        if old is not None:
            task = asyncio.create_task(_close(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()


async def _close(producer: Any) -> None:
    """Abort a producer: nothing it still holds is delivered, and this does not wait for Kafka.

    aiokafka has no public abort (Java's `close(Duration.ZERO)`) and its `stop()` flushes, which
    for an idempotent producer means waiting until Kafka takes every batch. So, through its
    internals (see `_abortable`): mark the producer closed, cancel its sender task (the batches
    left behind are dropped with the producer), close its connections. An aiokafka without
    those internals is reported and the producer stopped, which flushes.
    """
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            if not _abortable(producer):
                _report_unabortable()
                await producer.stop()
                return
            producer._closed = True  # stop() is a no-op from now on, and no "Unclosed" warning
            try:
                await producer._sender.close()  # cancels the one task that sends batches
            finally:
                await producer.client.close()
    except Exception as exc:  # a producer being dropped must not take anything down with it
        log.warning("Kafka: closing a producer failed: %s", _describe(exc, "timed out"))


def _abortable(producer: Any) -> bool:
    """Whether `producer` has the aiokafka internals `_close` aborts through (0.12 to 0.14):

    - `_sender`: the Sender, whose `close()` cancels `sender_task`, the only task that sends
      the producer's batches; nothing it holds is sent after that;
    - `_closed`: False while open; `stop()` returns at once when it is True, and the finalizer
      reports an "Unclosed AIOKafkaProducer" when it is False.
    """
    sender = getattr(producer, "_sender", None)
    return (
        isinstance(getattr(producer, "_closed", None), bool)
        and inspect.iscoroutinefunction(getattr(sender, "close", None))
        and hasattr(sender, "sender_task")
    )


@functools.cache
def _report_unabortable() -> None:
    """Once per process: this aiokafka cannot be aborted, so the collector's promise weakens."""
    from aiokafka import __version__ as version

    log.error(
        "aiokafka %s lacks the producer internals (_sender, _closed) the collector aborts a "
        "dropped producer through: it is flushed instead, so items already answered 503, which "
        "their senders post again, may be stored twice; install an aiokafka that tailpipe's "
        "pyproject.toml allows",
        version,
    )


def _all_acked(futures: list[asyncio.Future[Any]]) -> asyncio.Future[None]:
    """One future for many: done when all succeeded, failed as soon as one failed."""
    combined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    combined.add_done_callback(_retrieve)  # a failure after the request was answered is known
    remaining = len(futures)

    def settle(future: asyncio.Future[Any]) -> None:
        nonlocal remaining
        failure = ProducerClosed() if future.cancelled() else future.exception()
        if combined.done():
            return
        if failure is not None:
            combined.set_exception(failure)
            return
        remaining -= 1
        if remaining == 0:
            combined.set_result(None)

    for future in futures:
        future.add_done_callback(settle)
    if not futures:
        combined.set_result(None)
    return combined


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException, timeout: str) -> str:
    if isinstance(exc, TimeoutError):
        return timeout
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name
