"""Rate-limit forecasts: the slope of the remaining count on synthetic series, and the
condition on the real PostgreSQL warning before the limit runs out, once."""

from __future__ import annotations

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.alerts.conditions import Condition
from pipeline.alerts.evaluator import _at, evaluate
from pipeline.alerts.forecast import Memo, advance, minutes_left
from pipeline.alerts.state import Timing
from pipeline.settings import Settings
from tests.alerts.test_evaluator import MINUTE, T0, notifications


def series(memo: Memo | None, readings: list[tuple[int, int]]) -> Memo | None:
    for at_ms, remaining in readings:
        memo = advance(memo, remaining, at_ms)
    return memo


def test_a_steady_spend_forecasts_its_end() -> None:
    # 5000 at T0, spending 100 a minute.
    memo = series(None, [(T0 + m * MINUTE, 5000 - 100 * m) for m in range(0, 11)])
    assert memo is not None
    assert memo.per_min == pytest.approx(100)
    assert minutes_left(memo, T0 + 10 * MINUTE) == pytest.approx(40)
    # The limit resets in 30 minutes, before it would run out: nothing to warn of.
    assert minutes_left(memo, T0 + 10 * MINUTE, reset_ms=T0 + 40 * MINUTE) is None
    assert minutes_left(memo, T0 + 10 * MINUTE, reset_ms=T0 + 60 * MINUTE) == pytest.approx(40)


def test_a_reset_starts_the_slope_again_and_an_old_reading_changes_nothing() -> None:
    memo = series(None, [(T0, 100), (T0 + MINUTE, 50)])
    assert memo is not None
    assert memo.per_min == 50
    assert advance(memo, 10, T0) == memo  # older than the memo
    reset = advance(memo, 5000, T0 + 2 * MINUTE)
    assert (reset.remaining, reset.per_min) == (5000, None)
    assert minutes_left(reset, T0 + 2 * MINUTE) is None
    # Not being spent: no forecast.
    idle = series(None, [(T0, 100), (T0 + MINUTE, 100)])
    assert minutes_left(idle, T0 + MINUTE) is None


@given(st.lists(st.tuples(st.integers(1, 10 * MINUTE), st.integers(0, 500)), max_size=40))
def test_the_forecast_is_never_negative_and_the_memo_round_trips(
    steps: list[tuple[int, int]],
) -> None:
    memo: Memo | None = None
    at, remaining = T0, 5000
    for gap, spent in steps:
        at += gap
        remaining = max(0, remaining - spent)
        memo = advance(memo, remaining, at)
        left = minutes_left(memo, at)
        assert left is None or left >= 0
        assert Memo.from_json(memo.to_json()) == memo


async def reading(db: asyncpg.Connection, at_ms: int, remaining: int) -> None:
    await db.execute(
        "INSERT INTO rate_limit_readings_daily (day, provider, limited, remaining, remaining_at,"
        " largest_limit) VALUES ($1, 'github', 0, $2, $3, 5000)"
        " ON CONFLICT (day, provider) DO UPDATE SET remaining = excluded.remaining,"
        " remaining_at = excluded.remaining_at",
        _at(at_ms).date(), remaining, _at(at_ms),
    )  # fmt: skip


async def test_a_forecast_warns_once_before_the_limit_runs_out(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    running_out = Condition("github-running-out", "rate_limit_minutes", 15, False,
                            timing=Timing(0, 5 * MINUTE))  # fmt: skip
    fired = []
    # 3000 left, spending 50 a minute (60 minutes to go), then 200 a minute from minute 10.
    remaining = 3000
    for minute in range(0, 21):
        remaining -= 50 if minute <= 10 else 200
        await reading(db, T0 + minute * MINUTE, remaining)
        made = await evaluate(db, (running_out,), T0 + minute * MINUTE)
        if made:
            fired.append((minute, dict(made)))
    # At minute 11: 2250 left at about 125 a minute smoothed is 18 minutes; at 12, 2050 / 162
    # is under 13: firing.
    assert fired == [(12, {"firing": 1})]
    (sent,) = await notifications(db)
    assert sent["script"] == "github"
    assert sent["details"]["state"] == "firing"
    summary = await db.fetchval("SELECT summary FROM critical_alerts")
    assert summary.startswith("github: github-running-out firing: rate limit: 0 in about ")
    assert summary.endswith(" min at the current rate")


async def test_a_reading_below_its_threshold_fires_and_a_reset_resolves(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    low = Condition("github-low", "rate_limit_remaining", 100, False)
    await reading(db, T0, 4000)
    assert await evaluate(db, (low,), T0) == {}
    await reading(db, T0 + MINUTE, 60)
    assert await evaluate(db, (low,), T0 + MINUTE) == {"firing": 1}
    await reading(db, T0 + 2 * MINUTE, 5000)  # the window reset
    assert await evaluate(db, (low,), T0 + 2 * MINUTE) == {"resolved": 1}
    summaries = await db.fetch("SELECT summary FROM critical_alerts ORDER BY last_at")
    assert summaries[0]["summary"] == ("github: github-low firing: rate limit: 60 left (below 100)")


async def test_cost_per_hour_over_its_window(migrated: Settings, db: asyncpg.Connection) -> None:
    """What LLM calls cost per hour, from the flushes' `cost_hourly`, over a 2-hour window."""
    spend = Condition("llm-spend", "cost_per_hour", 5, True, 2)
    hour = T0 - T0 % 3_600_000
    await db.execute(
        "INSERT INTO cost_hourly VALUES ($1, 'chat', 4.0), ($2, 'chat', 4.5), ($2, 'docs', 0.2)",
        _at(hour - 3_600_000), _at(hour),
    )  # fmt: skip
    assert await evaluate(db, (spend,), T0) == {}  # 8.5 over 2 hours: 4.25 an hour
    await db.execute("UPDATE cost_hourly SET cost_usd = 7 WHERE script = 'chat' AND hour = $1",
                     _at(hour))  # fmt: skip
    assert await evaluate(db, (spend,), T0 + MINUTE) == {"firing": 1}
    summary = await db.fetchval("SELECT summary FROM critical_alerts")
    assert summary == "chat: llm-spend firing: $5.50 an hour over the last 2h (above $5)"
