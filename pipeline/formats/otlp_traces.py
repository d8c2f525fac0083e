"""OTLP traces: an OTLP/JSON `ExportTraceServiceRequest` -> its spans.

The collector's `/v1/traces` publishes one message per resource and trace
(`pipeline/collector/otlp_traces.py`): Cloudflare's Workers Observability traces destination
and any OpenTelemetry SDK's exporter. Any export with `resourceSpans` decodes here, whatever
its grouping, so a producer writing to Kafka itself may batch as it likes.

What is read, per span (opentelemetry-proto `trace/v1/trace.proto`, in its JSON mapping):

- `traceId` and `spanId` (required: 32 and 16 hex digits, not all zeros, as the collector
  checked them), `parentSpanId` (absent or empty for a root span), `name`;
- `kind` and `status.code`, as numbers (OTLP/JSON) or as proto3 enum names;
- `startTimeUnixNano`, `endTimeUnixNano` (int64 as numbers or strings), kept to the
  microsecond; an end before the start is a duration of 0;
- `attributes`, `events` and `links`, kept whole;
- from the span or else its resource, the script (`cloudflare.script_name`, `service.name`,
  `faas.name`) and the invocation (`faas.invocation_id`).

A value of the wrong type is a `DecodeError` naming it, like every other format's. Pure.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.errors import DecodeError
from pipeline.formats.fields import MAX_MS, MIN_MS, at, expected, opt_str
from pipeline.formats.invocation import JSON, SPAN_KINDS, SPAN_STATUSES, Span
from pipeline.formats.otlp_values import attributes, int64

KEY = "resourceSpans"
_NS_PER_US = 1_000
_SCRIPT_KEYS = ("cloudflare.script_name", "service.name", "faas.name")
_INVOCATION_ID = "faas.invocation_id"
_KIND_NAMES = {f"SPAN_KIND_{kind.upper()}": i for i, kind in enumerate(SPAN_KINDS)}
_STATUS_NAMES = {f"STATUS_CODE_{status.upper()}": i for i, status in enumerate(SPAN_STATUSES)}
_HEX_DIGITS = frozenset("0123456789abcdef")


def spans(document: dict[str, JSON], prefix: str) -> list[Span]:
    """Every span of an OTLP traces document at `prefix`, in order."""
    entries = document[KEY]
    if type(entries) is not list:
        expected(prefix, KEY, "an array", entries)
    found: list[Span] = []
    for i, entry in enumerate(entries):
        where = f"{prefix}{KEY}[{i}]."
        if type(entry) is not dict:
            expected(where, "", "an object", entry)
        resource = entry.get("resource")
        if resource is not None and type(resource) is not dict:
            expected(where, "resource", "an object", resource)
        resource_attrs = attributes(
            None if resource is None else resource.get("attributes"),
            where + "resource.",
            "attributes",
        )
        scope_spans = entry.get("scopeSpans")
        if scope_spans is None:
            continue
        if type(scope_spans) is not list:
            expected(where, "scopeSpans", "an array", scope_spans)
        for s, scope_entry in enumerate(scope_spans):
            path = f"{where}scopeSpans[{s}]."
            if type(scope_entry) is not dict:
                expected(path, "", "an object", scope_entry)
            context = _with_scope(resource_attrs, scope_entry.get("scope"), path + "scope.")
            listed = scope_entry.get("spans")
            if listed is None:
                continue
            if type(listed) is not list:
                expected(path, "spans", "an array", listed)
            for n, span in enumerate(listed):
                found.append(_span(span, context, f"{path}spans[{n}]."))
    return found


def span_context(resource: JSON, scope: JSON) -> dict[str, JSON] | str:
    """What a span is decoded in: its resource's attributes with its scope's name and version;
    or, when those cannot be read, why (paths relative: `resource.attributes[0].key`).

    With `refusal`, what the collector asks before it publishes: it rejects a span alone
    (OTLP's partial success), where the consumer could only dead-letter the whole message, the
    trace's other spans with it. A context is read once per resource and scope, not per span:
    that halved the collector's check."""
    try:
        if resource is not None and type(resource) is not dict:
            expected("", "resource", "an object", resource)
        found = attributes(
            None if resource is None else resource.get("attributes"), "resource.", "attributes"
        )
        return _with_scope(found, scope, "scope.")
    except DecodeError as error:
        return str(error)


def refusal(span: JSON, within: dict[str, JSON]) -> str | None:
    """Why `spans` would refuse this span in this `span_context`, or None."""
    try:
        _span(span, within, "")
    except DecodeError as error:
        return str(error)
    return None


def _with_scope(resource: dict[str, JSON], scope: JSON, path: str) -> dict[str, JSON]:
    """The resource's attributes with the scope's name and version, when there is a scope."""
    if scope is None:
        return resource
    if type(scope) is not dict:
        expected(path, "", "an object", scope)
    name = opt_str(scope.get("name"), path, "name")
    version = opt_str(scope.get("version"), path, "version")
    if not name and not version:
        return resource
    context = dict(resource)
    if name:
        context["otel.scope.name"] = name
    if version:
        context["otel.scope.version"] = version
    return context


def _span(span: JSON, resource: dict[str, JSON], path: str) -> Span:
    if type(span) is not dict:
        expected(path, "", "an object", span)
    trace_id = _id(span.get("traceId"), 32, path, "traceId")
    span_id = _id(span.get("spanId"), 16, path, "spanId")
    if trace_id is None or span_id is None:
        missing = "traceId" if trace_id is None else "spanId"
        raise DecodeError(at(path, missing), "missing: a span needs its trace and span ids")
    parent = _id(span.get("parentSpanId"), 16, path, "parentSpanId")
    start = _time_us(span.get("startTimeUnixNano"), path, "startTimeUnixNano")
    if start is None:
        raise DecodeError(at(path, "startTimeUnixNano"), "missing: a span needs its start")
    end = _time_us(span.get("endTimeUnixNano"), path, "endTimeUnixNano")
    own = attributes(span.get("attributes"), path, "attributes")
    status = span.get("status")
    code, message = 0, None
    if status is not None:
        if type(status) is not dict:
            expected(path, "status", "an object", status)
        code = _enum(status.get("code"), _STATUS_NAMES, path + "status.", "code")
        message = opt_str(status.get("message"), path + "status.", "message") or None
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=opt_str(span.get("name"), path, "name") or "",
        kind=_enum(span.get("kind"), _KIND_NAMES, path, "kind"),
        start_us=start,
        duration_us=max(0, end - start) if end is not None else 0,
        status=code,
        status_message=message,
        script=_first_str(own, resource, _SCRIPT_KEYS),
        invocation_id=_first_str(own, resource, (_INVOCATION_ID,)),
        attributes=own,
        resource=resource,
        events=_objects(span.get("events"), path, "events", _event),
        links=_objects(span.get("links"), path, "links", _link),
    )


def _id(value: JSON, digits: int, path: str, name: str) -> str | None:
    """A span or trace id in lowercase hex; absent, empty or all zeros (W3C's invalid id) is
    None. Upper case is read too; base64 was rewritten by the collector."""
    if value is None or value == "":
        return None
    if type(value) is not str or len(value) != digits:
        expected(path, name, f"{digits} hex digits", value)
    lowered = value.lower()
    if not _HEX_DIGITS.issuperset(lowered):
        expected(path, name, f"{digits} hex digits", value)
    return None if lowered.count("0") == digits else lowered


def _time_us(value: JSON, path: str, name: str) -> int | None:
    """A `fixed64` nanosecond time as epoch microseconds; absent, null and 0 are None. Years
    2000..2199 only, as for every timestamp tailpipe stores."""
    if value is None or value == "0" or (type(value) is int and value == 0):
        return None
    ns = int64(value, path, name)
    if not MIN_MS <= ns // 1_000_000 < MAX_MS:
        raise DecodeError(at(path, name), f"{ns} is not epoch nanoseconds in years 2000..2199")
    return ns // _NS_PER_US


def _enum(value: JSON, names: dict[str, int], path: str, name: str) -> int:
    """An enum by number (OTLP/JSON) or by name (proto3's JSON); absent is 0. A number outside
    the known values is kept as 0: a later OTLP may add one."""
    if value is None:
        return 0
    if type(value) is int:
        return value if 0 <= value < len(names) else 0
    if type(value) is str and value in names:
        return names[value]
    expected(path, name, f"a number or one of {', '.join(names)}", value)


def _first_str(
    own: dict[str, JSON], resource: dict[str, JSON], keys: tuple[str, ...]
) -> str | None:
    for key in keys:
        for attrs in (own, resource):
            value = attrs.get(key)
            if type(value) is str and value:
                return value
    return None


def _objects(
    value: JSON, path: str, name: str, read: Callable[[dict[str, JSON], str], JSON]
) -> list[JSON]:
    """An array of objects (`events`, `links`), each read by `read`; absent is empty."""
    if value is None:
        return []
    if type(value) is not list:
        expected(path, name, "an array", value)
    found: list[JSON] = []
    for i, item in enumerate(value):
        where = f"{path}{name}[{i}]."
        if type(item) is not dict:
            expected(where, "", "an object", item)
        found.append(read(item, where))
    return found


def _event(event: dict[str, JSON], where: str) -> JSON:
    return {
        "name": opt_str(event.get("name"), where, "name") or "",
        "time_us": _time_us(event.get("timeUnixNano"), where, "timeUnixNano"),
        "attributes": attributes(event.get("attributes"), where, "attributes"),
    }


def _link(link: dict[str, JSON], where: str) -> JSON:
    return {
        "trace_id": _id(link.get("traceId"), 32, where, "traceId"),
        "span_id": _id(link.get("spanId"), 16, where, "spanId"),
        "attributes": attributes(link.get("attributes"), where, "attributes"),
    }
