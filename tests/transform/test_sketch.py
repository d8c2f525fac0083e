"""The latency sketch: merges like a union, quantiles within 1% of exact."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.transform.sketch import ACCURACY, LatencySketch

values = st.lists(
    st.one_of(st.integers(0, 600_000), st.floats(0.001, 1e7, allow_nan=False)), max_size=300
)


def exact(data: Sequence[float], q: float) -> float:
    ordered = sorted(data)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def sketch_of(data: Sequence[float]) -> LatencySketch:
    sketch = LatencySketch()
    sketch.add_all(data)
    return sketch


@given(values, values)
@settings(max_examples=300)
def test_merge_equals_sketch_of_union(a: list[float], b: list[float]) -> None:
    merged = sketch_of(a)
    merged.merge(sketch_of(b))
    assert merged == sketch_of(a + b)
    assert merged.count == len(a) + len(b)


@given(values.filter(bool), st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999, 1.0]))
@settings(max_examples=500)
def test_quantiles_within_accuracy(data: list[float], q: float) -> None:
    got = sketch_of(data).quantile(q)
    want = exact(data, q)
    assert got is not None
    if want <= 0:
        assert got == 0
    else:
        assert abs(got - want) <= ACCURACY * want * (1 + 1e-9)


def test_realistic_latencies_and_json_round_trip() -> None:
    rng = random.Random(7)
    data = [int(rng.lognormvariate(3.5, 1.0)) for _ in range(100_000)]
    hours = [sketch_of(data[i : i + 10_000]) for i in range(0, len(data), 10_000)]
    span = LatencySketch()
    for hour in hours:
        span.merge(LatencySketch.from_json(hour.to_json()))
    for q in (0.5, 0.95, 0.99):
        want = exact(data, q)
        got = span.quantile(q)
        assert got is not None
        assert abs(got - want) <= ACCURACY * want
    assert LatencySketch().quantile(0.5) is None
