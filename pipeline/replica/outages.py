"""Transient failures of a dependency: what is failing since when.

A transient failure (a dependency down, a timeout, a serialization failure) is retried with
capped exponential backoff and full jitter (`pipeline.backoff`), never dead-lettered. `Outages`
keeps, per dependency, when the failures started, how many retries so far and when the next
one is due, so the logs, `/readyz` and the metrics all say the same thing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pipeline.backoff import Backoff
from pipeline.replica.metrics import Metrics

log = logging.getLogger("tailpipe.outage")


@dataclass(slots=True)
class Outage:
    since: float
    """Wall-clock time of the first failure in a row."""
    attempts: int
    error: str
    next_retry: float

    def describe(self) -> dict[str, Any]:
        return {
            "failing_since": round(self.since, 3),
            "attempts": self.attempts,
            "error": self.error,
            "next_retry_in_s": round(max(0.0, self.next_retry - time.time()), 3),
        }


class Outages:
    def __init__(self, metrics: Metrics, backoff: Backoff) -> None:
        self._metrics = metrics
        self._backoff = backoff
        self.current: dict[str, Outage] = {}

    def failed(self, dependency: str, exc: BaseException) -> float:
        """Record a transient failure; returns the delay before the next attempt."""
        now = time.time()
        outage = self.current.get(dependency)
        error = f"{type(exc).__name__}: {exc}"[:300]
        if outage is None:
            outage = self.current[dependency] = Outage(now, 0, error, now)
            self._metrics.dependency_up.labels(dependency).set(0)
        outage.attempts += 1
        outage.error = error
        delay = self._backoff.delay(outage.attempts)
        outage.next_retry = now + delay
        self._metrics.retries.labels(dependency).inc()
        log.warning("dependency failing; retrying", extra={
            "dependency": dependency, "failing_for_s": round(now - outage.since, 1),
            "error": error, "attempt": outage.attempts, "retry_in_s": round(delay, 2),
        })  # fmt: skip
        return delay

    def recovered(self, dependency: str) -> None:
        outage = self.current.pop(dependency, None)
        if outage is not None:
            self._metrics.dependency_up.labels(dependency).set(1)
            log.warning("dependency back", extra={
                "dependency": dependency, "down_for_s": round(time.time() - outage.since, 1),
                "retries": outage.attempts,
            })  # fmt: skip

    def down(self, dependency: str) -> bool:
        return dependency in self.current

    def describe(self) -> dict[str, Any]:
        return {name: outage.describe() for name, outage in sorted(self.current.items())}
