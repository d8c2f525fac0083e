"""A batch: rows for every table, kept per Kafka partition with the offsets they cover.

Rows are kept per partition so that a partition lost in a rebalance can be dropped from a batch
without touching the others; the flush combines the parts. A batch knows its size in rows and
bytes and its age, which are the flush triggers. It also holds the messages that will not be
stored as rows (`DeadLetter`) and every message as fetched (`Raw`), to build a part again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.transform.rollup import Rollups

if TYPE_CHECKING:
    from pipeline.transform.pending import Pending, Settled

Row = tuple[Any, ...]
TopicPartition = tuple[str, int]
Headers = Sequence[tuple[str, bytes]]


class DeadLetter(NamedTuple):
    """One message that will not be stored as rows: where it came from and why."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers
    error_class: str
    error: str


class Raw(NamedTuple):
    """A message as fetched: enough to transform it again (bisection, replay)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers


class Identity(NamedTuple):
    """An invocation's or span's identity (`transform.dedup`) and where it came from."""

    ts: datetime
    digest: int
    offset: int
    kind: int
    item: int


@dataclass(slots=True)
class Part:
    """What one partition contributed: rows, dead letters, rollups, the offsets [first, next),
    and the messages as fetched, so that the part can be built again without some of them."""

    first_offset: int
    next_offset: int
    events: list[Row] = field(default_factory=list)
    logs: list[Row] = field(default_factory=list)
    spans: list[Row] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    raw: list[Raw] = field(default_factory=list)
    rollups: Rollups = field(default_factory=Rollups)
    redactions: Counter[str] = field(default_factory=Counter)
    decode_failures: Counter[str] = field(default_factory=Counter)
    sanitized: Counter[str] = field(default_factory=Counter)
    """Values repaired to be storable, by column (`pipeline.formats.sanitize`)."""
    identities: list[Identity] = field(default_factory=list)
    """Of each invocation and span in the rows, when deduplication is on (`transform.dedup`)."""
    duplicates: set[tuple[int, int, int]] = field(default_factory=set)
    """(offset, kind, item) of the invocations and spans the flush found stored already: left
    out when the part is built again (`Transformer.rebuild`)."""
    completing: list[tuple[bytes, datetime]] = field(default_factory=list)
    """(trace id, time) of each OTLP invocation stored without its outcome or times, and of
    each root span: where the flush looks for the pairs that complete an invocation
    (`pipeline.postgres.completion`). Empty unless the part holds OTLP data."""
    stream: dict[str, Pending] = field(default_factory=dict)
    """The streamed invocations its events belong to, by invocation id, until the flush
    settles them against their stored state (`pipeline.transform.stream`)."""
    stream_logs: list[Row] = field(default_factory=list)
    """Their lines, as `settle` made them: `tail_logs` rows with their invocation id."""
    settled_as: Settled | None = None
    """What the flush's `stream.settle` made of `stream`: None until it ran."""
    stream_dropped: int = 0
    """Events the runtime said it dropped, of the invocations this part completed."""
    messages: int = 0
    bytes: int = 0

    def rows(self) -> int:
        return (
            len(self.events) + len(self.logs) + len(self.spans) + len(self.dead)
            + len(self.stream_logs)
        )  # fmt: skip


@dataclass(slots=True)
class Batch:
    parts: dict[TopicPartition, Part] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    rows: int = 0
    bytes: int = 0
    messages: int = 0
    oldest_event_ms: int | None = None

    def part(self, topic: str, partition: int, offset: int) -> Part:
        key = (topic, partition)
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = Part(offset, offset)
        return part

    def drop(self, lost: set[TopicPartition]) -> int:
        """Forget the rows of partitions this consumer no longer owns; returns messages lost."""
        dropped = 0
        for key in lost & self.parts.keys():
            part = self.parts.pop(key)
            dropped += part.messages
            self.messages -= part.messages
            self.bytes -= part.bytes
            self.rows -= part.rows()
        return dropped

    @property
    def redactions(self) -> Counter[str]:
        """Secrets replaced, by rule, in the rows of the partitions still in the batch."""
        return sum((p.redactions for p in self.parts.values()), Counter())

    @property
    def decode_failures(self) -> Counter[str]:
        return sum((p.decode_failures for p in self.parts.values()), Counter())

    @property
    def sanitized(self) -> Counter[str]:
        return sum((p.sanitized for p in self.parts.values()), Counter())

    def age(self) -> float:
        return time.monotonic() - self.created

    def __len__(self) -> int:
        return self.messages
