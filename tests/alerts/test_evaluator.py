"""Conditions evaluated over the rollups in the real PostgreSQL, with a clock that is given: a
scripted outage (a script fails at 30%, then recovers) makes exactly one "firing" and one
"resolved" notification, at the times `for` and `resolve_after` allow, with every change of
state kept; two evaluators racing on one rule make each notification once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from pipeline.alerts.conditions import Condition
from pipeline.alerts.evaluator import HOUR_MS, _at, evaluate
from pipeline.alerts.state import Timing
from pipeline.postgres.connect import connect
from pipeline.postgres.day_partitions import PartitionManager
from pipeline.settings import Settings
from pipeline.transform.sketch import LatencySketch

T0 = 1_796_558_400_000 + 10 * 60_000  # 10 minutes into an hour
MINUTE = 60_000
ERRORS = Condition(
    "checkout-errors", "error_rate", 0.2, True, 1, Timing(5 * MINUTE, 10 * MINUTE),
    min_requests=20, severity="critical",
)  # fmt: skip


async def rollup(
    db: asyncpg.Connection, at_ms: int, script: str, requests: int, errors: int
) -> None:
    """The script's per-script total row for the hour of `at_ms`, as the flushes leave it."""
    sketch = orjson.dumps(LatencySketch().to_json()).decode()
    outcomes = orjson.dumps({"ok": requests - errors, "exception": errors}).decode()
    await db.execute(
        "INSERT INTO tail_metrics_hourly VALUES ($1, $2, '*', $3, $4, $5::jsonb, '{}', 0, 0, 0,"
        " 0, $6::jsonb, $6::jsonb) ON CONFLICT (hour, script, event_type) DO UPDATE SET"
        " requests = excluded.requests, errors = excluded.errors, outcomes = excluded.outcomes",
        _at(at_ms - at_ms % HOUR_MS), script, requests, errors, outcomes, sketch,
    )  # fmt: skip


async def notifications(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT dedup_key, rule, script, first_at, last_at, details::text AS details"
        " FROM critical_alerts ORDER BY last_at"
    )
    return [{**r, "details": orjson.loads(r["details"])} for r in rows]


async def test_a_scripted_outage_fires_once_and_resolves_once(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    timeline = []

    async def at(minute: int, requests: int, errors: int) -> None:
        now = T0 + minute * MINUTE
        await rollup(db, now, "checkout", requests, errors)
        await rollup(db, now, "search", 100, 1)  # healthy all along
        made = await evaluate(db, (ERRORS,), now)
        timeline.append((minute, dict(made)))

    await at(0, 100, 5)  # healthy
    await at(1, 120, 36)  # 30% failing: pending
    await at(3, 150, 45)  # still pending: not 5 minutes yet
    await at(6, 200, 60)  # held 5 minutes: firing
    await at(8, 250, 75)  # still firing: nothing new
    await at(9, 1000, 75)  # recovered (7.5%): resolving
    await at(12, 1200, 75)  # flaps back above? no: 6.25%, resolving on
    await at(19, 1500, 75)  # 10 minutes quiet: resolved
    await at(25, 1600, 75)  # normal
    assert [(m, n) for m, n in timeline if n] == [(6, {"firing": 1}), (19, {"resolved": 1})]
    sent = await notifications(db)
    assert [(n["dedup_key"], n["details"]["state"]) for n in sent] == [
        ("checkout-errors:checkout", "firing"), ("checkout-errors:checkout", "resolved"),
    ]  # fmt: skip
    assert sent[0]["first_at"] == sent[1]["first_at"] == _at(T0 + 6 * MINUTE)  # when it fired
    assert sent[1]["last_at"] == _at(T0 + 19 * MINUTE)
    assert sent[0]["details"]["value"] == 0.3
    changes = await db.fetch(
        "SELECT before, after, at, notify FROM alert_changes WHERE group_key = 'checkout'"
        " ORDER BY id"
    )
    assert [(r["before"], r["after"], r["notify"]) for r in changes] == [
        ("normal", "pending", None), ("pending", "firing", "firing"),
        ("firing", "resolving", None), ("resolving", "normal", "resolved"),
    ]  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM alert_changes WHERE group_key = 'search'") == 0
    state = await db.fetchrow("SELECT status FROM alert_states WHERE group_key = 'checkout'")
    assert state is not None
    assert state["status"] == "normal"


async def test_two_evaluators_racing_notify_once(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    at_once = Condition("checkout-errors", "error_rate", 0.2, True, 1, Timing(), 20)
    await rollup(db, T0, "checkout", 100, 40)
    conns = [await connect(migrated) for _ in range(4)]
    try:
        made = await asyncio.gather(*(evaluate(c, (at_once,), T0 + i) for i, c in enumerate(conns)))
        assert sum(m["firing"] for m in made) == 1
        await rollup(db, T0, "checkout", 1000, 40)
        made = await asyncio.gather(
            *(evaluate(c, (at_once,), T0 + MINUTE + i) for i, c in enumerate(conns))
        )
        assert sum(m["resolved"] for m in made) == 1
    finally:
        for c in conns:
            await c.close()
    assert [n["details"]["state"] for n in await notifications(db)] == ["firing", "resolved"]


async def event_at(db: asyncpg.Connection, script: str, at_ms: int, offset: int) -> None:
    """A stored invocation of `script` at `at_ms` (what the silence is measured from)."""
    await PartitionManager().ensure(db, {_at(at_ms).date()})
    await db.execute(
        "INSERT INTO tail_events (ts, script, event_type, outcome, log_count, exception_count,"
        " truncated, source, topic, kafka_partition, kafka_offset, item)"
        " VALUES ($1, $2, 'scheduled', 'ok', 0, 0, false, 'trace', 't', 0, $3, 0)",
        _at(at_ms), script, offset,
    )  # fmt: skip


async def test_a_script_gone_quiet_against_its_usual_rate_and_the_pipeline(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    """`cron-sync` sends about 25 an hour, `nightly` 2 a day: after 20 quiet minutes the first is
    missed (8 expected), the second is not. The pipeline as a whole (`*`) is quiet once no
    flush stored anything for longer than the threshold."""
    quiet = Condition("gone-quiet", "silence_minutes", 15, True, 24, Timing(), 1)
    now = T0 + 50 * MINUTE
    for hours_ago in range(1, 24):
        await rollup(db, now - hours_ago * HOUR_MS, "cron-sync", 25, 0)
    await rollup(db, now - 5 * HOUR_MS, "nightly", 2, 0)
    await rollup(db, now, "cron-sync", 10, 0)
    await event_at(db, "cron-sync", now - 20 * MINUTE, 1)
    await event_at(db, "nightly", now - 5 * HOUR_MS, 2)
    totals = "SELECT hour, '*', '*', sum(requests), 0, '{}', '{}', 0, 0, 0, 0, '{}', '{}' FROM"
    await db.execute(f"INSERT INTO tail_metrics_hourly {totals} tail_metrics_hourly GROUP BY hour")
    await db.execute(
        "INSERT INTO pipeline_offsets (topic, partition, next_offset, updated_at)"
        " VALUES ('t', 0, 3, $1)", _at(now - 2 * MINUTE),
    )  # fmt: skip
    made = await evaluate(db, (quiet,), now)
    assert made == {"firing": 1}
    sent = await notifications(db)
    assert [n["script"] for n in sent] == ["cron-sync"]
    assert sent[0]["details"]["value"] == 20.0
    # Nothing stored for 16 minutes: the whole pipeline is quiet too.
    made = await evaluate(db, (quiet,), now + 14 * MINUTE)
    assert made == {"firing": 1}
    assert [n["script"] for n in await notifications(db)] == ["cron-sync", "*"]
    # cron-sync sends again: resolved.
    await event_at(db, "cron-sync", now + 15 * MINUTE, 3)
    made = await evaluate(db, (quiet,), now + 15 * MINUTE)
    assert made == {"resolved": 1}
