"""The alert outbox: alerts committed in `critical_alerts` are published to the alerts topic.

Each replica runs one. It wakes after a flush that created alerts (or every `interval_s`),
takes the unpublished rows with `FOR UPDATE SKIP LOCKED` (so two replicas never publish the
same row at once), sends them with an idempotent producer keyed by dedup key, waits for Kafka's
acknowledgement, and only then marks them published, in the same transaction. A crash between
the acknowledgement and that commit publishes them again on restart, with the same ids:
receivers drop repeats by id. Nothing is lost; nothing is published twice but by a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from pipeline import kafka, postgres
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.alerts")

_PENDING = """
SELECT id::text, rule, severity, script, dedup_key, first_at, last_at, occurrences, summary,
       details::text AS details
FROM critical_alerts WHERE published_at IS NULL
ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""


def message(row: Any) -> bytes:
    """The JSON an alert is published as."""
    return orjson.dumps(
        {
            "id": row["id"], "rule": row["rule"], "severity": row["severity"],
            "script": row["script"], "dedup_key": row["dedup_key"],
            "first_at": row["first_at"].isoformat(), "last_at": row["last_at"].isoformat(),
            "occurrences": row["occurrences"], "summary": row["summary"],
            "details": orjson.loads(row["details"]),
        }
    )  # fmt: skip


class Outbox:
    def __init__(self, settings: Settings, interval_s: float = 1.0, batch: int = 500) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.batch = batch
        self.published = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Publish until cancelled; failures are logged and retried at the next tick."""
        producer = AIOKafkaProducer(
            **kafka.client_options(self.settings), acks="all", enable_idempotence=True
        )
        conn: asyncpg.Connection | None = None
        started = False
        try:
            while True:
                try:
                    if not started:
                        await producer.start()
                        started = True
                    if conn is None or conn.is_closed():
                        conn = await postgres.connect(self.settings)
                    while await self.publish_pending(conn, producer) == self.batch:
                        pass
                except Exception as exc:  # Kafka or PostgreSQL away: the rows wait, unpublished
                    log.warning("alerts not published yet: %s: %s", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                self._wake.clear()
        finally:
            if started:
                await producer.stop()
            if conn is not None:
                await conn.close()

    async def publish_pending(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        async with conn.transaction():
            rows = await conn.fetch(_PENDING, self.batch)
            if not rows:
                return 0
            sent = [
                await producer.send(
                    self.settings.alerts_topic, message(r), key=r["dedup_key"].encode()
                )
                for r in rows
            ]
            await asyncio.gather(*sent)  # acknowledged by Kafka before they count as published
            await conn.execute(
                "UPDATE critical_alerts SET published_at = now() WHERE id = ANY($1::uuid[])",
                [r["id"] for r in rows],
            )
        self.published += len(rows)
        return len(rows)
