"""What a root span tells of its invocation, what it fills in, and the rollups' difference."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.formats.fields import MAX_DURATION_MS
from pipeline.formats.invocation import Invocation
from pipeline.transform.completion import (
    Told,
    awaits_root_span,
    completed,
    filled,
    stored_row_awaits,
    told,
)
from pipeline.transform.rollup import HOUR_MS, Rollups, count_completion, count_invocation

ROOT = {"cloudflare.outcome": "ok", "cpu_time_ms": 7, "wall_time_ms": 182}


def test_a_root_span_tells_outcome_cpu_and_wall_under_either_name() -> None:
    assert told(ROOT, 190_000) == Told("ok", 7, 182)
    documented = {"cloudflare.outcome": "exception", "cloudflare.cpu_time": 3.6}
    assert told(documented, 12_400) == Told("exception", 4, 12)  # wall: its own duration


@pytest.mark.parametrize(
    "attributes",
    [
        {"cloudflare.outcome": "x" * 2000, "cpu_time_ms": -1, "wall_time_ms": 2**31},
        {"cloudflare.outcome": 3, "cpu_time_ms": math.nan, "wall_time_ms": math.inf},
        {"cloudflare.outcome": "", "cpu_time_ms": "7", "wall_time_ms": True},
    ],
)
def test_what_a_column_cannot_hold_is_not_told(attributes: dict[str, object]) -> None:
    """A bad attribute must not fail the flush: the row's integer column and the outcome's
    index key would refuse it, and the partition would stop."""
    says = told(attributes, 5_000)
    assert says.outcome is None
    assert says.cpu_ms is None
    assert says.wall_ms in (None, 5)


def test_completed_fills_only_what_is_missing() -> None:
    root = Told("ok", 7, 182)
    assert completed(Told("unreported", None, None), root) == root
    # A reported outcome and a time the logs gave stand.
    assert completed(Told("exception", None, 90), root) == Told("exception", 7, 90)
    assert completed(Told("ok", 1, 2), root) is None
    assert completed(Told("unreported", None, None), Told(None, None, None)) is None
    before = Told("unreported", None, 5)
    after = completed(before, root)
    assert after is not None
    assert filled(before, after) == ["outcome", "cpu_ms"]


def _cloudflare(**changes: object) -> Invocation:
    fields: dict[str, object] = {
        "script": "shop-api",
        "event_type": "fetch",
        "timestamp_ms": 1_700_000_000_000,
        "outcome": "unreported",
        "source": "otlp",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    return Invocation(**{**fields, **changes})  # type: ignore[arg-type]


def test_which_invocations_await_their_root_span() -> None:
    assert awaits_root_span(_cloudflare())
    assert not awaits_root_span(_cloudflare(fragment=True, event_type="unknown"))
    assert not awaits_root_span(_cloudflare(event_type="otel", outcome="ok"))
    assert not awaits_root_span(_cloudflare(cpu_ms=3))
    assert not awaits_root_span(_cloudflare(source="trace"))
    # The same answer from what a stored row kept.
    assert stored_row_awaits("fetch", False)
    assert stored_row_awaits("unknown", True)  # an unknown handler type stays in `extra`
    assert not stored_row_awaits("unknown", False)  # a fragment
    assert not stored_row_awaits("otel", False)


@given(
    outcome=st.sampled_from(["ok", "exception", "exceededCpu", "canceled"]),
    cpu=st.none() | st.integers(0, MAX_DURATION_MS),
    wall=st.integers(0, MAX_DURATION_MS),
)
def test_counted_then_completed_equals_counted_complete(
    outcome: str, cpu: int | None, wall: int
) -> None:
    """The difference added to the hour a flush counted the invocation in gives the hour it
    would have had, had the logs export said it all."""
    ts = 1_700_000_123_456
    late, whole = Rollups(), Rollups()
    before = Told("unreported", None, None)
    count_invocation(late, _cloudflare(), ts, "shop-api")
    delta = Rollups()
    count_completion(delta, ts, "shop-api", "fetch", before, Told(outcome, cpu, wall))
    late = Rollups.combine([late, delta])
    count_invocation(whole, _cloudflare(outcome=outcome, cpu_ms=cpu, wall_ms=wall), ts, "shop-api")
    key = (ts - ts % HOUR_MS, "shop-api", "fetch")
    got, want = late.hourly[key], whole.hourly[key]
    assert +got.outcomes == want.outcomes
    assert got.outcomes["unreported"] == 0
    for name in ("requests", "errors", "wall_sum", "wall_max", "cpu_sum", "cpu_max"):
        assert getattr(got, name) == getattr(want, name), name
    assert got.wall.to_json() == want.wall.to_json()
    assert got.cpu.to_json() == want.cpu.to_json()
