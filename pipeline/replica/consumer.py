"""`tailpipe run`: one consumer replica. Kafka in, batches out, PostgreSQL the source of truth.

Two tasks and a bounded hand-off between them:
- the poll loop (here) fetches (`getmany`), transforms into the filling batch, and hands a full
  batch to the writer through a queue of one. While the writer is busy with one batch and
  another is queued, the loop pauses its partitions and keeps polling, so memory stays bounded
  and the consumer stays in its group;
- the writer (`storing`) stores batches in order, each in one transaction with its offsets and
  the index of its dead letters, and decides what a failed flush means.

Where each partition is read from, on assignment and after a partition was lost, is
`rebalance`. This module starts and stops the three (with the outbox and the self-watch) and
answers `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.alerts.evaluator import Evaluator
from pipeline.alerts.outbox import Outbox
from pipeline.alerts.rules import Rules
from pipeline.backoff import Backoff
from pipeline.deadletters.guard import Guard, GuardPolicy
from pipeline.deadletters.store import open_store
from pipeline.kafka import clients
from pipeline.postgres.connect import connect
from pipeline.postgres.writer import Writer
from pipeline.replica.metrics import Metrics
from pipeline.replica.outages import Outages
from pipeline.replica.pauses import Pauses
from pipeline.replica.positions import Positions
from pipeline.replica.rebalance import Rebalance
from pipeline.replica.storing import Storing, Totals
from pipeline.replica.watch import Watch
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.transformer import Transformer

log = logging.getLogger("tailpipe.consumer")

# aiokafka prefetches up to this much per fetch (and per partition) and keeps the decoded records
# until they are read: a buffer like any other, so it is small. 1 MiB per partition and 8 MiB in
# all keep a replica's peak RSS near 220 MiB where 4 and 32 MiB took 340, at the same rate
# (`make bench`, 200,000 messages, 6 partitions): one batch of rows is at most a few MiB, so a
# bigger prefetch only waits in memory.
PARTITION_FETCH_BYTES = 1 << 20
FETCH_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class Policy:
    max_rows: int
    max_bytes: int
    max_age_s: float
    poll_records: int = 25
    """Records per poll, each poll followed by a turn of the writer: about 1.4 ms of transform.
    A flush is eight round trips, and each waits for the event loop to come back; with 5,000
    records a poll, they waited behind whole polls, the writer fell behind the transform and
    one replica stored 14,300 events/s in `make bench`; with 25, 16,300, at 3% more CPU."""
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
        self._pauses: Pauses | None = None
        self._kafka: AIOKafkaConsumer | None = None
        self._watch: Watch | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.settings
        control = await connect(settings)
        writer_conn = await connect(settings)
        self._kafka = AIOKafkaConsumer(
            **clients.client_options(settings),
            group_id=settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES,
        )
        self._pauses = Pauses(self._kafka, self.metrics)
        rebalance = Rebalance(
            settings, self._kafka, control, self.positions, self._pauses, self.metrics,
            self._idle, self.policy.shutdown_grace_s,
        )  # fmt: skip
        self._kafka.subscribe([settings.topic], listener=rebalance)
        try:
            await clients.start(self._kafka, settings, self._kafka.stop)
        except BaseException:
            await writer_conn.close()
            await rebalance.control.close()
            raise
        self.started = True
        async with open_store(settings) as dead_letters:
            storing = Storing(
                settings,
                Writer(dead_letters, self.transformer, self.guard, self.rules,
                       settings.stream_timeout),
                self._queue, self._idle, self._kafka, self.positions, self._pauses, rebalance,
                metrics=self.metrics, outages=self.outages, outbox=self.outbox,
                totals=self.totals, rules=self.rules,
            )  # fmt: skip
            writer = asyncio.create_task(storing.run(writer_conn), name="tailpipe-writer")
            outbox = asyncio.create_task(self.outbox.run(), name="tailpipe-alerts")
            self._watch = Watch(
                settings, self._kafka, self.metrics, self.positions.stored,
                self.positions.in_flight, self.totals, self.outbox, self.rules,
            )  # fmt: skip
            watch = asyncio.create_task(self._watch.run(), name="tailpipe-watch")
            conditions = self.rules.conditions if self.rules is not None else ()
            evaluator = asyncio.create_task(
                Evaluator(settings, conditions, self.outbox).run(), name="tailpipe-conditions"
            )
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
                for task in (writer, outbox, watch, evaluator):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self._kafka.stop()
                await writer_conn.close()
                await rebalance.control.close()

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
            # getmany returns buffered records without suspending: let the writer take its
            # turn (see `Policy.poll_records`).
            await asyncio.sleep(0)
            batch = self.positions.filling
            if batch.messages and self._full(batch):
                await self._hand_off()

    def _take(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Add fetched records to the filling batch, skipping any the partition is past. One
        call never yields: a rebalance sees the batch and the positions between polls only."""
        add = self.transformer.add
        batch, next_offsets = self.positions.filling, self.positions.next
        if fetched and not batch.messages:
            # Its age (`TAILPIPE_BATCH_MAX_AGE`) counts from its first message: a batch that
            # waited empty through a quiet spell would otherwise go with the first poll alone.
            batch.created = time.monotonic()
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

    # -- readiness ---------------------------------------------------------------------------
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
