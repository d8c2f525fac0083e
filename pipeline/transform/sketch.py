"""A mergeable latency sketch (DDSketch): quantiles within 1% relative error, any span of hours.

A value v > 0 falls in bucket `ceil(log(v) / log(gamma))` with gamma = (1 + a) / (1 - a); every
value in a bucket is within relative accuracy `a` of the bucket's representative, so any
quantile read back is within `a` of the true value at that rank. Buckets are counts, so two
sketches merge by adding counts: the hourly rollups store one sketch per row and a span of hours
is the sum (`sketch_merge` in SQL does the same on the stored JSON).

Stored form: a JSON object `{"<bucket>": count, ..., "z": zeros}`; zero and negative values
(a cpuTime of 0 is common) are counted under `"z"` and read back as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

ACCURACY = 0.01
_GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
ZERO = "z"


def bucket(value: float) -> int:
    return math.ceil(math.log(value) / _LOG_GAMMA)


def representative(index: int) -> float:
    """The value a bucket stands for: within ACCURACY of every value in it."""
    return 2 * _GAMMA**index / (_GAMMA + 1)


class LatencySketch:
    __slots__ = ("counts", "zeros")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.zeros = 0

    @property
    def count(self) -> int:
        return self.zeros + sum(self.counts.values())

    def add(self, value: float, times: int = 1) -> None:
        if value > 0:
            index = bucket(value)
            self.counts[index] = self.counts.get(index, 0) + times
        else:
            self.zeros += times

    def add_all(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def merge(self, other: LatencySketch) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.zeros += other.zeros

    def quantile(self, q: float) -> float | None:
        """The value at rank ceil(q * n) (nearest rank), or None for an empty sketch."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return representative(index)
        return representative(max(self.counts))

    def to_json(self) -> dict[str, int]:
        out = {str(index): n for index, n in self.counts.items()}
        if self.zeros:
            out[ZERO] = self.zeros
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, int]) -> LatencySketch:
        sketch = cls()
        for key, n in data.items():
            if key == ZERO:
                sketch.zeros += int(n)
            else:
                sketch.counts[int(key)] = sketch.counts.get(int(key), 0) + int(n)
        return sketch

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LatencySketch)
            and self.zeros == other.zeros
            and {k: v for k, v in self.counts.items() if v}
            == {k: v for k, v in other.counts.items() if v}
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"LatencySketch({self.to_json()})"
