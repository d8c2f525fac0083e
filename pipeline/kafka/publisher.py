"""A fast, acknowledged bulk publisher for `produce` and `loadgen`.

aiokafka's `send()` costs a coroutine and a future per message, which caps one process far
below what a local broker takes. Appending to per-partition `BatchBuilder`s and submitting whole
batches keeps the per-message cost to one C-level append. Keys are partitioned with Kafka's
default (murmur2) partitioner, so a keyed message lands where any Kafka client would put it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from pipeline.errors import DependencyError
from pipeline.kafka.clients import client_options
from pipeline.settings import Settings

_MAX_IN_FLIGHT = 64
"""Batches awaiting acknowledgement before `add` waits: bounds memory, keeps the pipe full."""


class BulkPublisher:
    """`async with BulkPublisher(settings, topic) as p: await p.add(key, value)`.

    Leaving the block flushes and waits until Kafka acknowledged every message (acks=all); a
    failed delivery raises there, so a returned count means every message is stored.
    """

    def __init__(self, settings: Settings, topic: str, *, batch_bytes: int = 512 * 1024) -> None:
        self._topic = topic
        self._producer = AIOKafkaProducer(
            **client_options(settings),
            acks="all",
            enable_idempotence=True,
            max_batch_size=batch_bytes,
            linger_ms=5,
        )
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._batches: dict[int, Any] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self._round_robin = 0
        self.sent = 0

    async def __aenter__(self) -> BulkPublisher:
        try:
            await self._producer.start()
            found = await self._producer.partitions_for(self._topic)
        except Exception as exc:
            await self._producer.stop()
            raise DependencyError(f"Kafka: cannot publish to {self._topic}: {exc}") from exc
        if not found:
            await self._producer.stop()
            raise DependencyError(
                f"Kafka: topic {self._topic} does not exist; `tailpipe topics create` makes it"
            )
        self._partitions = sorted(found)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            await self._producer.stop()

    def partition_for(self, key: bytes | None) -> int:
        if key is None:
            self._round_robin = (self._round_robin + 1) % len(self._partitions)
            return self._partitions[self._round_robin]
        chosen: int = self._partitioner(key, self._partitions, self._partitions)
        return chosen

    async def add(self, key: bytes | None, value: bytes, timestamp_ms: int | None = None) -> None:
        partition = self.partition_for(key)
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
            await self._submit(partition)
            batch = self._batches[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
                raise DependencyError(f"a message of {len(value)} bytes exceeds the batch size")
        self.sent += 1

    async def _submit(self, partition: int) -> None:
        batch = self._batches.pop(partition)
        if batch.record_count() == 0:
            return
        while len(self._pending) >= _MAX_IN_FLIGHT:
            done, self._pending = await asyncio.wait(
                self._pending, return_when=asyncio.FIRST_COMPLETED
            )
            for future in done:
                future.result()
        future = await self._producer.send_batch(batch, self._topic, partition=partition)
        self._pending.add(future)

    async def submit(self) -> None:
        """Send the partial batches now (a live stream went quiet); acknowledgements later."""
        for partition in list(self._batches):
            await self._submit(partition)

    async def flush(self) -> None:
        """Submit the partial batches and wait for every acknowledgement."""
        await self.submit()
        if self._pending:
            pending, self._pending = self._pending, set()
            for future in pending:
                await future
