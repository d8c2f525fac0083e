"""Day partitions against the real PostgreSQL: creation (alone, racing, after a restart),
routing of rows, and retention while writers write and after an interrupted run.

Every wait is on a condition (a lock being waited for, an event, a lock_timeout) under a
deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest

from pipeline.errors import MigrationError
from pipeline.postgres.connect import connect, quote_ident
from pipeline.postgres.day_partitions import (
    PARTITIONED_TABLES,
    PartitionManager,
    ahead,
    parse_partition_name,
    partition_name,
    utc_day,
)
from pipeline.postgres.retention import drop_older_than
from pipeline.settings import Settings
from tests.conftest import env_of, tailpipe

# The day after it is 29 February and the one after that 1 March: month and leap-day edges.
TODAY = date(2024, 2, 28)
DEADLINE_S = 30


def days(first: int, last: int) -> list[date]:
    """TODAY+first .. TODAY+last, inclusive."""
    return [TODAY + timedelta(days=n) for n in range(first, last + 1)]


def names(for_days: Iterable[date], tables: Iterable[str] = PARTITIONED_TABLES) -> list[str]:
    return sorted(partition_name(t, d) for t in tables for d in for_days)


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    result = tailpipe("migrate", env=env_of(settings))
    assert result.returncode == 0, result.stderr
    return settings


@asynccontextmanager
async def connections(settings: Settings, count: int) -> AsyncIterator[list[asyncpg.Connection]]:
    conns = [await connect(settings) for _ in range(count)]
    try:
        yield conns
    finally:
        for conn in conns:
            await conn.close()


async def partitions(conn: asyncpg.Connection) -> dict[str, bool]:
    """Partition name -> detach pending, for the partitioned tables of the test's schema."""
    rows = await conn.fetch(
        """
        SELECT c.relname::text AS name, i.inhdetachpending AS pending
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relnamespace = current_schema()::regnamespace AND p.relkind = 'p'
        """
    )
    return {r["name"]: r["pending"] for r in rows}


async def exists(conn: asyncpg.Connection, table: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table) is True


async def insert_event(conn: asyncpg.Connection, ts: datetime | str, offset: int) -> None:
    await conn.execute(
        "INSERT INTO tail_events (ts, script, event_type, outcome, log_count, exception_count,"
        " truncated, source, topic, kafka_partition, kafka_offset, item)"
        " VALUES ($1::text::timestamptz, 's', 'fetch', 'ok', 0, 0, false, 'test', 't', 0, $2, 0)",
        str(ts),
        offset,
    )


async def insert_log(conn: asyncpg.Connection, ts: datetime | str, offset: int) -> None:
    await conn.execute(
        "INSERT INTO tail_logs (ts, script, event_type, outcome, level, message, topic,"
        " kafka_partition, kafka_offset, item, seq)"
        " VALUES ($1::text::timestamptz, 's', 'fetch', 'ok', 'info', 'm', 't', 0, $2, 0, 0)",
        str(ts),
        offset,
    )


async def insert_span(conn: asyncpg.Connection, ts: datetime | str, offset: int) -> None:
    await conn.execute(
        "INSERT INTO tail_spans (ts, script, trace_id, span_id, name, kind, duration_us, status,"
        " topic, kafka_partition, kafka_offset, item)"
        " VALUES ($1::text::timestamptz, 's', '\\x01', '\\x02', 'kv_get', 0, 1, 0, 't', 0, $2, 0)",
        str(ts),
        offset,
    )


async def insert_all(conn: asyncpg.Connection, ts: datetime | str, offset: int) -> None:
    """A row in each partitioned table."""
    await insert_event(conn, ts, offset)
    await insert_log(conn, ts, offset)
    await insert_span(conn, ts, offset)


async def fill(conn: asyncpg.Connection, for_days: Iterable[date], per_day: int) -> None:
    """`per_day` events, logs and spans at noon UTC of each day."""
    for day in for_days:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        for n in range(per_day):
            await insert_all(conn, noon + timedelta(seconds=n), n)


async def count(conn: asyncpg.Connection, table: str) -> int:
    result: int = await conn.fetchval(f"SELECT count(*) FROM {quote_ident(table)}")
    return result


async def wait_for_lock_wait(observer: asyncpg.Connection, pid: int) -> None:
    """Until backend `pid` is waiting for a heavyweight lock (each poll is a round trip)."""
    async with asyncio.timeout(DEADLINE_S):
        while (
            await observer.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            != "Lock"
        ):
            pass


# -- pure helpers -------------------------------------------------------------------------


def test_ahead_is_today_and_the_next_days() -> None:
    assert ahead(TODAY) == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]
    assert ahead(TODAY, 0) == [TODAY]
    with pytest.raises(ValueError, match="days_ahead"):
        ahead(TODAY, -1)


def test_names_and_days() -> None:
    assert partition_name("tail_events", date(2024, 2, 29)) == "tail_events_p20240229"
    assert parse_partition_name("tail_logs_p20240229") == ("tail_logs", date(2024, 2, 29))
    assert parse_partition_name("tail_logs_p20241399") is None
    assert parse_partition_name("tail_logs") is None
    evening_in_la = datetime(2024, 2, 28, 18, tzinfo=timezone(timedelta(hours=-8)))
    assert utc_day(evening_in_la) == date(2024, 2, 29)
    with pytest.raises(ValueError, match="timezone"):
        utc_day(datetime(2024, 2, 28, 18))


# -- creation -------------------------------------------------------------------------------


async def test_ensure_creates_exactly_the_missing_ones(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    manager = PartitionManager()
    assert await manager.ensure(db, ahead(TODAY)) == names(days(0, 2))
    assert set(await partitions(db)) == set(names(days(0, 2)))

    assert await manager.ensure(db, ahead(TODAY)) == []
    assert await manager.ensure(db, ahead(TODAY + timedelta(days=1))) == names(days(3, 3))
    assert set(await partitions(db)) == set(names(days(0, 3)))

    # Each partition got every index of its parent (ATTACH built them); tail_logs' search
    # index is not one of them, it is built per day once the day has ended (0009). tail_events
    # keeps its primary key and the BRIN on ts (0010 dropped the two no query read).
    # tail_spans: its primary key, trace_id and the BRIN on ts (0014); tail_events also the
    # partial indexes of OTLP invocation ids (0015), of those awaiting a root span (0016) and of
    # streamed invocation ids (0018), and tail_logs the partial one of streamed lines (0018).
    expected = {"tail_events": 5, "tail_logs": 4, "tail_spans": 3}
    for table in PARTITIONED_TABLES:
        parent = await db.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass", table
        )
        child = await db.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass",
            partition_name(table, TODAY),
        )
        assert (parent, child) == (expected[table], expected[table])


async def test_ensure_of_cached_days_makes_no_round_trip(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    manager = PartitionManager()
    await manager.ensure(db, ahead(TODAY))
    async with connections(migrated, 1) as (closed,):
        await closed.close()
        # Any query on a closed connection raises: returning proves nothing was sent.
        assert await manager.ensure(closed, [TODAY, TODAY + timedelta(days=2)]) == []
        with pytest.raises(asyncpg.InterfaceError):
            await manager.ensure(closed, [TODAY + timedelta(days=3)])


async def test_ensure_refuses_to_run_inside_a_transaction(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    async with db.transaction():
        with pytest.raises(RuntimeError, match="outside a transaction"):
            await PartitionManager().ensure(db, [TODAY])


async def test_ensure_before_migrate_says_so(settings: Settings, db: asyncpg.Connection) -> None:
    await db.execute(f"CREATE SCHEMA {quote_ident(settings.postgres_schema)}")
    with pytest.raises(MigrationError, match="tailpipe migrate"):
        await PartitionManager().ensure(db, [TODAY])


async def test_four_concurrent_ensures_create_each_partition_once(migrated: Settings) -> None:
    async with connections(migrated, 4) as conns:
        go = asyncio.Event()

        async def replica(conn: asyncpg.Connection) -> list[str]:
            manager = PartitionManager()
            await go.wait()
            return await manager.ensure(conn, ahead(TODAY))

        tasks = [asyncio.create_task(replica(conn)) for conn in conns]
        go.set()
        async with asyncio.timeout(DEADLINE_S):
            results = await asyncio.gather(*tasks)
        assert sorted(name for created in results for name in created) == names(days(0, 2))
        assert set(await partitions(conns[0])) == set(names(days(0, 2)))


async def test_a_creator_outside_the_lock_counts_as_success(
    migrated: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone creates the same partition the old way (PARTITION OF, no advisory lock) and
    commits while our CREATE waits for it: duplicate_table, retried, partition seen."""
    child = partition_name("tail_events", TODAY)
    manager = PartitionManager(["tail_events"])
    await manager.refresh(db)
    attempts: list[str] = []
    create_once = manager._create_once

    async def counted(conn: asyncpg.Connection, table: str, day: date) -> bool:
        attempts.append(table)
        return await create_once(conn, table, day)

    monkeypatch.setattr(manager, "_create_once", counted)
    async with connections(migrated, 1) as (outsider,):
        outside = outsider.transaction()
        await outside.start()
        await outsider.execute(
            f"CREATE TABLE {child} PARTITION OF tail_events"
            " FOR VALUES FROM ('2024-02-28 00:00+00') TO ('2024-02-29 00:00+00')"
        )
        ours = asyncio.create_task(manager.ensure(db, [TODAY]))
        await wait_for_lock_wait(outsider, db.get_server_pid())
        await outside.commit()
        async with asyncio.timeout(DEADLINE_S):
            assert await ours == []
    assert attempts == ["tail_events", "tail_events"]  # the race was lost once, then seen
    assert await partitions(db) == {child: False}
    assert TODAY in manager.known("tail_events")


async def test_rows_route_to_the_partition_of_their_utc_day(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    # Bounds are UTC whatever the session's zone.
    await db.execute("SET TimeZone = 'America/Los_Angeles'")
    await PartitionManager().ensure(db, days(-1, 2))
    cases = {
        "2024-02-28 00:00:00+00": "20240228",
        "2024-02-28 23:59:59.999999+00": "20240228",
        "2024-02-29 00:00:00+00": "20240229",
        "2024-02-28 18:00:00-08": "20240229",  # 02:00 UTC the next day
        "2024-02-28 00:30:00+01": "20240227",  # 23:30 UTC the day before
        "2024-03-01 12:00:00+00": "20240301",
    }
    for offset, ts in enumerate(cases):
        await insert_all(db, ts, offset)
    for table in PARTITIONED_TABLES:
        rows = await db.fetch(
            f"SELECT kafka_offset, tableoid::regclass::text AS part FROM {table} ORDER BY 1"
        )
        assert [r["part"] for r in rows] == [f"{table}_p{day}" for day in cases.values()]
    with pytest.raises(asyncpg.CheckViolationError, match="no partition"):
        await insert_event(db, "2024-03-02 00:00:00+00", 99)


async def test_a_new_manager_reads_existing_partitions(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    assert await PartitionManager().ensure(db, ahead(TODAY)) == names(days(0, 2))

    restarted = PartitionManager()
    assert await restarted.ensure(db, ahead(TODAY)) == []
    assert restarted.known("tail_events") == frozenset(ahead(TODAY))
    assert restarted.known("tail_logs") == frozenset(ahead(TODAY))
    assert await restarted.ensure(db, ahead(TODAY + timedelta(days=1))) == names(days(3, 3))


# -- retention ------------------------------------------------------------------------------


async def test_retention_drops_only_whole_old_days(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    await PartitionManager().ensure(db, days(-5, 2))
    await fill(db, days(-5, 2), per_day=3)
    timeout_before = await db.fetchval("SHOW lock_timeout")

    dropped = await drop_older_than(db, keep_days=2, today=TODAY)

    assert sorted(dropped) == names(days(-5, -3))
    assert set(await partitions(db)) == set(names(days(-2, 2)))
    for name in names(days(-5, -3)):
        assert not await exists(db, name)
    for name in names(days(-2, 2)):
        assert await count(db, name) == 3
    assert await count(db, "tail_events") == await count(db, "tail_logs") == 5 * 3
    assert await db.fetchval("SHOW lock_timeout") == timeout_before

    assert await drop_older_than(db, keep_days=2, today=TODAY) == []
    # keep_days=1: yesterday stays, so today is never at stake.
    assert sorted(await drop_older_than(db, keep_days=1, today=TODAY)) == names(days(-2, -2))
    with pytest.raises(ValueError, match="keep_days"):
        await drop_older_than(db, keep_days=0, today=TODAY)


async def test_retention_while_a_writer_inserts_into_today(migrated: Settings) -> None:
    async with connections(migrated, 2) as (admin, writer):
        await PartitionManager().ensure(admin, days(-3, 0))
        await fill(admin, days(-3, -1), per_day=2)
        stop, progress = asyncio.Event(), asyncio.Event()
        inserted = 0

        async def write() -> None:
            nonlocal inserted
            start = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)
            while not stop.is_set():
                ts = start + timedelta(microseconds=inserted)
                async with writer.transaction():
                    await insert_all(writer, ts, inserted)
                inserted += 1
                progress.set()

        task = asyncio.create_task(write())
        async with asyncio.timeout(DEADLINE_S):
            await progress.wait()
            before = inserted
            dropped = await drop_older_than(admin, keep_days=1, today=TODAY)
            # DETACH ... CONCURRENTLY waited for the writer's transactions, so it wrote meanwhile.
            assert inserted > before
            # At least one more write after retention is done, then stop.
            progress.clear()
            await progress.wait()
            stop.set()
            await task  # re-raises anything the writer hit

        assert sorted(dropped) == names(days(-3, -2))
        assert inserted >= 2
        for table in PARTITIONED_TABLES:
            assert await count(admin, partition_name(table, TODAY)) == inserted
            assert await count(admin, partition_name(table, TODAY - timedelta(days=1))) == 2


async def test_retention_finishes_a_partition_left_detached(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    await PartitionManager().ensure(db, days(-3, 0))
    await fill(db, days(-3, 0), per_day=1)
    # A run that stopped between DETACH and DROP; and a recent table detached by hand.
    old, recent = (partition_name("tail_events", TODAY + timedelta(days=n)) for n in (-3, -1))
    await db.execute(f"ALTER TABLE tail_events DETACH PARTITION {old}")
    await db.execute(f"ALTER TABLE tail_events DETACH PARTITION {recent}")

    dropped = await drop_older_than(db, keep_days=2, today=TODAY)

    assert sorted(dropped) == names(days(-3, -3))
    assert not await exists(db, old)
    assert await count(db, recent) == 1  # not old: left alone
    assert set(await partitions(db)) == set(names(days(-2, 0))) - {recent}


async def test_retention_reports_a_lock_timeout_and_finishes_the_detach_next_run(
    migrated: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await PartitionManager().ensure(db, days(-4, 0))
    await fill(db, days(-4, 0), per_day=1)
    async with connections(migrated, 2) as (reader, writer):
        # An open transaction that read tail_events: DETACH ... CONCURRENTLY marks the first
        # old partition pending, then waits for this reader and gives up at lock_timeout.
        reading = reader.transaction()
        await reading.start()
        assert await count(reader, "tail_events") == 5
        with caplog.at_level(logging.WARNING, logger="tailpipe.partitions"):
            dropped = await drop_older_than(db, keep_days=2, today=TODAY, lock_timeout=0.2)
        stuck = partition_name("tail_events", TODAY - timedelta(days=4))

        assert sorted(dropped) == names(days(-4, -3), ["tail_logs", "tail_spans"])
        assert f"{stuck} (attached) not dropped" in caplog.text
        assert (await partitions(db))[stuck] is True
        # Writers are not held up by the pending detach.
        await insert_event(writer, datetime(2024, 2, 28, 6, tzinfo=UTC), 7)

        await reading.rollback()
        dropped = await drop_older_than(db, keep_days=2, today=TODAY, lock_timeout=0.2)

    assert sorted(dropped) == names(days(-4, -3), ["tail_events"])
    assert set(await partitions(db)) == set(names(days(-2, 0)))
    assert await count(db, "tail_events") == 3 + 1


async def test_two_retention_runs_at_once_drop_each_partition_once(migrated: Settings) -> None:
    async with connections(migrated, 2) as conns:
        await PartitionManager().ensure(conns[0], days(-4, 0))
        async with asyncio.timeout(DEADLINE_S):
            results = await asyncio.gather(
                *(drop_older_than(conn, keep_days=1, today=TODAY) for conn in conns)
            )
        assert sorted(name for dropped in results for name in dropped) == names(days(-4, -2))
        assert set(await partitions(conns[0])) == set(names(days(-1, 0)))
