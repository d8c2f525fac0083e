"""The typed invocation record every accepted input format decodes to.

One `Invocation` is one run of a Worker (or one request or job of a Python service): what
triggered it, how it ended, how long it took, and the logs and exceptions it emitted. The
decoder builds these; everything downstream (redaction, extraction, storage) reads only these.
Equality ignores `source`, so equivalent content from different formats compares equal.

The records are read-only by convention, not `frozen`: the decoder builds one `Invocation` and
a `LogLine` per console call for every event, and a frozen dataclass's `__init__` (a
`object.__setattr__` per field) costs four times a plain one's: plain ones took decoding from
20.0 to 16.4 µs per synthetic message, and `Transformer.add` from 53.7 to 50.5.
Freezing bought nothing else: with their dict fields they were never hashable. Nothing after
the decoder assigns to them; a changed copy is made with `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = Any
"""A value orjson produced: dict, list, str, int, float, bool or None."""

EVENT_TYPES = (
    "fetch",
    "scheduled",
    "alarm",
    "queue",
    "email",
    "rpc",
    "tail",
    "websocket",
    "connect",
    "overload",
    "job",
    "log",
    "otel",
    "unknown",
)
"""`connect` covers connect and custom events (an empty event object); `unknown` a null event;
`overload` wrangler's sampling notices; `job` a Python service's job or cron task; `log` a
structured-logger record emitted outside any request or job; `otel` the log records of an
OpenTelemetry SDK (OTLP logs from anything but Cloudflare), which say nothing of their trigger."""

LOG_LEVELS = ("debug", "info", "log", "warn", "error")

UNNAMED = "(unnamed)"
"""The script stored for an invocation whose producer named none (`scriptName: null` from a
local runtime and some event types, Logpush's `""`). One name rather than NULL or `""`, so that
rollup keys, filters, alert summaries and links all work for it. A Worker's name cannot hold
parentheses, so no real script is taken for it."""


@dataclass(slots=True)
class LogLine:
    """One console call. `text` is the message rendered as a line; `data` its structured part
    (objects among the arguments, double-encoded JSON parsed, a typed logger record), if any."""

    timestamp_ms: int | None
    level: str
    text: str
    data: dict[str, JSON] | None = None
    kind: str | None = None
    """For the structured logger's typed records: `api_call`, `scan`, `timer`; else None."""


@dataclass(slots=True)
class ExceptionInfo:
    """One uncaught exception; `stack` holds only the `at ...` frames when the runtime gave any."""

    timestamp_ms: int | None
    name: str
    """The most specific class name known: the runtime's, or the stack header's (see
    `entries.exception`)."""
    message: str
    stack: str | None = None
    reported_name: str | None = None
    """The name the runtime reported, when the stack's header named a more specific class
    (workerd reports `Error` for `class CustomError extends Error`). Errors are grouped by it,
    so one error groups alike whether or not its stack had the header."""

    @property
    def group_name(self) -> str:
        return self.name if self.reported_name is None else self.reported_name


@dataclass(slots=True)
class Invocation:
    script: str | None
    event_type: str
    timestamp_ms: int | None
    outcome: str
    """As the runtime said it (`ok`, `exception`, `exceededCpu`, ...); unknown values kept."""
    method: str | None = None
    url: str | None = None
    status: int | None = None
    cpu_ms: int | None = None
    wall_ms: int | None = None
    logs: tuple[LogLine, ...] = ()
    exceptions: tuple[ExceptionInfo, ...] = ()
    truncated: bool = False
    """The runtime's (or Logpush's) size limit cut this invocation short; stored and flagged."""
    script_version: str | None = None
    entrypoint: str | None = None
    dispatch_namespace: str | None = None
    script_tags: tuple[str, ...] = ()
    extra: dict[str, JSON] = field(default_factory=dict)
    """Every other field, kept: the event's own details, tailAttributes, unknown keys."""
    source: str = field(default="trace", compare=False)
    """Which format it came from: `trace`, `logpush`, `envelope` or `otlp`."""
    sanitized: tuple[str, ...] = field(default=(), compare=False)
    """The columns where a character PostgreSQL cannot hold was replaced by U+FFFD, once per
    value (see `pipeline.formats.sanitize`); empty for nearly every invocation."""
    trace_id: str | None = None
    """The W3C trace id (32 lowercase hex digits) of the trace it belongs to: `spanContext.traceId`
    (the name and shape of streaming tail events, which the logger's envelope shares); None for
    the trace items and Logpush records that carry none."""
    span_id: str | None = None
    """Its own span's id (16 lowercase hex digits), `spanContext.spanId`; None if not given."""
    fragment: bool = False
    """Part of an invocation told in several messages, without the part that says what the
    invocation was: a Cloudflare OTLP logs group of console records with a
    `faas.invocation_id` but no invocation record (an export cut the invocation's records in
    two). Stored, its lines shown with the rest of the invocation (`api/invocations.py`), but
    not counted as a request of its own."""


SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
"""OTLP's `SpanKind`, by its number."""
SPAN_STATUSES = ("unset", "ok", "error")
"""OTLP's `Status.code`, by its number."""


@dataclass(slots=True)
class Span:
    """One OTLP span: a timed operation of a trace (a Worker's handler, a `fetch`, a `kv_get`,
    a `d1_all`, a custom span), stored in `tail_spans` as it came, redacted.

    Spans are not invocations: Cloudflare exports an invocation's logs and its spans to two
    destinations, so an invocation counted from both would count twice. Its root span (no
    parent) is the invocation's handler, with its outcome and CPU and wall time in
    `attributes`; the others are what it waited on. Times keep microseconds, which
    `timestamptz` holds, since a child span often takes less than a millisecond."""

    trace_id: str
    """32 lowercase hex digits."""
    span_id: str
    """16 lowercase hex digits."""
    parent_span_id: str | None
    name: str
    kind: int
    """An index of `SPAN_KINDS`."""
    start_us: int
    """Epoch microseconds."""
    duration_us: int
    status: int
    """An index of `SPAN_STATUSES`."""
    status_message: str | None
    script: str | None
    """`cloudflare.script_name`, else `service.name`, else `faas.name`, from the span or its
    resource."""
    invocation_id: str | None
    """`faas.invocation_id`, from the span or its resource."""
    attributes: dict[str, JSON]
    resource: dict[str, JSON]
    """The resource's attributes, and the instrumentation scope as `otel.scope.name` and
    `otel.scope.version` (OpenTelemetry's names for them outside OTLP)."""
    events: list[JSON] = field(default_factory=list)
    """`{name, time_us, attributes}` per span event (an `exception` event among them)."""
    links: list[JSON] = field(default_factory=list)
    """`{trace_id, span_id, attributes}` per link."""
