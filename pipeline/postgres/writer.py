"""One batch into PostgreSQL, and its dead letters into the dead-letter store, exactly once.

One transaction per batch::

    compare-and-set offsets ─> COPY rows ─(refused)─> find the refused messages, rebuild, COPY
                           ─> guard rail ─> dead-letter objects (store) ─> their index rows
                           ─> merge rollups ─> commit

The objects are written and acknowledged before the commit that stores their offsets, so a
crash in between leaves an object nothing points to, never an offset past a lost message. The
name of an object follows from its partition and offset range, so writing it again replaces
it. Before writing, the partition's objects that sort after its newest indexed one are deleted:
they are leftovers of writes whose transaction never committed (a crash, a kill -9, a lost
store acknowledgement), and none can be committed meanwhile, because our compare-and-set holds
the partition's offset row.

What can go wrong is a type: `flush.PartitionsLost` (another replica owns a partition),
`DeadLettersHeld` (the store failed: hold those partitions, retry later), `GuardTripped`, or an
asyncpg or OS error (transient: retry the same batch).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from pipeline.alerts.rules import Rules
from pipeline.deadletters.guard import Guard
from pipeline.deadletters.record import encode, object_key, partition_prefix, record
from pipeline.deadletters.store import Store, StoreUnavailable
from pipeline.errors import FlushAborted
from pipeline.postgres import completion, dedup, flush, stream
from pipeline.postgres.connect import rejects_data
from pipeline.postgres.rollup_upserts import merge_rollups
from pipeline.transform.batch import Batch, Part, TopicPartition
from pipeline.transform.pending import State
from pipeline.transform.redact.engine import redact_text
from pipeline.transform.rollup import Rollups
from pipeline.transform.transformer import Transformer


class DeadLettersHeld(FlushAborted):
    """The dead-letter store failed for these partitions' objects; nothing was stored."""

    def __init__(self, partitions: set[TopicPartition], cause: StoreUnavailable) -> None:
        self.partitions = partitions
        self.cause = cause
        super().__init__(str(cause))


class GuardTripped(FlushAborted):
    """Too many recent messages would be dead letters: consumption must stop."""


def failure_kind(exc: BaseException) -> str:
    """The `kind` label of a flush that did not commit (`tailpipe_flush_failures_total`)."""
    if isinstance(exc, flush.PartitionsLost):
        return "partitions_lost"
    if isinstance(exc, asyncpg.UniqueViolationError | dedup.ClaimRaced | stream.StateRaced):
        return "duplicate"
    if isinstance(exc, DeadLettersHeld):
        return "dead_letter_store"
    if isinstance(exc, GuardTripped):
        return "guard_rail"
    return "postgres"


@dataclass(slots=True)
class Written:
    rows: dict[str, int]
    dead: Counter[str] = field(default_factory=Counter)
    """Dead letters stored, by error class."""
    rejected: int = 0
    """Messages whose rows PostgreSQL refused (part of `dead`)."""
    redactions: Counter[str] = field(default_factory=Counter)
    objects: int = 0
    letters: list[flush.IndexEntry] = field(default_factory=list)
    """The dead-letter objects written, as indexed: what the replica's log reports."""
    alerts: Counter[str] = field(default_factory=Counter)
    """Alerts this batch created in the outbox, by rule."""
    duplicates: Counter[str] = field(default_factory=Counter)
    """Invocations and spans left out as stored before (a sender's retry), by kind."""
    completed: int = 0
    """Invocations stored earlier or in this batch that its root spans completed."""
    stream: stream.Outcome = field(default_factory=stream.Outcome)
    """Streamed invocations completed, closed at their timeout, and the events they lost."""


@dataclass(slots=True)
class Stored:
    """What `store_rows` did besides storing the rows."""

    duplicates: Counter[str]
    rejected: int
    stream: stream.Outcome


async def store_rows(conn: asyncpg.Connection, batch: Batch, transformer: Transformer) -> Stored:
    """The rows of a flush, in its transaction, after the offsets: the identities claimed (the
    batch built again without what was stored before), the streamed invocations settled
    against their state, the rows copied (messages PostgreSQL refuses made dead letters, their
    identities given back), the streamed state stored back. Shared by the replica's flush and
    `dlq replay`."""
    duplicates: Counter[str] = Counter()
    if transformer.dedup:
        duplicates = await dedup.claim(conn, batch, transformer)
        held = dedup.claimed(batch)
    states = await stream.read(conn, batch)
    rejected = await copy_refusing(conn, batch, transformer, states)
    if transformer.dedup and rejected:
        await dedup.release(conn, held, batch)
    return Stored(duplicates, rejected, await stream.store(conn, batch, states))


async def copy_refusing(
    conn: asyncpg.Connection,
    batch: Batch,
    transformer: Transformer,
    states: dict[str, State] | None = None,
) -> int:
    """COPY the batch's rows; while PostgreSQL refuses some, turn the messages they came from
    into dead letters (the batch is rebuilt in place, its streamed invocations settled again
    against `states`). Returns how many messages were refused. Inside the caller's
    transaction; each attempt in a savepoint."""
    refused = 0
    while True:
        stream.settle_batch(batch, states or {})
        try:
            async with conn.transaction():
                await flush.copy_rows(conn, batch)
            return refused
        except Exception as exc:
            if not rejects_data(exc):
                raise
            found = await flush.find_rejected(conn, batch)
            if not found:  # refused together, accepted one by one: nothing to isolate
                raise
            transformer.rebuild(batch, found, stream.streamed(batch))
            refused += len(found)


class Writer:
    def __init__(
        self,
        dead_letters: Store,
        transformer: Transformer,
        guard: Guard,
        rules: Rules | None = None,
        stream_timeout: float = 21_600.0,
    ) -> None:
        self.dead_letters = dead_letters
        self.transformer = transformer
        self.guard = guard
        self.rules = rules
        self.dedup = transformer.dedup
        self.stream_timeout = stream_timeout
        """Seconds without an event after which a streamed invocation is closed."""
        self._sweep_every = min(stream_timeout / 4, 60.0)
        self._next_sweep = 0.0

    async def write(
        self, conn: asyncpg.Connection, batch: Batch, stored: Mapping[TopicPartition, int]
    ) -> Written:
        """Store the batch (rebuilt in place when PostgreSQL refuses some of its messages)."""
        async with conn.transaction():
            await flush.advance(conn, batch, stored)
            rows = await store_rows(conn, batch, self.transformer)
            dead = sum(len(p.dead) for p in batch.parts.values())
            if self.guard.would_trip(batch.messages, dead):
                p = self.guard.policy
                raise GuardTripped(
                    f"{self.guard.dead_in_window(batch.messages, dead)} of the last {p.window} "
                    f"messages would be dead letters (limit {p.max_share:.0%}); "
                    "stopped consuming: fix the producer or the pipeline, then restart"
                )
            written = Written(
                flush.rows_written(batch), rejected=rows.rejected, duplicates=rows.duplicates,
                stream=rows.stream,
            )  # fmt: skip
            written.letters = await self._dead_letters(conn, batch, written)
            await flush.index_dead_letters(conn, written.letters)
            delta, written.completed = await completion.complete(conn, batch)
            also = delta
            if self._sweep_due():
                idle = await stream.close_idle(conn, batch, self.stream_timeout, written.stream)
                also = Rollups.combine([delta, idle])
            written.alerts = await merge_rollups(conn, batch, self.rules, also=also)
        self.guard.record(batch.messages, dead)
        written.redactions.update(batch.redactions)
        return written

    def _sweep_due(self) -> bool:
        """Whether this flush looks for idle streamed invocations: at most every quarter of
        the timeout (a minute at most), so a flush pays that query once a minute, and a
        replica that reads no streamed event still closes what its partitions left open."""
        now = time.monotonic()
        if now < self._next_sweep:
            return False
        self._next_sweep = now + self._sweep_every
        return True

    async def _dead_letters(
        self, conn: asyncpg.Connection, batch: Batch, written: Written
    ) -> list[flush.IndexEntry]:
        parts = [(tp, part) for tp, part in batch.parts.items() if part.dead]
        if not parts:
            return []
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        entries = []
        for (topic, partition), part in parts:
            try:
                entries.append(await self._object(conn, topic, partition, part, at, written))
            except StoreUnavailable as exc:
                raise DeadLettersHeld({tp for tp, _ in parts}, exc) from exc
        return entries

    async def _object(
        self,
        conn: asyncpg.Connection,
        topic: str,
        partition: int,
        part: Part,
        at: str,
        written: Written,
    ) -> flush.IndexEntry:
        first, last = part.first_offset, part.next_offset - 1
        prefix = self.dead_letters.prefix
        key = object_key(prefix, topic, partition, first, last)
        newest = await flush.newest_dead_letter_object(conn, topic, partition)
        leftovers = await self.dead_letters.keys_after(
            partition_prefix(prefix, topic, partition), newest
        )
        await self.dead_letters.delete([k for k in leftovers if k != key])
        counts: Counter[str] = Counter()
        body = encode(record(topic, partition, d, at, counts) for d in part.dead)
        await self.dead_letters.put(key, body)
        written.redactions.update(counts)
        written.objects += 1
        classes = Counter(d.error_class for d in part.dead)
        written.dead.update(classes)
        return flush.IndexEntry(
            key, topic, partition, first, last,
            [d.offset for d in part.dead], sorted(classes), redact_text(part.dead[0].error[:1000]),
        )  # fmt: skip
