"""Capped exponential backoff with full jitter: how long to wait before retrying a transient
failure (a dependency down, a timeout, a serialization failure). Pure; used by the replica
(its consumer's retries and outages) and by the alerts' outbox and forwarder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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
