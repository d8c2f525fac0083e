"""Transient failures of a dependency: how long to wait, and what is failing since when.

A transient failure (a dependency down, a timeout, a serialization failure) is retried with
capped exponential backoff and full jitter, never dead-lettered. `Outages` keeps, per
dependency, when the failures started, how many retries so far and when the next one is due,
so the logs, `/readyz` and the metrics all say the same thing.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from pipeline.metrics import Metrics

log = logging.getLogger("tailpipe.outage")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full jitter: a delay drawn uniformly from [0, min(cap, base * 2**attempt)]."""

    base_s: float = 0.2
    cap_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")

    def delay(self, attempt: int, draw: float | None = None) -> float:
        """The wait before retry number `attempt` (1 for the first); `draw` in [0, 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt, 32))
        return float(ceiling * (random.random() if draw is None else draw))


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
