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
  every event has come (its onset, its outcome and each `sequence` before the outcome's, less
  those the runtime said it dropped) becomes its `tail_events` row and is counted in the
  rollups, and what stays open becomes the new state. Posts come in any order: the row waits
  until it can be made whole, once. `close` ends one that had no event for the timeout, as
  `unknown` unless its outcome had come.

The state is the invocation so far, in JSON: its onset (redacted), return status, outcome and
times, counts of events, lines, exceptions and dropped events, lines by level until the onset
names their trigger, its `attributes` events and its spans (at most `MAX_HELD` each), stored
with it when it is whole. An invocation closed at its timeout keeps a tombstone (`closed`), so
that an event arriving after adds its lines but never a second row.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson

from pipeline.formats.invocation import JSON, UNNAMED, Invocation, Span
from pipeline.transform.batch import Part
from pipeline.transform.pending import Pending, Settled, State
from pipeline.transform.rollup import HOUR_MS, HourlyMetrics, Rollups, count_invocation
from pipeline.transform.spans import add_spans

MAX_HELD = 1_000
"""Spans, span ends and `attributes` events held per invocation until it is whole; past it
the rest are not kept (an invocation of a thousand spans is told by its first thousand)."""
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
        outcome = state.get("outcome")
        closed = bool(state.get("closed"))
        # Every event numbered up to the outcome's has come (or was dropped by the runtime,
        # which says how many): none can follow but a retry, which deduplication leaves out.
        # Posts arrive in any order, so until then the row waits, to be made whole, once.
        whole = state.get("final") is not None and state["seen"] + state["dropped"] > state["final"]
        done = not closed and onset is not None and outcome is not None and whole
        shown = outcome[0] if (done or closed) and outcome else UNREPORTED
        context_ts = _ts(state["ts_ms"])
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
        _levels(part.rollups, state, pend, onset is not None or closed)
        if done:
            _row(part, state, (topic, partition, *pend.last), pend.invocation_id)
            out.completed += 1
            out.states[pend.invocation_id] = None
        else:
            out.states[pend.invocation_id] = None if closed and whole else state
    return out


def _levels(rollups: Rollups, state: State, pend: Pending | None, known: bool) -> None:
    """Lines are counted by level under their invocation's hour and trigger: held in the
    state until its onset says which (a line may come first)."""
    levels = Counter(state.pop("levels", None) or {})
    if pend is not None:
        levels.update(pend.levels)
    if not levels:
        return
    if not known:
        state["levels"] = dict(levels)
        return
    onset = state.get("onset") or {}
    hour = _hour(rollups, state["ts_ms"], state["script"], onset.get("event_type", "unknown"))
    hour.levels.update(levels)


def merged(old: State | None, pend: Pending, topic: str, partition: int) -> State:
    """The stored state with what this batch learned added (a new one if none was stored)."""
    state: State = (
        dict(old)
        if old is not None
        else {"script": pend.script, "ts_ms": pend.first[2], "origin": [topic, partition,
              pend.first[0], pend.first[1]], "logs": 0, "exceptions": 0, "dropped": 0,
              "truncated": False, "attributes": [], "spans": {}, "ends": {}}
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
    state["seen"] = state.get("seen", 0) + pend.seen
    if pend.final is not None:
        state["final"] = pend.final
    state["logs"] += pend.logs
    state["exceptions"] += pend.exceptions
    state["dropped"] += pend.dropped
    state["truncated"] = state["truncated"] or pend.truncated
    if pend.attributes:
        state["attributes"] = [*state["attributes"], *pend.attributes][:MAX_HELD]
    for key, found in (("spans", pend.opened), ("ends", pend.ends)):
        if found:
            held = {**state[key], **found}
            state[key] = held if len(held) <= MAX_HELD else dict(list(held.items())[:MAX_HELD])
    return state


def close(state: State, now_ms: int, part: Part, invocation_id: str) -> State:
    """An invocation that had no event for the timeout: its row and its spans' rows into
    `part` (origin: its first event's message), counted in its rollups with its lines, outcome
    `unknown` unless its outcome came. Its tombstone is returned."""
    if state.get("outcome") is None:
        state = {**state, "outcome": ["unknown", None, None]}
    tomb: State = {**state, "closed": now_ms}
    _levels(part.rollups, tomb, None, True)
    at, partition, offset, item = tomb["origin"]
    _row(part, tomb, (at, partition, offset, item), invocation_id)
    return tomb


def _finish(state: State, invocation_id: str) -> tuple[dict[str, JSON], list[tuple[Span, int]]]:
    """A whole invocation's attributes, and its closed spans with their spanClose's sequence:
    each `attributes` event goes to the span it was told in, else to the invocation, in the
    order the runtime numbered them."""
    spans = {k: [*v[:3], dict(v[3])] for k, v in state["spans"].items()}
    own: dict[str, JSON] = {}
    for _, span_id, attributes in sorted(state["attributes"], key=lambda a: a[0]):
        target = spans[span_id][3] if span_id in spans else own
        target.update(attributes)
    onset = state.get("onset") or {}
    trace = onset.get("trace_id")
    found: list[tuple[Span, int]] = []
    if trace is None:
        return own, found
    for span_id, (end_us, outcome, sequence) in state["ends"].items():
        opened = spans.get(span_id)
        if opened is None:
            continue  # its open was dropped by the runtime
        name, parent, start_us, attributes = opened
        span = Span(
            trace, span_id, parent, name or "unknown", 0, start_us, max(0, end_us - start_us),
            1 if outcome == "ok" else 2, None if outcome == "ok" else outcome, state["script"],
            invocation_id, attributes, {}, [], [],
        )  # fmt: skip
        found.append((span, sequence))
    return own, found


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


def _row(part: Part, state: State, origin: tuple[str, int, int, int], inv_id: str) -> None:
    """The whole invocation's `tail_events` row (`transformer.EVENT_COLUMNS`) and its spans'
    rows, counted in the rollups. Every row has the origin of the event that made it whole (in
    this batch, so that a row PostgreSQL refuses names a message of the batch), a span the
    sequence of its close."""
    inv = invocation_of(state)
    attributes, spans = _finish(state, inv_id)
    onset = state.get("onset") or {}
    extra: dict[str, JSON] = {**(onset.get("extra") or {}), "invocationId": inv_id}
    if attributes:
        extra["attributes"] = attributes
    if state["dropped"]:
        extra["droppedEvents"] = state["dropped"]
    part.events.append((
        _ts(inv.timestamp_ms or 0), inv.script or UNNAMED, inv.event_type, inv.outcome,
        inv.method, inv.url, inv.status, inv.cpu_ms, inv.wall_ms, state["logs"],
        state["exceptions"], inv.truncated, inv.script_version, inv.entrypoint,
        inv.dispatch_namespace, list(inv.script_tags) or None, "stream",
        orjson.dumps(extra).decode(), *origin,
        bytes.fromhex(inv.trace_id) if inv.trace_id else None,
        bytes.fromhex(inv.span_id) if inv.span_id else None,
    ))  # fmt: skip
    if spans:
        topic, partition, offset, _ = origin
        add_spans(part, [span for span, _ in spans], (topic, partition, offset), part.redactions,
                  items=[sequence for _, sequence in spans])  # fmt: skip
    count_invocation(part.rollups, inv, state["ts_ms"], state["script"])
    part.stream_dropped += state["dropped"]


def _hour(rollups: Rollups, ts_ms: int, script: str, event_type: str) -> HourlyMetrics:
    key = (ts_ms - ts_ms % HOUR_MS, script, event_type)
    hour = rollups.hourly.get(key)
    if hour is None:
        hour = rollups.hourly[key] = HourlyMetrics()
    return hour


def _ts(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)
