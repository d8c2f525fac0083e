"""Streaming tail events (a streaming Tail Worker's `tailStream`) -> `StreamEvent`s.

The runtime tells one invocation as a stream of envelopes, `{invocationId, spanContext
{traceId, spanId?}, timestamp, sequence, event}`: an `onset` first (what ran: trigger, script,
version), then `log`, `exception`, `spanOpen`/`spanClose`, `attributes`, `diagnosticChannel`,
`return` (the handler returned; a WebSocket may go on for hours) and `streamDiagnostic` (events
the runtime dropped), and an `outcome` last. `tailpipe collect` publishes the envelopes of one
invocation, in the order posted, as `{"tailStream": [...], "script": <the forwarder's name for
the producer, or null>}` keyed by the invocation id; a producer writing to Kafka itself may
send bare envelopes too.

Each envelope decodes alone: an invocation's events arrive in many messages, out of order and
more than once, so it is the flush that puts them together (`pipeline.transform.stream`). What
the current runtime really sends (`tests/fixtures/tail_stream/`, and the reference's B7) shapes
the choices:

- the script: the onset's `scriptName`, else the message's `script` (locally the runtime names
  none, and only the onset could);
- `timestamp`: an ISO string once a Worker serialises the Date; epoch milliseconds too;
- a fetch onset's headers are a list of `{name, value}`: made an object, as in trace items, so
  the same redaction sees `authorization` and `cookie` (nothing is redacted by the runtime);
- `log.message`: the console arguments, rendered like a trace item's; a raw string with
  `truncated: true` is a line the runtime cut (and so not JSON): stored as it came, flagged;
- older shapes still decode: `traceId` on the envelope, `spanOpen.op`, the singular `attribute`
  mark; `link`, `hibernate` and types this decoder does not know are `other` and store nothing.

Pure; the only exception is `DecodeError`, naming the envelope's field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipeline.errors import DecodeError
from pipeline.formats.console import render
from pipeline.formats.entries import exception, log_level, log_line
from pipeline.formats.fields import (
    MAX_MS,
    MIN_MS,
    at,
    expected,
    key_name,
    opt_str,
    status,
    str_list,
)
from pipeline.formats.invocation import JSON, ExceptionInfo, Invocation, LogLine
from pipeline.formats.sanitize import storable_json
from pipeline.formats.trace_context import span_ids

KEY = "tailStream"
MAX_INVOCATION_ID = 128
MAX_SEQUENCE = 2**31 - 1
EVENT_TYPES = (
    "onset", "outcome", "spanOpen", "spanClose", "log", "exception", "diagnosticChannel",
    "return", "attributes", "streamDiagnostic", "other",
)  # fmt: skip
TRIGGERS = {
    "fetch": "fetch", "jsrpc": "rpc", "scheduled": "scheduled", "alarm": "alarm",
    "queue": "queue", "email": "email", "trace": "tail", "hibernatableWebSocket": "websocket",
    "connect": "connect", "custom": "connect",
}  # fmt: skip
"""The onset's `info.type` -> the event type stored (`invocation.EVENT_TYPES`); others `unknown`."""
_LINES = ("log", "exception", "diagnosticChannel")
_ONSET_TYPED = frozenset(
    ("type", "info", "spanId", "scriptName", "scriptVersion", "scriptTags", "entrypoint",
     "dispatchNamespace")
)  # fmt: skip


@dataclass(slots=True)
class StreamEvent:
    """One envelope: which invocation, where in it, and what it says. Only the fields of its
    `type` are set."""

    invocation_id: str
    sequence: int
    timestamp_ms: int
    type: str
    """One of `EVENT_TYPES`."""
    script: str | None
    trace_id: str | None
    span_id: str | None
    """`spanContext.spanId`: the parent of an onset's or spanOpen's span, the span a spanClose
    closes, the span a log was written in."""
    onset: Invocation | None = None
    """What ran (`outcome` "unreported" until its outcome comes); `span_id` the span it opens."""
    line: LogLine | None = None
    """A `log`, or a `diagnosticChannel` message (kind `diagnostic_channel`)."""
    error: ExceptionInfo | None = None
    status: int | None = None
    """`return`: the response status, when the handler was a fetch."""
    outcome: str | None = None
    """`outcome` and `spanClose`."""
    cpu_ms: int | None = None
    wall_ms: int | None = None
    name: str | None = None
    """`spanOpen`: the operation."""
    opened: str | None = None
    """`spanOpen`: the id of the span it opens."""
    attributes: dict[str, JSON] | None = None
    dropped: int = 0
    """`streamDiagnostic`: how many events the runtime dropped for this consumer."""
    truncated: bool = False
    """A `log` the runtime cut at its size limit."""
    sanitized: tuple[str, ...] = ()


def events(obj: dict[str, JSON], prefix: str, repair: bool = True) -> list[StreamEvent]:
    """The events of one `{"tailStream": [...], "script": ...}` message."""
    script = key_name(obj.get("script"), prefix, "script")
    found = obj[KEY]
    if type(found) is not list:
        expected(prefix, KEY, "an array of streaming tail events", found)
    return [envelope(e, f"{prefix}{KEY}[{i}].", script, repair) for i, e in enumerate(found)]


def envelope(obj: JSON, prefix: str, script: str | None = None, repair: bool = True) -> StreamEvent:
    """One envelope; `script` is the producer's name when the sender knew it. `repair`: its
    text may hold what PostgreSQL cannot (`sanitize.suspect`)."""
    if type(obj) is not dict:
        expected(prefix, "", "a streaming tail event (an object)", obj)
    # U+0000 and lone surrogates, repaired and counted below; only a suspect message is walked.
    cleaned = storable_json(obj) if repair else obj
    get = cleaned.get
    invocation_id = get("invocationId")
    if type(invocation_id) is not str or not 0 < len(invocation_id) <= MAX_INVOCATION_ID:
        expected(prefix, "invocationId", f"a string of 1..{MAX_INVOCATION_ID} characters",
                 invocation_id)  # fmt: skip
    sequence = get("sequence")
    if type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
        expected(prefix, "sequence", f"an integer 0..{MAX_SEQUENCE}", sequence)
    ts = _timestamp(get("timestamp"), prefix)
    context = get("spanContext")
    if context is None and "traceId" in cleaned:  # the older shape
        context = {"traceId": get("traceId")}
    trace_id, span_id, _, _ = span_ids(context) if context is not None else (None, None, None, ())
    event = get("event")
    if type(event) is not dict:
        expected(prefix, "event", "an object", event)
    kind = event.get("type")
    if type(kind) is not str:
        expected(prefix, "event.type", "a string", kind)
    out = StreamEvent(invocation_id, sequence, ts, "other", script, trace_id, span_id)
    _fill(out, kind, event, prefix + "event.")
    if cleaned is not obj:
        out.sanitized = ("message",) if out.type in _LINES else ("extra",)
    return out


def _fill(out: StreamEvent, kind: str, event: dict[str, JSON], prefix: str) -> None:
    get = event.get
    ts = out.timestamp_ms
    if kind == "log":
        out.type = "log"
        message = get("message")
        if get("truncated") is True and type(message) is str:
            out.truncated = True
            out.line = LogLine(ts, log_level(get("level"), prefix), message, {"truncated": True})
            return
        # The time is the envelope's: an event's own `timestamp` (none today) is not read.
        entry = event if "timestamp" not in event else {k: v for k, v in event.items()
                                                        if k != "timestamp"}  # fmt: skip
        line = log_line(entry, prefix)
        line.timestamp_ms = ts
        out.line = line
    elif kind == "exception":
        out.type = "exception"
        name, message = get("name"), get("message")
        out.error = exception(
            ts,
            name if type(name) is str else "Error",
            message if type(message) is str else render(message)[0],
            opt_str(get("stack"), prefix, "stack"),
        )
    elif kind == "diagnosticChannel":
        out.type = "diagnosticChannel"
        channel = opt_str(get("channel"), prefix, "channel") or ""
        data = {"channel": channel, "message": get("message")}
        out.line = LogLine(ts, "debug", channel, data, "diagnostic_channel")
    elif kind == "onset":
        out.type = "onset"
        out.onset = _onset(out, event, prefix)
    elif kind == "outcome":
        out.type = "outcome"
        out.outcome = _outcome(get("outcome"), prefix)
        out.cpu_ms = _ms(get("cpuTime"), prefix, "cpuTime")
        out.wall_ms = _ms(get("wallTime"), prefix, "wallTime")
    elif kind == "return":
        out.type = "return"
        info = get("info")
        if type(info) is dict:
            out.status = status(info.get("statusCode"), prefix, "info.statusCode")
    elif kind == "spanOpen":
        out.type = "spanOpen"
        name = get("name", get("op"))
        out.name = name if type(name) is str and name else "unknown"
        _, opened, _, _ = span_ids({"traceId": out.trace_id or "1" * 32, "spanId": get("spanId")})
        if opened is None or out.trace_id is None:
            out.type = "other"  # a span with no id or no trace can be no row
            return
        out.opened = opened
        info = get("info")
        if type(info) is dict:
            out.attributes = _attributes(info.get("info")) if info.get("type") == "attributes" \
                else {k: v for k, v in info.items() if k != "type"}  # fmt: skip
    elif kind == "spanClose":
        out.type = "spanClose"
        out.outcome = _outcome(get("outcome"), prefix)
    elif kind == "attributes" or kind == "attribute":
        out.type = "attributes"
        out.attributes = _attributes(get("info"))
    elif kind == "streamDiagnostic":
        out.type = "streamDiagnostic"
        diagnostic = get("diagnostic")
        if type(diagnostic) is dict and diagnostic.get("diagnosticsType") == "droppedEvents":
            count = diagnostic.get("count")
            out.dropped = count if type(count) is int and 0 <= count <= MAX_SEQUENCE else 0


def _onset(out: StreamEvent, event: dict[str, JSON], prefix: str) -> Invocation:
    get = event.get
    info = get("info")
    if info is None:
        info = {}
    if type(info) is not dict:
        expected(prefix, "info", "an object", info)
    trigger = info.get("type")
    event_type = TRIGGERS.get(trigger, "unknown") if type(trigger) is str else "unknown"
    extra: dict[str, JSON] = {k: v for k, v in event.items() if k not in _ONSET_TYPED}
    method = url = None
    for key, value in info.items():
        if key == "type":
            continue
        if event_type == "fetch" and key in ("method", "url"):
            continue
        if key == "headers" and type(value) is list:
            value = _headers(value)
        extra["cf" if key == "cfJson" else key] = value
    if event_type == "fetch":
        method = opt_str(info.get("method"), prefix, "info.method")
        url = opt_str(info.get("url"), prefix, "info.url")
    version = get("scriptVersion")
    script_version = None
    if type(version) is dict:
        extra["scriptVersion"] = version
        script_version = opt_str(version.get("id"), prefix, "scriptVersion.id") or opt_str(
            version.get("tag"), prefix, "scriptVersion.tag"
        )
    script = key_name(get("scriptName"), prefix, "scriptName") or out.script
    out.script = script
    tags = get("scriptTags")
    _, span, _, _ = span_ids({"traceId": out.trace_id or "1" * 32, "spanId": get("spanId")})
    return Invocation(
        script, event_type, out.timestamp_ms, "unreported", method, url,
        script_tags=str_list(tags, prefix, "scriptTags") if tags is not None else (),
        entrypoint=key_name(get("entrypoint"), prefix, "entrypoint"),
        dispatch_namespace=key_name(get("dispatchNamespace"), prefix, "dispatchNamespace"),
        script_version=script_version, extra=extra, source="stream",
        trace_id=out.trace_id, span_id=span if out.trace_id is not None else None,
    )  # fmt: skip


def _headers(pairs: list[JSON]) -> dict[str, JSON]:
    """`[{name, value}]` as an object; a repeated header's values joined as HTTP joins them."""
    found: dict[str, JSON] = {}
    for pair in pairs:
        if type(pair) is dict and type(pair.get("name")) is str:
            name, value = pair["name"].lower(), pair.get("value")
            found[name] = f"{found[name]}, {value}" if name in found else value
    return found


def _attributes(info: JSON) -> dict[str, JSON]:
    """`[{name, value}]` as an object (a forwarder wrote a BigInt as a string)."""
    if type(info) is dict:
        return info
    found: dict[str, JSON] = {}
    if type(info) is list:
        for pair in info:
            if type(pair) is dict and type(pair.get("name")) is str:
                found[pair["name"]] = pair.get("value")
    return found


def _timestamp(value: JSON, prefix: str) -> int:
    """ISO 8601 (a serialised Date) or epoch milliseconds, in years 2000..2199."""
    ms: int | None = None
    if type(value) is int or type(value) is float:
        ms = int(value)
    elif type(value) is str and 0 < len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                ms = round(parsed.timestamp() * 1000)
    if ms is None or not MIN_MS <= ms < MAX_MS:
        expected(prefix, "timestamp", "an ISO 8601 time with its offset, or epoch ms", value)
    return ms


def _outcome(value: JSON, prefix: str) -> str:
    if type(value) is str and 0 < len(value) <= 64:
        return value
    if value is None:
        return "unknown"
    expected(prefix, "outcome", "a string of at most 64 characters", value)


def _ms(value: JSON, prefix: str, name: str) -> int | None:
    """CPU or wall time: milliseconds, maybe fractional (rounded), or None."""
    if value is None:
        return None
    if (type(value) is int or type(value) is float) and 0 <= value <= 2**31 - 1:
        return round(value)
    raise DecodeError(at(prefix, name), f"expected milliseconds 0..{2**31 - 1}, got {value!r}")
