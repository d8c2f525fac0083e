"""Streamed invocations put together: a batch's events, the state left open, rows. Pure.

A streaming Tail Worker tells an invocation in many messages, and a long Durable Object or
WebSocket session can stay open for hours. So the two halves of the work are apart:

- **As events arrive** (`Transformer.add` -> `Pending.add`): each event joins its invocation's
  `Pending` in the part; a line's text is redacted, error lines are checked, extractors and error
  groups count it. Nothing here knows the rest of the invocation.
- **At the flush** (`settle`), given the state the earlier flushes left open (`State`, a JSON
  object per invocation in `stream_invocations`, read in the flush's transaction): the lines
  become `tail_logs` rows with what is known of their invocation (its trigger, and an outcome
  of `unreported` until it comes), closed spans become `tail_spans` rows, an invocation whose
  onset and outcome are both known becomes its `tail_events` row and is counted in the
  rollups, and what stays open becomes the new state. `close` ends one whose outcome never
  came, as `unknown`.

The state is the invocation so far, in JSON: its onset (redacted), return status, outcome and
times if they came before the onset, counts of lines, exceptions and dropped events,
attributes, and its spans still open (at most `MAX_OPEN_SPANS`). A closed invocation keeps a
tombstone (`closed`) so that an event arriving after its timeout adds its lines but never a
second row.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson

from pipeline.formats.invocation import JSON, UNNAMED, Invocation, Span
from pipeline.transform.batch import Part
from pipeline.transform.pending import Pending, Row, Settled, State
from pipeline.transform.rollup import HOUR_MS, HourlyMetrics, Rollups, count_invocation
from pipeline.transform.spans import add_spans

MAX_OPEN_SPANS = 256
"""Spans kept open per invocation; past it a span's open is dropped and counted as dropped."""
UNREPORTED = "unreported"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def settle(part: Part, topic: str, partition: int, states: dict[str, State]) -> Settled:
    """The part's pending invocations against the stored `states`: rows and rollups into the
    part, and what to store back."""
    out = Settled()
    for pend in part.stream.values():
        state = merged(states.get(pend.invocation_id), pend, topic, partition)
        onset = state.get("onset")
        event_type = onset["event_type"] if onset else "unknown"
        ts_ms = state["ts_ms"]
        context_ts = _ts(ts_ms)
        outcome = state.get("outcome")
        done = not state.get("closed") and onset is not None and outcome is not None
        shown = outcome[0] if done and outcome else UNREPORTED
        for line in pend.lines:
            part.stream_logs.append(
                (
                    line[0],
                    state["script"],
                    event_type,
                    shown,
                    *line[1:],
                    context_ts,
                    pend.invocation_id,
                )
            )
        hour = _hour(part.rollups, ts_ms, state["script"], event_type)
        hour.levels.update(pend.levels)
        _spans(part, state, pend, topic, partition, out)
        if done:
            out.states[pend.invocation_id] = None
            _row(part, state, (topic, partition, *pend.last), pend.invocation_id)
            out.completed += 1
        else:
            out.states[pend.invocation_id] = state
    return out


def merged(old: State | None, pend: Pending, topic: str, partition: int) -> State:
    """The stored state with what this batch learned added (a new one if none was stored)."""
    state: State = (
        dict(old)
        if old is not None
        else {"script": pend.script, "ts_ms": pend.first[2], "origin": [topic, partition,
              pend.first[0], pend.first[1]], "logs": 0, "exceptions": 0, "dropped": 0,
              "truncated": False, "attributes": {}, "spans": {}}
    )  # fmt: skip
    if pend.onset is not None and state.get("onset") is None:
        state["onset"] = pend.onset
        state["ts_ms"] = pend.onset["ts_ms"] or state["ts_ms"]
        if pend.onset["script"]:
            state["script"] = pend.onset["script"]
    if pend.outcome is not None and state.get("outcome") is None:
        state["outcome"] = list(pend.outcome)
    if pend.status is not None:
        state["status"] = pend.status
    state["logs"] += pend.logs
    state["exceptions"] += pend.exceptions
    state["dropped"] += pend.dropped
    state["truncated"] = state["truncated"] or pend.truncated
    if pend.attributes:
        state["attributes"] = {**state["attributes"], **pend.attributes}
    return state


def close(state: State, now_ms: int) -> tuple[State, Invocation]:
    """An invocation whose outcome did not come in time: its row's state (outcome `unknown`
    unless one came before its onset) and what the rollups count. The returned state is its
    tombstone."""
    if state.get("outcome") is None:
        state = {**state, "outcome": ["unknown", None, None]}
    return {**state, "closed": now_ms}, invocation_of(state)


def _spans(
    part: Part, state: State, pend: Pending, topic: str, partition: int, out: Settled
) -> None:
    spans: dict[str, list[JSON]] = dict(state["spans"])
    spans.update(pend.opened)
    onset = state.get("onset") or {}
    trace = onset.get("trace_id")
    found: list[Span] = []
    items: list[tuple[int, int]] = []
    for span_id, end_us, outcome, offset, item in pend.closed:
        opened = spans.pop(span_id, None)
        if opened is None or trace is None:
            continue  # its open was dropped, or came to no trace
        name, parent, start_us, attributes = opened
        span = Span(
            trace, span_id, parent, name or "unknown", 0, start_us, max(0, end_us - start_us),
            1 if outcome == "ok" else 2, None if outcome == "ok" else outcome, state["script"],
            None, attributes, {}, [], [],
        )  # fmt: skip
        found.append(span)
        items.append((offset, item))
    if found:
        for span, (offset, item) in zip(found, items, strict=True):
            add_spans(part, [span], (topic, partition, offset), Counter(), items=[item])
    if len(spans) > MAX_OPEN_SPANS:
        out.dropped_spans += len(spans) - MAX_OPEN_SPANS
        spans = dict(list(spans.items())[-MAX_OPEN_SPANS:])
    state["spans"] = spans


def invocation_of(state: State) -> Invocation:
    onset = state.get("onset") or {}
    outcome, cpu, wall = state.get("outcome") or ("unknown", None, None)
    return Invocation(
        state["script"], onset.get("event_type", "unknown"), state["ts_ms"], outcome,
        onset.get("method"), onset.get("url"), state.get("status"), cpu, wall,
        truncated=state["truncated"], script_version=onset.get("script_version"),
        entrypoint=onset.get("entrypoint"), dispatch_namespace=onset.get("dispatch_namespace"),
        script_tags=tuple(onset.get("script_tags") or ()), source="stream",
        trace_id=onset.get("trace_id"), span_id=onset.get("span_id"),
    )  # fmt: skip


def event_row(state: State, origin: tuple[str, int, int, int], invocation_id: str) -> Row:
    """The invocation's `tail_events` row (`transformer.EVENT_COLUMNS`)."""
    inv = invocation_of(state)
    onset = state.get("onset") or {}
    extra: dict[str, JSON] = {**(onset.get("extra") or {}), "invocationId": invocation_id}
    if state["attributes"]:
        extra["attributes"] = state["attributes"]
    if state["dropped"]:
        extra["droppedEvents"] = state["dropped"]
    return (
        _ts(inv.timestamp_ms or 0), inv.script or UNNAMED, inv.event_type, inv.outcome,
        inv.method, inv.url, inv.status, inv.cpu_ms, inv.wall_ms, state["logs"],
        state["exceptions"], inv.truncated, inv.script_version, inv.entrypoint,
        inv.dispatch_namespace, list(inv.script_tags) or None, "stream",
        orjson.dumps(extra).decode(), *origin,
        bytes.fromhex(inv.trace_id) if inv.trace_id else None,
        bytes.fromhex(inv.span_id) if inv.span_id else None,
    )  # fmt: skip


def _row(part: Part, state: State, origin: tuple[str, int, int, int], inv_id: str) -> None:
    part.events.append(event_row(state, origin, inv_id))
    count_invocation(part.rollups, invocation_of(state), state["ts_ms"], state["script"])
    part.stream_dropped += state["dropped"]


def _hour(rollups: Rollups, ts_ms: int, script: str, event_type: str) -> HourlyMetrics:
    key = (ts_ms - ts_ms % HOUR_MS, script, event_type)
    hour = rollups.hourly.get(key)
    if hour is None:
        hour = rollups.hourly[key] = HourlyMetrics()
    return hour


def _ts(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)
