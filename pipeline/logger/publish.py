"""Where finished trace items go: JSON lines on a text stream, or a Kafka topic.

A publisher is anything with `publish(value: bytes, key: bytes | None) -> None` that never
raises and never blocks for long: the host application calls it on its own threads and event
loop. `StreamPublisher` writes one JSON line per item (stdout by default, for a log shipper or a
container runtime to pick up). `KafkaPublisher` hands items to a bounded buffer that a background
task drains into an idempotent aiokafka producer; when the buffer is full it drops and counts,
or, if asked to, makes the publishing thread wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from pipeline.errors import DependencyError

if TYPE_CHECKING:
    from pipeline.settings import Settings


class Publisher(Protocol):
    def publish(self, value: bytes, key: bytes | None = None) -> None:
        """Take one encoded trace item. Must not raise."""


class StreamPublisher:
    """One JSON line per trace item on a text stream (`sys.stdout` as it is at each write, so
    redirections and test capture apply). Write errors are counted, never raised."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.published = 0
        self.failed = 0

    def publish(self, value: bytes, key: bytes | None = None) -> None:
        line = value.decode() + "\n"
        try:
            with self._lock:
                (self._stream or sys.stdout).write(line)
                self.published += 1
        except Exception:
            self.failed += 1

    def flush(self) -> None:
        try:
            (self._stream or sys.stdout).flush()
        except Exception:
            self.failed += 1


_BATCH = 512
"""Items taken from the buffer per lock acquisition by the sender."""


class KafkaPublisher:
    """Trace items to a Kafka topic through an idempotent producer (acks=all, linger batching).

    `publish` may be called from any thread, before `start` too (items wait in the buffer). The
    buffer holds `max_queue` items; beyond that an item is dropped and counted in `dropped`,
    unless `block=True`, which makes a publishing thread wait for room instead. The event loop's
    own thread never waits (it is the thread that would make room): there, and before `start`,
    blocking mode lets the buffer grow past `max_queue` rather than lose the item. Delivered
    items count in `published`, those Kafka refused or that timed out in `failed`.

    `start` raises `DependencyError` when Kafka cannot be reached; `flush` waits until every item
    published so far is acknowledged; `close` flushes (for at most `grace` seconds), then
    drops and counts what is left. `async with` does start and close.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        max_queue: int = 10_000,
        block: bool = False,
        linger_ms: int = 20,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic or settings.topic
        self.max_queue = max_queue
        self.block = block
        self._settings = settings
        self._linger_ms = linger_ms
        self._producer_options = dict(producer_options or {})
        self._buffer: deque[tuple[bytes, bytes | None]] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup = asyncio.Event()
        self._wakeup_scheduled = False
        self._drained = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._producer: Any = None
        self._closed = False
        self.dropped = 0
        self.published = 0
        self.failed = 0
        self.last_error: str | None = None

    @property
    def queued(self) -> int:
        return len(self._buffer)

    def publish(self, value: bytes, key: bytes | None = None) -> None:
        try:
            with self._lock:
                if self._closed:
                    self.dropped += 1
                    return
                if len(self._buffer) >= self.max_queue:
                    if not self.block:
                        self.dropped += 1
                        return
                    if self._loop is not None and threading.get_ident() != self._loop_thread:
                        self._room.wait_for(
                            lambda: len(self._buffer) < self.max_queue or self._closed
                        )
                        if self._closed:
                            self.dropped += 1
                            return
                self._buffer.append((value, key))
            self._wake()
        except Exception as exc:
            self.dropped += 1
            self.last_error = repr(exc)

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return  # not started: `start` drains what is waiting
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        elif not self._wakeup_scheduled:
            # One cross-thread wake-up per drain, not per item: each costs a self-pipe write.
            self._wakeup_scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                loop.call_soon_threadsafe(self._wakeup.set)

    async def start(self) -> None:
        if self._producer is not None or self._closed:
            return
        from aiokafka import AIOKafkaProducer

        from pipeline.kafka.clients import client_options

        options: dict[str, Any] = {
            **client_options(self._settings),
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": self._linger_ms,
            "max_batch_size": 256 * 1024,
            **self._producer_options,
        }
        producer = AIOKafkaProducer(**options)
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            raise DependencyError(
                f"Kafka at {self._settings.kafka_bootstrap} did not answer: "
                f"{exc or type(exc).__name__}"
            ) from exc
        self._producer = producer
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sender = asyncio.create_task(self._send(), name="tailpipe-log-publisher")
        self._wakeup.set()

    async def _send(self) -> None:
        producer = self._producer
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._wakeup_scheduled = False
            while True:
                with self._lock:
                    if not self._buffer:
                        break
                    take = min(len(self._buffer), _BATCH)
                    batch = [self._buffer.popleft() for _ in range(take)]
                    self._room.notify_all()
                for value, key in batch:
                    try:
                        # Returns once the message is in the producer's batch; delivery is
                        # reported to the callback, so batches fill while others are in flight.
                        future = await producer.send(self.topic, value, key=key)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self.failed += 1
                        self.last_error = repr(exc)
                        continue
                    future.add_done_callback(self._delivered)
            self._drained.set()

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.failed += 1
        elif future.exception() is not None:
            self.failed += 1
            self.last_error = repr(future.exception())
        else:
            self.published += 1

    async def flush(self) -> None:
        """Wait until everything published before this call is acknowledged (or failed)."""
        if self._sender is None or self._sender.done():
            return
        self._drained.clear()
        self._wakeup.set()
        await self._drained.wait()
        await self._producer.flush()
        await asyncio.sleep(0)  # let the delivery callbacks run

    async def close(self, grace: float = 10.0) -> None:
        if self._closed:
            return
        try:
            async with asyncio.timeout(grace):
                await self.flush()
        except TimeoutError:
            pass
        with self._lock:
            self._closed = True
            self.dropped += len(self._buffer)
            self._buffer.clear()
            self._room.notify_all()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
