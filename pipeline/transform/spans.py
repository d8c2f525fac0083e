"""From decoded spans to `tail_spans` rows and the per-operation rollup. Pure.

A span is stored as it came, redacted like an invocation: its name and status message as
text (a span named `GET /cb?token=...` happens), its attributes, resource, events and links as
JSON. It is counted once in `span_operations_hourly` under its operation, the name a user
filters the performance view by:

- the span's name, which OpenTelemetry asks to be of low cardinality (`d1_all`, `kv_get`,
  `GET /users/{id}`), cut at `MAX_OPERATION` characters;
- for a call out (kind client, or a child span named `fetch`, Cloudflare's, whose kind is
  not always set), the name and the host it called, from `server.address` or else the host
  of `url.full` / `http.url`: "fetch api.github.com" and "fetch api.openai.com" are what a
  user compares.

An error is a span whose status is error (OTLP's `STATUS_CODE_ERROR`), or, since Cloudflare's
spans may leave the status unset, one with an `error.type` attribute.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pipeline.formats.invocation import JSON, UNNAMED, Span
from pipeline.transform.batch import Identity, Part
from pipeline.transform.dedup import SPAN, of_span
from pipeline.transform.redact.engine import redact_json_text, redact_text
from pipeline.transform.rollup import HOUR_MS, Operation

SPAN_COLUMNS = (
    "ts", "script", "trace_id", "span_id", "parent_span_id", "name", "kind", "duration_us",
    "status", "status_message", "invocation_id", "attributes", "resource", "events", "links",
    "topic", "kafka_partition", "kafka_offset", "item",
)  # fmt: skip
MAX_OPERATION = 200
SERVER = 2
CLIENT = 3
ERROR = 2
_CALL_NAMES = frozenset(("fetch",))
_HOST_KEYS = ("url.full", "http.url")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_spans(
    part: Part,
    spans: list[Span],
    origin: tuple[str, int, int],
    counts: Counter[str],
    dedup: bool = False,
    items: list[int] | None = None,
) -> int:
    """Add the spans of one message (`origin`: topic, partition, offset) to the part: a row
    each, counted in its operation's hour; with `dedup`, their identities too, and none of the
    part's known duplicates. `items`: each span's place in its message, when not its index
    (a streamed span is its `spanClose` event). The number of rows."""
    topic, partition, offset = origin
    rows = part.spans
    operations = part.rollups.operations
    skip = part.duplicates
    added = 0
    for index, span in enumerate(spans):
        item = index if items is None else items[index]
        if skip and (offset, SPAN, item) in skip:
            continue
        added += 1
        script = span.script or UNNAMED
        name = redact_text(span.name, counts) if span.name else ""
        ts = _EPOCH + timedelta(microseconds=span.start_us)
        trace_id = bytes.fromhex(span.trace_id)
        if span.parent_span_id is None:  # the handler's: it may complete its invocation
            part.completing.append((trace_id, ts))
        if dedup:
            part.identities.append(Identity(ts, of_span(span), offset, SPAN, item))
        rows.append(
            (
                ts,
                script,
                trace_id,
                bytes.fromhex(span.span_id),
                bytes.fromhex(span.parent_span_id) if span.parent_span_id else None,
                name,
                span.kind,
                span.duration_us,
                span.status,
                redact_text(span.status_message, counts) if span.status_message else None,
                span.invocation_id,
                redact_json_text(span.attributes, counts),
                redact_json_text(span.resource, counts),
                redact_json_text(span.events, counts),
                redact_json_text(span.links, counts),
                topic,
                partition,
                offset,
                item,
            )
        )
        start_ms = span.start_us // 1000
        key = (start_ms - start_ms % HOUR_MS, script, operation(name, span))
        found = operations.get(key)
        if found is None:
            found = operations[key] = Operation()
        found.count(span.duration_us, is_error(span))
    return added


def operation(name: str, span: Span) -> str:
    """What the span is counted under: its `name` (redacted), and the host of a call out."""
    if not _calls_out(name, span):
        return name[:MAX_OPERATION] or UNNAMED
    host = _host(span.attributes)
    return f"{name} {host}"[:MAX_OPERATION] if host else name[:MAX_OPERATION] or UNNAMED


def _calls_out(name: str, span: Span) -> bool:
    """A client span, or a child `fetch` of unset kind (a root span named `fetch` is the
    handler: its `url.full` is the Worker's own)."""
    if span.kind == CLIENT:
        return True
    return name in _CALL_NAMES and span.parent_span_id is not None and span.kind != SERVER


def is_error(span: Span) -> bool:
    return span.status == ERROR or "error.type" in span.attributes


def _host(attributes: dict[str, JSON]) -> str | None:
    address = attributes.get("server.address")
    if type(address) is str and address:
        return address.lower()
    for key in _HOST_KEYS:
        url = attributes.get(key)
        if type(url) is str and url:
            try:
                host = urlsplit(url).hostname
            except ValueError:
                continue
            if host:
                return host
    return None
