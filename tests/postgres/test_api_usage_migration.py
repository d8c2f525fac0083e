"""Migration 0011 against the real PostgreSQL: `api_usage_daily`'s rows (a model or an endpoint
in `model`, readings as `*` rows of 0 calls) are moved to `api_calls_daily` and
`rate_limit_readings_daily`, and what a replica of the previous version inserts during a
rolling upgrade lands there too, merged with what the new version stores, while
`api_usage_daily` stays what the previous version reads."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from pipeline.postgres import migrate
from pipeline.postgres.day_partitions import PartitionManager
from pipeline.postgres.rollup_upserts import merge_rollups
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.rollup import ApiUsage, RateLimits
from tests.conftest import env_of, tailpipe

DAY = date(2026, 11, 29)
AT = datetime(2026, 11, 29, 10, tzinfo=UTC)
CLAUDE = "claude-sonnet-4-5-20250929"

# The upsert of the previous version (pipeline/postgres/rollup_upserts.py before 0011), as a
# replica still running it sends it.
PREVIOUS_UPSERT = """
INSERT INTO api_usage_daily AS u
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::timestamptz[], $9::bigint[], $10::bigint[],
                     $11::numeric[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
                     $16::timestamptz[])
ORDER BY 1, 2, 3
ON CONFLICT (day, provider, model) DO UPDATE SET
    calls = u.calls + excluded.calls,
    failures = u.failures + excluded.failures,
    rate_limited = u.rate_limited + excluded.rate_limited,
    rate_limit_remaining = CASE
        WHEN excluded.rate_limit_seen_at >= coalesce(u.rate_limit_seen_at, '-infinity')
        THEN excluded.rate_limit_remaining ELSE u.rate_limit_remaining END,
    rate_limit_seen_at = greatest(u.rate_limit_seen_at, excluded.rate_limit_seen_at),
    tokens_in = u.tokens_in + excluded.tokens_in,
    tokens_out = u.tokens_out + excluded.tokens_out,
    cost_usd = CASE WHEN u.cost_usd IS NULL THEN excluded.cost_usd
                    WHEN excluded.cost_usd IS NULL THEN u.cost_usd
                    ELSE u.cost_usd + excluded.cost_usd END,
    unpriced_calls = u.unpriced_calls + excluded.unpriced_calls,
    cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
    cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
    rate_limit_limit = greatest(u.rate_limit_limit, excluded.rate_limit_limit),
    rate_limit_reset = greatest(u.rate_limit_reset, excluded.rate_limit_reset)
"""


def previous_row(
    model: str,
    calls: int = 0,
    *,
    failures: int = 0,
    limited: int = 0,
    remaining: int | None = None,
    seen: datetime | None = None,
    tokens: tuple[int, int] = (0, 0),
    cost: Decimal | None = None,
    unpriced: int = 0,
    limit: int | None = None,
    reset: datetime | None = None,
    provider: str = "github",
) -> tuple[Any, ...]:
    """One row as the previous version stored it (its sixteen columns, in order)."""
    return (DAY, provider, model, calls, failures, limited, remaining, seen, *tokens, cost,
            unpriced, 0, 0, limit, reset)  # fmt: skip


async def previous_replica_flush(db: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    async with db.transaction():
        await db.execute(PREVIOUS_UPSERT, *(list(column) for column in zip(*rows, strict=True)))


async def calls(
    db: asyncpg.Connection,
) -> dict[tuple[str, str | None, str | None], tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT provider, model, endpoint, calls, failures, rate_limited, tokens_in, tokens_out,"
        " cost_usd, unpriced_calls FROM api_calls_daily WHERE day = $1",
        DAY,
    )
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}


async def readings(db: asyncpg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT provider, limited, remaining, remaining_at, largest_limit, latest_reset"
        " FROM rate_limit_readings_daily WHERE day = $1",
        DAY,
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def migrate_to_0010(settings: Settings, tmp_path: Path) -> None:
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    for f in sorted(migrate.default_directory().glob("*.sql")):
        if f.name < "0011":
            (old_dir / f.name).write_text(f.read_text())
    old = tailpipe("migrate", "--dir", str(old_dir), env=env_of(settings))
    assert old.returncode == 0, old.stderr


async def test_rows_and_previous_replicas_are_routed_to_calls_and_readings(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    migrate_to_0010(settings, tmp_path)
    reset = datetime(2026, 11, 29, 11, tzinfo=UTC)
    await previous_replica_flush(db, [
        # An LLM call (priced), one unpriced, a GitHub endpoint carrying a reading, a call that
        # named neither model nor endpoint, and a provider-wide reading that said "wait".
        previous_row(CLAUDE, 2, tokens=(100, 20), cost=Decimal("0.0006"), provider="anthropic"),
        previous_row("mystery-model-x", 1, unpriced=1, provider="llm"),
        previous_row("GET /repos/{owner}/{repo}", 3, failures=1, limited=1, remaining=4711,
                     seen=AT),
        previous_row("", 1, failures=1),
        previous_row("*", remaining=12, seen=AT.replace(minute=5), limit=5000, reset=reset,
                     limited=2, provider="github"),
        previous_row("*", limited=1, reset=reset, provider="unknown"),
    ])  # fmt: skip

    new = tailpipe("migrate", env=env_of(settings))
    assert new.returncode == 0, new.stderr
    assert "applied 0011_api_calls_readings_and_unmeasured_cpu\n" in new.stdout
    # Kept as it was, for the previous version's API (during the upgrade, or after a rollback).
    assert await db.fetchval("SELECT count(*) FROM api_usage_daily") == 6
    assert await calls(db) == {
        ("anthropic", CLAUDE, None): (2, 0, 0, 100, 20, Decimal("0.000600"), 0),
        ("llm", "mystery-model-x", None): (1, 0, 0, 0, 0, None, 1),
        ("github", None, "GET /repos/{owner}/{repo}"): (3, 1, 1, 0, 0, None, 0),
        ("github", None, None): (1, 1, 0, 0, 0, None, 0),
    }
    assert await readings(db) == {
        # The '*' row's newer remaining wins over the call row's; its 2 "wait" readings count.
        "github": (2, 12, AT.replace(minute=5), 5000, reset),
        "unknown": (1, None, None, None, reset),
    }

    # A rolling upgrade: a replica of the previous version flushes again (routed, merged into
    # the same rows), and so does one of this version.
    await previous_replica_flush(db, [
        previous_row(CLAUDE, 1, tokens=(10, 2), cost=Decimal("0.0001"), provider="anthropic"),
        previous_row("GET /repos/{owner}/{repo}", 1, remaining=0, seen=AT.replace(minute=9)),
    ])  # fmt: skip
    batch = Batch()
    part = batch.part("events", 0, 0)
    day_ms = int(datetime(2026, 11, 29, tzinfo=UTC).timestamp() * 1000)
    part.rollups.api[(day_ms, "anthropic", CLAUDE, "")] = ApiUsage(
        calls=1, tokens_in=5, tokens_out=1, cost=Decimal("0.0002")
    )
    part.rollups.api[(day_ms, "github", "", "GET /repos/{owner}/{repo}")] = ApiUsage(calls=4)
    part.rollups.rate_limits[(day_ms, "github")] = RateLimits(
        remaining=4000, remaining_at_ms=int(AT.replace(minute=7).timestamp() * 1000), limit=6000
    )
    async with db.transaction():
        await merge_rollups(db, batch)
    got = await calls(db)
    assert got[("anthropic", CLAUDE, None)] == (4, 0, 0, 115, 23, Decimal("0.000900"), 0)
    assert got[("github", None, "GET /repos/{owner}/{repo}")] == (8, 1, 1, 0, 0, None, 0)
    assert len(got) == 4
    # The previous replica's reading at :09 (0 remaining) is the newest; the largest limit wins.
    assert (await readings(db))["github"] == (3, 0, AT.replace(minute=9), 6000, reset)
    # The previous version's own rows merged as they always did (this version writes none).
    legacy = await db.fetchrow(
        "SELECT calls, tokens_in FROM api_usage_daily WHERE provider = 'anthropic'"
    )
    assert tuple(legacy or ()) == (3, 110)


async def test_the_zeros_the_logger_never_measured_leave_the_cpu_sketches(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Stored before: three logger envelopes with `"cpuTime": 0` (two in one hour, one in the
    next) and a Workers trace item's measured 0 ms, each counted as a zero in its hour's CPU
    sketch and the totals. After 0011 only the measured zero is left."""
    migrate_to_0010(settings, tmp_path)
    await PartitionManager(("tail_events", "tail_logs")).ensure(db, {DAY})  # as of 0010
    hours = [AT, AT.replace(hour=11)]
    rows = [
        (hours[0], "py-svc", "job", "envelope", 1),
        (hours[0], "py-svc", "job", "envelope", 2),
        (hours[1], "py-svc", "fetch", "envelope", 3),
        (hours[0], "worker", "fetch", "trace", 4),
    ]
    await db.executemany(
        "INSERT INTO tail_events (ts, script, event_type, outcome, cpu_ms, wall_ms, log_count,"
        " exception_count, truncated, source, topic, kafka_partition, kafka_offset, item)"
        " VALUES ($1, $2, $3, 'ok', 0, 5, 0, 0, false, $4, 't', 0, $5, 0)",
        rows,
    )  # fmt: skip
    sketches = {  # what the previous version merged for those rows, with one measured 7 ms
        (hours[0], "py-svc", "job"): {"z": 2},
        (hours[0], "py-svc", "*"): {"z": 2},
        (hours[0], "worker", "fetch"): {"z": 1, "98": 1},
        (hours[0], "worker", "*"): {"z": 1, "98": 1},
        (hours[0], "*", "*"): {"z": 3, "98": 1},
        (hours[1], "py-svc", "fetch"): {"z": 1},
        (hours[1], "py-svc", "*"): {"z": 1},
        (hours[1], "*", "*"): {"z": 1},
    }
    await db.executemany(
        "INSERT INTO tail_metrics_hourly VALUES ($1, $2, $3, 1, 0, '{}', '{}', 5, 5, 7, 7,"
        " '{}', $4::jsonb)",
        [(*key, orjson.dumps(sketch).decode()) for key, sketch in sketches.items()],
    )
    new = tailpipe("migrate", env=env_of(settings))
    assert new.returncode == 0, new.stderr
    got = {
        (r[0], r[1], r[2]): orjson.loads(r[3])
        for r in await db.fetch(
            "SELECT hour, script, event_type, cpu_sketch::text FROM tail_metrics_hourly"
        )
    }
    assert got == {
        (hours[0], "py-svc", "job"): {},
        (hours[0], "py-svc", "*"): {},
        (hours[0], "worker", "fetch"): {"z": 1, "98": 1},
        (hours[0], "worker", "*"): {"z": 1, "98": 1},
        (hours[0], "*", "*"): {"z": 1, "98": 1},
        (hours[1], "py-svc", "fetch"): {},
        (hours[1], "py-svc", "*"): {},
        (hours[1], "*", "*"): {},
    }
