"""The dead-letter guard rail: pure bookkeeping over the last N messages."""

from __future__ import annotations

import pytest

from pipeline.deadletters.guard import Guard, GuardPolicy


def test_trips_only_above_the_share_of_the_window() -> None:
    guard = Guard(GuardPolicy(window=1000, max_share=0.5))
    assert not guard.would_trip(500, 500)  # exactly half: not more than half
    assert guard.would_trip(501, 501)
    assert not guard.would_trip(5000, 0)


def test_counts_the_last_messages_across_batches() -> None:
    guard = Guard(GuardPolicy(window=1000, max_share=0.5))
    guard.record(600, 400)  # 200 good, then 400 dead: the most recent
    assert guard.dead_in_window() == 400
    assert not guard.would_trip(100, 100)  # 500 dead in the last 1000
    assert guard.would_trip(101, 101)
    guard.record(1000, 0)  # a clean batch pushes the bad ones out of the window
    assert guard.dead_in_window() == 0
    assert not guard.would_trip(500, 500)


def test_a_few_bad_messages_in_big_batches_never_trip() -> None:
    guard = Guard(GuardPolicy(window=1000, max_share=0.5))
    for _ in range(100):
        assert not guard.would_trip(5000, 50)
        guard.record(5000, 50)
    assert guard.dead_in_window() == 50


def test_window_is_trimmed_inside_a_run() -> None:
    guard = Guard(GuardPolicy(window=10, max_share=0.5))
    guard.record(8, 8)
    guard.record(4, 0)
    assert guard.dead_in_window() == 6  # 6 of the 8 dead remain in the last 10


@pytest.mark.parametrize(("window", "share"), [(0, 0.5), (10, 0.0), (10, 1.5)])
def test_policy_is_validated_on_creation(window: int, share: float) -> None:
    with pytest.raises(ValueError, match="guard"):
        GuardPolicy(window=window, max_share=share)
