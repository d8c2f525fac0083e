"""The alert state machine, with a clock that is given: property tests over random series of
observations, and the transitions one by one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.alerts.state import NORMAL, AlertState, Change, Timing, step
from pipeline.errors import SettingsError

Series = list[tuple[int, bool]]
"""(milliseconds since the previous observation, whether the condition held)."""

series = st.lists(
    st.tuples(st.one_of(st.just(0), st.integers(0, 90_000)), st.booleans()), max_size=80
)
timings = st.builds(
    Timing, for_ms=st.sampled_from([0, 1_000, 60_000, 300_000]),
    resolve_after_ms=st.sampled_from([0, 1_000, 60_000, 600_000]),
)  # fmt: skip


def run(observations: Series, timing: Timing) -> tuple[list[AlertState], list[Change], list[int]]:
    """The state after each observation, every change, and the observation each came at."""
    state, now = NORMAL, 1_000_000
    states, changes, at = [], [], []
    for i, (gap, holds) in enumerate(observations):
        now += gap
        state, made = step(state, holds, now, timing)
        states.append(state)
        changes += made
        at += [i] * len(made)
    return states, changes, at


@settings(max_examples=300)
@given(observations=series, timing=timings)
def test_notifications_alternate_firing_then_resolved(observations: Series, timing: Timing) -> None:
    _, changes, _ = run(observations, timing)
    notified = [c.notify for c in changes if c.notify is not None]
    assert notified == ["firing", "resolved"] * (len(notified) // 2) + (
        ["firing"] if len(notified) % 2 else []
    )


@settings(max_examples=500)
@given(observations=series, timing=timings)
def test_it_fires_only_after_holding_for_its_duration(observations: Series, timing: Timing) -> None:
    """Firing at t: every observation since the one that made it pending held, and that one
    was at least `for` before t. Resolved at t: likewise, none held, `resolve_after` before."""
    now, times = 1_000_000, []
    for gap, holds in observations:
        now += gap
        times.append((now, holds))
    _, changes, indexes = run(observations, timing)
    for change, at in zip(changes, indexes, strict=True):
        if change.notify is None:
            continue
        wanted = change.notify == "firing"
        # The run of observations with the same answer that ends at this one.
        start = at
        while start > 0 and times[start - 1][1] == wanted:
            start -= 1
        assert all(h == wanted for _, h in times[start : at + 1])
        needed = timing.for_ms if wanted else timing.resolve_after_ms
        assert change.at_ms - times[start][0] >= needed


@settings(max_examples=200)
@given(observations=series)
def test_with_no_durations_it_follows_the_condition(observations: Series) -> None:
    states, _, _ = run(observations, Timing())
    assert [s.status == "firing" for s in states] == [h for _, h in observations]


def test_each_transition() -> None:
    timing = Timing(for_ms=60_000, resolve_after_ms=120_000)
    state, made = step(NORMAL, True, 1_000, timing)
    assert (state.status, [c.after for c in made]) == ("pending", ["pending"])
    state, made = step(state, True, 30_000, timing)
    assert (state.status, made) == ("pending", [])
    # Gone before `for`: back to normal, no one told.
    back, made = step(state, False, 40_000, timing)
    assert (back.status, [c.notify for c in made]) == ("normal", [None])
    state, made = step(state, True, 61_000, timing)
    assert (state.status, [c.notify for c in made]) == ("firing", ["firing"])
    assert state.fired_ms == 61_000
    state, made = step(state, False, 70_000, timing)
    assert (state.status, [c.notify for c in made]) == ("resolving", [None])
    # Holding again while resolving: firing, with no second notification.
    again, made = step(state, True, 80_000, timing)
    assert (again.status, [c.notify for c in made], again.fired_ms) == ("firing", [None], 61_000)
    state, made = step(state, False, 189_999, timing)
    assert (state.status, made) == ("resolving", [])
    state, made = step(state, False, 190_000, timing)
    assert (state.status, [c.notify for c in made]) == ("normal", ["resolved"])


def test_an_observation_older_than_the_state_changes_nothing() -> None:
    state, _ = step(NORMAL, True, 10_000, Timing())
    assert step(state, False, 9_999, Timing()) == (state, [])


@pytest.mark.parametrize("values", [{"for_ms": -1}, {"resolve_after_ms": 400 * 86_400_000}])
def test_a_bad_duration_names_the_rule(values: dict[str, int]) -> None:
    with pytest.raises(SettingsError) as caught:
        Timing(rule="error_rate", **values)
    assert "alert rule error_rate" in str(caught.value)
