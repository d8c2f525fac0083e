"""`tailpipe alerts forward`: the alerts topic, delivered to people.

A consumer group of its own (`<TAILPIPE_GROUP>-forward`) reads the alerts topic. Each alert is
routed to the destinations that want it and POSTed to each: retried with backoff on network
errors, 5xx and 429 (honouring `Retry-After`), not on other 4xx; each destination under its
own rate limit. The alert's offset is committed only once every destination has taken it or
been given up on after `max_attempts` (then it is logged as dropped). So nothing is
acknowledged undelivered; a crash before the commit delivers again, and receivers can drop
repeats by the alert's id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import kafka
from pipeline.alerts.destinations import Destination
from pipeline.outage import Backoff
from pipeline.settings import Settings

log = logging.getLogger("tailpipe.forward")


@dataclass(slots=True)
class Tally:
    delivered: int = 0
    dropped: int = 0
    retries: int = 0
    skipped: int = 0


class RateLimit:
    """At most `per_minute` requests in any minute: requests are spaced, never burst."""

    def __init__(self, per_minute: int) -> None:
        self._gap = 60.0 / per_minute
        self._next = 0.0

    def reserve(self, now: float) -> float:
        """Book the next slot for a request made at `now`; returns how long to wait for it."""
        delay = max(0.0, self._next - now)
        self._next = max(now, self._next) + self._gap
        return delay

    async def wait(self) -> None:
        delay = self.reserve(time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)


class Forwarder:
    def __init__(
        self,
        destinations: Sequence[Destination],
        client: httpx.AsyncClient,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
    ) -> None:
        self.destinations = tuple(destinations)
        self.client = client
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.tally = Tally()
        self._limits = {d.name: RateLimit(d.per_minute) for d in destinations}

    async def forward(self, alert: dict[str, Any]) -> None:
        """Deliver one alert to every destination that wants it (at the same time)."""
        wanted = [d for d in self.destinations if d.wants(alert)]
        if not wanted:
            self.tally.skipped += 1
            return
        await asyncio.gather(*(self._deliver(d, alert) for d in wanted))

    async def _deliver(self, destination: Destination, alert: dict[str, Any]) -> None:
        for attempt in range(1, self.max_attempts + 1):
            await self._limits[destination.name].wait()
            body, headers = destination.request(alert, int(time.time()))
            retry_after: float | None = None
            try:
                response = await self.client.post(destination.url, content=body, headers=headers)
                status = response.status_code
                if status < 300:
                    self.tally.delivered += 1
                    return
                if 400 <= status < 500 and status != 429:
                    log.error("%s refused alert %s: HTTP %d; dropped", destination.name,
                              alert.get("id"), status)  # fmt: skip
                    self.tally.dropped += 1
                    return
                retry_after = _seconds(response.headers.get("retry-after"))
                problem = f"HTTP {status}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == self.max_attempts:
                break
            self.tally.retries += 1
            delay = retry_after if retry_after is not None else self.backoff.delay(attempt)
            log.warning("%s: %s; retry %d in %.1fs", destination.name, problem, attempt, delay)
            await asyncio.sleep(delay)
        log.error("%s: alert %s given up after %d attempts; dropped", destination.name,
                  alert.get("id"), self.max_attempts)  # fmt: skip
        self.tally.dropped += 1


def _seconds(raw: str | None) -> float | None:
    try:
        return min(max(float(raw), 0.0), 300.0) if raw is not None else None
    except ValueError:
        return None


async def run(
    settings: Settings, destinations: Sequence[Destination], stop: asyncio.Event
) -> Tally:
    consumer = AIOKafkaConsumer(
        settings.alerts_topic,
        **kafka.client_options(settings),
        group_id=f"{settings.group}-forward",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    async with httpx.AsyncClient(timeout=settings.connect_timeout * 2) as client:
        forwarder = Forwarder(destinations, client, settings.alert_forward_attempts)
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=500, max_records=100)
                for tp, records in fetched.items():
                    for record in records:
                        try:
                            alert = orjson.loads(record.value or b"")
                        except orjson.JSONDecodeError:
                            log.error("not an alert at %s[%d]@%d; skipped", tp.topic,
                                      tp.partition, record.offset)  # fmt: skip
                            alert = None
                        if isinstance(alert, dict):
                            await forwarder.forward(alert)
                        # Delivered or given up: only now does the group move past it.
                        await consumer.commit({TopicPartition(tp.topic, tp.partition):
                                               record.offset + 1})  # fmt: skip
        finally:
            await consumer.stop()
    return forwarder.tally
