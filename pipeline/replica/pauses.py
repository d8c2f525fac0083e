"""Why a replica's partitions are paused, and when they may run again.

Four reasons, kept apart so that lifting one never lifts another:
- backpressure: the writer is busy and a batch is queued (lifted when the queue has room);
- held: the dead-letter store failed for a partition's batch (lifted at its next retry time);
- stranded: the partition's stored offset is past the end of its log (never lifted while it is
  ours: see `rebalance`);
- the guard rail: too many recent messages were bad (never lifted: restart the replica).
Paused partitions return nothing from `getmany`, which the replica keeps calling to stay in
its group.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.replica.metrics import Metrics

Key = tuple[str, int]


class Pauses:
    def __init__(self, kafka: AIOKafkaConsumer, metrics: Metrics) -> None:
        self._kafka = kafka
        self._metrics = metrics
        self.held: dict[Key, float] = {}
        """Partition -> monotonic time of its next dead-letter retry."""
        self.tripped: str | None = None
        """Why the guard rail stopped consumption, once it has."""
        self.stranded: set[Key] = set()
        """Partitions whose stored offset is past their log's end."""

    def pause(self, tps: set[TopicPartition]) -> None:
        self._kafka.pause(*tps)
        self._count()

    def resume(self, tps: set[TopicPartition]) -> None:
        """Resume what backpressure paused: not partitions held, or any after the guard."""
        if self.tripped is not None:
            return
        owned = self._kafka.assignment()
        stopped = self.held.keys() | self.stranded
        self._kafka.resume(
            *(tp for tp in tps if tp in owned and (tp.topic, tp.partition) not in stopped)
        )
        self._count()

    def hold(self, keys: set[Key], delay_s: float) -> None:
        until = time.monotonic() + delay_s
        for key in keys:
            self.held[key] = until
        self.pause({TopicPartition(*k) for k in self.held})

    def release_due(self) -> set[Key]:
        """Resume held partitions whose retry time has come; returns them."""
        now = time.monotonic()
        due = {key for key, until in self.held.items() if until <= now}
        for key in due:
            del self.held[key]
        if due:
            self.resume({TopicPartition(*k) for k in due})
        return due

    def strand(self, key: Key) -> None:
        self.stranded.add(key)
        self._metrics.stranded_partitions.set(len(self.stranded))
        self.pause({TopicPartition(*key)})

    def forget(self, key: Key) -> None:
        """A partition revoked: its hold goes with it, and whether it was stranded (its next
        owner looks again)."""
        self.held.pop(key, None)
        self.stranded.discard(key)
        self._metrics.stranded_partitions.set(len(self.stranded))

    def trip(self, why: str) -> None:
        self.tripped = why
        self._metrics.guard_tripped.set(1)
        self.pause(self._kafka.assignment())

    def _count(self) -> None:
        self._metrics.paused_partitions.set(len(self._kafka.paused()))
