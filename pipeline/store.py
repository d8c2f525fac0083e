"""The flush: one PostgreSQL transaction that stores a batch and advances its offsets.

Inside the transaction, in this order:
1. compare-and-set each partition's stored offset (`pipeline_offsets`) from the value this
   consumer last stored to the batch's end. A consumer that lost a partition in a rebalance
   (a zombie) finds a different value, and its whole transaction rolls back: `PartitionsLost`.
   Doing this first also takes the offset rows' locks before any other work.
2. binary COPY of the raw rows (`tail_events`, `tail_logs`); when PostgreSQL refuses some,
   `find_rejected` isolates the messages they came from (the writer turns those into dead
   letters and builds the batch again);
3. the index rows of the dead-letter objects the writer stored for this batch;
4. one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE` per rollup table, its rows
   sorted by key so that replicas merging the same rows lock them in the same order.
So the rows, the rollups and the offsets are stored together or not at all: exactly once.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import NamedTuple

import asyncpg
import orjson

from pipeline import postgres
from pipeline.batch import Batch, Row, TopicPartition
from pipeline.errors import TailpipeError
from pipeline.rollup import Rollups
from pipeline.transform import EVENT_COLUMNS, LOG_COLUMNS


class PartitionsLost(TailpipeError):
    """Another consumer stored offsets for these partitions since we did: we no longer own
    them. Nothing of the batch was stored."""

    def __init__(self, lost: set[TopicPartition]) -> None:
        self.lost = lost
        names = ", ".join(f"{t}[{p}]" for t, p in sorted(lost))
        super().__init__(f"partitions lost to another consumer: {names}")


_CAS = """
UPDATE pipeline_offsets AS o SET next_offset = i.next, updated_at = now()
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS i(topic, part, expected, next)
WHERE o.topic = i.topic AND o.partition = i.part AND o.next_offset = i.expected
RETURNING o.topic, o.partition
"""
_FIRST = """
INSERT INTO pipeline_offsets (topic, partition, next_offset)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
ON CONFLICT DO NOTHING
RETURNING topic, partition
"""
_HOURLY = """
INSERT INTO tail_metrics_hourly AS m
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::jsonb[], $7::jsonb[], $8::bigint[], $9::int[], $10::bigint[],
                     $11::int[], $12::jsonb[], $13::jsonb[])
ORDER BY 1, 2, 3
ON CONFLICT (hour, script, event_type) DO UPDATE SET
    requests = m.requests + excluded.requests,
    errors = m.errors + excluded.errors,
    outcomes = counts_add(m.outcomes, excluded.outcomes),
    levels = counts_add(m.levels, excluded.levels),
    wall_ms_sum = m.wall_ms_sum + excluded.wall_ms_sum,
    wall_ms_max = greatest(m.wall_ms_max, excluded.wall_ms_max),
    cpu_ms_sum = m.cpu_ms_sum + excluded.cpu_ms_sum,
    cpu_ms_max = greatest(m.cpu_ms_max, excluded.cpu_ms_max),
    wall_sketch = counts_add(m.wall_sketch, excluded.wall_sketch),
    cpu_sketch = counts_add(m.cpu_sketch, excluded.cpu_sketch)
"""
_API = """
INSERT INTO api_usage_daily AS u
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::int[], $8::timestamptz[], $9::bigint[], $10::bigint[],
                     $11::numeric[], $12::bigint[])
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
    unpriced_calls = u.unpriced_calls + excluded.unpriced_calls
"""
# A resolved error that occurs again after it was resolved is reopened: a regression.
_ERRORS = """
INSERT INTO error_summary AS e (fingerprint, name, template, first_seen, last_seen, occurrences,
                                scripts, sample_message, sample_stack)
SELECT fp, name, tpl, first_seen, last_seen, n,
       ARRAY(SELECT jsonb_array_elements_text(scripts)), msg, stack
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::bigint[], $7::jsonb[], $8::text[], $9::text[])
     AS i(fp, name, tpl, first_seen, last_seen, n, scripts, msg, stack)
ORDER BY fp
ON CONFLICT (fingerprint) DO UPDATE SET
    first_seen = least(e.first_seen, excluded.first_seen),
    last_seen = greatest(e.last_seen, excluded.last_seen),
    occurrences = e.occurrences + excluded.occurrences,
    scripts = ARRAY(SELECT DISTINCT s FROM unnest(e.scripts || excluded.scripts) AS s
                    ORDER BY s LIMIT 50),
    sample_message = CASE WHEN excluded.last_seen >= e.last_seen
                          THEN excluded.sample_message ELSE e.sample_message END,
    sample_stack = CASE WHEN excluded.last_seen >= e.last_seen
                        THEN excluded.sample_stack ELSE e.sample_stack END,
    status = CASE WHEN e.status = 'resolved' AND excluded.last_seen > e.resolved_at
                  THEN 'open' ELSE e.status END,
    regressions = e.regressions + CASE WHEN e.status = 'resolved'
                  AND excluded.last_seen > e.resolved_at THEN 1 ELSE 0 END,
    last_regression = CASE WHEN e.status = 'resolved' AND excluded.last_seen > e.resolved_at
                           THEN excluded.last_seen ELSE e.last_regression END,
    resolved_at = CASE WHEN e.status = 'resolved' AND excluded.last_seen > e.resolved_at
                       THEN NULL ELSE e.resolved_at END
"""
_ERROR_HOURS = """
INSERT INTO error_hourly AS e
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[]) ORDER BY 1, 2
ON CONFLICT (hour, fingerprint) DO UPDATE SET occurrences = e.occurrences + excluded.occurrences
"""
_SCANS = """
INSERT INTO scan_activity_hourly AS s
SELECT hour, script, started, completed, failed,
       ARRAY(SELECT jsonb_array_elements_text(repos)), files, dsum, dmax
FROM unnest($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
            $6::jsonb[], $7::bigint[], $8::bigint[], $9::int[])
     AS i(hour, script, started, completed, failed, repos, files, dsum, dmax)
ORDER BY 1, 2
ON CONFLICT (hour, script) DO UPDATE SET
    started = s.started + excluded.started,
    completed = s.completed + excluded.completed,
    failed = s.failed + excluded.failed,
    repositories = ARRAY(SELECT DISTINCT r FROM unnest(s.repositories || excluded.repositories)
                         AS r ORDER BY r LIMIT 200),
    files = s.files + excluded.files,
    duration_ms_sum = s.duration_ms_sum + excluded.duration_ms_sum,
    duration_ms_max = greatest(s.duration_ms_max, excluded.duration_ms_max)
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _day(ms: int) -> date:
    return _ts(ms).date()


def _js(value: object) -> str:
    return orjson.dumps(value).decode()


async def _advance(
    conn: asyncpg.Connection, batch: Batch, stored: Mapping[TopicPartition, int]
) -> None:
    updates = [
        (tp, stored[tp], part.next_offset) for tp, part in batch.parts.items() if tp in stored
    ]
    firsts = [(tp, part.next_offset) for tp, part in batch.parts.items() if tp not in stored]
    won: set[TopicPartition] = set()
    if updates:
        rows = await conn.fetch(
            _CAS,
            [tp[0] for tp, _, _ in updates],
            [tp[1] for tp, _, _ in updates],
            [expected for _, expected, _ in updates],
            [nxt for _, _, nxt in updates],
        )
        won.update((r[0], r[1]) for r in rows)
    if firsts:
        rows = await conn.fetch(
            _FIRST, [tp[0] for tp, _ in firsts], [tp[1] for tp, _ in firsts], [n for _, n in firsts]
        )
        won.update((r[0], r[1]) for r in rows)
    lost = set(batch.parts) - won
    if lost:
        raise PartitionsLost(lost)


async def _rollups(conn: asyncpg.Connection, r: Rollups) -> None:
    if r.hourly:
        hourly = r.with_totals()
        keys = sorted(hourly)
        h = [hourly[k] for k in keys]
        await conn.execute(
            _HOURLY,
            [_ts(k[0]) for k in keys], [k[1] for k in keys], [k[2] for k in keys],
            [x.requests for x in h], [x.errors for x in h],
            [_js(x.outcomes) for x in h], [_js(x.levels) for x in h],
            [x.wall_sum for x in h], [x.wall_max for x in h],
            [x.cpu_sum for x in h], [x.cpu_max for x in h],
            [_js(x.wall.to_json()) for x in h], [_js(x.cpu.to_json()) for x in h],
        )  # fmt: skip
    if r.api:
        keys_a = sorted(r.api)
        a = [r.api[k] for k in keys_a]
        await conn.execute(
            _API,
            [_day(k[0]) for k in keys_a], [k[1] for k in keys_a], [k[2] for k in keys_a],
            [x.calls for x in a], [x.failures for x in a], [x.rate_limited for x in a],
            [x.remaining for x in a],
            [_ts(x.remaining_at_ms) if x.remaining is not None else None for x in a],
            [x.tokens_in for x in a], [x.tokens_out for x in a],
            [x.cost for x in a], [x.unpriced for x in a],
        )  # fmt: skip
    if r.errors:
        fps = sorted(r.errors)
        e = [r.errors[k] for k in fps]
        await conn.execute(
            _ERRORS,
            fps, [x.name for x in e], [x.template for x in e],
            [_ts(x.first_ms) for x in e], [_ts(x.last_ms) for x in e],
            [x.occurrences for x in e], [_js(sorted(x.scripts)) for x in e],
            [x.sample_message for x in e], [x.sample_stack for x in e],
        )  # fmt: skip
    if r.error_hours:
        keys_e = sorted(r.error_hours)
        await conn.execute(
            _ERROR_HOURS,
            [_ts(k[0]) for k in keys_e], [k[1] for k in keys_e],
            [r.error_hours[k] for k in keys_e],
        )  # fmt: skip
    if r.scans:
        keys_s = sorted(r.scans)
        s = [r.scans[k] for k in keys_s]
        await conn.execute(
            _SCANS,
            [_ts(k[0]) for k in keys_s], [k[1] for k in keys_s],
            [x.started for x in s], [x.completed for x in s], [x.failed for x in s],
            [_js(sorted(x.repositories)) for x in s], [x.files for x in s],
            [x.duration_sum for x in s], [x.duration_max for x in s],
        )  # fmt: skip


RAW_TABLES = (("tail_events", "events", EVENT_COLUMNS), ("tail_logs", "logs", LOG_COLUMNS))
"""Each raw table, the `Part` list holding its rows, and their columns."""

ORIGIN_COLUMNS = ("topic", "kafka_partition", "kafka_offset")
_COPY_LINE = re.compile(r"COPY \S+, line (\d+)")

MessageKey = tuple[str, int, int]
"""(topic, partition, offset): one Kafka message."""
Rejection = tuple[str, str]
"""(error class, message) PostgreSQL gave for a message's rows."""


def days_of(batch: Batch) -> set[date]:
    """The UTC days the batch's raw rows fall on: their partitions must exist before COPY."""
    days: set[date] = set()
    for part in batch.parts.values():
        for rows in (part.events, part.logs):
            days.update(row[0].date() for row in rows)
    return days


def rows_written(batch: Batch) -> dict[str, int]:
    parts = batch.parts.values()
    return {table: sum(len(getattr(p, attr)) for p in parts) for table, attr, _ in RAW_TABLES}


async def advance(
    conn: asyncpg.Connection, batch: Batch, stored: Mapping[TopicPartition, int]
) -> None:
    """Step 1 of a flush (inside its transaction): compare-and-set the batch's offsets."""
    await _advance(conn, batch, stored)


async def copy_rows(conn: asyncpg.Connection, batch: Batch) -> None:
    """Binary COPY of the batch's raw rows. Run it in a savepoint: when PostgreSQL refuses a
    row (`postgres.rejects_data`), `find_rejected` says which messages to take out."""
    parts = list(batch.parts.values())
    for table, attr, columns in RAW_TABLES:
        if any(getattr(p, attr) for p in parts):
            await conn.copy_records_to_table(
                table,
                records=itertools.chain.from_iterable(getattr(p, attr) for p in parts),
                columns=columns,
            )


class _Undo(Exception):
    pass


async def find_rejected(conn: asyncpg.Connection, batch: Batch) -> dict[MessageKey, Rejection]:
    """The messages whose rows PostgreSQL refuses, and why; everything it tried is undone.

    Bisection: a chunk of rows is COPYed in a savepoint; a refused chunk is split in two and
    each half tried again, down to single rows. PostgreSQL names the line of a COPY that failed
    and COPY takes rows in order, so when it does, the rows before that line are known good and
    that row known bad: only the rest is split. The rows of a message already found bad are not
    tried again (for instance its log lines, once its invocation row was refused)."""
    found: dict[MessageKey, Rejection] = {}
    try:
        async with conn.transaction():
            for table, attr, columns in RAW_TABLES:
                rows = [row for p in batch.parts.values() for row in getattr(p, attr)]
                await _bisect(conn, table, columns, rows, found)
            raise _Undo
    except _Undo:
        pass
    return found


async def _bisect(
    conn: asyncpg.Connection,
    table: str,
    columns: tuple[str, ...],
    rows: list[Row],
    found: dict[MessageKey, Rejection],
) -> None:
    origin = operator.itemgetter(*(columns.index(c) for c in ORIGIN_COLUMNS))
    chunks = [rows]
    while chunks:
        chunk = [r for r in chunks.pop() if origin(r) not in found]
        if not chunk:
            continue
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=chunk, columns=columns)
        except Exception as exc:
            if not postgres.rejects_data(exc):
                raise
            line = _COPY_LINE.search(getattr(exc, "context", None) or "")
            at = int(line.group(1)) - 1 if line else -1
            if len(chunk) == 1 or 0 <= at < len(chunk):
                bad = chunk[at if at >= 0 else 0]
                found[origin(bad)] = (
                    type(exc).__name__,
                    str(exc).split("\n", 1)[0][:500],
                )
                rest = chunk[at + 1 :] if at >= 0 else []
                if rest:
                    chunks.append(rest)
                continue
            middle = len(chunk) // 2
            chunks += [chunk[middle:], chunk[:middle]]


class IndexEntry(NamedTuple):
    object_key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    offsets: list[int]
    error_classes: list[str]
    error: str


async def index_dead_letters(conn: asyncpg.Connection, entries: list[IndexEntry]) -> None:
    """Index rows for dead-letter objects already written, in the flush's transaction."""
    if not entries:
        return
    await conn.execute(
        """
        INSERT INTO dead_letters (object_key, topic, kafka_partition, first_offset, last_offset,
                                  messages, offsets, error_classes, error)
        SELECT k, t, p, f, l, jsonb_array_length(o),
               ARRAY(SELECT jsonb_array_elements_text(o)::bigint),
               ARRAY(SELECT jsonb_array_elements_text(c)), e
        FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[],
                    $6::jsonb[], $7::jsonb[], $8::text[]) AS i(k, t, p, f, l, o, c, e)
        """,
        [e.object_key for e in entries], [e.topic for e in entries],
        [e.partition for e in entries], [e.first_offset for e in entries],
        [e.last_offset for e in entries], [_js(e.offsets) for e in entries],
        [_js(e.error_classes) for e in entries], [e.error for e in entries],
    )  # fmt: skip


async def newest_dead_letter_object(
    conn: asyncpg.Connection, topic: str, partition: int
) -> str | None:
    """The indexed dead-letter object of this partition with the highest offsets."""
    key: str | None = await conn.fetchval(
        "SELECT object_key FROM dead_letters WHERE topic = $1 AND kafka_partition = $2"
        " ORDER BY first_offset DESC LIMIT 1",
        topic,
        partition,
    )
    return key


async def merge_rollups(conn: asyncpg.Connection, batch: Batch) -> None:
    """The last step of a flush: merge the batch's rollups, in key order."""
    await _rollups(conn, Rollups.combine(p.rollups for p in batch.parts.values()))


async def flush(
    conn: asyncpg.Connection, batch: Batch, stored: Mapping[TopicPartition, int]
) -> dict[str, int]:
    """Store a batch without dead letters exactly once; returns rows written per table. Raises
    PartitionsLost (nothing stored) when another consumer owns one of its partitions now."""
    async with conn.transaction():
        await _advance(conn, batch, stored)
        await copy_rows(conn, batch)
        await merge_rollups(conn, batch)
    return rows_written(batch)


async def stored_offsets(
    conn: asyncpg.Connection, topic: str, partitions: list[int]
) -> dict[TopicPartition, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM pipeline_offsets "
        "WHERE topic = $1 AND partition = ANY($2::int[])",
        topic,
        partitions,
    )
    return {(topic, r["partition"]): r["next_offset"] for r in rows}
