"""Streamed invocations put together, without PostgreSQL: however the real runtime's events are
split into messages and batches, and in whatever order the messages come, each invocation ends
as the same row, its lines and spans the same, and the rollups the same."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.sanitize import loads
from pipeline.transform.batch import Batch, Part
from pipeline.transform.extract import Extractor
from pipeline.transform.pending import State
from pipeline.transform.rollup import Rollups
from pipeline.transform.stream import MAX_HELD, close, settle
from pipeline.transform.transformer import Transformer

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tail_stream" / "workerd-2026-11-23.jsonl"
EVENTS = [loads(line)[0] for line in FIXTURE.read_text().splitlines()]
TRANSFORMER = Transformer(Extractor.from_files())


def posts(size: int, seed: int) -> list[bytes]:
    """The events in posts of up to `size` events of one invocation, in a shuffled order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in EVENTS:
        groups.setdefault(e["invocationId"], []).append(e)
    out = []
    for group in groups.values():
        for start in range(0, len(group), size):
            doc = {"tailStream": group[start : start + size], "script": "producer"}
            out.append(json.dumps(doc, ensure_ascii=True).encode())
    random.Random(seed).shuffle(out)
    return out


def run(messages: list[bytes], per_batch: int) -> tuple[list[Any], list[Any], list[Any], Any]:
    """Every message through `Transformer.add` and `settle`, `per_batch` messages a batch, the
    state carried from batch to batch as the flush stores it: the event rows (without their
    origin), the line rows and span rows (without theirs), and the hourly rollups."""
    states: dict[str, State] = {}
    events, lines, spans = [], [], []
    rollups = []
    for start in range(0, len(messages), per_batch):
        batch = Batch()
        for offset, value in enumerate(messages[start : start + per_batch], start=start):
            TRANSFORMER.add(batch, "t", 0, offset, 0, None, value)
        for (topic, partition), part in batch.parts.items():
            assert not part.dead
            settled = settle(part, topic, partition, states)
            for invocation_id, state in settled.states.items():
                if state is None:
                    states.pop(invocation_id, None)
                else:
                    states[invocation_id] = state
            events += [row[:18] + row[22:] for row in part.events]
            # What a line says of itself: not its origin, nor what it told of its invocation
            # (trigger, outcome, time), which depends on what had come before it.
            lines += [row[:2] + row[4:11] + row[15:18] + row[19:] for row in part.stream_logs]
            spans += [row[:15] for row in part.spans]
            rollups.append(part.rollups)
    assert states == {}
    hourly = {
        k: (v.requests, v.errors, dict(+v.outcomes), dict(+v.levels), v.wall_sum)
        for k, v in Rollups.combine(rollups).hourly.items()
    }
    return sorted(events, key=repr), sorted(lines, key=repr), sorted(spans, key=repr), hourly


WHOLE = run(posts(10_000, 0), 10_000)


def test_the_fixture_makes_one_row_per_invocation() -> None:
    events, lines, spans, _ = WHOLE
    assert len(events) == len({e["invocationId"] for e in EVENTS})
    assert len(lines) == sum(
        e["event"]["type"] in ("log", "exception", "diagnosticChannel") for e in EVENTS
    )
    assert len(spans) == sum(e["event"]["type"] == "spanClose" for e in EVENTS)
    assert Counter(row[16] for row in events) == {"stream": len(events)}


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 12), per_batch=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_any_split_and_order_gives_the_same_rows(size: int, per_batch: int, seed: int) -> None:
    events, lines, spans, hourly = run(posts(size, seed), per_batch)
    assert events == WHOLE[0]
    assert spans == WHOLE[2]
    assert hourly == WHOLE[3]
    assert lines == WHOLE[1]


def test_an_invocation_closed_at_its_timeout_keeps_what_it_knew() -> None:
    onset = next(e for e in EVENTS if e["event"]["type"] == "onset")
    batch = Batch()
    TRANSFORMER.add(batch, "t", 0, 0, 0, None, json.dumps({"tailStream": [onset]}).encode())
    part = batch.parts[("t", 0)]
    settled = settle(part, "t", 0, {})
    state = settled.states[onset["invocationId"]]
    assert state is not None
    assert part.events == []
    closed = Part(0, 0)
    tomb = close(state, 1, closed, onset["invocationId"])
    assert (tomb["outcome"][0], tomb["closed"]) == ("unknown", 1)
    assert [(k[2], v.requests, dict(v.outcomes)) for k, v in closed.rollups.hourly.items()] == [
        ("fetch", 1, {"unknown": 1})
    ]
    assert [(row[2], row[3], row[18:21]) for row in closed.events] == [
        ("fetch", "unknown", ("t", 0, 0))
    ]
    # A late event after the close adds its line, no row.
    line = {**onset, "sequence": 1, "event": {"type": "log", "level": "log", "message": ["x"]}}
    late = Batch()
    TRANSFORMER.add(late, "t", 0, 1, 0, None, json.dumps({"tailStream": [line]}).encode())
    again = settle(late.parts[("t", 0)], "t", 0, {onset["invocationId"]: tomb})
    assert late.parts[("t", 0)].events == []
    assert len(late.parts[("t", 0)].stream_logs) == 1
    kept = again.states[onset["invocationId"]]
    assert kept is not None
    assert kept["closed"] == 1


def test_what_an_invocation_holds_is_bounded() -> None:
    """An invocation of 1,500 spans, told over three batches: its state never holds more than
    `MAX_HELD` spans, and it is stored with the first `MAX_HELD`."""
    trace, root = "1" * 32, "2" * 16

    def envelope(seq: int, event: dict[str, Any], span: str = root) -> dict[str, Any]:
        return {"invocationId": "big", "spanContext": {"traceId": trace, "spanId": span},
                "timestamp": 1_764_930_036_440 + seq, "sequence": seq, "event": event}  # fmt: skip

    events = [envelope(0, {"type": "onset", "spanId": root, "info": {"type": "fetch"}})]
    for n in range(1500):
        span = f"{n + 1:016x}"
        events.append(envelope(len(events), {"type": "spanOpen", "name": "kv_get", "spanId": span}))
        events.append(envelope(len(events), {"type": "spanClose", "outcome": "ok"}, span))
    events.append(envelope(len(events), {"type": "outcome", "outcome": "ok"}))
    states: dict[str, State] = {}
    spans = 0
    for start in range(0, len(events), 1001):
        batch = Batch()
        body = {"tailStream": events[start : start + 1001], "script": "s"}
        TRANSFORMER.add(batch, "t", 0, start, 0, None, json.dumps(body).encode())
        part = batch.parts[("t", 0)]
        settled = settle(part, "t", 0, states)
        spans += len(part.spans)
        state = settled.states["big"]
        if state is not None:
            assert len(state["spans"]) <= MAX_HELD
            assert len(state["ends"]) <= MAX_HELD
            states["big"] = state
        else:
            assert len(part.events) == 1
    assert spans == MAX_HELD


def test_attributes_and_span_names_are_redacted_before_anything_is_kept() -> None:
    """An `attributes` event and a span carry what a Worker put in them: redacted as they
    arrive, so neither the state stored while the invocation is open nor its rows hold a
    secret."""
    trace, root, child = "3" * 32, "4" * 16, "5" * 16
    secret = "Bearer abcdefghijklmnop"

    def envelope(seq: int, event: dict[str, Any], span: str = root) -> dict[str, Any]:
        return {"invocationId": "leaky", "spanContext": {"traceId": trace, "spanId": span},
                "timestamp": 1_764_930_036_440 + seq, "sequence": seq, "event": event}  # fmt: skip

    first = [
        envelope(0, {"type": "onset", "spanId": root, "info": {"type": "fetch"}}),
        envelope(1, {"type": "attributes", "info": [{"name": "authorization", "value": secret}]}),
        envelope(2, {"type": "spanOpen", "name": "GET /cb?token=abcdef1234567890abcd",
                     "spanId": child, "info": {"type": "attributes",
                                               "info": [{"name": "cookie", "value": secret}]}}),
        envelope(3, {"type": "attributes", "info": [{"name": "authorization", "value": secret}]},
                 child),
    ]  # fmt: skip
    rest = [envelope(4, {"type": "spanClose", "outcome": "ok"}, child),
            envelope(5, {"type": "outcome", "outcome": "ok"})]  # fmt: skip
    batch = Batch()
    TRANSFORMER.add(batch, "t", 0, 0, 0, None, json.dumps({"tailStream": first}).encode())
    part = batch.parts[("t", 0)]
    held = settle(part, "t", 0, {}).states["leaky"]
    assert held is not None
    kept = json.dumps(held)
    assert "abcdefghijklmnop" not in kept
    assert "abcdef1234567890abcd" not in kept
    assert part.redactions
    later = Batch()
    TRANSFORMER.add(later, "t", 0, 1, 0, None, json.dumps({"tailStream": rest}).encode())
    part = later.parts[("t", 0)]
    settle(part, "t", 0, {"leaky": held})
    (row,) = part.events
    (span,) = part.spans
    for stored in (repr(row), repr(span)):
        assert "abcdefghijklmnop" not in stored
        assert "abcdef1234567890abcd" not in stored
