"""A replica's look at itself every few seconds: lag, in-flight gauges, PostgreSQL, `stalled`.

Lag is asked of the broker (end offsets), not read from fetch positions: a paused partition's
position says nothing about what waits behind it. PostgreSQL is probed only when no flush
committed since the last look: a commit already proves it answers, and an idle replica must
still turn not-ready when the database goes away. The `stalled` rule fires when nothing was
stored for its `after` while the lag grew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer

from pipeline.alerts.outbox import Outbox
from pipeline.alerts.rules import Rules
from pipeline.postgres.connect import connect
from pipeline.replica.metrics import Metrics
from pipeline.settings import Settings
from pipeline.transform.batch import Batch

log = logging.getLogger("tailpipe.watch")


class Flushes(Protocol):
    flushes: int


class Watch:
    def __init__(
        self,
        settings: Settings,
        kafka: AIOKafkaConsumer,
        metrics: Metrics,
        stored: Mapping[tuple[str, int], int],
        in_flight: Callable[[], Iterable[Batch]],
        totals: Flushes,
        outbox: Outbox,
        rules: Rules | None,
    ) -> None:
        self.settings = settings
        self._kafka = kafka
        self._metrics = metrics
        self._stored = stored
        self._in_flight = in_flight
        self._totals = totals
        self._outbox = outbox
        self._rules = rules if rules is not None and rules.stalled.enabled else None
        self._after_s = self._rules.stalled_after_ms / 1000 if self._rules is not None else 0.0
        self.interval_s = min(self._after_s / 2, 5.0) if self._rules is not None else 5.0
        self.postgres_error: str | None = None
        """Why the last probe failed; None while PostgreSQL answers."""
        self._conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        stored_at, last_total, lag_then = time.monotonic(), -1, -1
        flushes = self._totals.flushes
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                if self._totals.flushes == flushes:
                    await self._probe()
                else:
                    self.postgres_error = None
                flushes = self._totals.flushes
                batches = list(self._in_flight())
                self._metrics.in_flight_rows.set(sum(b.rows for b in batches))
                self._metrics.in_flight_bytes.set(sum(b.bytes for b in batches))
                lag, total = await self._lag()
                if lag < 0:
                    continue
                if total != last_total or lag_then < 0:
                    stored_at, last_total, lag_then = time.monotonic(), total, lag
                    continue
                stuck = time.monotonic() - stored_at
                if self._rules is not None and stuck >= self._after_s and lag > lag_then:
                    self._stalled(stuck, lag_then, lag)
                    stored_at, lag_then = time.monotonic(), lag
        finally:
            if self._conn is not None:
                self._conn.terminate()

    async def _lag(self) -> tuple[int, int]:
        """(lag over owned partitions, sum of their stored offsets); lag -1 if Kafka is away."""
        owned = self._kafka.assignment()
        try:
            ends = await self._kafka.end_offsets(list(owned)) if owned else {}
        except Exception as exc:  # the broker is away: no lag to speak of
            log.info("end offsets unavailable", extra={"error": str(exc)})
            return -1, 0
        lag = 0
        for tp, end in ends.items():
            behind = max(0, end - self._stored.get((tp.topic, tp.partition), end))
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(behind)
            lag += behind
        return lag, sum(self._stored.get((tp.topic, tp.partition), 0) for tp in owned)

    async def _probe(self) -> None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self.settings)
            await self._conn.fetchval("SELECT 1", timeout=self.settings.connect_timeout)
        except Exception as exc:
            if self.postgres_error is None:
                log.warning("PostgreSQL probe failed", extra={"error": str(exc)})
            self.postgres_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
        else:
            self.postgres_error = None

    def _stalled(self, stuck: float, lag_then: int, lag: int) -> None:
        assert self._rules is not None
        topic, group = self.settings.topic, self.settings.group
        self._outbox.raise_(
            self._rules.stalled, f"stalled:{topic}:{group}",
            f"a replica of group {group} stored nothing for {stuck:.0f}s "
            f"while its lag on {topic} grew from {lag_then} to {lag}",
        )  # fmt: skip
