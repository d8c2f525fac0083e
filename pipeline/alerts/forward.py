"""`tailpipe alerts forward`: the alerts topic, delivered to people.

A consumer group of its own (`<TAILPIPE_GROUP>-forward`) reads the alerts topic. Each alert is
routed to the destinations that want it and POSTed to each: retried with backoff on network
errors, 5xx and 429 (honouring `Retry-After`), not on other 4xx; each destination under its
own rate limit. An alert is finished once every destination that wants it has taken it or
been given up on after `max_attempts` (then it is logged as dropped).

**HTTP never runs in the poll loop.** Each destination has a lane: one task that delivers its
alerts one after another, in the order they were read. The poll loop reads, hands each alert
to the lanes that want it, commits, and calls `getmany` again within 200 ms whatever the lanes
are doing, so the consumer heartbeats and polls however long a destination hangs, and never
exceeds `max.poll.interval.ms`. When `max_pending` alerts are read but not finished, it pauses
its partitions and keeps polling until half of them are: memory stays bounded. A dead
destination holds back only its own lane; the others keep delivering.

**Commits.** Per partition, the committed offset is the end of the finished prefix: an alert is
acknowledged only when it and every alert before it are finished, so nothing is acknowledged
undelivered. Commits run beside the poll loop; one refused because the group rebalanced
(`CommitFailedError`) or failed otherwise is logged, and the next progress commits again.

**Rebalances.** When partitions are revoked, their deliveries get `revoke_grace_s` to finish,
the finished prefix is committed, and the deliveries not started yet are withdrawn; one under
way goes on (a request sent cannot be taken back). Newly assigned partitions are read from
their committed offset.

**Never twice from one process.** Each lane remembers the ids of the last `memory` alerts it
finished (10,000 by default) and the ones it is delivering: an alert read again (its partition
came back after a rebalance, or the outbox published it again) joins the delivery under way or
is skipped, counted in `repeats`, and is not POSTed again.

What stays at least once, for receivers to drop by the alert's id: an alert delivered but not
yet committed when the process dies (a crash, `kill -9`, the shutdown grace running out), and
one whose partition moves to another forwarder while its delivery is under way or finished but
not committed (a second forwarder in the group; memory is per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.alerts.destinations import Destination
from pipeline.backoff import Backoff
from pipeline.kafka import clients
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.forward")

POLL_MS = 200
"""The longest the poll loop waits in `getmany`: it is never blocked longer by anything else."""


@dataclass(slots=True)
class Tally:
    delivered: int = 0
    dropped: int = 0
    retries: int = 0
    skipped: int = 0
    """Alerts no destination wants."""
    repeats: int = 0
    """Alerts read again that a destination had already taken, or was taking: not sent again."""
    assignments: int = 0
    """Times the group gave this forwarder partitions: 1 unless the group rebalanced."""
    commit_failures: int = 0


class RateLimit:
    """At most `per_minute` requests in any minute: requests are spaced, never burst."""

    def __init__(self, per_minute: int) -> None:
        self._gap = 60.0 / per_minute
        self._next = 0.0

    def reserve(self, now: float) -> float:
        """Book the next slot for a request made at `now`; returns how long to wait for it."""
        delay = max(0.0, self._next - now)
        self._next = max(now, self._next) + self._gap
        return delay

    async def wait(self) -> None:
        delay = self.reserve(time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)


class Forwarder:
    """Delivery of one alert to one destination: rate limit, retries, backoff."""

    def __init__(
        self,
        destinations: Sequence[Destination],
        client: httpx.AsyncClient,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
    ) -> None:
        self.destinations = tuple(destinations)
        self.client = client
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.tally = Tally()
        self._limits = {d.name: RateLimit(d.per_minute) for d in destinations}

    async def forward(self, alert: dict[str, Any]) -> None:
        """Deliver one alert to every destination that wants it (at the same time)."""
        wanted = [d for d in self.destinations if d.wants(alert)]
        if not wanted:
            self.tally.skipped += 1
            return
        await asyncio.gather(*(self.deliver(d, alert) for d in wanted))

    async def deliver(self, destination: Destination, alert: dict[str, Any]) -> None:
        """POST `alert` until the destination takes it, refuses it, or `max_attempts` fail."""
        for attempt in range(1, self.max_attempts + 1):
            await self._limits[destination.name].wait()
            body, headers = destination.request(alert, int(time.time()))
            retry_after: float | None = None
            try:
                response = await self.client.post(destination.url, content=body, headers=headers)
                status = response.status_code
                if status < 300:
                    self.tally.delivered += 1
                    return
                if 400 <= status < 500 and status != 429:
                    log.error("%s refused alert %s: HTTP %d; dropped", destination.name,
                              alert.get("id"), status)  # fmt: skip
                    self.tally.dropped += 1
                    return
                retry_after = _seconds(response.headers.get("retry-after"))
                problem = f"HTTP {status}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == self.max_attempts:
                break
            self.tally.retries += 1
            delay = retry_after if retry_after is not None else self.backoff.delay(attempt)
            log.warning("%s: %s; retry %d in %.1fs", destination.name, problem, attempt, delay)
            await asyncio.sleep(delay)
        log.error("%s: alert %s given up after %d attempts; dropped", destination.name,
                  alert.get("id"), self.max_attempts)  # fmt: skip
        self.tally.dropped += 1


def _seconds(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    if value is None or value != value:  # absent, or nan
        return None
    return min(max(value, 0.0), 300.0)


class Lane:
    """One destination's deliveries: one at a time, in the order handed in, and each alert id
    delivered at most once however many times it is handed in."""

    def __init__(self, destination: Destination, forwarder: Forwarder, memory: int) -> None:
        self.destination = destination
        self._forwarder = forwarder
        self._memory = memory
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._queued: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._holders: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self.current: str | None = None
        """The id being delivered now."""

    def knows(self, key: str) -> bool:
        """Whether `key` was finished (among the last `memory`) or is being delivered."""
        return key in self._finished or key in self._futures

    def submit(self, key: str, alert: dict[str, Any]) -> asyncio.Future[None] | None:
        """The future of the one delivery of `key`; None when it was finished already."""
        if key in self._finished:
            return None
        future = self._futures.get(key)
        if future is None:
            future = self._futures[key] = asyncio.get_running_loop().create_future()
            self._queued[key] = alert
            self._wake.set()
        self._holders[key] += 1
        return future

    def withdraw(self, key: str) -> None:
        """A reader of `key` is gone (its partition was revoked). If no other reader wants it
        and its delivery has not started, it is not made; one under way goes on."""
        if key not in self._holders:
            return
        self._holders[key] -= 1
        if self._holders[key] > 0:
            return
        del self._holders[key]
        if key in self._queued:
            del self._queued[key]
            self._futures.pop(key).cancel()

    async def run(self) -> None:
        while True:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            key, alert = self._queued.popitem(last=False)
            self.current = key
            future = self._futures[key]
            try:
                await self._forwarder.deliver(self.destination, alert)
            except asyncio.CancelledError:
                future.cancel()  # stopping: not finished, so never committed
                raise
            except Exception:  # a bug must not stop the lane, nor leave the alert pending
                log.exception("%s: alert %s could not be sent; dropped",
                              self.destination.name, alert.get("id"))  # fmt: skip
                self._forwarder.tally.dropped += 1
            finally:
                self.current = None
                self._holders.pop(key, None)
                del self._futures[key]
            self._finished[key] = None
            while len(self._finished) > self._memory:
                self._finished.popitem(last=False)
            future.set_result(None)


@dataclass(slots=True, eq=False)
class _Item:
    """An alert read from a partition, with the deliveries it waits for."""

    offset: int
    waiting: int = 0
    claims: list[tuple[Lane, str, asyncio.Future[None]]] = field(default_factory=list)

    def one_done(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            self.waiting -= 1


@dataclass(slots=True)
class _Partition:
    items: deque[_Item] = field(default_factory=deque)
    next_offset: int | None = None
    """The next offset to read: records before it (fetched again) are skipped."""
    finished: int | None = None
    """The end of the finished prefix: the offset to commit."""
    committed: int | None = None


class Forwarding:
    """The poll loop, the lanes and the commits of one `alerts forward` process."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        forwarder: Forwarder,
        *,
        max_pending: int = 1000,
        memory: int = 10_000,
        revoke_grace_s: float = 2.0,
    ) -> None:
        self.consumer = consumer
        self.forwarder = forwarder
        self.tally = forwarder.tally
        self.max_pending = max_pending
        self.revoke_grace_s = revoke_grace_s
        self.lanes = {d.name: Lane(d, forwarder, memory) for d in forwarder.destinations}
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.paused = False
        self.closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._committing: asyncio.Task[None] | None = None
        self._commit_after = 0.0

    def listener(self) -> ConsumerRebalanceListener:
        """What the consumer must be subscribed with: commits and withdrawals on rebalance."""
        return _Listener(self)

    def pending(self) -> int:
        """Alerts read and not finished."""
        return sum(1 for p in self.partitions.values() for item in p.items if item.waiting)

    def uncommitted(self) -> int:
        """Alerts read and held in memory: not finished, or behind one that is not."""
        return sum(len(p.items) for p in self.partitions.values())

    # -- the poll loop ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, shutdown_grace_s: float) -> None:
        self._tasks = [
            asyncio.create_task(lane.run(), name=f"tailpipe-forward-{name}")
            for name, lane in self.lanes.items()
        ]
        try:
            while not stop.is_set():
                self._backpressure()
                self.take(await self.consumer.getmany(timeout_ms=POLL_MS, max_records=100))
                self._advance()
                self._commit_soon()
            await self._drain(shutdown_grace_s)
        finally:
            self.closed = True
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._committing is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._committing

    def take(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in fetched.items():
            part = self.partitions.get(tp)
            if part is None:  # fetched before a rebalance took it away
                continue
            for record in records:
                if part.next_offset is not None and record.offset < part.next_offset:
                    continue  # read already
                part.next_offset = record.offset + 1
                part.items.append(self._item(tp, record))

    def _item(self, tp: TopicPartition, record: ConsumerRecord) -> _Item:
        item = _Item(record.offset)
        alert = _alert(tp, record)
        if alert is None:
            return item
        wanted = [lane for lane in self.lanes.values() if lane.destination.wants(alert)]
        if not wanted:
            self.tally.skipped += 1
            return item
        key = _key(alert, record.value or b"")
        for lane in wanted:
            if lane.knows(key):
                self.tally.repeats += 1
            future = lane.submit(key, alert)
            if future is not None and not future.done():
                item.waiting += 1
                item.claims.append((lane, key, future))
                future.add_done_callback(item.one_done)
        return item

    def _advance(self) -> None:
        for part in self.partitions.values():
            while part.items and not part.items[0].waiting:
                part.finished = part.items.popleft().offset + 1

    def _backpressure(self) -> None:
        held = self.uncommitted()
        if held >= self.max_pending:
            if not self.paused:
                log.info("%d alerts read and not finished: reading paused", held)
            self.paused = True
        elif self.paused and held <= self.max_pending // 2:
            self.paused = False
            self.consumer.resume(*self.consumer.assignment())
        if self.paused:  # again each time: a rebalance may have assigned partitions since
            self.consumer.pause(*self.consumer.assignment())

    async def _drain(self, grace_s: float) -> None:
        """On stop: read nothing more; give the deliveries under way `grace_s` to finish, keep
        polling meanwhile (to stay in the group), and commit what finished."""
        deadline = time.monotonic() + grace_s
        while self.pending() and time.monotonic() < deadline:
            self.consumer.pause(*self.consumer.assignment())
            await self.consumer.getmany(timeout_ms=POLL_MS)  # nothing: every partition paused
            self._advance()
            self._commit_soon()
        self._advance()
        if self._committing is not None:
            await self._committing
        await self.commit()
        if self.pending():
            log.warning("stopping with %d alerts not finished: they are read again at the next"
                        " start", self.pending())  # fmt: skip

    # -- commits ------------------------------------------------------------------------------
    def _commit_soon(self) -> None:
        if self._committing is not None and not self._committing.done():
            return
        if time.monotonic() < self._commit_after or not self._due():
            return
        self._committing = asyncio.create_task(self.commit(), name="tailpipe-forward-commit")

    def _due(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, _Partition]:
        return {
            tp: part
            for tp, part in self.partitions.items()
            if part.finished is not None
            and part.finished != part.committed
            and (only is None or tp in only)
        }

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit the finished prefix of each partition (of `only`) that moved. A failure is
        logged and retried a second later: what is not committed is read again, not lost."""
        due = self._due(only)
        offsets = {tp: part.finished for tp, part in due.items() if part.finished is not None}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailedError after a rebalance, IllegalStateError, ...
            self.tally.commit_failures += 1
            self._commit_after = time.monotonic() + 1.0
            log.warning("offsets not committed (%s: %s); they are committed again with the next"
                        " progress, or read again by the partition's next owner",
                        type(exc).__name__, exc)  # fmt: skip
            return
        for tp, part in due.items():
            part.committed = offsets[tp]

    # -- rebalances ---------------------------------------------------------------------------
    async def revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:  # the first join
            return
        mine = {tp: self.partitions[tp] for tp in revoked if tp in self.partitions}
        under_way = {
            future
            for part in mine.values()
            for item in part.items
            for _, _, future in item.claims
            if not future.done()
        }
        if under_way and not self.closed:
            await asyncio.wait(under_way, timeout=self.revoke_grace_s)
            await asyncio.sleep(0)  # let the futures' callbacks mark their items
        self._advance()
        if self._committing is not None and not self._committing.done():
            with contextlib.suppress(Exception):
                await self._committing
        await self.commit(set(mine))
        withdrawn = 0
        for tp, part in mine.items():
            for item in part.items:
                for lane, key, _ in item.claims if item.waiting else ():
                    lane.withdraw(key)
                    withdrawn += 1
            del self.partitions[tp]
        log.info("partitions revoked", extra={
            "partitions": sorted(tp.partition for tp in revoked), "withdrawn": withdrawn,
        })  # fmt: skip

    def assigned(self, assigned: set[TopicPartition]) -> None:
        self.tally.assignments += 1
        for tp in assigned:
            self.partitions.setdefault(tp, _Partition())
        log.info("partitions assigned",
                 extra={"partitions": sorted(tp.partition for tp in assigned)})  # fmt: skip


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, forwarding: Forwarding) -> None:
        self._forwarding = forwarding

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._forwarding.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._forwarding.assigned(assigned)


def _alert(tp: TopicPartition, record: ConsumerRecord) -> dict[str, Any] | None:
    try:
        alert = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        alert = None
    if not isinstance(alert, dict):
        log.error("not an alert at %s[%d]@%d; skipped", tp.topic, tp.partition, record.offset)
        return None
    return alert


def _key(alert: dict[str, Any], value: bytes) -> str:
    """What makes two messages the same alert: its id (receivers drop repeats by it too), or
    without one, the message itself."""
    found = alert.get("id")
    if isinstance(found, str) and found:
        return found
    return "sha256:" + hashlib.sha256(value).hexdigest()


async def run(
    settings: Settings,
    destinations: Sequence[Destination],
    stop: asyncio.Event,
    *,
    max_poll_interval_ms: int = 300_000,
    max_pending: int = 1000,
    memory: int = 10_000,
    backoff: Backoff | None = None,
    http_timeout_s: float | None = None,
) -> Tally:
    """Forward until `stop` is set; then finish (within `TAILPIPE_SHUTDOWN_GRACE`), commit,
    leave the group. `max_poll_interval_ms` is Kafka's `max.poll.interval.ms`: the poll loop
    never comes near it, whatever the destinations do. Each request may take
    `http_timeout_s` (twice `TAILPIPE_CONNECT_TIMEOUT` by default)."""
    consumer = AIOKafkaConsumer(
        **clients.client_options(settings),
        group_id=f"{settings.group}-forward",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=max_poll_interval_ms,
    )
    timeout = http_timeout_s if http_timeout_s is not None else settings.connect_timeout * 2
    async with httpx.AsyncClient(timeout=timeout) as client:
        forwarder = Forwarder(destinations, client, settings.alert_forward_attempts, backoff)
        forwarding = Forwarding(consumer, forwarder, max_pending=max_pending, memory=memory)
        consumer.subscribe([settings.alerts_topic], listener=forwarding.listener())
        await clients.start(consumer, settings, consumer.stop)
        try:
            await forwarding.run(stop, settings.shutdown_grace)
        finally:
            await consumer.stop()
    return forwarder.tally
