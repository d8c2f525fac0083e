"""The flush's SQL: one PostgreSQL transaction (run by `pipeline.postgres.writer`) that stores a
batch and advances its offsets. Inside it, in this order:
1. compare-and-set each partition's stored offset (`pipeline_offsets`) from the value this
   consumer last stored to the batch's end. A consumer that lost a partition in a rebalance
   (a zombie) finds a different value, and its whole transaction rolls back: `PartitionsLost`.
   Doing this first also takes the offset rows' locks before any other work.
2. binary COPY of the raw rows (`tail_events`, `tail_logs`, `tail_spans`; encoded by
   `copy_stream`, natively where the core is installed); when PostgreSQL refuses some,
   `find_rejected` isolates the messages they came from (the writer turns those into dead
   letters and builds the batch again);
3. the index rows of the dead-letter objects the writer stored for this batch;
4. the OTLP invocations this batch completes with their root spans
   (`pipeline.postgres.completion`), and the rollups (`pipeline.postgres.rollup_upserts`).
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

from pipeline.errors import FlushAborted
from pipeline.postgres import copy_stream
from pipeline.postgres.connect import rejects_data
from pipeline.transform.batch import Batch, Row, TopicPartition
from pipeline.transform.spans import SPAN_COLUMNS
from pipeline.transform.transformer import EVENT_COLUMNS, LOG_COLUMNS


class PartitionsLost(FlushAborted):
    """The batch cannot be stored for these partitions from what this consumer knows: another
    consumer stored offsets since we did (we no longer own them), or the batch holds offsets
    below the stored one (read from a stale position). Nothing of the batch was stored; the
    remedy either way is to drop those rows and seek to the stored offset."""

    def __init__(self, lost: set[TopicPartition], why: str = "lost to another consumer") -> None:
        self.lost = lost
        names = ", ".join(f"{t}[{p}]" for t, p in sorted(lost))
        super().__init__(f"partitions {why}: {names}")


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


async def advance(
    conn: asyncpg.Connection, batch: Batch, stored: Mapping[TopicPartition, int]
) -> None:
    """Step 1 of a flush (inside its transaction): compare-and-set the batch's offsets.

    A part must not start below its partition's stored offset: those rows are stored already
    (Kafka offsets may skip forward, so starting above it is fine)."""
    behind = {
        tp for tp, part in batch.parts.items() if tp in stored and part.first_offset < stored[tp]
    }
    if behind:
        raise PartitionsLost(behind, "read from below their stored offset")
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


STREAM_LOG_COLUMNS = (*LOG_COLUMNS, "invocation_id")
RAW_TABLES = (
    ("tail_events", "events", EVENT_COLUMNS),
    ("tail_logs", "logs", LOG_COLUMNS),
    ("tail_spans", "spans", SPAN_COLUMNS),
    ("tail_logs", "stream_logs", STREAM_LOG_COLUMNS),
)
"""Each raw table, the `Part` list holding its rows, and their columns: a streamed
invocation's lines are `tail_logs` rows that also name their invocation."""

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
        for rows in (part.events, part.logs, part.spans, part.stream_logs):
            days.update(row[0].date() for row in rows)
        for pend in part.stream.values():  # their rows are made in the flush (`stream.settle`)
            days.update(line[0].date() for line in pend.lines)
            days.add(datetime.fromtimestamp(pend.first[2] / 1000, UTC).date())
    return days


def rows_written(batch: Batch) -> dict[str, int]:
    parts = batch.parts.values()
    written: dict[str, int] = {}
    for table, attr, _ in RAW_TABLES:
        written[table] = written.get(table, 0) + sum(len(getattr(p, attr)) for p in parts)
    return written


async def copy_rows(conn: asyncpg.Connection, batch: Batch) -> None:
    """Binary COPY of the batch's raw rows. Run it in a savepoint: when PostgreSQL refuses a
    row (`connect.rejects_data`), `find_rejected` says which messages to take out."""
    parts = list(batch.parts.values())
    for table, attr, columns in RAW_TABLES:
        if any(getattr(p, attr) for p in parts):
            rows = list(itertools.chain.from_iterable(getattr(p, attr) for p in parts))
            await copy_stream.copy_rows(conn, table, columns, rows, attr)


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
            if not rejects_data(exc):
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
        [e.last_offset for e in entries], [orjson.dumps(e.offsets).decode() for e in entries],
        [orjson.dumps(e.error_classes).decode() for e in entries], [e.error for e in entries],
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
