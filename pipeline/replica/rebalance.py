"""Partitions coming and going: where a replica reads each one it owns from.

On assignment each partition is sought to its offset stored in PostgreSQL (else the group's
committed offset, else `auto_offset_reset`). On revocation the writer is given the shutdown
grace to finish, then the partition is forgotten: its unflushed rows are dropped (their offsets
were never stored) and so is its lag series. A flush that finds a partition's stored offset
moved (another consumer stored it) learns of a rebalance late (`recover`): partitions we still
own are sought back to the stored offset and their unflushed rows dropped, the others are
forgotten.

Its own room because it is the one place that sets a partition's read position from
PostgreSQL's offsets: aiokafka calls it as the group's listener, the writer (`storing`) when a
flush finds a partition lost, and neither the poll loop nor the writer seeks on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from pipeline.postgres import flush
from pipeline.postgres.connect import connect
from pipeline.replica.metrics import Metrics
from pipeline.replica.pauses import Pauses
from pipeline.replica.positions import Key, Positions
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.consumer")


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer's rebalance listener, and its seeks to the stored offsets. `control` is
    the PostgreSQL connection the stored offsets are read on (opened again when it closed)."""

    def __init__(
        self,
        settings: Settings,
        kafka: AIOKafkaConsumer,
        control: asyncpg.Connection,
        positions: Positions,
        pauses: Pauses,
        metrics: Metrics,
        idle: asyncio.Event,
        grace_s: float,
    ) -> None:
        self.settings = settings
        self.control = control
        self._kafka = kafka
        self._positions = positions
        self._pauses = pauses
        self._metrics = metrics
        self._idle = idle
        """Set while the writer has nothing queued or under way."""
        self._grace_s = grace_s
        self._expired: dict[Key, int] = {}
        """Per partition, the stored offset whose gap to its log's start was counted lost."""

    def owned(self) -> set[Key]:
        return {(tp.topic, tp.partition) for tp in self._kafka.assignment()}

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._grace_s)
        self._positions.forget(keys)
        for key in keys:
            self._pauses.forget(key)
            # Its new owner reports its lag now: a stale series here would count it twice.
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(key[0], str(key[1]))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._metrics.assignments.inc()
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )
        try:
            await self.seek({(tp.topic, tp.partition) for tp in assigned})
        except Exception as exc:
            # Without the stored offsets we start from the group's; the first flush's
            # compare-and-set then fails, and the writer seeks again once PostgreSQL answers.
            log.warning("could not read stored offsets on assignment: %s", exc)
        if self._pauses.tripped is not None:
            self._pauses.pause(assigned)

    async def recover(self, lost: set[Key]) -> None:
        """Drop what we cannot store; re-seek partitions we still own to their stored offset."""
        owned = self.owned() & lost
        self._positions.forget(lost - owned)
        self._positions.drop(owned)
        if owned:
            await self.seek(owned, everywhere=True)

    async def _within_log(self, stored: dict[Key, int]) -> dict[Key, int]:
        """Where to read each partition with a stored offset from; a stranded one is left out.

        Past the log's end: what we stored is no longer there (the topic was deleted and made
        again, or the broker lost data). aiokafka would reset such a position to the log's
        start, and every message up to the stored offset would then be taken for stored and
        skipped, silently. So the partition is stranded instead: paused, named in an error
        and in `tailpipe_stranded_partitions`, until an operator decides (docs/operations.md).
        Before the log's start: retention deleted messages before they were stored; reading
        goes on from the start (the next flush's compare-and-set still expects the stored
        offset, and a batch may start above it), and they are counted as lost. Without an
        answer from the broker the offsets are used as they are."""
        tps = [TopicPartition(*key) for key in stored]
        if not tps:
            return stored
        try:
            starts = await self._kafka.beginning_offsets(tps)
            ends = await self._kafka.end_offsets(tps)
        except Exception as exc:  # the broker is away: the fetch finds out soon enough
            log.info("log bounds unavailable on assignment: %s", exc)
            return stored
        usable: dict[Key, int] = {}
        for tp in tps:
            key, offset = (tp.topic, tp.partition), stored[(tp.topic, tp.partition)]
            start, end = starts[tp], ends[tp]
            if offset > end:
                log.error(
                    "partition %s[%d] stranded: its stored offset %d is past the end of its "
                    "log (%d); the topic was recreated or lost data. Not read until an operator "
                    "decides (docs/operations.md, 'Stranded partitions')",
                    tp.topic, tp.partition, offset, end,
                )  # fmt: skip
                self._pauses.strand(key)
                continue
            if offset < start and self._expired.get(key) != offset:
                # Counted once per stored offset: a partition sought again before the next
                # flush (a second rebalance, a lost flush) finds the same gap.
                self._expired[key] = offset
                log.warning(
                    "partition %s[%d]: %d messages (offsets %d to %d) were deleted by retention "
                    "before they were stored",
                    tp.topic, tp.partition, start - offset, offset, start - 1,
                )  # fmt: skip
                self._metrics.messages_expired.inc(start - offset)
            offset = max(offset, start)
            usable[key] = offset
        return usable

    async def seek(self, tps: set[Key], everywhere: bool = False) -> None:
        """Seek to the stored offsets; the rows taken before leave the filling batch, or with
        `everywhere` (the writer is the caller) every batch not stored (`Positions.sought`)."""
        if self.control.is_closed():
            self.control = await connect(self.settings)
        by_topic: dict[str, list[int]] = {}
        for topic, partition in tps:
            by_topic.setdefault(topic, []).append(partition)
        for topic, partitions in by_topic.items():
            found = await flush.stored_offsets(self.control, topic, partitions)
            starts = await self._within_log(found)
            stored = {key: found[key] for key in starts}
            # Rows taken while the stored offsets were being read came from the group's
            # committed position: where a stored offset exists we seek to it, and they go.
            # Without one, the committed position is the right start.
            self._positions.sought(stored, everywhere)
            self._positions.restart((topic, p) for p in partitions if (topic, p) not in stored)
            for (t, p), offset in starts.items():
                self._kafka.seek(TopicPartition(t, p), offset)
