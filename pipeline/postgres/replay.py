"""`tailpipe dlq list` and `tailpipe dlq replay`: the dead-letter index, and a way back in.

Replay takes each pending object from the index, reads it from the store and sends its
messages through the same transform and COPY as the consumer, in one transaction per object
that also records, in the object's index row, which offsets are now stored. So an object is
never replayed twice, a message is stored at most once (one already in `tail_events` is skipped)
and what still fails stays in the object, with the new error in its index row.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pipeline.deadletters.record import decode_object
from pipeline.deadletters.store import StoreUnavailable, open_store
from pipeline.errors import DecodeError
from pipeline.postgres import completion, flush
from pipeline.postgres.connect import connect
from pipeline.postgres.day_partitions import DAY_TABLES, PartitionManager
from pipeline.postgres.rollup_upserts import merge_rollups
from pipeline.postgres.writer import store_rows
from pipeline.settings import Settings
from pipeline.transform.batch import Batch, DeadLetter
from pipeline.transform.transformer import Transformer


@dataclass(frozen=True, slots=True)
class Filter:
    since_s: float | None = None
    error: str | None = None
    topic: str | None = None

    def where(self, pending_only: bool) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if pending_only:
            clauses.append("replayed_at IS NULL")
        if self.since_s is not None:
            args.append(datetime.now(UTC) - timedelta(seconds=self.since_s))
            clauses.append(f"created_at >= ${len(args)}")
        if self.error is not None:
            args.append(self.error)
            clauses.append(f"${len(args)} = ANY(error_classes)")
        if self.topic is not None:
            args.append(self.topic)
            clauses.append(f"topic = ${len(args)}")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def listing(conn: asyncpg.Connection, where: Filter) -> list[dict[str, Any]]:
    sql, args = where.where(pending_only=False)
    rows = await conn.fetch(
        "SELECT object_key, topic, kafka_partition, first_offset, last_offset, messages,"
        " error_classes, error, created_at, cardinality(replayed_offsets) AS replayed,"
        f" replayed_at, replay_error FROM dead_letters{sql} ORDER BY created_at, object_key",
        *args,
    )
    return [dict(r) for r in rows]


@dataclass(slots=True)
class Summary:
    objects: int = 0
    replayed: int = 0
    failing: int = 0
    skipped: int = 0
    unreadable: list[str] = field(default_factory=list)

    def line(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        text = (
            f"{verb} {self.replayed} messages from {self.objects} objects; "
            f"{self.failing} still failing (left in place); {self.skipped} skipped "
            "(stored already)"
        )
        if self.unreadable:
            text += f"; {len(self.unreadable)} objects unreadable: {', '.join(self.unreadable)}"
        return text


class _DryRun(Exception):
    pass


class Replayer:
    def __init__(self, settings: Settings, transformer: Transformer) -> None:
        self.settings = settings
        self.transformer = transformer
        self.partitions = PartitionManager(DAY_TABLES)

    async def run(
        self, where: Filter, dry_run: bool, progress: Callable[[int, int, Summary], None]
    ) -> Summary:
        summary = Summary()
        conn = await connect(self.settings)
        try:
            sql, args = where.where(pending_only=True)
            keys = [
                r[0]
                for r in await conn.fetch(
                    f"SELECT object_key FROM dead_letters{sql} ORDER BY created_at, object_key",
                    *args,
                )
            ]
            async with open_store(self.settings) as objects:
                for number, key in enumerate(keys, 1):
                    try:
                        body = await objects.get(key)
                        letters = decode_object(body)
                    except (StoreUnavailable, DecodeError, FileNotFoundError) as exc:
                        summary.unreadable.append(f"{key} ({exc})")
                    else:
                        await self._object(conn, key, letters, dry_run, summary)
                    progress(number, len(keys), summary)
        finally:
            await conn.close()
        return summary

    async def _object(
        self,
        conn: asyncpg.Connection,
        key: str,
        letters: list[tuple[str, int, DeadLetter]],
        dry_run: bool,
        summary: Summary,
    ) -> None:
        summary.objects += 1
        await self.partitions.ensure(conn, flush.days_of(self._batch(letters)))
        try:
            async with conn.transaction():
                done = await conn.fetchval(
                    "SELECT replayed_offsets FROM dead_letters"
                    " WHERE object_key = $1 AND replayed_at IS NULL FOR UPDATE",
                    key,
                )
                if done is None:  # replayed meanwhile by someone else
                    return
                replayed = set(done)
                todo = [(t, p, d) for t, p, d in letters if d.offset not in replayed]
                stored = await _already_stored(conn, todo)
                batch = self._batch([m for m in todo if (m[0], m[1], m[2].offset) not in stored])
                await store_rows(conn, batch, self.transformer)
                delta, _ = await completion.complete(conn, batch)
                await merge_rollups(conn, batch, also=delta)
                still = [d for part in batch.parts.values() for d in part.dead]
                failing = {d.offset for d in still}
                now_done = [d.offset for _, _, d in todo if d.offset not in failing]
                await conn.execute(
                    """
                    UPDATE dead_letters SET
                        replayed_offsets = replayed_offsets || $2::bigint[],
                        replayed_at = CASE WHEN $3 THEN now() END,
                        replay_error = $4, last_replay_at = now()
                    WHERE object_key = $1
                    """,
                    key, now_done, not still,
                    f"{still[0].error_class}: {still[0].error}"[:1000] if still else None,
                )  # fmt: skip
                summary.replayed += len(now_done) - len(stored)
                summary.skipped += len(stored)
                summary.failing += len(still)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass

    def _batch(self, letters: list[tuple[str, int, DeadLetter]]) -> Batch:
        batch = Batch()
        for topic, partition, d in letters:
            self.transformer.add(
                batch, topic, partition, d.offset, d.timestamp_ms, d.key, d.value, d.headers
            )
        return batch


async def _already_stored(
    conn: asyncpg.Connection, letters: list[tuple[str, int, DeadLetter]]
) -> set[tuple[str, int, int]]:
    """Messages of these that have an invocation in `tail_events` already."""
    if not letters:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT topic, kafka_partition, kafka_offset FROM tail_events"
        " WHERE (topic, kafka_partition, kafka_offset) IN"
        " (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]))",
        [t for t, _, _ in letters], [p for _, p, _ in letters], [d.offset for _, _, d in letters],
    )  # fmt: skip
    return {(r[0], r[1], r[2]) for r in rows}


def tty_progress(done: int, total: int, summary: Summary) -> None:
    """A one-line progress bar on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} objects, "
        f"{summary.replayed} replayed, {summary.failing} failing"
    )
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
