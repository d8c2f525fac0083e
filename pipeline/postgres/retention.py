"""Retention: the raw tables' day partitions older than N days, dropped whole
(`tailpipe retention --keep-days N`, from cron).

`DETACH PARTITION ... CONCURRENTLY` (never blocks writers for long, cannot run in a
transaction block) and then `DROP TABLE`. A run interrupted in between leaves either a
partition "pending detach" (finished with `DETACH ... FINALIZE`) or a detached table named like
a partition (dropped by name); the next run completes both. Two runs on one schema never fight
over a detach: a session advisory lock lets one of them work, the other logs and returns.

A room apart from creating partitions (`day_partitions`), which every replica does on its
flush path: retention runs in another process (cron), under other locks, and decides what to
drop on the partitions' bounds, not their names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg

from pipeline.postgres.connect import quote_ident
from pipeline.postgres.day_partitions import (
    OUR_PARTITIONS,
    PARTITIONED_TABLES,
    UPPER_BOUND,
    day_start,
    lock_key,
    parse_partition_name,
    refuse_transaction,
    session_lock,
    session_lock_timeout,
)

log = logging.getLogger("tailpipe.partitions")

# Decided on the bounds, not the name, so any partition whose whole range is old goes. The
# bound is printed in the session's TimeZone and cast back in the same session, so the round
# trip is exact; MINVALUE/MAXVALUE or DEFAULT bounds do not match and are never dropped.
_OLD_PARTITIONS = (
    OUR_PARTITIONS
    + """
SELECT parent, child_schema, child, pending FROM ours WHERE upper_bound::timestamptz <= $2
"""
)

# A detached table carries no bounds any more: only its name says which day it held.
_DETACHED = """
SELECT c.relname::text AS child
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition
  AND c.relname ~ '_p[0-9]{8}$'
"""


@dataclass(frozen=True, slots=True)
class _Victim:
    parent: str  # qualified, quoted
    table: str  # the parent's bare name
    child: str  # qualified, quoted: a partition may live outside its parent's schema
    name: str
    state: str  # "attached", "pending" (an interrupted detach) or "detached"


async def drop_older_than(
    conn: asyncpg.Connection,
    keep_days: int,
    today: date,
    *,
    tables: Iterable[str] = PARTITIONED_TABLES,
    lock_timeout: float = 5.0,
) -> list[str]:
    """Drop the partitions whose whole range ends at or before `today - keep_days` 00:00 UTC;
    that day, the ones after it and today are kept. Returns the names dropped.

    Safe while consumers write. Each lock wait is capped by `lock_timeout`; a partition that
    cannot be had in time is reported (logged) and left for the next run, together with the
    rest of its table (a detach left pending blocks further detaches from the same parent).
    """
    if keep_days < 1:
        raise ValueError(f"keep_days must be >= 1 (today is never dropped), got {keep_days}")
    refuse_transaction(conn, "drop_older_than")
    cutoff = today - timedelta(days=keep_days)
    schema = str(await conn.fetchval("SELECT current_schema()"))
    async with session_lock(conn, lock_key(schema, "retention")) as acquired:
        if not acquired:
            log.warning("retention of schema %s: another run holds the lock; skipped", schema)
            return []
        async with session_lock_timeout(conn, lock_timeout):
            victims = await _victims(conn, schema, list(tables), cutoff)
            return await _drop_all(conn, victims)


async def _victims(
    conn: asyncpg.Connection, schema: str, tables: list[str], cutoff: date
) -> list[_Victim]:
    """Old partitions; per table the leftovers of interrupted runs first, because while a
    detach is pending its parent detaches no other partition."""
    found = [
        _Victim(
            parent=f"{quote_ident(schema)}.{quote_ident(r['parent'])}",
            table=r["parent"],
            child=f"{quote_ident(r['child_schema'])}.{quote_ident(r['child'])}",
            name=r["child"],
            state="pending" if r["pending"] else "attached",
        )
        for r in await conn.fetch(_OLD_PARTITIONS, tables, day_start(cutoff), UPPER_BOUND)
    ]
    for row in await conn.fetch(_DETACHED):
        parsed = parse_partition_name(row["child"])
        if parsed is None or parsed[0] not in tables or parsed[1] >= cutoff:
            continue
        found.append(
            _Victim(
                parent=f"{quote_ident(schema)}.{quote_ident(parsed[0])}",
                table=parsed[0],
                child=f"{quote_ident(schema)}.{quote_ident(row['child'])}",
                name=row["child"],
                state="detached",
            )
        )
    order = {"detached": 0, "pending": 1, "attached": 2}
    return sorted(found, key=lambda v: (v.table, order[v.state], v.name))


async def _drop_all(conn: asyncpg.Connection, victims: list[_Victim]) -> list[str]:
    dropped: list[str] = []
    blocked: set[str] = set()
    for victim in victims:
        if victim.table in blocked:
            continue
        try:
            await _drop(conn, victim)
        except asyncpg.LockNotAvailableError:
            log.warning(
                "retention: %s (%s) not dropped, lock not available within lock_timeout; "
                "%s is left for the next run",
                victim.name,
                victim.state,
                victim.table,
            )
            blocked.add(victim.table)
            continue
        log.info("partition dropped", extra={"partition": victim.name})
        dropped.append(victim.name)
    return dropped


async def _drop(conn: asyncpg.Connection, victim: _Victim) -> None:
    if victim.state == "pending":
        await conn.execute(f"ALTER TABLE {victim.parent} DETACH PARTITION {victim.child} FINALIZE")
    elif victim.state == "attached":
        await conn.execute(
            f"ALTER TABLE {victim.parent} DETACH PARTITION {victim.child} CONCURRENTLY"
        )
    await conn.execute(f"DROP TABLE IF EXISTS {victim.child}")
