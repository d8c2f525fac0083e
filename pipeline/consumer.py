"""`tailpipe run`: one consumer replica. Kafka in, batches out, PostgreSQL the source of truth.

Two tasks and a bounded hand-off between them:
- the poll loop fetches (`getmany`), transforms into the filling batch, and hands a full batch
  to the writer through a queue of one. While the writer is busy with one batch and another is
  queued, the loop pauses its partitions and keeps polling, so memory stays bounded and the
  consumer stays in its group;
- the writer flushes batches in order, each in one transaction with its offsets
  (`store.flush`), retrying transient failures with capped, jittered backoff.

Offsets: on assignment each partition is sought to its offset stored in PostgreSQL (else the
group's committed offset, else `auto_offset_reset`). A flush that finds a partition's stored
offset moved (another consumer stored it) rolls back whole; partitions we still own are sought
back to the stored offset and their unflushed rows dropped, the others are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from pipeline import kafka, postgres, store
from pipeline.batch import Batch
from pipeline.errors import DependencyError
from pipeline.metrics import Metrics
from pipeline.outage import Backoff, Outages
from pipeline.partitions import PartitionManager, ahead
from pipeline.settings import Settings
from pipeline.status import StatusServer
from pipeline.transform import Transformer

log = logging.getLogger("tailpipe.consumer")


@dataclass(frozen=True, slots=True)
class Policy:
    max_rows: int
    max_bytes: int
    max_age_s: float
    poll_records: int = 5000
    shutdown_grace_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            settings.batch_max_rows,
            settings.batch_max_bytes,
            settings.batch_max_age,
            shutdown_grace_s=settings.shutdown_grace,
        )


@dataclass(slots=True)
class Totals:
    messages: int = 0
    flushes: int = 0
    events: int = 0
    logs: int = 0
    dead: int = 0


class Consumer:
    def __init__(self, settings: Settings, transformer: Transformer, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.transformer = transformer
        self.totals = Totals()
        self.metrics = Metrics.create()
        self.outages = Outages(self.metrics, policy.backoff)
        self.started = False
        self.stopping = asyncio.Event()
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=1)
        self._stored: dict[tuple[str, int], int] = {}
        self._position: dict[tuple[str, int], int] = {}
        """Per partition, the next offset to add: records below it are stale."""
        self._batch = Batch()
        self._unflushed: list[Batch] = []
        """Handed-off batches not yet stored (waiting, queued or being flushed): a partition
        dropped or re-sought must be dropped from every one of them, or a later batch would
        store offsets past rows that were never stored."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._partitions = PartitionManager()
        self._kafka: AIOKafkaConsumer | None = None
        self._control: asyncpg.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.settings
        self._control = await postgres.connect(settings)
        writer_conn = await postgres.connect(settings)
        self._kafka = AIOKafkaConsumer(
            **kafka.client_options(settings),
            group_id=settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=32 << 20,
        )
        self._kafka.subscribe([settings.topic], listener=_Rebalance(self))
        await self._kafka.start()
        self.started = True
        writer = asyncio.create_task(self._write(writer_conn), name="tailpipe-writer")
        try:
            await self._poll()
            await self._hand_off()
            await asyncio.wait_for(self._drained(), self.policy.shutdown_grace_s)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._kafka.stop()
            await writer_conn.close()
            await self._control.close()

    def stop(self) -> None:
        self.stopping.set()

    # -- poll loop ---------------------------------------------------------------------------
    async def _poll(self) -> None:
        assert self._kafka is not None
        while not self.stopping.is_set():
            fetched = await self._kafka.getmany(
                timeout_ms=100, max_records=self.policy.poll_records
            )
            self._take(fetched)
            batch = self._batch
            if batch.messages and self._full(batch):
                await self._hand_off()

    def _take(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Add fetched records to the filling batch, skipping any the partition is past."""
        add = self.transformer.add
        batch = self._batch
        for tp, records in fetched.items():
            topic, partition = tp.topic, tp.partition
            key = (topic, partition)
            expected = self._position.get(key)
            if expected is not None and records[0].offset < expected:
                # Fetched before a rebalance moved this partition on: already stored.
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            for r in records:
                add(batch, topic, partition, r.offset, r.timestamp, r.key, r.value)
            self._position[key] = records[-1].offset + 1
            self.totals.messages += len(records)

    def _full(self, batch: Batch) -> bool:
        p = self.policy
        return batch.rows >= p.max_rows or batch.bytes >= p.max_bytes or batch.age() >= p.max_age_s

    async def _hand_off(self) -> None:
        """Queue the filling batch; while the queue is full, pause and keep polling."""
        assert self._kafka is not None
        batch, self._batch = self._batch, Batch()
        if not batch.parts:
            return
        self._unflushed.append(batch)
        if self._queue.full():
            paused = self._kafka.assignment()
            self._kafka.pause(*paused)
            self.metrics.paused_partitions.set(len(paused))
            try:
                while self._queue.full():
                    # Paused partitions return nothing; the call keeps us in the group.
                    # Partitions assigned by a rebalance meanwhile are not paused: keep what
                    # they return (dropping it would skip those offsets).
                    self._take(await self._kafka.getmany(timeout_ms=100))
            finally:
                self._kafka.resume(*(tp for tp in paused if tp in self._kafka.assignment()))
                self.metrics.paused_partitions.set(0)
        self._idle.clear()
        self._queue.put_nowait(batch)

    async def _drained(self) -> None:
        await self._queue.join()

    # -- writer ------------------------------------------------------------------------------
    async def _write(self, conn: asyncpg.Connection) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self._flush(conn, batch)
            finally:
                self._unflushed.remove(batch)
                self._queue.task_done()
                if self._queue.empty():
                    self._idle.set()

    async def _flush(self, conn: asyncpg.Connection, batch: Batch) -> None:
        started = time.perf_counter()
        while batch.parts:
            try:
                await self._partitions.ensure(conn, store.days_of(batch) | self._ahead())
                written = await store.flush(conn, batch, self._stored)
            except store.PartitionsLost as lost:
                log.warning("%s", lost)
                await self._recover(lost.lost)
                continue
            except asyncpg.UniqueViolationError as exc:
                # Rows of this batch are stored already: our view of some partition is stale.
                # The key stopped a duplicate; re-read every partition of the batch from its
                # stored offset rather than retry the same rows forever.
                log.error("flush refused duplicate rows (%s); re-seeking from stored offsets", exc)
                await self._recover(set(batch.parts))
                continue
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                delay = self.outages.failed("postgres", exc)
                if conn.is_closed():
                    with contextlib.suppress(Exception):
                        conn = await postgres.connect(self.settings)
                await asyncio.sleep(delay)
                continue
            self._stored.update(
                {tp: part.next_offset for tp, part in batch.parts.items() if tp in self._owned()}
            )
            self.outages.recovered("postgres")
            self.metrics.flushed(batch, written, time.perf_counter() - started)
            self.totals.flushes += 1
            self.totals.events += written["tail_events"]
            self.totals.logs += written["tail_logs"]
            self.totals.dead += written["dead_letters"]
            await self._commit_to_kafka(batch)
            return

    def readiness(self) -> dict[str, Any]:
        """Ready: started (partitions assigned, or waiting for an assignment) and PostgreSQL
        taking our flushes."""
        assignment = self._kafka.assignment() if self._kafka is not None else set()
        failing = self.outages.describe()
        return {
            "ready": self.started and not self.outages.down("postgres"),
            "partitions": len(assignment),
            "failing": failing,
        }

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
        assert self._kafka is not None
        assert self._control is not None
        self._drop(lost)
        owned = self._owned() & lost
        for tp in lost - owned:
            self._stored.pop(tp, None)
            self._position.pop(tp, None)
        if owned:
            await self._seek({tp for tp in owned})

    def _drop(self, keys: set[tuple[str, int]]) -> None:
        for batch in (*self._unflushed, self._batch):
            batch.drop(keys)

    async def _seek(self, tps: set[tuple[str, int]]) -> None:
        assert self._kafka is not None
        assert self._control is not None
        by_topic: dict[str, list[int]] = {}
        for topic, partition in tps:
            by_topic.setdefault(topic, []).append(partition)
        for topic, partitions in by_topic.items():
            stored = await store.stored_offsets(self._control, topic, partitions)
            for partition in partitions:
                tp = (topic, partition)
                if tp in stored:
                    self._stored[tp] = self._position[tp] = stored[tp]
                    self._kafka.seek(TopicPartition(topic, partition), stored[tp])
                else:
                    self._stored.pop(tp, None)
                    self._position.pop(tp, None)

    # -- rebalance ---------------------------------------------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.policy.shutdown_grace_s)
        self._drop(keys)
        for key in keys:
            self._stored.pop(key, None)
            self._position.pop(key, None)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._seek({(tp.topic, tp.partition) for tp in assigned})


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._consumer.on_assigned(assigned)


def kafka_extensions_loaded() -> bool:
    """Whether aiokafka decodes record batches with its C extensions. Without them (a wheel
    missing for this platform, or AIOKAFKA_NO_EXTENSIONS set) fetching costs several times more
    CPU, and the poll loop becomes the bottleneck."""
    from aiokafka.record.default_records import DefaultRecordBatch

    module: str = DefaultRecordBatch.__module__
    return module.startswith("aiokafka.record._crecords")


def serve(settings: Settings) -> int:
    """Run one replica until SIGTERM or SIGINT; flush, store offsets, exit 0."""
    from pipeline.extract import Extractor

    listener = _listen(settings.metrics_port)

    async def main() -> None:
        consumer = Consumer(
            settings, Transformer(Extractor.from_files()), Policy.from_settings(settings)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        status = StatusServer.create(consumer.metrics, consumer.readiness, settings.metrics_port)
        serving = asyncio.create_task(status.serve(sockets=[listener]), name="tailpipe-status")
        try:
            await consumer.run()
        finally:
            status.should_exit = True
            await serving
        t = consumer.totals
        log.info(
            "stopped: %d messages, %d flushes, %d events, %d log rows, %d dead letters",
            t.messages, t.flushes, t.events, t.logs, t.dead,
        )  # fmt: skip

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("metrics, health and readiness on port %d", listener.getsockname()[1])
    if not kafka_extensions_loaded():
        log.warning(
            "aiokafka C extensions are NOT loaded: Kafka record decoding runs in pure Python "
            "and ingest will be several times slower; reinstall aiokafka from a binary wheel "
            "for this platform (and unset AIOKAFKA_NO_EXTENSIONS)"
        )
    asyncio.run(main())
    return 0


def _listen(port: int) -> socket.socket:
    """Bind the status port before anything else starts, so a taken port fails fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        problem = f"TAILPIPE_METRICS_PORT {port}: cannot listen: {exc.strerror}"
        raise DependencyError(problem) from None
    sock.listen(64)
    sock.setblocking(False)
    return sock
