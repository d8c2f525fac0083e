"""The log search index: built on each day of `tail_logs` that has ended, never on the day being
written; by `tailpipe retention` and `tailpipe migrate`; and used by the API's `q=` search."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg

from pipeline.postgres import search_index
from pipeline.postgres.day_partitions import PartitionManager, day_start, partition_name
from pipeline.settings import Settings
from tests.conftest import env_of, tailpipe


async def indexes(db: asyncpg.Connection, schema: str) -> dict[str, bool]:
    """Trigram index name -> valid, in the test's schema."""
    rows = await db.fetch(
        "SELECT c.relname, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relname LIKE '%message_trgm'",
        schema,
    )
    return {r[0]: r[1] for r in rows}


async def test_only_ended_days_are_indexed_once(migrated: Settings, db: asyncpg.Connection) -> None:
    schema = migrated.postgres_schema
    assert await indexes(db, schema) == {}  # 0009: no index on the whole table any more
    now = datetime.now(UTC)
    today = now.date()
    days = [today - timedelta(days=2), today - timedelta(days=1), today, today + timedelta(1)]
    await PartitionManager().ensure(db, days)

    built = await search_index.index_closed_days(db, now)
    ended = [partition_name("tail_logs", d) for d in days[:2]]
    assert built == ended
    assert await indexes(db, schema) == {name + search_index.SUFFIX: True for name in ended}
    assert await search_index.index_closed_days(db, now) == []  # idempotent

    # At midnight the day that was being written has ended too.
    tomorrow = day_start(today + timedelta(days=1))
    assert await search_index.index_closed_days(db, tomorrow) == [
        partition_name("tail_logs", today)
    ]


async def test_an_interrupted_build_is_rebuilt(migrated: Settings, db: asyncpg.Connection) -> None:
    """`CREATE INDEX CONCURRENTLY` cut short leaves an invalid index that IF NOT EXISTS would
    keep for ever: the next run drops and builds it."""
    schema = migrated.postgres_schema
    day = datetime.now(UTC).date() - timedelta(days=1)
    await PartitionManager().ensure(db, [day])
    name = partition_name("tail_logs", day)
    await db.execute(f"INSERT INTO {name} (ts, script, event_type, outcome, level, message, "
                     "topic, kafka_partition, kafka_offset, item, seq) VALUES "
                     f"('{day.isoformat()}T12:00:00Z', 'w', 'fetch', 'ok', 'log', 'x', "
                     "'t', 0, 0, 0, 0), "
                     f"('{day.isoformat()}T12:00:01Z', 'w', 'fetch', 'ok', 'log', 'x', "
                     "'t', 0, 0, 0, 0)")  # fmt: skip
    # A unique index over duplicate rows fails half-way, as an interrupted build would, and
    # leaves an invalid index of the expected name behind.
    with contextlib.suppress(asyncpg.UniqueViolationError):
        await db.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY {name}{search_index.SUFFIX} ON {name} (message)"
        )
    assert await indexes(db, schema) == {name + search_index.SUFFIX: False}

    assert await search_index.index_closed_days(db, datetime.now(UTC)) == [name]
    assert await indexes(db, schema) == {name + search_index.SUFFIX: True}
    definition = await db.fetchval(
        "SELECT pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        schema,
        name + search_index.SUFFIX,
    )
    assert "USING gin (message gin_trgm_ops)" in definition


async def test_the_search_uses_an_ended_days_index(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)
    await PartitionManager().ensure(db, [day])
    name = partition_name("tail_logs", day)
    await db.execute(
        f"INSERT INTO {name} (ts, script, event_type, outcome, level, message, topic,"
        " kafka_partition, kafka_offset, item, seq)"
        " SELECT $1::timestamptz + g * interval '1 ms', 'w', 'fetch', 'ok', 'log',"
        " 'GET /repos/acme/api-' || g || ' 200', 't', 0, g, 0, 0"
        " FROM generate_series(1, 20000) g",
        day_start(day),
    )
    await db.execute(f"ANALYZE {name}")
    await search_index.index_closed_days(db, datetime.now(UTC))
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            "EXPLAIN SELECT ts FROM tail_logs WHERE message ILIKE '%api-1234 %'"
            f" AND ts >= '{day.isoformat()}' ORDER BY ts DESC LIMIT 50"
        )
    )
    assert name + search_index.SUFFIX in plan, plan


async def test_retention_and_migrate_build_it(settings: Settings, db: asyncpg.Connection) -> None:
    first = tailpipe("migrate", env=env_of(settings))
    assert first.returncode == 0, first.stderr
    day = datetime.now(UTC).date() - timedelta(days=1)
    await PartitionManager().ensure(db, [day])
    name = partition_name("tail_logs", day)

    again = tailpipe("migrate", env=env_of(settings))
    assert again.returncode == 0, again.stderr
    assert f"search index built on {name}" in again.stdout
    await db.execute(f"DROP INDEX {name}{search_index.SUFFIX}")

    result = tailpipe("retention", "--keep-days", "30", env=env_of(settings))
    assert result.returncode == 0, result.stderr
    assert f"search index built on {name}" in result.stdout
    assert await indexes(db, settings.postgres_schema) == {name + search_index.SUFFIX: True}
