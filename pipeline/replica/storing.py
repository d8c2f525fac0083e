"""A replica's writer: the one task that takes batches off the hand-off queue, in order, and
stores each in one transaction with its offsets and the index of its dead letters
(`postgres.writer.Writer`), until it is stored or nothing of it is left to store.

Failures are sorted by what they mean (`Storing._failed`). A transient one (PostgreSQL down, a
timeout, a deadlock) retries the same batch with capped, jittered backoff while the poll loop,
its queue full, keeps every partition paused and keeps polling, so the replica stays in its
group. When the dead-letter store fails, only the partitions with dead letters in the batch
are held: their rows are dropped, they are sought back to their stored offset and paused until
the next retry, and the rest of the batch is stored. When the guard rail trips, every
partition is paused and stays so; `/readyz` says why. Partitions lost to another consumer go
to `rebalance.Rebalance.recover`.

Its own room because it is the other half of the consumer: the poll loop (`consumer`) only
reads and hands off, this side only stores and decides what a failed flush means; the queue
of one between them is all they share besides the positions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.alerts.outbox import Outbox
from pipeline.alerts.rules import Rules
from pipeline.errors import DependencyError
from pipeline.postgres import dedup, flush
from pipeline.postgres.connect import connect
from pipeline.postgres.day_partitions import DAY_TABLES, PartitionManager, ahead
from pipeline.postgres.writer import DeadLettersHeld, GuardTripped, Writer, Written, failure_kind
from pipeline.replica.metrics import Metrics
from pipeline.replica.outages import Outages
from pipeline.replica.pauses import Pauses
from pipeline.replica.positions import Key, Positions
from pipeline.replica.rebalance import Rebalance
from pipeline.settings import Settings
from pipeline.transform.batch import Batch

log = logging.getLogger("tailpipe.consumer")

_TRANSIENT = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DependencyError)
"""Failures of PostgreSQL itself: retried, logged in one line. Anything else is retried too,
with its traceback, since it is not expected."""


@dataclass(slots=True)
class Totals:
    messages: int = 0
    flushes: int = 0
    events: int = 0
    logs: int = 0
    dead: int = 0


class Storing:
    """The writer task (`run`) and what it touches: the queue it empties, the positions it
    advances, the partitions it holds or seeks back, and what it tells of each flush."""

    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        queue: asyncio.Queue[Batch],
        idle: asyncio.Event,
        kafka: AIOKafkaConsumer,
        positions: Positions,
        pauses: Pauses,
        rebalance: Rebalance,
        *,
        metrics: Metrics,
        outages: Outages,
        outbox: Outbox,
        totals: Totals,
        rules: Rules | None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.totals = totals
        self.metrics = metrics
        self.outages = outages
        self.outbox = outbox
        self.positions = positions
        self._writer = writer
        self._queue = queue
        self._idle = idle
        """Set while nothing is queued or being stored."""
        self._kafka = kafka
        self._pauses = pauses
        self._rebalance = rebalance
        self._partitions = PartitionManager(DAY_TABLES)

    async def run(self, conn: asyncpg.Connection) -> None:
        while True:
            batch = await self._queue.get()
            try:
                conn = await self._flush(conn, batch)
            finally:
                self.positions.done(batch)
                self._queue.task_done()
                if self._queue.empty():
                    self._idle.set()

    async def _flush(self, conn: asyncpg.Connection, batch: Batch) -> asyncpg.Connection:
        """Store the batch, or what is left of it after partitions were lost or held; returns
        the connection to use next (a new one after PostgreSQL went away)."""
        started = time.perf_counter()
        while batch.parts and self._pauses.tripped is None:
            try:
                if conn.is_closed():  # PostgreSQL went away under a previous attempt
                    conn = await connect(self.settings)
                await self._partitions.ensure(conn, flush.days_of(batch) | _ahead())
                written = await self._writer.write(conn, batch, self.positions.stored)
            except Exception as exc:
                await self._failed(batch, exc)
                continue
            self.outages.recovered("postgres")
            if written.objects:
                self.outages.recovered("s3")
                _report_dead_letters(written)
            self.positions.stored_up_to(batch, self._rebalance.owned())
            self.metrics.flushed(batch, written, time.perf_counter() - started)
            if written.alerts:
                self.outbox.wake()
            t = self.totals
            t.flushes += 1
            t.events += written.rows["tail_events"]
            t.logs += written.rows["tail_logs"]
            t.dead += sum(written.dead.values())
            await self._commit_to_kafka(batch)
            break
        return conn

    async def _failed(self, batch: Batch, exc: Exception) -> None:
        """Decide what a failed flush means; never raises (the writer must not die)."""
        self.metrics.flush_failures.labels(failure_kind(exc)).inc()
        try:
            if isinstance(exc, flush.PartitionsLost):
                log.warning("%s", exc)
                await self._rebalance.recover(exc.lost)
            elif isinstance(exc, asyncpg.UniqueViolationError):
                # Rows of this batch are stored already: our view of some partition is stale.
                # The key stopped a duplicate; re-read every partition of the batch from its
                # stored offset rather than retry the same rows forever.
                log.error("flush refused duplicate rows (%s); re-seeking stored offsets", exc)
                await self._rebalance.recover(set(batch.parts))
            elif isinstance(exc, dedup.ClaimRaced):
                log.warning("%s; the flush is retried", exc)
            elif isinstance(exc, DeadLettersHeld):
                delay = self.outages.failed("s3", exc.cause)
                self._hold(exc.partitions, delay)
            elif isinstance(exc, GuardTripped):
                self._trip(str(exc))
            else:
                if not isinstance(exc, _TRANSIENT):
                    log.error("flush failed unexpectedly; retrying", exc_info=exc)
                await asyncio.sleep(self.outages.failed("postgres", exc))
        except Exception as again:
            await asyncio.sleep(self.outages.failed("postgres", again))

    def _hold(self, keys: set[Key], delay: float) -> None:
        """Take these partitions out of every unflushed batch, seek them back to the first
        offset not stored, and pause them for `delay` seconds."""
        owned = self._rebalance.owned()
        rewind = {
            k: offset for k, offset in self.positions.rewind_points(keys).items() if k in owned
        }
        self.positions.drop(keys)
        for key, offset in rewind.items():
            self._kafka.seek(TopicPartition(*key), offset)
            self.positions.next[key] = offset
        self._pauses.hold(set(rewind), delay)

    def _trip(self, why: str) -> None:
        log.critical("dead-letter guard rail tripped", extra={"why": why})
        self.positions.drop(set(self.positions.next))
        self._pauses.trip(why)
        if self.rules is not None and self.rules.guard_rail.enabled:
            topic = self.settings.topic
            summary = f"dead-letter guard rail stopped a replica of {topic}: {why}"
            self.outbox.raise_(self.rules.guard_rail, f"guard_rail:{topic}", summary)

    async def _commit_to_kafka(self, batch: Batch) -> None:
        """A copy of the stored offsets for lag tools; PostgreSQL stays the truth."""
        owned = self._rebalance.owned()
        offsets = {
            TopicPartition(t, p): part.next_offset
            for (t, p), part in batch.parts.items()
            if (t, p) in owned
        }
        if offsets:
            try:
                await self._kafka.commit(offsets)
            except Exception as exc:  # the group may be rebalancing; the next flush commits
                log.info("Kafka commit skipped: %s", exc)


def _ahead() -> set[date]:
    """Today and the next two days, so a new day's partition exists before it is needed
    (the manager's cache makes this free once they exist)."""
    return set(ahead(datetime.now(UTC).date()))


def _report_dead_letters(written: Written) -> None:
    """One warning per dead-letter object a committed flush wrote: which messages, why, and
    where they are, so `tailpipe dlq` is one copy-paste away."""
    for entry in written.letters:
        log.warning(
            "messages dead-lettered",
            extra={
                "topic": entry.topic,
                "partition": entry.partition,
                "offsets": entry.offsets[:_OFFSETS_SHOWN],
                "messages": len(entry.offsets),
                "error_classes": entry.error_classes,
                "error": entry.error[:200],
                "object": entry.object_key,
            },
        )


_OFFSETS_SHOWN = 20
"""A flood of dead letters must not make one log line huge; `messages` has the count."""
