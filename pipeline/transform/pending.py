"""What one batch learned of each streamed invocation, before the flush settles it. Pure.

`Transformer.add` files each streaming tail event under its invocation's `Pending` in the
part (lines and exceptions it turns into rows itself); `pipeline.transform.stream.settle` puts
the `Pending`s together with the state stored before. Apart from `stream` so that the batch,
which holds them, does not import the settling.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.formats.invocation import JSON, Invocation
from pipeline.formats.tail_stream import StreamEvent
from pipeline.transform.redact.engine import redact_json, redact_json_text, redact_text

Row = tuple[Any, ...]
State = dict[str, Any]
"""One open invocation as stored (`stream_invocations.state`; `pipeline.transform.stream`)."""


@dataclass(slots=True)
class Pending:
    """What one batch learned of one streamed invocation."""

    invocation_id: str
    script: str
    first: tuple[int, int, int]
    """(offset, item, ts ms) of its first event in the batch: the origin of a new state."""
    last: tuple[int, int] = (0, 0)
    """(offset, item) of its latest event in the batch: the origin of its `tail_events` row
    if the batch completes it."""
    onset: dict[str, JSON] | None = None
    status: int | None = None
    outcome: tuple[str, int | None, int | None] | None = None
    lines: list[Row] = field(default_factory=list)
    """Log rows without their invocation's context: (ts, level, message, data, kind,
    exception_name, stack, fingerprint, topic, partition, offset, item, seq, trace id, span
    id)."""
    levels: Counter[str] = field(default_factory=Counter)
    logs: int = 0
    exceptions: int = 0
    dropped: int = 0
    truncated: bool = False
    attributes: list[list[JSON]] = field(default_factory=list)
    """[sequence, span id, attributes] of each `attributes` event: which span they belong to
    is known when every event has come (`stream.settle`)."""
    opened: dict[str, list[JSON]] = field(default_factory=dict)
    """span id -> [name, parent span id, start µs, attributes] of each spanOpen."""
    ends: dict[str, list[JSON]] = field(default_factory=dict)
    """span id -> [end µs, outcome, sequence] of each spanClose."""
    seen: int = 0
    """Its events in the batch: with the outcome's `sequence`, whether all have come."""
    final: int | None = None
    """The outcome's `sequence`: the runtime numbers an invocation's events from 0."""

    def add(self, ev: StreamEvent, offset: int, item: int, counts: Counter[str]) -> None:
        kind = ev.type
        if kind == "onset" and ev.onset is not None:
            self.onset = onset_state(ev.onset, counts)
        elif kind == "outcome" and ev.outcome is not None:
            self.outcome = (ev.outcome, ev.cpu_ms, ev.wall_ms)
            self.final = ev.sequence
        elif kind == "return":
            self.status = ev.status
        elif kind == "spanOpen" and ev.opened is not None:
            # Redacted as they come, like the lines: they wait in the stored state.
            name = redact_text(ev.name, counts) if ev.name else ev.name
            attributes = redact_json(ev.attributes, counts) if ev.attributes else {}
            self.opened[ev.opened] = [name, ev.span_id, ev.timestamp_ms * 1000, attributes]
        elif kind == "spanClose" and ev.span_id is not None:
            self.ends[ev.span_id] = [ev.timestamp_ms * 1000, ev.outcome or "unknown", ev.sequence]
        elif kind == "attributes" and ev.attributes:
            redacted = redact_json(ev.attributes, counts)
            self.attributes.append([ev.sequence, ev.span_id, redacted])
        elif kind == "streamDiagnostic":
            self.dropped += ev.dropped
        self.truncated = self.truncated or ev.truncated


def onset_state(onset: Invocation, counts: Counter[str]) -> dict[str, JSON]:
    """What the onset says of its invocation, redacted as an invocation's row would be."""
    extra = redact_json_text(onset.extra, counts)
    return {
        "event_type": onset.event_type, "ts_ms": onset.timestamp_ms, "script": onset.script,
        "method": onset.method, "url": redact_text(onset.url, counts) if onset.url else None,
        "script_version": onset.script_version, "entrypoint": onset.entrypoint,
        "dispatch_namespace": onset.dispatch_namespace,
        "script_tags": list(onset.script_tags) or None,
        "extra": orjson.loads(extra) if extra else {},
        "trace_id": onset.trace_id, "span_id": onset.span_id,
    }  # fmt: skip


@dataclass(slots=True)
class Settled:
    """What `settle` made of one part's invocations: the states to store (None: delete), and
    how many it completed."""

    states: dict[str, State | None] = field(default_factory=dict)
    completed: int = 0
