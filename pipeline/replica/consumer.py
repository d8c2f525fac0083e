"""`tailpipe run`: one consumer replica. Kafka in, batches out, PostgreSQL the source of truth.

Two tasks and a bounded hand-off between them:
- the poll loop fetches (`getmany`), transforms into the filling batch, and hands a full batch
  to the writer through a queue of one. While the writer is busy with one batch and another is
  queued, the loop pauses its partitions and keeps polling, so memory stays bounded and the
  consumer stays in its group;
- the writer stores batches in order, each in one transaction with its offsets and the index
  of its dead letters (`writer.Writer`).

Failures: a transient one (PostgreSQL down, a timeout, a deadlock) retries the same batch with
capped, jittered backoff while the poll loop, its queue full, keeps every partition paused and
keeps polling, so the replica stays in its group. When the dead-letter store fails, only the
partitions with dead letters in the batch are held: their rows are dropped, they are sought
back to their stored offset and paused until the next retry, and the rest of the batch is
stored. When the guard rail trips, every partition is paused and stays so; `/readyz` says why.

Offsets: on assignment each partition is sought to its offset stored in PostgreSQL (else the
group's committed offset, else `auto_offset_reset`). A flush that finds a partition's stored
offset moved (another consumer stored it) rolls back whole; partitions we still own are sought
back to the stored offset and their unflushed rows dropped, the others are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from pipeline.alerts.outbox import Outbox
from pipeline.alerts.rules import Rules
from pipeline.backoff import Backoff
from pipeline.deadletters.guard import Guard, GuardPolicy
from pipeline.deadletters.store import open_store
from pipeline.errors import DependencyError
from pipeline.kafka import clients
from pipeline.postgres import flush
from pipeline.postgres.connect import connect
from pipeline.postgres.day_partitions import PartitionManager, ahead
from pipeline.postgres.writer import DeadLettersHeld, GuardTripped, Writer, Written, failure_kind
from pipeline.replica.metrics import Metrics
from pipeline.replica.outages import Outages
from pipeline.replica.pauses import Pauses
from pipeline.replica.positions import Positions
from pipeline.replica.watch import Watch
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.transformer import Transformer

log = logging.getLogger("tailpipe.consumer")

_TRANSIENT = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DependencyError)
"""Failures of PostgreSQL itself: retried, logged in one line. Anything else is retried too,
with its traceback, since it is not expected."""


@dataclass(frozen=True, slots=True)
class Policy:
    max_rows: int
    max_bytes: int
    max_age_s: float
    poll_records: int = 5000
    shutdown_grace_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    guard: GuardPolicy = field(default_factory=GuardPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            settings.batch_max_rows,
            settings.batch_max_bytes,
            settings.batch_max_age,
            shutdown_grace_s=settings.shutdown_grace,
            guard=GuardPolicy(settings.dead_letter_guard_window, settings.dead_letter_guard_share),
        )


@dataclass(slots=True)
class Totals:
    messages: int = 0
    flushes: int = 0
    events: int = 0
    logs: int = 0
    dead: int = 0


class Consumer:
    def __init__(
        self,
        settings: Settings,
        transformer: Transformer,
        policy: Policy,
        rules: Rules | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.policy = policy
        self.transformer = transformer
        self.totals = Totals()
        self.metrics = Metrics.create()
        self.outbox = Outbox(
            settings, interval_s=settings.alert_publish_interval, backoff=policy.backoff,
            created=self.metrics.alerts_created,
        )  # fmt: skip
        for name in rules.enabled() if rules is not None else ():
            self.metrics.alerts.labels(name)
        self.outages = Outages(self.metrics, policy.backoff)
        self.guard = Guard(policy.guard)
        self.started = False
        self.stopping = asyncio.Event()
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=1)
        self.positions = Positions()
        self._idle = asyncio.Event()
        self._idle.set()
        self._partitions = PartitionManager()
        self._pauses: Pauses | None = None
        self._kafka: AIOKafkaConsumer | None = None
        self._control: asyncpg.Connection | None = None
        self._writer: Writer | None = None
        self._watch: Watch | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.settings
        self._control = await connect(settings)
        writer_conn = await connect(settings)
        self._kafka = AIOKafkaConsumer(
            **clients.client_options(settings),
            group_id=settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=32 << 20,
        )
        self._pauses = Pauses(self._kafka, self.metrics)
        self._kafka.subscribe([settings.topic], listener=_Rebalance(self))
        try:
            await clients.start(self._kafka, settings, self._kafka.stop)
        except BaseException:
            await writer_conn.close()
            await self._control.close()
            raise
        self.started = True
        async with open_store(settings) as dead_letters:
            self._writer = Writer(dead_letters, self.transformer, self.guard, self.rules)
            writer = asyncio.create_task(self._write(writer_conn), name="tailpipe-writer")
            outbox = asyncio.create_task(self.outbox.run(), name="tailpipe-alerts")
            self._watch = Watch(
                settings, self._kafka, self.metrics, self.positions.stored,
                self.positions.in_flight, self.totals, self.outbox, self.rules,
            )  # fmt: skip
            watch = asyncio.create_task(self._watch.run(), name="tailpipe-watch")
            try:
                await self._poll()
                try:
                    await asyncio.wait_for(self._finish(), self.policy.shutdown_grace_s)
                except TimeoutError:
                    log.warning(
                        "shutdown grace over: what is not stored will be read again by the"
                        " next owner of its partitions",
                        extra={"shutdown_grace_s": self.policy.shutdown_grace_s},
                    )
            finally:
                for task in (writer, outbox, watch):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self._kafka.stop()
                await writer_conn.close()
                await self._control.close()

    def stop(self) -> None:
        self.stopping.set()

    # -- poll loop ---------------------------------------------------------------------------
    async def _poll(self) -> None:
        assert self._kafka is not None
        while not self.stopping.is_set():
            self._release_held()
            fetched = await self._kafka.getmany(
                timeout_ms=100, max_records=self.policy.poll_records
            )
            self._take(fetched)
            batch = self.positions.filling
            if batch.messages and self._full(batch):
                await self._hand_off()

    def _take(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Add fetched records to the filling batch, skipping any the partition is past."""
        add = self.transformer.add
        batch, next_offsets = self.positions.filling, self.positions.next
        for tp, records in fetched.items():
            topic, partition = tp.topic, tp.partition
            key = (topic, partition)
            expected = next_offsets.get(key)
            if expected is not None and records[0].offset < expected:
                # Fetched before a rebalance moved this partition on: already stored.
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            for r in records:
                add(batch, topic, partition, r.offset, r.timestamp, r.key, r.value, r.headers)
            next_offsets[key] = records[-1].offset + 1
            self.totals.messages += len(records)

    def _full(self, batch: Batch) -> bool:
        p = self.policy
        return batch.rows >= p.max_rows or batch.bytes >= p.max_bytes or batch.age() >= p.max_age_s

    async def _hand_off(self) -> None:
        """Queue the filling batch; while the queue is full, pause and keep polling."""
        assert self._kafka is not None
        batch = self.positions.hand_off()
        if batch is None:
            return
        if self._queue.full():
            pauses = self._paused()
            pauses.pause(self._kafka.assignment())
            try:
                while self._queue.full():
                    # Paused partitions return nothing; the call keeps us in the group.
                    # Partitions assigned by a rebalance meanwhile are not paused: keep what
                    # they return (dropping it would skip those offsets).
                    self._take(await self._kafka.getmany(timeout_ms=100))
            finally:
                pauses.resume(self._kafka.assignment())
        self._idle.clear()
        self._queue.put_nowait(batch)

    async def _finish(self) -> None:
        """On stop: hand off what was read, and wait until the writer stored it."""
        await self._hand_off()
        await self._queue.join()

    # -- pausing ---------------------------------------------------------------------------
    def _paused(self) -> Pauses:
        assert self._pauses is not None
        return self._pauses

    def _release_held(self) -> None:
        pauses = self._paused()
        if not pauses.held or self._queue.full():
            return
        due = pauses.release_due()
        if due:
            log.info("retrying dead letters of %s", ", ".join(f"{t}[{p}]" for t, p in due))

    # -- writer ------------------------------------------------------------------------------
    async def _write(self, conn: asyncpg.Connection) -> None:
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
        assert self._writer is not None
        started = time.perf_counter()
        while batch.parts and self._paused().tripped is None:
            try:
                if conn.is_closed():  # PostgreSQL went away under a previous attempt
                    conn = await connect(self.settings)
                await self._partitions.ensure(conn, flush.days_of(batch) | self._ahead())
                written = await self._writer.write(conn, batch, self.positions.stored)
            except Exception as exc:
                await self._failed(batch, exc)
                continue
            self.outages.recovered("postgres")
            if written.objects:
                self.outages.recovered("s3")
                _report_dead_letters(written)
            self.positions.stored_up_to(batch, self._owned())
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
                await self._recover(exc.lost)
            elif isinstance(exc, asyncpg.UniqueViolationError):
                # Rows of this batch are stored already: our view of some partition is stale.
                # The key stopped a duplicate; re-read every partition of the batch from its
                # stored offset rather than retry the same rows forever.
                log.error("flush refused duplicate rows (%s); re-seeking stored offsets", exc)
                await self._recover(set(batch.parts))
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

    def _hold(self, keys: set[tuple[str, int]], delay: float) -> None:
        """Take these partitions out of every unflushed batch, seek them back to the first
        offset not stored, and pause them for `delay` seconds."""
        assert self._kafka is not None
        owned = self._owned()
        rewind = {
            k: offset for k, offset in self.positions.rewind_points(keys).items() if k in owned
        }
        self.positions.drop(keys)
        for key, offset in rewind.items():
            self._kafka.seek(TopicPartition(*key), offset)
            self.positions.next[key] = offset
        self._paused().hold(set(rewind), delay)

    def _trip(self, why: str) -> None:
        log.critical("dead-letter guard rail tripped", extra={"why": why})
        self.positions.drop(set(self.positions.next))
        self._paused().trip(why)
        if self.rules is not None and self.rules.guard_rail.enabled:
            topic = self.settings.topic
            summary = f"dead-letter guard rail stopped a replica of {topic}: {why}"
            self.outbox.raise_(self.rules.guard_rail, f"guard_rail:{topic}", summary)

    def readiness(self) -> dict[str, Any]:
        """Ready: started (partitions assigned, or waiting for an assignment), PostgreSQL
        taking our flushes, and not stopped by the guard rail."""
        assignment = self._kafka.assignment() if self._kafka is not None else set()
        held = self._pauses.held if self._pauses is not None else {}
        tripped = self._pauses.tripped if self._pauses is not None else None
        probe = self._watch.postgres_error if self._watch is not None else None
        failing = self.outages.describe()
        if probe is not None and "postgres" not in failing:
            failing["postgres"] = {"error": probe}
        state: dict[str, Any] = {
            "ready": self.started and tripped is None and "postgres" not in failing,
            "partitions": len(assignment),
            "failing": failing,
        }
        if held:
            state["held"] = sorted(f"{t}[{p}]" for t, p in held)
        if tripped is not None:
            state["guard_rail"] = tripped
        return state

    def _ahead(self) -> set[date]:
        """Today and the next two days, so a new day's partition exists before it is needed
        (the manager's cache makes this free once they exist)."""
        return set(ahead(datetime.now(UTC).date()))

    def _owned(self) -> set[tuple[str, int]]:
        assert self._kafka is not None
        return {(tp.topic, tp.partition) for tp in self._kafka.assignment()}

    async def _commit_to_kafka(self, batch: Batch) -> None:
        """A copy of the stored offsets for lag tools; PostgreSQL stays the truth."""
        assert self._kafka is not None
        owned = self._owned()
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

    async def _recover(self, lost: set[tuple[str, int]]) -> None:
        """Drop what we cannot store; re-seek partitions we still own to their stored offset."""
        owned = self._owned() & lost
        self.positions.forget(lost - owned)
        self.positions.drop(owned)
        if owned:
            await self._seek(owned)

    async def _seek(self, tps: set[tuple[str, int]]) -> None:
        assert self._kafka is not None
        if self._control is None or self._control.is_closed():
            self._control = await connect(self.settings)
        by_topic: dict[str, list[int]] = {}
        for topic, partition in tps:
            by_topic.setdefault(topic, []).append(partition)
        for topic, partitions in by_topic.items():
            stored = await flush.stored_offsets(self._control, topic, partitions)
            # Rows taken while the stored offsets were being read came from the group's
            # committed position: where a stored offset exists we seek to it, and they go.
            # Without one, the committed position is the right start.
            self.positions.sought(stored)
            self.positions.restart((topic, p) for p in partitions if (topic, p) not in stored)
            for (t, p), offset in stored.items():
                self._kafka.seek(TopicPartition(t, p), offset)

    # -- rebalance ---------------------------------------------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.policy.shutdown_grace_s)
        self.positions.forget(keys)
        for key in keys:
            self._paused().forget(key)
            # Its new owner reports its lag now: a stale series here would count it twice.
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(key[0], str(key[1]))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.assignments.inc()
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )
        try:
            await self._seek({(tp.topic, tp.partition) for tp in assigned})
        except Exception as exc:
            # Without the stored offsets we start from the group's; the first flush's
            # compare-and-set then fails, and the writer seeks again once PostgreSQL answers.
            log.warning("could not read stored offsets on assignment: %s", exc)
        if self._paused().tripped is not None:
            self._paused().pause(assigned)


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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._consumer.on_assigned(assigned)
