"""Streamed invocations in the flush: their open state read, settled, stored, timed out.

In the flush's transaction, after the offsets' compare-and-set and the identities' claim:

    read the states of the batch's invocations (FOR UPDATE) ─> settle each part against them
    (`transform.stream.settle`: lines, spans, completed rows, rollups) ─> COPY ─(refused: the
    part is built again and settled again, from the same states)─> store the states back
    ─> close the partitions' invocations idle past the timeout

The states are read once: a part built again (bisection, duplicates) settles against what
PostgreSQL holds, which nothing else may change meanwhile, because the compare-and-set holds
the partitions' offset rows and only a partition's owner touches its invocations. So a state
advances exactly when the offsets of the events it includes do, and a kill -9 anywhere leaves
both as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson

from pipeline.errors import FlushAborted
from pipeline.postgres import copy_stream
from pipeline.transform.batch import Batch, Part, TopicPartition
from pipeline.transform.pending import State
from pipeline.transform.rollup import Rollups
from pipeline.transform.spans import SPAN_COLUMNS
from pipeline.transform.stream import close, settle
from pipeline.transform.transformer import EVENT_COLUMNS

TABLE = "stream_invocations"
_READ = f"""
SELECT invocation_id, state::text AS state FROM {TABLE}
WHERE invocation_id = ANY($1::text[]) FOR UPDATE
"""
_ROWS = f"""
INSERT INTO {TABLE} (invocation_id, topic, kafka_partition, state, closed, touched_at)
SELECT i, t, p, s::jsonb, c, now()
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bool[]) AS u(i, t, p, s, c)
"""
_STORE = (
    _ROWS
    + """ON CONFLICT (invocation_id) DO UPDATE
SET state = EXCLUDED.state, closed = EXCLUDED.closed, touched_at = now()
"""
)
_INSERT = _ROWS + "ON CONFLICT (invocation_id) DO NOTHING RETURNING invocation_id\n"
_FORGET = f"DELETE FROM {TABLE} WHERE invocation_id = ANY($1::text[])"
_IDLE = f"""
SELECT invocation_id, state::text AS state, closed FROM {TABLE}
WHERE topic = $1 AND kafka_partition = ANY($2::int[])
  AND touched_at < now() - make_interval(secs => $3)
ORDER BY touched_at
LIMIT $4
FOR UPDATE
"""
MAX_CLOSED_PER_FLUSH = 1_000
"""Idle invocations a flush closes at most: the rest wait for the next flush."""


@dataclass(slots=True)
class Outcome:
    """What the streamed part of one flush did."""

    completed: int = 0
    timed_out: int = 0
    dropped: int = 0
    """Events the runtime said it dropped, of the invocations completed or closed."""


async def read(conn: asyncpg.Connection, batch: Batch) -> dict[str, State]:
    """The stored states of the batch's streamed invocations, locked until the commit."""
    wanted = [i for part in batch.parts.values() for i in part.stream]
    if not wanted:
        return {}
    rows = await conn.fetch(_READ, wanted)
    return {r["invocation_id"]: orjson.loads(r["state"]) for r in rows}


def settle_batch(batch: Batch, states: dict[str, State]) -> None:
    """Settle the batch's streamed invocations, part after part, each against the states the
    parts before it left (a producer that does not key an invocation's events by its id can
    put them on several partitions). A part built again is new: then every part with streamed
    events was built again (`writer.copy_refusing`), and all settle again from `states`."""
    parts = [(tp, p) for tp, p in sorted(batch.parts.items()) if p.stream]
    if not parts or all(p.settled_as is not None for _, p in parts):
        return
    work = dict(states)
    for (topic, partition), part in parts:
        part.settled_as = settled = settle(part, topic, partition, work)
        batch.rows += len(part.stream_logs)
        for invocation_id, state in settled.states.items():
            if state is None:
                work.pop(invocation_id, None)
            else:
                work[invocation_id] = state


def streamed(batch: Batch) -> dict[TopicPartition, set[tuple[int, int, int]]]:
    """The parts with streamed events, to be built again together (no duplicates added)."""
    return {tp: set() for tp, part in batch.parts.items() if part.stream}


class StateRaced(FlushAborted):
    """Another flush stored the state of one of this batch's invocations first (its events on
    two partitions, read by two replicas): the flush is retried, and then reads it."""


async def store(conn: asyncpg.Connection, batch: Batch, read: dict[str, State]) -> Outcome:
    """Write back what the settled parts leave open, forget what they completed. A state
    that was not there when the flush read them is inserted only if still absent: else
    another flush got there first (`StateRaced`)."""
    out = Outcome()
    final: dict[str, tuple[str, int, State | None]] = {}
    for (topic, partition), part in sorted(batch.parts.items()):
        settled = part.settled_as
        if settled is None:
            continue
        out.completed += settled.completed
        out.dropped += part.stream_dropped
        for invocation_id, state in settled.states.items():
            final[invocation_id] = (topic, partition, state)
    keep = [(i, t, p, s) for i, (t, p, s) in final.items() if s is not None and i in read]
    new = [(i, t, p, s) for i, (t, p, s) in final.items() if s is not None and i not in read]
    forget = [i for i, (_, _, s) in final.items() if s is None and i in read]
    if keep:
        await _store(conn, keep)
    if new:
        inserted = await conn.fetch(_INSERT, *_arrays(new))
        if len(inserted) != len(new):
            raise StateRaced(f"{len(new) - len(inserted)} streamed invocations stored meanwhile")
    if forget:
        await conn.execute(_FORGET, forget)
    return out


async def close_idle(
    conn: asyncpg.Connection, batch: Batch, timeout_s: float, out: Outcome
) -> Rollups:
    """Close the invocations of the batch's partitions that had no event for `timeout_s`, as
    `unknown` (a tombstone stays one more timeout), and forget old tombstones. Returns what
    their rows add to the rollups."""
    closed = Part(0, 0)
    partitions: dict[str, list[int]] = {}
    for topic, partition in batch.parts:
        partitions.setdefault(topic, []).append(partition)
    for topic, numbers in partitions.items():
        rows = await conn.fetch(_IDLE, topic, numbers, timeout_s, MAX_CLOSED_PER_FLUSH)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        tombstones, gone = [], []
        for r in rows:
            if r["closed"]:
                gone.append(r["invocation_id"])
                continue
            state: State = orjson.loads(r["state"])
            tomb = close(state, now_ms, closed, r["invocation_id"])
            tombstones.append((r["invocation_id"], topic, state["origin"][1], tomb))
            out.timed_out += 1
        if tombstones:
            await _store(conn, tombstones)
        if gone:
            await conn.execute(_FORGET, gone)
    out.dropped += closed.stream_dropped
    if closed.events:
        await copy_stream.copy_rows(conn, "tail_events", EVENT_COLUMNS, closed.events)
    if closed.spans:
        await copy_stream.copy_rows(conn, "tail_spans", SPAN_COLUMNS, closed.spans)
    return closed.rollups


async def _store(conn: asyncpg.Connection, rows: list[tuple[str, str, int, State]]) -> None:
    await conn.execute(_STORE, *_arrays(rows))


def _arrays(
    rows: list[tuple[str, str, int, State]],
) -> tuple[list[str], list[str], list[int], list[str], list[bool]]:
    """The rows as `_ROWS`' arrays; a state is closed when it says so (a tombstone)."""
    return (
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        [orjson.dumps(r[3]).decode() for r in rows], [bool(r[3].get("closed")) for r in rows],
    )  # fmt: skip
