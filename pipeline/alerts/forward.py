"""`tailpipe alerts forward`: the alerts topic, delivered to people.

A consumer group of its own (`<TAILPIPE_GROUP>-forward`) reads the alerts topic and hands each
alert to the lanes of the destinations that want it (`delivery`: the POSTs, their retries and
rate limits, each alert delivered at most once per process).

**HTTP never runs in the poll loop.** The poll loop reads, hands each alert to the lanes that
want it, commits, and calls `getmany` again within 200 ms whatever the lanes are doing, so the
consumer heartbeats and polls however long a destination hangs, and never exceeds
`max.poll.interval.ms`. When `max_pending` alerts are read but not finished, it pauses its
partitions and keeps polling until half of them are: memory stays bounded.

**Commits.** Per partition, the committed offset is the end of the finished prefix: an alert is
acknowledged only when it and every alert before it are finished, so nothing is acknowledged
undelivered. Commits run beside the poll loop; one refused because the group rebalanced
(`CommitFailedError`) or failed otherwise is logged, and the next progress commits again.

**Rebalances.** When partitions are revoked, their deliveries get `revoke_grace_s` to finish,
the finished prefix is committed, and the deliveries not started yet are withdrawn; one under
way goes on (a request sent cannot be taken back). Newly assigned partitions are read from
their committed offset. An alert read again that a lane had already taken, or was taking, is
counted in `repeats` and not sent again.

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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.alerts.delivery import Forwarder, Lane, Tally
from pipeline.alerts.destinations import Destination
from pipeline.backoff import Backoff
from pipeline.kafka import clients
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.forward")

POLL_MS = 200
"""The longest the poll loop waits in `getmany`: it is never blocked longer by anything else."""


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
