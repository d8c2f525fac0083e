"""Day partitions of the raw tables: named by their day, created ahead of need.

`tail_events`, `tail_logs` and `tail_spans` are `PARTITION BY RANGE (ts)`; each UTC day is one
partition named `<table>_pYYYYMMDD` with bounds `[day 00:00+00, next day 00:00+00)`. All SQL
works on `current_schema()`, the schema the connection's search_path selects (see
pipeline.postgres.connect).

Creating: a partition is created as a plain table (`LIKE` the parent) and then attached, in one
short transaction. `ATTACH PARTITION` takes SHARE UPDATE EXCLUSIVE on the parent, which does
not conflict with inserts or reads, whereas `CREATE TABLE ... PARTITION OF` takes ACCESS
EXCLUSIVE and so would queue behind every open flush transaction of every replica (and make all
later queries on the table queue behind it). Replicas creating the same day serialise on a
transaction-level advisory lock keyed by (schema, table, day) and re-check the catalog under
it; a creator that does not take the lock (an older version, a human) shows up as
duplicate_table / unique_violation, which counts as success once the partition is seen.

Dropping them is `retention`, and indexing the ended ones for search is `search_index`, both
run from cron; they share the names, the bounds, the lock keys and the session locks and lock
timeouts defined here.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta

import asyncpg

from pipeline.errors import MigrationError
from pipeline.postgres.connect import quote_ident

PARTITIONED_TABLES = ("tail_events", "tail_logs", "tail_spans")
"""The raw tables: `tailpipe retention --keep-days` drops their days."""
DAY_TABLES = (*PARTITIONED_TABLES, "ingest_keys")
"""Every day-partitioned table, created ahead of need: the raw tables, and the identities a
retry is checked against (pipeline/postgres/dedup.py), whose days retention drops by the
deduplication window instead."""

log = logging.getLogger("tailpipe.partitions")

_NAME = re.compile(r"(?P<table>.+)_p(?P<day>\d{8})\Z")

_PARENTS = """
SELECT current_schema() AS schema,
       coalesce(array_agg(c.relname::text) FILTER (WHERE c.relkind = 'p'), '{}') AS parents
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])
"""

# Partitions that are attached for good: one pending detach is on its way out.
_ATTACHED = """
SELECT p.relname::text AS parent, c.relname::text AS child
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = current_schema() AND p.relname = ANY($1::text[]) AND p.relkind = 'p'
  AND NOT i.inhdetachpending
"""

_IS_ATTACHED = """
SELECT EXISTS (
    SELECT FROM pg_inherits i
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = current_schema() AND p.relname = $1 AND p.relkind = 'p'
      AND c.relname = $2 AND c.relnamespace = n.oid AND NOT i.inhdetachpending
)
"""


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def parse_partition_name(name: str) -> tuple[str, date] | None:
    """(`table`, `day`) of a name made by `partition_name`, else None."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        return match["table"], datetime.strptime(match["day"], "%Y%m%d").date()
    except ValueError:  # eight digits that are no date (20241399)
        return None


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def utc_day(ts: datetime) -> date:
    """The partition day of an event time. Naive times are refused: their day is a guess."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{ts!r}: an event time needs a timezone")
    return ts.astimezone(UTC).date()


def ahead(today: date, days_ahead: int = 2) -> list[date]:
    """`today` and the `days_ahead` days after it: what must exist before writes need it."""
    if days_ahead < 0:
        raise ValueError(f"days_ahead must be >= 0, got {days_ahead}")
    return [today + timedelta(days=n) for n in range(days_ahead + 1)]


def _literal(day: date) -> str:
    # DDL takes no parameters; an ISO date with a fixed offset is digits and dashes only.
    return f"'{day.isoformat()} 00:00:00+00'"


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key (same scheme as pipeline.postgres.migrate)."""
    digest = hashlib.sha256(":".join(("tailpipe.partitions", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def timeout_text(seconds: float) -> str:
    """A `lock_timeout` value: whole milliseconds, at least one."""
    return f"{max(1, round(seconds * 1000))}ms"


# The upper bound in `FOR VALUES FROM (...) TO ('...')`, as pg_get_expr prints it. It is printed
# in the session's TimeZone and cast back in the same session, so the round trip is exact;
# MINVALUE/MAXVALUE or DEFAULT bounds do not match.
UPPER_BOUND = r" TO \('([^']+)'\)$"

OUR_PARTITIONS = """
WITH ours AS MATERIALIZED (
    SELECT p.relname::text AS parent, cn.nspname::text AS child_schema,
           c.relname::text AS child, i.inhdetachpending AS pending,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $3))[1] AS upper_bound
    FROM pg_inherits i
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = p.relnamespace
    JOIN pg_namespace cn ON cn.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND p.relname = ANY($1::text[]) AND p.relkind = 'p'
)
"""
"""The start of a query over the partitions of the parents `$1` (names, in this schema): a CTE
`ours` of (parent, child_schema, child, pending detach, upper_bound as text), `$3` being
`UPPER_BOUND`. Materialised so that a cast of `upper_bound` only ever sees bounds of our tables
(another schema may range partition on text, whose bounds are no timestamps)."""


@asynccontextmanager
async def session_lock(conn: asyncpg.Connection, key: int) -> AsyncIterator[bool]:
    """A session-level advisory lock if it is free (True), else nothing (False): for the
    maintenance runs from cron, of which one works and another logs and returns."""
    acquired = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
    try:
        yield acquired
    finally:
        if acquired:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


@asynccontextmanager
async def session_lock_timeout(conn: asyncpg.Connection, seconds: float) -> AsyncIterator[None]:
    """Set lock_timeout for the session (there is no transaction to scope it) and restore
    the caller's value afterwards."""
    previous = await conn.fetchval("SELECT current_setting('lock_timeout')")
    await conn.execute(f"SET lock_timeout = '{timeout_text(seconds)}'")
    try:
        yield
    finally:
        await conn.execute("SELECT set_config('lock_timeout', $1, false)", previous)


def refuse_transaction(conn: asyncpg.Connection, what: str) -> None:
    # Inside the caller's transaction the parent's lock would be held until that one ends,
    # and DETACH ... CONCURRENTLY cannot run there at all.
    if conn.is_in_transaction():
        raise RuntimeError(f"{what} must run outside a transaction block")


class PartitionManager:
    """Creates missing day partitions and remembers which exist.

    One per consumer process. The cache is filled from the catalog on first use, so a restart
    recreates nothing, and `ensure` for cached days costs no round trip. Call `invalidate`
    after a write fails with "no partition of relation ... found for row" (retention may have
    dropped a cached day since).
    """

    def __init__(
        self, tables: Iterable[str] = PARTITIONED_TABLES, *, lock_timeout: float = 5.0
    ) -> None:
        self.tables = tuple(tables)
        self.lock_timeout = lock_timeout
        self._schema: str | None = None
        self._known: dict[str, set[date]] = {t: set() for t in self.tables}

    def known(self, table: str) -> frozenset[date]:
        return frozenset(self._known[table])

    def invalidate(self) -> None:
        """Forget everything; the next `ensure` reads the catalog again."""
        self._schema = None
        for days in self._known.values():
            days.clear()

    async def ensure(self, conn: asyncpg.Connection, days: Iterable[date]) -> list[str]:
        """Create the partitions of `days` that are missing; returns the names created here
        (a partition another replica created meanwhile is not listed)."""
        refuse_transaction(conn, "PartitionManager.ensure")
        wanted = sorted(set(days))
        missing = [(t, d) for t in self.tables for d in wanted if d not in self._known[t]]
        if not missing:
            return []
        if self._schema is None:
            await self.refresh(conn)
        created = []
        for table, day in missing:
            if day in self._known[table]:
                continue
            if await self._create(conn, table, day):
                created.append(partition_name(table, day))
            self._known[table].add(day)
        return created

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Reload the cache from the catalog of the connection's current schema."""
        row = await conn.fetchrow(_PARENTS, list(self.tables))
        assert row is not None  # an aggregate always yields one row
        absent = sorted(set(self.tables) - set(row["parents"]))
        if row["schema"] is None or absent:
            raise MigrationError(
                f"schema {row['schema']}: no partitioned table {', '.join(absent)}; "
                "run `tailpipe migrate` first"
            )
        self.invalidate()
        for record in await conn.fetch(_ATTACHED, list(self.tables)):
            parsed = parse_partition_name(record["child"])
            if parsed is not None and parsed[0] == record["parent"]:
                self._known[record["parent"]].add(parsed[1])
        self._schema = row["schema"]

    async def _create(self, conn: asyncpg.Connection, table: str, day: date) -> bool:
        """True when this call attached the partition, False when it already was."""
        try:
            return await self._create_once(conn, table, day)
        except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
            # A creator outside the advisory lock won the race; once more under the lock
            # sees its partition attached (or attaches its table, if it stopped at CREATE).
            return await self._create_once(conn, table, day)

    async def _create_once(self, conn: asyncpg.Connection, table: str, day: date) -> bool:
        assert self._schema is not None
        child = partition_name(table, day)
        schema = quote_ident(self._schema)
        parent_sql, child_sql = f"{schema}.{quote_ident(table)}", f"{schema}.{quote_ident(child)}"
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{timeout_text(self.lock_timeout)}'")
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", lock_key(self._schema, table, day.isoformat())
            )
            if await conn.fetchval(_IS_ATTACHED, table, child):
                return False
            # Indexes are left to ATTACH, which builds each of the parent's on the empty table.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {child_sql} (LIKE {parent_sql} INCLUDING DEFAULTS"
                " INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE"
                " INCLUDING COMPRESSION)"
            )
            await conn.execute(
                f"ALTER TABLE {parent_sql} ATTACH PARTITION {child_sql} FOR VALUES"
                f" FROM ({_literal(day)}) TO ({_literal(day + timedelta(days=1))})"
            )
        log.info("partition created", extra={"partition": child})
        return True
