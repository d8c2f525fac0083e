"""The log search index: a trigram GIN index on `message` for each day of `tail_logs` that has
ended, built once, never while the day is being written.

Why per closed day. A trigram GIN index kept up to date row by row nearly triples PostgreSQL's
CPU for each log row stored (15.4 µs against 5.2 µs without it, measured on this project's
rows), and halves the best ingest rate. Building the same index once over a finished day costs
5.2 µs per row in bulk, off the ingest path. No setting of the live index came close:
`fastupdate = off` costs 16x, a 64 MB pending list 2.8x, GiST 3.2x; a `tsvector` index halves
the cost but finds words, not substrings.

Why the build costs what it does. Over one day of `make bench`'s rows (915,363 log rows of 38
characters on average), `perf` puts most of the build in GIN's own accumulator, not in
`pg_trgm`: the trigram keys compared through the opclass's `btint4cmp` one call at a time
(`FunctionCall2Coll`, `ginCompareAttEntries`, `btint4cmp`: 25%), the red-black tree and the
sorts (`rbt_insert`, `pg_qsort`: 14%, and most of a further 17% in unnamed functions beside
them), against about 15% to find the words and extract the trigrams. So no
setting moves it: `maintenance_work_mem` at 16 MB, 32 MB, 64 MB (the default), 256 MB and 1 GB
gave 29.0, 27.5, 27.1, 32.1 and 31.7 µs per event, one build after another on the same day,
and a `simple` tsvector index, built the same way, 24.1 (only kept row by row does it halve
the cost). On PostgreSQL 15 the build's floor is GIN's.

What `q=` costs in exchange. The planner uses each partition's own index, so the days that
ended are searched as before. The current day is scanned newest first and stops at a page:
under a millisecond for a common term, tens of milliseconds for a rare one, and about a second
for a term absent from a 5-million-row day.

Why not `CONCURRENTLY`: it scans the table twice and waits for every older transaction, which
doubled the build's CPU (35 µs per event against 16 in `make bench`), so the whole cost came
back, only later. A plain build locks writes out of the one partition it indexes, for about
five seconds per million rows. The day has ended, so only late events for it wait (a flush
carrying them waits, then goes on), while every write to the current day goes through: tuple
routing locks only the partitions a COPY writes to. Taking the lock waits at most
`lock_timeout`; a build that cannot have it is left for the next run.

`index_closed_days` runs from `tailpipe retention` (daily) and after `tailpipe migrate`. It is
idempotent: it builds only the missing indexes, and rebuilds one that an interrupted
`CREATE INDEX CONCURRENTLY` (an operator's, say) left invalid. Two runs on one schema never
build the same index: a session advisory lock lets one of them work.
"""

from __future__ import annotations

import logging
from datetime import datetime

import asyncpg

from pipeline.postgres.connect import quote_ident
from pipeline.postgres.day_partitions import (
    OUR_PARTITIONS,
    UPPER_BOUND,
    lock_key,
    refuse_transaction,
    session_lock,
    session_lock_timeout,
)

log = logging.getLogger("tailpipe.partitions")

TABLE = "tail_logs"
SUFFIX = "_message_trgm"

# Attached partitions of tail_logs whose whole range ended by $2, without a valid index named
# for them; `valid` is null when there is no index at all.
_UNINDEXED = (
    OUR_PARTITIONS
    + """
SELECT o.child_schema, o.child, x.indisvalid AS valid
FROM ours o
LEFT JOIN pg_namespace ins ON ins.nspname = o.child_schema
LEFT JOIN pg_class ic ON ic.relnamespace = ins.oid AND ic.relname = o.child || $4
LEFT JOIN pg_index x ON x.indexrelid = ic.oid
WHERE NOT o.pending AND o.upper_bound::timestamptz <= $2 AND x.indisvalid IS NOT TRUE
ORDER BY o.child
"""
)


async def index_closed_days(
    conn: asyncpg.Connection, now: datetime, *, lock_timeout: float = 5.0
) -> list[str]:
    """Build the search index of every day partition of `tail_logs` that ended by `now` and
    has none. Returns the partitions indexed. Safe while consumers write."""
    refuse_transaction(conn, "index_closed_days")  # each build commits on its own
    schema = str(await conn.fetchval("SELECT current_schema()"))
    async with session_lock(conn, lock_key(schema, "search_index")) as acquired:
        if not acquired:
            log.warning("search index of schema %s: another run holds the lock; skipped", schema)
            return []
        async with session_lock_timeout(conn, lock_timeout):
            rows = await conn.fetch(_UNINDEXED, [TABLE], now, UPPER_BOUND, SUFFIX)
            return [
                row["child"]
                for row in rows
                if await _build(conn, row["child_schema"], row["child"], row["valid"] is False)
            ]


async def _build(conn: asyncpg.Connection, schema: str, child: str, invalid: bool) -> bool:
    table = f"{quote_ident(schema)}.{quote_ident(child)}"
    index = quote_ident(child + SUFFIX)
    try:
        async with conn.transaction():
            if invalid:  # left by a build that was interrupted: IF NOT EXISTS would keep it
                await conn.execute(f"DROP INDEX IF EXISTS {quote_ident(schema)}.{index}")
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {index} ON {table}"
                " USING gin (message public.gin_trgm_ops)"
            )
    except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError) as exc:
        # Rolled back whole: the next run builds it.
        log.warning("search index of %s not built: %s; left for the next run", child, exc)
        return False
    log.info("search index built", extra={"partition": child})
    return True
