"""Trace context: the W3C `traceparent` header in and out, and the span in progress.

    from pipeline.logger.propagation import httpx_event_hooks, outgoing_headers

    client = httpx.AsyncClient(event_hooks=httpx_event_hooks())      # every call carries it
    client = httpx.Client(event_hooks=httpx_event_hooks(sync=True))
    requests.get(url, headers=outgoing_headers())                    # any other client

A request handled by `TailpipeMiddleware` continues the trace its caller sent in `traceparent`
(https://www.w3.org/TR/trace-context/#traceparent-header), or starts one, and is a span of its
own; a job started inside it is a child span, outside any a new trace. The span in progress is
`SPAN` (a context variable, inherited by tasks and threads started inside), so an outgoing call
made while handling the request passes the same trace id on, with the request's span as the
callee's parent. The ids are what the envelope's `spanContext` carries and what tailpipe stores
in `trace_id` and `span_id`, the columns Cloudflare's OTLP export and streaming tail events fill.

A malformed header is ignored and a new trace started, as the specification asks: a caller
cannot make two unrelated requests share a trace by sending garbage. `tracestate` is passed on
unchanged with the trace it belongs to, never with a trace this process started.

httpx is never imported here: the hooks only set a header on the request they are given.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SAMPLED = 0x01
_HEX = frozenset("0123456789abcdef")
_TRACE_ZERO = "0" * 32
_SPAN_ZERO = "0" * 16
_MAX_TRACESTATE = 512
"""The specification's minimum a vendor must propagate; longer lists may be cut or dropped."""


@dataclass(frozen=True, slots=True)
class SpanContext:
    """One span: `trace_id` (32 lowercase hex digits) and `span_id` (16), each not all zeros,
    the W3C `flags`, the caller's span when it sent one, and its `tracestate` to pass on."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED
    parent_id: str | None = None
    tracestate: str | None = None

    def __post_init__(self) -> None:
        if not (valid_trace_id(self.trace_id) and valid_span_id(self.span_id)):
            raise ValueError(f"not a trace and span id: {self.trace_id!r}, {self.span_id!r}")
        if not 0 <= self.flags <= 0xFF:
            raise ValueError(f"trace flags: expected 0..255, got {self.flags!r}")

    @property
    def traceparent(self) -> str:
        """The header an outgoing call sends: this span is the callee's parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child(self) -> SpanContext:
        """A new span of the same trace, with this one as its parent."""
        return SpanContext(self.trace_id, new_span_id(), self.flags, self.span_id, self.tracestate)

    def envelope(self) -> dict[str, str]:
        """The envelope's `spanContext`, shaped as a streaming tail event's: `traceId` and
        `spanId` (this invocation's own span), plus `parentSpanId` when it has a caller."""
        found = {"traceId": self.trace_id, "spanId": self.span_id}
        if self.parent_id is not None:
            found["parentSpanId"] = self.parent_id
        return found


SPAN: ContextVar[SpanContext | None] = ContextVar("tailpipe_span", default=None)


def current() -> SpanContext | None:
    """The span in progress in this context (a request, a job, `continue_trace`), if any."""
    return SPAN.get()


def valid_trace_id(value: str) -> bool:
    return len(value) == 32 and _HEX.issuperset(value) and value != _TRACE_ZERO


def valid_span_id(value: str) -> bool:
    return len(value) == 16 and _HEX.issuperset(value) and value != _SPAN_ZERO


def new_trace_id() -> str:
    while True:  # all zeros is invalid: one chance in 2**128, but cheap to rule out
        found = secrets.token_hex(16)
        if found != _TRACE_ZERO:
            return found


def new_span_id() -> str:
    while True:
        found = secrets.token_hex(8)
        if found != _SPAN_ZERO:
            return found


def new_trace() -> SpanContext:
    """The root span of a new trace, sampled (tailpipe records every request)."""
    return SpanContext(new_trace_id(), new_span_id())


def parse_traceparent(value: str) -> SpanContext | None:
    """The caller's span from a `traceparent` value (its `span_id` is the caller's), or None
    when the value is not one. Version 00 is exactly `00-<32 hex>-<16 hex>-<2 hex>`, lowercase;
    a later version (not `ff`) is read the same way, as the specification asks, provided what
    follows the flags starts with `-`."""
    if len(value) < 55:
        return None
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not _HEX.issuperset(version) or version == "ff":
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    if not (valid_trace_id(trace_id) and valid_span_id(parent_id) and _HEX.issuperset(flags)):
        return None
    return SpanContext(trace_id, parent_id, int(flags, 16))


def incoming(headers: Iterable[tuple[str, str]]) -> SpanContext:
    """This invocation's span: a child of the caller's (the `traceparent` of `headers`, names
    lower-cased), or the root of a new trace when there is none, more than one, or a malformed
    one."""
    headers = list(headers)
    parents = [value for name, value in headers if name == TRACEPARENT]
    caller = parse_traceparent(parents[0].strip(" \t")) if len(parents) == 1 else None
    if caller is None:
        return new_trace()
    states = [value.strip(" \t") for name, value in headers if name == TRACESTATE]
    state = ",".join(s for s in states if s) or None
    if state is not None and len(state) > _MAX_TRACESTATE:
        state = None
    return SpanContext(caller.trace_id, new_span_id(), caller.flags, caller.span_id, state)


def child_of_current() -> SpanContext:
    """A child of the span in progress, or the root of a new trace outside any."""
    parent = SPAN.get()
    return parent.child() if parent is not None else new_trace()


@contextlib.contextmanager
def continue_trace(
    traceparent: str | None = None, tracestate: str | None = None
) -> Iterator[SpanContext]:
    """A span for work that is neither an HTTP request nor a job, such as a queue message that
    carried a `traceparent`: a child of that header's span (or of the span in progress, or a
    new trace) for the block. Records logged standalone in it carry its ids."""
    headers = [(TRACEPARENT, traceparent)] if traceparent is not None else []
    if tracestate is not None:
        headers.append((TRACESTATE, tracestate))
    span = incoming(headers) if traceparent is not None else child_of_current()
    token = SPAN.set(span)
    try:
        yield span
    finally:
        SPAN.reset(token)


def outgoing_headers(span: SpanContext | None = None) -> dict[str, str]:
    """`traceparent` (and `tracestate`) for a call made from `span`, by default the span in
    progress; empty outside any."""
    span = span if span is not None else SPAN.get()
    if span is None:
        return {}
    headers = {TRACEPARENT: span.traceparent}
    if span.tracestate is not None:
        headers[TRACESTATE] = span.tracestate
    return headers


def inject(request: httpx.Request) -> None:
    """Set the trace headers on an httpx request, unless the caller set its own."""
    if TRACEPARENT in request.headers:
        return
    for name, value in outgoing_headers().items():
        request.headers[name] = value


async def _inject_async(request: httpx.Request) -> None:
    inject(request)


def httpx_event_hooks(*, sync: bool = False) -> dict[str, list[Callable[[Any], Any]]]:
    """`event_hooks` for an `httpx.AsyncClient` (or, with `sync=True`, an `httpx.Client`):
    each request made while a span is in progress carries its `traceparent`."""
    return {"request": [inject if sync else _inject_async]}


def header_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI's raw header pairs, the trace headers only, names lower-cased."""
    found = []
    for name, value in raw:
        lowered = name.lower()
        if lowered == b"traceparent" or lowered == b"tracestate":
            found.append((lowered.decode("latin-1"), value.decode("latin-1")))
    return found


def from_mapping(headers: Mapping[str, str]) -> SpanContext:
    """`incoming` for headers already in a mapping (one value per name)."""
    return incoming((name.lower(), value) for name, value in headers.items())
