"""When a rate limit runs out, forecast from the slope of its remaining count. Pure.

The readings are what the log lines said (`github ratelimit remaining=4981 limit=5000`, an
API's rate-limit fields): the newest per provider and day is in `rate_limit_readings_daily`.
The evaluator sees one each round and keeps, per provider, the last one and the slope so far
(`Memo`, stored with the alert's state): each newer reading gives the spend per minute since
the last, smoothed (an exponentially weighted mean, `ALPHA`), and a count that went up means
the window reset, so the slope starts again. The forecast is the remaining count over that
slope, unless the limit resets first (`reset_ms`): "GitHub rate limit: 0 in about 12 min at
the current rate".
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.5
"""The weight of the newest slope: a burst counts at once, a lull fades it in two readings."""


@dataclass(frozen=True, slots=True)
class Memo:
    remaining: int
    at_ms: int
    per_min: float | None = None
    """Spent per minute, smoothed; None until two readings of one window."""

    def to_json(self) -> dict[str, float | int | None]:
        return {"remaining": self.remaining, "at_ms": self.at_ms, "per_min": self.per_min}

    @classmethod
    def from_json(cls, data: object) -> Memo | None:
        if not isinstance(data, dict):
            return None
        remaining, at_ms, per_min = data.get("remaining"), data.get("at_ms"), data.get("per_min")
        if not isinstance(remaining, int) or not isinstance(at_ms, int):
            return None
        return cls(remaining, at_ms, float(per_min) if isinstance(per_min, int | float) else None)


def advance(memo: Memo | None, remaining: int, at_ms: int) -> Memo:
    """The memo after a reading (one no newer than the memo's changes nothing)."""
    if memo is None:
        return Memo(remaining, at_ms)
    if at_ms <= memo.at_ms:
        return memo
    if remaining > memo.remaining:  # the window reset: its slope starts again
        return Memo(remaining, at_ms)
    minutes = (at_ms - memo.at_ms) / 60_000
    slope = (memo.remaining - remaining) / minutes
    if memo.per_min is not None:
        slope = ALPHA * slope + (1 - ALPHA) * memo.per_min
    return Memo(remaining, at_ms, slope)


def minutes_left(memo: Memo | None, now_ms: int, reset_ms: int | None = None) -> float | None:
    """Minutes from `now_ms` until the count reaches 0 at the current rate; None when it is
    not being spent, or when the limit resets before then."""
    if memo is None or not memo.per_min or memo.per_min <= 0:
        return None
    zero_ms = memo.at_ms + memo.remaining / memo.per_min * 60_000
    if reset_ms is not None and reset_ms <= zero_ms:
        return None
    return max(0.0, (zero_ms - now_ms) / 60_000)
