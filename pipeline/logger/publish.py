"""Where finished trace items go: JSON lines on a text stream, or a Kafka topic.

A publisher is anything with `publish(value: bytes, key: bytes | None) -> None` that never
raises and never blocks for long: the host application calls it on its own threads and event
loop. `StreamPublisher` writes one JSON line per item (stdout by default, for a log shipper or a
container runtime to pick up). `KafkaPublisher` hands items to a bounded buffer that a background
task drains into an idempotent aiokafka producer.

Kafka being down never stops the host service, as with the OpenTelemetry and Sentry SDKs: the
publisher's `start` returns at once and connects in the background, retrying with the shared
capped, jittered backoff (`pipeline.backoff`); meanwhile records wait in the buffer, and when it
is full the oldest are dropped (and counted) so that what arrives after the outage is the most
recent. What is logged about it goes to the stdlib logger `tailpipe.logger` (which a
`TailpipeHandler` skips, so it cannot feed back into the publisher), once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from pipeline.backoff import Backoff

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger("tailpipe.logger")


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

RETRY = Backoff(base_s=0.5, cap_s=30.0)
"""Between connection attempts: a dead Kafka is asked at most every 30 s, a blip is retried
within a second."""

Record = tuple[bytes, bytes | None]


class KafkaPublisher:
    """Trace items to a Kafka topic through an idempotent producer (acks=all, linger batching).

    `publish` may be called from any thread and never raises. Items wait in a buffer of
    `max_queue`; when it is full the OLDEST item is dropped to make room (counted in `dropped`;
    one warning per episode, from the first drop until the buffer has been emptied again), so
    what Kafka gets after an outage is the most recent. `block=True` makes a thread other than
    the event loop's wait for room instead, unless Kafka is known to be unreachable (or `start`
    was not called): then it drops the oldest too, so that an outage never stalls the
    application's threads. The loop's own thread never waits (it is the thread that would make
    room): in blocking mode it lets the buffer grow past `max_queue` instead, except during an
    outage.

    `start` returns at once, Kafka up or not: a background task connects, retrying with
    `backoff` (full jitter, capped) while Kafka is unreachable, then hands the buffer to the
    producer, at most `max_queue` unacknowledged items at a time. A record published before
    `start` waits in the buffer, and the first one logs a warning that `start` has not been
    called, so that a publisher nobody started does not lose records silently. If Kafka goes
    away later, the producer keeps what it holds and retries it until Kafka takes it (the
    idempotent producer writes it once), while the buffer keeps the newest `max_queue` of the
    rest; an item the producer refused goes back to the head of the buffer. The outage is
    noticed when items stay unacknowledged for `connect_timeout` seconds (or a send times out)
    and is over at the next acknowledgement. Outages are told to the stdlib logger
    `tailpipe.logger`: unreachable, dropping, reachable again, each once per outage.

    `connected` is True while the producer is up and Kafka acknowledges; `last_error` is the
    latest failure. Counters: `published` (acknowledged), `failed` (refused by Kafka, or given
    up by `close`), `dropped` (never sent: evicted from the full buffer, published after
    `close`, or still buffered when `close` gave up), `queued` (waiting in the buffer now).
    `flush` waits until every item published before it is settled (acknowledged, failed or
    dropped): during an outage that is until Kafka returns, so bound it with `asyncio.timeout`.
    `close(grace)` flushes for at most `grace` seconds, drops (and counts) what is still
    buffered, then stops the producer, giving up what Kafka has not acknowledged within
    `connect_timeout` more (counted in `failed`: Kafka may or may not have it). `async with`
    does start and close.
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
        backoff: Backoff = RETRY,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.topic = topic or settings.topic
        self.max_queue = max_queue
        self.block = block
        self.backoff = backoff
        self._settings = settings
        self._linger_ms = linger_ms
        self._producer_options = dict(producer_options or {})
        self._buffer: deque[Record] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup = asyncio.Event()
        self._wakeup_scheduled = False
        self._waiters: list[asyncio.Future[None]] = []
        self._sender: asyncio.Task[None] | None = None
        self._producer: Any = None
        self._timeout = max(settings.connect_timeout, 1.0)
        """How long Kafka may leave records unacknowledged before it counts as unreachable."""
        self._in_flight = 0  # handed to the producer, not yet acknowledged or failed
        self._progress = 0.0  # when Kafka last acknowledged (or the first record went out)
        self._connected = False
        self._closed = False
        self._accepted = 0  # items ever put in the buffer; each ends published, failed or evicted
        self._evicted = 0
        self._warned_unstarted = False
        self._warned_drop = False
        self._outage_since: float | None = None
        self._dropped_before_outage = 0
        self.dropped = 0
        self.published = 0
        self.failed = 0
        self.last_error: str | None = None

    @property
    def queued(self) -> int:
        return len(self._buffer)

    @property
    def connected(self) -> bool:
        """The producer is up and Kafka acknowledges: False before the first connection, and
        from when an outage is noticed until Kafka acknowledges again."""
        return self._connected

    # --- the application's side: any thread --------------------------------------------------

    def publish(self, value: bytes, key: bytes | None = None) -> None:
        warning: str | None = None
        try:
            with self._lock:
                if self._closed:
                    self.dropped += 1
                    return
                if self._loop is None and not self._warned_unstarted:
                    self._warned_unstarted = True
                    warning = (
                        f"KafkaPublisher for topic {self.topic} got a record before start(): "
                        f"records wait in its buffer, the oldest dropped beyond "
                        f"{self.max_queue}, until start() is awaited on the running event loop"
                    )
                if len(self._buffer) >= self.max_queue:
                    if self._may_wait():
                        self._room.wait_for(self._has_room)
                        if self._closed:
                            self.dropped += 1
                            return
                    if len(self._buffer) >= self.max_queue and not self._may_grow():
                        self._buffer.popleft()
                        self._evict(1)
                        warning = warning or self._drop_warning()
                self._buffer.append((value, key))
                self._accepted += 1
            self._wake()
        except Exception as exc:
            self.dropped += 1
            self.last_error = repr(exc)
        if warning is not None:  # outside the lock: a handler may publish in turn
            log.warning(warning)

    # Blocking mode waits (or grows the buffer) only while Kafka is not known to be down: up,
    # or being connected to for the first time since `start` or since it came back.

    def _may_wait(self) -> bool:
        return (
            self.block
            and self._loop is not None
            and self._outage_since is None
            and threading.get_ident() != self._loop_thread
        )

    def _may_grow(self) -> bool:
        return (
            self.block
            and self._loop is not None
            and self._outage_since is None
            and threading.get_ident() == self._loop_thread
        )

    def _has_room(self) -> bool:
        return len(self._buffer) < self.max_queue or self._closed or self._outage_since is not None

    def _evict(self, n: int) -> None:
        """Count `n` items taken out of the buffer unsent (under the lock)."""
        self.dropped += n
        self._evicted += n

    def _drop_warning(self) -> str | None:
        """The warning for the first drop of an episode (under the lock), None after it."""
        if self._warned_drop:
            return None
        self._warned_drop = True
        if self._loop is None:
            why = "start() has not been called"
        elif self._outage_since is not None:
            why = f"Kafka at {self._settings.kafka_bootstrap} is unreachable"
        elif not self._connected:
            why = "Kafka is not connected yet"
        else:
            why = "records come faster than Kafka takes them"
        return (
            f"KafkaPublisher buffer full ({self.max_queue} records) because {why}: dropping the "
            f"oldest records (counted in .dropped) until it drains"
        )

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return  # not started: the sender drains what is waiting once it connects
        if threading.get_ident() == self._loop_thread:
            self._signal()
        elif not self._wakeup_scheduled:
            # One cross-thread wake-up per loop turn, not per item: each costs a self-pipe write.
            self._wakeup_scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                loop.call_soon_threadsafe(self._signal)

    def _signal(self) -> None:
        """On the loop: new items for the sender, and maybe evictions a `flush` waits for."""
        self._wakeup_scheduled = False
        self._wakeup.set()
        self._notify()

    def _notify(self) -> None:
        """Wake the `flush` calls waiting (on the loop) for items to settle."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- the event loop's side ---------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and sending in the background; returns at once, Kafka up or not."""
        if self._sender is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sender = asyncio.create_task(self._run(), name="tailpipe-log-publisher")

    async def _run(self) -> None:
        """Connect (retrying with backoff while Kafka is unreachable), then send until `close`
        cancels it. Once started, the producer rides out later outages itself: an idempotent
        aiokafka producer retries its batches until Kafka takes them, without duplicates."""
        attempt = 0
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                break
            except BaseException as exc:
                await _stop(producer, self._timeout)  # even when `close` cancelled the start
                if not isinstance(exc, Exception):
                    raise
                attempt += 1
                self._down(exc, attempt)
                await asyncio.sleep(self.backoff.delay(attempt))
        with self._lock:
            self._producer = producer
            self._connected = True
        try:
            await self._drain(producer)
        finally:
            with self._lock:
                self._connected = False
            await _stop(producer, self._timeout)

    def _new_producer(self) -> Any:
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
        return AIOKafkaProducer(**options)

    def _up(self) -> None:
        """Kafka acknowledged a record (or there is nothing to send): any outage is over."""
        with self._lock:
            self._connected = True
            since, self._outage_since = self._outage_since, None
        if since is not None:
            log.warning(
                "Kafka at %s reachable again after %.1f s; %d records dropped meanwhile",
                self._settings.kafka_bootstrap,
                time.monotonic() - since,
                self.dropped - self._dropped_before_outage,
            )

    def _down(self, exc: BaseException | str, attempt: int) -> None:
        """Kafka did not answer: a connection refused, a send or acknowledgement timed out."""
        self.last_error = exc if isinstance(exc, str) else repr(exc)
        with self._lock:
            began = self._outage_since is None
            if began:
                self._outage_since = time.monotonic()
                self._dropped_before_outage = self.dropped
            self._connected = False
            self._room.notify_all()  # blocked threads stop waiting: drop the oldest instead
        if began:
            log.warning(
                "Kafka at %s unreachable (%s); buffering up to %d records and retrying in "
                "the background",
                self._settings.kafka_bootstrap,
                exc if isinstance(exc, str) else f"{exc}" or type(exc).__name__,
                self.max_queue,
            )
        else:
            log.debug("Kafka still unreachable, attempt %d: %r", attempt, exc)

    async def _drain(self, producer: Any) -> None:
        """Hand what the buffer holds to the producer, at most `max_queue` unacknowledged."""
        attempt = 0
        if self._outage_since is not None and not self._buffer:
            self._up()  # connected, and nothing waits to prove it
        while True:
            if self._in_flight:
                # A stall (records out, no acknowledgement) is how a later outage shows.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timeout):
                        await self._wakeup.wait()
                if self._in_flight and time.monotonic() - self._progress > self._timeout:
                    self._down(f"no acknowledgement for {self._timeout:g} s", attempt)
            else:
                await self._wakeup.wait()
            self._wakeup.clear()
            while self._in_flight < self.max_queue:
                with self._lock:
                    if not self._buffer:
                        if self._outage_since is None:
                            self._warned_drop = False  # the episode is over
                        break
                    take = min(len(self._buffer), _BATCH, self.max_queue - self._in_flight)
                    batch = [self._buffer.popleft() for _ in range(take)]
                    self._room.notify_all()
                for i, (value, key) in enumerate(batch):
                    try:
                        # Returns once the item is in the producer's batch; delivery is
                        # reported to the callback, so batches fill while others are in flight.
                        future = await producer.send(self.topic, value, key=key)
                    except asyncio.CancelledError:
                        self._put_back(batch[i:])  # `close` counts them
                        raise
                    except Exception as exc:
                        if not _transient(exc):
                            self.failed += 1
                            self.last_error = repr(exc)
                            self._notify()
                            continue
                        # The producer's own batches are full (Kafka is not taking them) or
                        # the topic has no leader yet. Never accepted: no duplicate later.
                        self._put_back(batch[i:])
                        attempt += 1
                        self._down(exc, attempt)
                        await asyncio.sleep(self.backoff.delay(attempt))
                        self._wakeup.set()
                        break
                    attempt = 0
                    if not self._in_flight:
                        self._progress = time.monotonic()
                    self._in_flight += 1
                    future.add_done_callback(self._delivered)
                else:
                    continue
                break

    def _put_back(self, records: Iterable[Record]) -> None:
        """Items the producer did not accept, back at the head of the buffer, which keeps its
        bound: what overflows is the oldest, these."""
        warning = None
        with self._lock:
            self._buffer.extendleft(reversed(list(records)))
            excess = len(self._buffer) - self.max_queue
            if excess > 0:
                for _ in range(excess):
                    self._buffer.popleft()
                self._evict(excess)
                warning = self._drop_warning()
        if warning is not None:
            log.warning(warning)
        self._notify()

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        if future.cancelled():
            self.failed += 1
        elif (exc := future.exception()) is not None:
            self.failed += 1
            self.last_error = repr(exc)
        else:
            self.published += 1
            self._progress = time.monotonic()
            if self._outage_since is not None or not self._connected:
                self._up()
        self._notify()
        if self._buffer:
            self._wakeup.set()  # room in flight again

    def _settled(self) -> int:
        return self.published + self.failed + self._evicted

    async def flush(self) -> None:
        """Wait until everything published before this call is settled: acknowledged, failed
        or dropped. While Kafka is unreachable that is until it returns (or until enough newer
        items evicted the older ones): bound it with `asyncio.timeout`. Returns at once before
        `start` or after `close`, when nothing drains the buffer."""
        if self._sender is None or self._sender.done():
            return
        target = self._accepted
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        while self._settled() < target and not self._sender.done():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            await waiter

    async def close(self, grace: float = 10.0) -> None:
        """Flush for at most `grace` seconds, then drop (and count) what is still buffered and
        stop the producer. Later `publish` calls drop and count."""
        if self._closed:
            return
        try:
            async with asyncio.timeout(grace):
                await self.flush()
        except TimeoutError:
            pass
        with self._lock:
            self._closed = True
            self._room.notify_all()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        with self._lock:
            self._evict(len(self._buffer))
            self._buffer.clear()
        self._notify()

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


def _transient(exc: BaseException) -> bool:
    """A failure that says Kafka is unreachable (or busy) rather than that the item is bad."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    if isinstance(exc, KafkaTimeoutError | KafkaConnectionError | OSError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


async def _stop(producer: Any, patience: float) -> None:
    """Stop a producer whatever state it is in, within about `patience` seconds.

    `stop` waits until Kafka has taken every batch, which an idempotent producer retries for as
    long as Kafka is away: past `patience` its batches are given up (their records count in
    `failed`: Kafka may or may not have them), so that `close` ends during an outage too.
    """
    stopping = asyncio.ensure_future(producer.stop())
    try:
        await asyncio.wait([stopping], timeout=patience)
        if not stopping.done():
            from aiokafka.errors import KafkaTimeoutError

            # No public way to abandon pending batches in aiokafka 0.14: fail them as its
            # sender does with a fatal error.
            producer._message_accumulator.fail_all(
                KafkaTimeoutError("the publisher closed before Kafka acknowledged it")
            )
        with contextlib.suppress(Exception):
            await stopping
    except asyncio.CancelledError:
        stopping.cancel()
        raise
    await asyncio.sleep(0)  # let the delivery callbacks run
