"""One Kafka message value -> the invocations it holds, or a `DecodeError`.

Accepted (docs/events.md has examples and the field mapping):

- a Workers trace item (`pipeline.formats.trace_items`), or tailpipe's envelope (a trace item with
  `"envelope": "tailpipe/1"`);
- a Logpush `workers_trace_events` record (`pipeline.formats.logpush`);
- OTLP logs, an OTLP/JSON `ExportLogsServiceRequest` of one invocation group
  (`pipeline.formats.otlp_logs`; Cloudflare's preflight gives no invocation);
- OTLP traces, an OTLP/JSON `ExportTraceServiceRequest`: no invocation, its spans
  (`pipeline.formats.otlp_traces`; `decoded` returns both);
- streaming tail events, `{"tailStream": [...], "script": ...}` from `tailpipe collect` or a bare
  envelope: no invocation, its `StreamEvent`s (`pipeline.formats.tail_stream`), which the flush
  puts together;
- a JSON array of any of these (a Tail Worker forwarding its whole batch);
- several of these concatenated: NDJSON lines, or `wrangler tail --format json`'s pretty-printed
  stream (`pipeline.formats.jsonstream`).

Pure and fast by construction: the native core decodes the usual trace items straight from the
bytes (`pipeline.native.load_trace_items`; this module stays its reference), else one
`orjson.loads` per message (the split and per-value parse
of concatenated values runs only when that fails), field checks are type tests and dict
lookups, and the parsed objects move into the records without copies. Text PostgreSQL cannot
hold (U+0000, lone surrogates) is replaced here (`pipeline.formats.sanitize`), so every invocation
that leaves the decoder can be stored; the walk runs only for a message that can hold some.
Whatever the bytes, the only exception is `DecodeError`: its `field` is a path like
`logs[2].level`, `[3].outcome` (element 3 of an array), `line 7:event` (the value starting on
line 7 of a multi-value message) or `$` (the whole value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from pipeline.errors import DecodeError
from pipeline.formats import logpush, otlp_logs, otlp_traces, tail_stream, trace_items
from pipeline.formats.fields import (
    MAX_DEPTH,
    MAX_DURATION_MS,
    MAX_MS,
    MAX_NAME_BYTES,
    MIN_MS,
    at,
    deep_field,
    describe,
    too_deep,
)
from pipeline.formats.invocation import JSON, ExceptionInfo, Invocation, LogLine, Span
from pipeline.formats.jsonstream import split
from pipeline.formats.sanitize import loads, storable, storable_span, suspect
from pipeline.formats.tail_stream import StreamEvent
from pipeline.native import load_trace_items

# Keys that only trace items have; with none of these, nor Logpush's, nor `envelope`, an
# object is none of the formats.
_TRACE_KEYS = frozenset(
    ("outcome", "scriptName", "event", "eventTimestamp", "logs", "exceptions", "truncated")
)
_loads = orjson.loads
NATIVE_RECORDS = (Invocation, LogLine, ExceptionInfo)
NATIVE_LIMITS = (MIN_MS, MAX_MS, MAX_DURATION_MS, MAX_NAME_BYTES // 4, MAX_DEPTH)
"""The bounds the native decoder checks, from `fields`: `pipeline.native.load_trace_items`."""
_NATIVE = load_trace_items(NATIVE_RECORDS, NATIVE_LIMITS)


def decode(value: bytes) -> list[Invocation]:
    """The invocations in one message value, in order, each storable as it is."""
    if _NATIVE is not None:
        # The common trace items, decoded straight from the bytes by the native core; it
        # answers None for anything else, which the reference below decodes.
        found: list[Invocation] | None = _NATIVE(value)
        if found is not None:
            return found
    return reference(value)


def reference(value: bytes) -> list[Invocation]:
    """`decode` in Python alone: what the native core's answer must equal."""
    return decoded(value).invocations


@dataclass(slots=True)
class Decoded:
    """Everything in one message: its invocations, and the spans of an OTLP traces export
    (which are no invocations: `pipeline.formats.invocation.Span`)."""

    invocations: list[Invocation]
    spans: list[Span] = field(default_factory=list)
    sanitized: list[str] = field(default_factory=list)
    """The span columns repaired to be storable, once per value."""
    stream: list[StreamEvent] = field(default_factory=list)
    """Streaming tail events (`pipeline.formats.tail_stream`), repaired as they decode."""
    repair: bool = False
    """The value may hold text PostgreSQL cannot: what decodes is repaired."""


def decoded(value: bytes) -> Decoded:
    """A message's invocations and spans, each storable as it is."""
    parts = Decoded([], repair=suspect(value))
    spans = parts.spans
    try:
        document = _loads(value)
    except orjson.JSONDecodeError as error:
        parts.repair = True
        found, lenient = _decode_lenient(value, error, parts)
    else:
        _check_depth(value, document, "")
        found, lenient = _decode_document(document, "", parts), False
    if not (lenient or parts.repair):
        parts.invocations = found
        return parts
    out = Decoded([storable(inv) for inv in found], stream=parts.stream)
    for span in spans:
        clean, fixed = storable_span(span)
        out.spans.append(clean)
        out.sanitized += fixed
    return out


def _decode_lenient(
    value: bytes, error: orjson.JSONDecodeError, parts: Decoded
) -> tuple[list[Invocation], bool]:
    """What the fast path refused: one value with a lone surrogate, or several values."""
    if "surrogate" in str(error):
        try:
            document, _ = loads(value)
        except orjson.JSONDecodeError:
            pass  # not one value: several, each tried below
        else:
            _check_depth(value, document, "")
            return _decode_document(document, "", parts), True
    return _decode_concatenated(value, error, parts)


def _decode_concatenated(
    value: bytes, error: orjson.JSONDecodeError, parts: Decoded
) -> tuple[list[Invocation], bool]:
    """Several values in one message, or one value that is not JSON as it stands."""
    chunks = split(value)
    if not chunks:
        raise DecodeError("$", "empty message")
    # One chunk: a broken value (reported with orjson's position in the whole message), or one
    # the splitter could clean up (a leading byte-order mark).
    single = len(chunks) == 1
    found: list[Invocation] = []
    any_lenient = False
    for chunk in chunks:
        prefix = "" if single else f"line {chunk.line}:"
        try:
            document, lenient = loads(chunk.data)
        except orjson.JSONDecodeError as bad:
            raise DecodeError(at(prefix, ""), f"invalid JSON: {error if single else bad}") from None
        any_lenient = any_lenient or lenient
        _check_depth(chunk.data, document, prefix)
        found += _decode_document(document, prefix, parts)
    return found, any_lenient


def _check_depth(raw: bytes, document: JSON, prefix: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH. The bracket count is a C-speed upper bound on the
    depth: the probe runs only for messages with many containers (arrays of items, mostly)."""
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and too_deep(document):
        raise DecodeError(deep_field(document, prefix), f"nested deeper than {MAX_DEPTH} levels")


def _decode_document(document: JSON, prefix: str, parts: Decoded) -> list[Invocation]:
    if type(document) is dict:
        one = _decode_object(document, prefix, parts)
        return [] if one is None else [one]
    if type(document) is list:
        found = []
        for i, element in enumerate(document):
            where = f"{prefix}[{i}]."
            if type(element) is not dict:
                raise DecodeError(
                    at(where, ""),
                    f"expected a trace item, Logpush record or envelope, got {describe(element)}",
                )
            one = _decode_object(element, where, parts)
            if one is not None:
                found.append(one)
        return found
    raise DecodeError(
        at(prefix, ""),
        "expected a trace item, Logpush record, envelope or an array of them, "
        f"got {describe(document)}",
    )


def _decode_object(obj: dict[str, JSON], prefix: str, parts: Decoded) -> Invocation | None:
    # Most messages are trace items: `outcome` settles it in one lookup. An envelope also has
    # `outcome`, so `envelope` goes first.
    if "envelope" in obj or "outcome" in obj:
        return trace_items.invocation(obj, prefix)
    if not logpush.KEYS.isdisjoint(obj):
        return logpush.invocation(obj, prefix)
    if tail_stream.KEY in obj:
        parts.stream += tail_stream.events(obj, prefix, parts.repair)
        return None
    if "invocationId" in obj and "event" in obj:  # a bare streaming tail event
        parts.stream.append(tail_stream.envelope(obj, prefix, None, parts.repair))
        return None
    if not _TRACE_KEYS.isdisjoint(obj):
        return trace_items.invocation(obj, prefix)  # reports the missing outcome
    if otlp_logs.KEY in obj:
        return otlp_logs.invocation(obj, prefix)  # None: Cloudflare's preflight
    if otlp_traces.KEY in obj:
        parts.spans += otlp_traces.spans(obj, prefix)
        return None
    raise DecodeError(
        at(prefix, ""),
        "not a trace item, Logpush record, tailpipe envelope or OTLP export: no known key",
    )
