"""The alert outbox: alerts committed in `critical_alerts` are published to the alerts topic.

Each replica runs one. It wakes after a flush that created alerts (or every `interval_s`),
claims unpublished rows for a lease (`FOR UPDATE SKIP LOCKED` in one short statement, so two
replicas do not take the same rows, and no lock is held while Kafka is asked), sends them with
an idempotent producer keyed by dedup key, waits for Kafka's acknowledgement, and only then
marks them published. A crash, or a failed send, leaves the claim to expire: the rows are
published again, with the same ids, and receivers drop repeats by id. Nothing is lost.

Alerts about the replica itself (the guard rail, a stalled group) come from no flush: `raise_`
records them in the background, retrying until PostgreSQL takes them, then wakes the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from pipeline.alerts.detect import Candidates, note
from pipeline.alerts.rules import Rule
from pipeline.backoff import Backoff
from pipeline.kafka import clients
from pipeline.postgres.connect import connect
from pipeline.postgres.rollup_upserts import record_alerts
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.alerts")

_CLAIM = """
UPDATE critical_alerts SET claimed_until = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM critical_alerts
    WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id::text, rule, severity, script, dedup_key, first_at, last_at, occurrences, summary,
          details::text AS details
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
    def __init__(
        self,
        settings: Settings,
        interval_s: float = 1.0,
        batch: int = 500,
        lease_s: float = 30.0,
        *,
        backoff: Backoff | None = None,
        created: Callable[[Counter[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.lease_s = lease_s
        self.interval_s = interval_s
        self.batch = batch
        self.published = 0
        self._wake = asyncio.Event()
        self._backoff = backoff or Backoff()
        self._created = created
        self._recording: set[asyncio.Task[None]] = set()
        """Alerts being recorded apart from a flush (kept here: the loop holds tasks weakly)."""

    def wake(self) -> None:
        self._wake.set()

    def raise_(self, rule: Rule, dedup_key: str, summary: str) -> None:
        """Record an alert about the replica itself, in the background, and publish it."""
        found: Candidates = {}
        note(found, rule, dedup_key, None, int(time.time() * 1000), summary)
        task = asyncio.create_task(self._record(found))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, found: Candidates) -> None:
        for attempt in itertools.count(1):
            try:
                conn = await connect(self.settings)
                try:
                    created = await record_alerts(conn, found)
                finally:
                    await conn.close()
                if self._created is not None:
                    self._created(created)
                self.wake()
                return
            except Exception as exc:  # PostgreSQL away: keep trying, the alert must not be lost
                log.warning("alert not recorded yet", extra={"error": str(exc)})
                await asyncio.sleep(self._backoff.delay(attempt))

    async def run(self) -> None:
        """Publish until cancelled; failures are logged and retried at the next tick."""
        producer = AIOKafkaProducer(
            **clients.client_options(self.settings), acks="all", enable_idempotence=True
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
                        conn = await connect(self.settings)
                    while await self.publish_pending(conn, producer) == self.batch:
                        pass
                except Exception as exc:  # Kafka or PostgreSQL away: the rows wait, unpublished
                    log.warning("alerts not published yet: %s: %s", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                self._wake.clear()
        finally:
            # Also when stopped during start(): a half-started producer holds connections.
            await producer.stop()
            if conn is not None:
                await conn.close()

    async def publish_pending(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        # Claimed for a lease (its own short transaction), so no row lock is held while Kafka
        # is asked; a claim that is never marked published expires and is published again.
        rows = await conn.fetch(_CLAIM, self.batch, self.lease_s)
        if not rows:
            return 0
        sent = [
            await producer.send(self.settings.alerts_topic, message(r), key=r["dedup_key"].encode())
            for r in rows
        ]
        await asyncio.gather(*sent)  # acknowledged by Kafka before they count as published
        await conn.execute(
            "UPDATE critical_alerts SET published_at = now() WHERE id = ANY($1::uuid[])",
            [r["id"] for r in rows],
        )
        self.published += len(rows)
        return len(rows)
