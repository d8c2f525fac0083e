"""An item's `spanContext`: the W3C trace and span ids it carries, if any.

`{"traceId": "<32 hex>", "spanId": "<16 hex>"}` is the shape of a streaming tail event's
envelope (`spanContext {traceId, spanId?, traceFlags?}`) and of tailpipe's logger envelope; OTLP
carries the same ids as hex strings. Workers trace items and Logpush records carry none today.

An id that is not one (wrong length, not hex, all zeros, not a string) is dropped, never a
reason to refuse the invocation: its logs are worth more than its link to a trace. What was
dropped is named in the invocation's `sanitized` (`trace_id`, `span_id`), so it is counted like
the other repairs (`tailpipe_sanitized_total{field}`). Upper-case hex is accepted and stored
lower-case: the ids are bytes, and case is only how they were written. A span id without a
trace id is dropped too: it names nothing on its own.

Keys of `spanContext` other than the two ids (`traceFlags`, the logger's `parentSpanId`) are
returned for `extra`.
"""

from __future__ import annotations

from pipeline.formats.invocation import JSON

TRACE_ID_CHARS = 32
SPAN_ID_CHARS = 16
_HEX = frozenset("0123456789abcdef")

SpanIds = tuple[str | None, str | None, dict[str, JSON] | None, tuple[str, ...]]
"""(trace id, span id, the other keys of `spanContext` or None, the fields dropped)."""


def span_ids(context: JSON) -> SpanIds:
    """The ids of a `spanContext` value (the caller has checked it is present)."""
    if type(context) is not dict:
        return None, None, None, ("trace_id",)
    trace = _hex_id(context.get("traceId"), TRACE_ID_CHARS)
    span = _hex_id(context.get("spanId"), SPAN_ID_CHARS)
    dropped: tuple[str, ...] = ()
    if trace is None and context.get("traceId") is not None:
        dropped = ("trace_id",)
    if span is None and context.get("spanId") is not None:
        dropped = (*dropped, "span_id")
    elif span is not None and trace is None:
        span = None
        dropped = (*dropped, "span_id")
    rest: dict[str, JSON] | None = None
    if len(context) > ("traceId" in context) + ("spanId" in context):
        rest = {k: v for k, v in context.items() if k != "traceId" and k != "spanId"}
    return trace, span, rest, dropped


def _hex_id(value: JSON, size: int) -> str | None:
    """`value` lower-cased if it is `size` hex digits, not all zeros; else None."""
    if type(value) is not str or len(value) != size:
        return None
    lowered: str = value.lower()
    if not _HEX.issuperset(lowered) or lowered.count("0") == size:
        return None
    return lowered
