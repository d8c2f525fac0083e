"""Alerts delivered to people: each destination's lane, and the POSTs with their retries.

An alert is routed to the destinations that want it and POSTed to each: retried with backoff on
network errors, 5xx and 429 (honouring `Retry-After`), not on other 4xx; each destination under
its own rate limit (`Forwarder`). An alert is finished once every destination that wants it has
taken it or been given up on after `max_attempts` (then it is logged as dropped).

Each destination has a lane (`Lane`): one task that delivers its alerts one after another, in
the order they were handed in. A dead destination holds back only its own lane; the others
keep delivering.

**Never twice from one process.** Each lane remembers the ids of the last `memory` alerts it
finished (10,000 by default) and the ones it is delivering: an alert handed in again (its
partition came back after a rebalance, or the outbox published it again) joins the delivery
under way or is skipped, and is not POSTed again.

The HTTP side of `tailpipe alerts forward`, apart from its Kafka side (`forward`): nothing here
knows about partitions or offsets, only alerts, destinations and their futures, so a lane can
take as long as a destination makes it while the poll loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.alerts import email
from pipeline.alerts.destinations import Destination
from pipeline.backoff import Backoff

_DROPPED = "dropped"
"""What a refused delivery gives back: no retry."""

log = logging.getLogger("tailpipe.forward")


@dataclass(slots=True)
class Tally:
    delivered: int = 0
    dropped: int = 0
    retries: int = 0
    skipped: int = 0
    """Alerts no destination wants."""
    repeats: int = 0
    """Alerts read again that a destination had already taken, or was taking: not sent again."""
    assignments: int = 0
    """Times the group gave this forwarder partitions: 1 unless the group rebalanced."""
    commit_failures: int = 0


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
    """Delivery of one alert to one destination: rate limit, retries, backoff."""

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
        self.timeout_s = 10.0
        """Each email's SMTP conversation (requests take the client's timeout)."""

    async def forward(self, alert: dict[str, Any]) -> None:
        """Deliver one alert to every destination that wants it (at the same time)."""
        wanted = [d for d in self.destinations if d.wants(alert)]
        if not wanted:
            self.tally.skipped += 1
            return
        await asyncio.gather(*(self.deliver(d, alert) for d in wanted))

    async def deliver(self, destination: Destination, alert: dict[str, Any]) -> None:
        """POST `alert` until the destination takes it, refuses it, or `max_attempts` fail."""
        for attempt in range(1, self.max_attempts + 1):
            await self._limits[destination.name].wait()
            send = self._mail if destination.kind == "email" else self._post
            problem, retry_after = await send(destination, alert)
            if problem is None or problem == _DROPPED:
                return
            if attempt == self.max_attempts:
                break
            self.tally.retries += 1
            delay = retry_after if retry_after is not None else self.backoff.delay(attempt)
            log.warning("%s: %s; retry %d in %.1fs", destination.name, problem, attempt, delay)
            await asyncio.sleep(delay)
        log.error("%s: alert %s given up after %d attempts; dropped", destination.name,
                  alert.get("id"), self.max_attempts)  # fmt: skip
        self.tally.dropped += 1

    async def _mail(
        self, destination: Destination, alert: dict[str, Any]
    ) -> tuple[str | None, float | None]:
        """One email, answered as `_post` answers (SMTP has no `Retry-After`)."""
        try:
            await asyncio.to_thread(email.send, destination, alert, self.timeout_s)
        except email.Refused as exc:
            log.error("%s refused alert %s: %s; dropped", destination.name, alert.get("id"), exc)
            self.tally.dropped += 1
            return _DROPPED, None
        except (OSError, smtplib.SMTPException) as exc:
            return f"{type(exc).__name__}: {exc}", None
        self.tally.delivered += 1
        return None, None

    async def _post(
        self, destination: Destination, alert: dict[str, Any]
    ) -> tuple[str | None, float | None]:
        """One request: (None when taken, `_DROPPED` when refused for good, else the problem;
        the wait its `Retry-After` asked for)."""
        body, headers = destination.request(alert, int(time.time()))
        try:
            url = destination.target(alert)
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}", None
        status = response.status_code
        if status < 300:
            self.tally.delivered += 1
            return None, None
        if 400 <= status < 500 and status != 429:
            log.error("%s refused alert %s: HTTP %d; dropped", destination.name,
                      alert.get("id"), status)  # fmt: skip
            self.tally.dropped += 1
            return _DROPPED, None
        return f"HTTP {status}", _seconds(response.headers.get("retry-after"))


def _seconds(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    if value is None or value != value:  # absent, or nan
        return None
    return min(max(value, 0.0), 300.0)


class Lane:
    """One destination's deliveries: one at a time, in the order handed in, and each alert id
    delivered at most once however many times it is handed in."""

    def __init__(self, destination: Destination, forwarder: Forwarder, memory: int) -> None:
        self.destination = destination
        self._forwarder = forwarder
        self._memory = memory
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._queued: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._holders: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self.current: str | None = None
        """The id being delivered now."""

    def knows(self, key: str) -> bool:
        """Whether `key` was finished (among the last `memory`) or is being delivered."""
        return key in self._finished or key in self._futures

    def submit(self, key: str, alert: dict[str, Any]) -> asyncio.Future[None] | None:
        """The future of the one delivery of `key`; None when it was finished already."""
        if key in self._finished:
            return None
        future = self._futures.get(key)
        if future is None:
            future = self._futures[key] = asyncio.get_running_loop().create_future()
            self._queued[key] = alert
            self._wake.set()
        self._holders[key] += 1
        return future

    def withdraw(self, key: str) -> None:
        """A reader of `key` is gone (its partition was revoked). If no other reader wants it
        and its delivery has not started, it is not made; one under way goes on."""
        if key not in self._holders:
            return
        self._holders[key] -= 1
        if self._holders[key] > 0:
            return
        del self._holders[key]
        if key in self._queued:
            del self._queued[key]
            self._futures.pop(key).cancel()

    async def run(self) -> None:
        while True:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            key, alert = self._queued.popitem(last=False)
            self.current = key
            future = self._futures[key]
            try:
                await self._forwarder.deliver(self.destination, alert)
            except asyncio.CancelledError:
                future.cancel()  # stopping: not finished, so never committed
                raise
            except Exception:  # a bug must not stop the lane, nor leave the alert pending
                log.exception("%s: alert %s could not be sent; dropped",
                              self.destination.name, alert.get("id"))  # fmt: skip
                self._forwarder.tally.dropped += 1
            finally:
                self.current = None
                self._holders.pop(key, None)
                del self._futures[key]
            self._finished[key] = None
            while len(self._finished) > self._memory:
                self._finished.popitem(last=False)
            future.set_result(None)
