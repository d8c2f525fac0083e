"""Trace items (what a Tail Worker's `tail(events)` receives) and tailpipe envelopes.

An envelope is a trace item with `"envelope": "tailpipe/1"` on top, two more event variants
(`job`, `log`) and typed log records (see `pipeline.formats.envelope`); both go through
`invocation` below.

The event variant has no type field: it is told apart by the event's keys, looked up in a fixed
order so that key order never changes the answer. Every key of the event except a fetch's
`request`/`response` (which fill the typed columns) is copied into `extra`, and so is every
top-level key that has no column, known or not.
"""

from __future__ import annotations

import dataclasses
import re

from pipeline.errors import DecodeError
from pipeline.formats.entries import (
    LIMIT_EXCEPTION_PREFIX,
    exception_info,
    is_limit_marker,
    log_line,
)
from pipeline.formats.fields import (
    MAX_DURATION_MS,
    MAX_MS,
    MAX_NAME_BYTES,
    MIN_MS,
    at,
    duration_ms,
    epoch_ms,
    expected,
    flag,
    key_name,
    opt_str,
    status,
    str_list,
)
from pipeline.formats.invocation import JSON, ExceptionInfo, Invocation, LogLine
from pipeline.formats.trace_context import span_ids

ENVELOPE_VERSION = "tailpipe/1"

# (event key, event type), first match wins. `scheduledTime` alone is a Durable Object alarm;
# with `cron` (looked up first) it is a cron trigger.
EVENT_VARIANTS: tuple[tuple[str, str], ...] = (
    ("request", "fetch"),
    ("cron", "scheduled"),
    ("scheduledTime", "alarm"),
    ("queue", "queue"),
    ("batchSize", "queue"),
    ("mailFrom", "email"),
    ("rcptTo", "email"),
    ("rpcMethod", "rpc"),
    ("consumedEvents", "tail"),
    ("getWebSocketEvent", "websocket"),
)
_ENVELOPE_VARIANTS = (("request", "fetch"), ("job", "job"), ("log", "log"), *EVENT_VARIANTS[1:])
# Invocation is built positionally, a third cheaper than by keyword on every message. Fields
# appended to records.py later are harmless; a reordering fails this import, not silently.
_POSITIONAL = (
    "script",
    "event_type",
    "timestamp_ms",
    "outcome",
    "method",
    "url",
    "status",
    "cpu_ms",
    "wall_ms",
    "logs",
    "exceptions",
    "truncated",
    "script_version",
    "entrypoint",
    "dispatch_namespace",
    "script_tags",
    "extra",
    "source",
    "sanitized",
    "trace_id",
    "span_id",
)
if tuple(f.name for f in dataclasses.fields(Invocation))[: len(_POSITIONAL)] != _POSITIONAL:
    raise ImportError(
        "pipeline.formats.invocation.Invocation reordered its fields: "
        "update pipeline.formats.trace_items"
    )
_OVERLOAD_TYPES = ("overload", "overload-stop")
_DEV_PREFIX = re.compile(r"(?:\x1b\[\d+m)?\[([\w-]{1,63})\](?:\x1b\[\d+m)? ")
_DEV_WRAPPED = ("log", "info", "debug")
_SHORT = MAX_NAME_BYTES // 4
"""A name this long or shorter fits an index key whatever its characters: no check needed."""
_REQUEST_TYPED = ("url", "method")
_EVENT_TYPED = ("request", "response")

# Top-level keys that fill typed columns and are not copied into `extra`. `scriptVersion` and
# `diagnosticsChannelEvents` are read but also kept.
_TYPED = frozenset(
    (
        "scriptName",
        "event",
        "eventTimestamp",
        "logs",
        "exceptions",
        "outcome",
        "truncated",
        "cpuTime",
        "wallTime",
        "entrypoint",
        "dispatchNamespace",
        "scriptTags",
        "envelope",
        "spanContext",
    )
)


def invocation(item: dict[str, JSON], prefix: str) -> Invocation:
    """The invocation a trace item (or, with an `envelope` key, a tailpipe envelope) describes.
    `prefix` is where the item sits in the message: `""`, `"[3]."` or `"line 7:"`."""
    get = item.get
    envelope = "envelope" in item
    if envelope and item["envelope"] != ENVELOPE_VERSION:
        expected(prefix, "envelope", repr(ENVELOPE_VERSION), item["envelope"])
    extra = {key: value for key, value in item.items() if key not in _TYPED}

    event_type, method, url, code = _event(
        get("event"), extra, prefix, _ENVELOPE_VARIANTS if envelope else EVENT_VARIANTS
    )
    outcome = get("outcome")
    if type(outcome) is not str or not outcome or len(outcome) > _SHORT:
        # "" reads as absent, as in Logpush; wrangler's sampling notices need not say one.
        if outcome == "" or (outcome is None and event_type == "overload"):
            outcome = "unknown"
        elif "outcome" not in item:
            raise DecodeError(at(prefix, "outcome"), "missing (every trace item has one)")
        elif type(outcome) is str:
            outcome = key_name(outcome, prefix, "outcome") or "unknown"
        else:
            expected(prefix, "outcome", "a string", outcome)

    truncated = flag(get("truncated"), prefix, "truncated")
    logs, cut = _logs(get("logs"), prefix)
    exceptions, cut_exceptions = _exceptions(get("exceptions"), prefix)
    if "diagnosticsChannelEvents" in extra and _diagnostics(extra, prefix):
        truncated = True

    version = extra.get("scriptVersion")
    timestamp = get("eventTimestamp")
    if not (type(timestamp) is int and MIN_MS <= timestamp < MAX_MS):
        timestamp = epoch_ms(timestamp, prefix, "eventTimestamp")
    cpu, wall = get("cpuTime"), get("wallTime")
    if not (type(cpu) is int and 0 <= cpu <= MAX_DURATION_MS):
        cpu = duration_ms(cpu, prefix, "cpuTime")
    if envelope and cpu == 0:
        # The logger never measured CPU and sent 0 until it learnt to leave cpuTime out; its
        # older copies still run in services. 0 there means "not measured": NULL, not 0 ms.
        cpu = None
    if not (type(wall) is int and 0 <= wall <= MAX_DURATION_MS):
        wall = duration_ms(wall, prefix, "wallTime")
    script = get("scriptName")
    if type(script) is not str or not script or len(script) > _SHORT:
        script = key_name(script, prefix, "scriptName")
        if script is None and logs:
            script, logs = _dev_prefix(logs)
    # The optional columns are usually absent: test before paying for a call.
    entrypoint, namespace, tags = get("entrypoint"), get("dispatchNamespace"), get("scriptTags")
    span_context = get("spanContext")
    trace_id = span_id = None
    dropped: tuple[str, ...] = ()
    if span_context is not None:  # the logger's envelope, a streaming tail event
        trace_id, span_id, rest, dropped = span_ids(span_context)
        if rest is not None:
            extra["spanContext"] = rest
    return Invocation(  # positional: see _POSITIONAL
        script,
        event_type,
        timestamp,
        outcome,
        method,
        url,
        code,
        cpu,
        wall,
        logs,
        exceptions,
        truncated or cut or cut_exceptions,
        None if version is None else _version(version, prefix),
        None if entrypoint is None else opt_str(entrypoint, prefix, "entrypoint"),
        None if namespace is None else opt_str(namespace, prefix, "dispatchNamespace"),
        () if tags is None else str_list(tags, prefix, "scriptTags"),
        extra,
        "envelope" if envelope else "trace",
        dropped,
        trace_id,
        span_id,
    )


def _event(
    event: JSON, extra: dict[str, JSON], prefix: str, variants: tuple[tuple[str, str], ...]
) -> tuple[str, str | None, str | None, int | None]:
    """`(event_type, method, url, status)`; copies the event's details into `extra`."""
    if event is None:
        return "unknown", None, None, None
    if type(event) is not dict:
        expected(prefix, "event", "an object or null", event)
    if not event:
        return "connect", None, None, None
    event_type = "unknown"  # a variant this decoder does not know: details kept in extra
    for key, kind in variants:
        if key in event:
            event_type = kind
            break
    else:
        if event.get("type") in _OVERLOAD_TYPES:
            event_type = "overload"
    if event_type == "fetch":
        return _fetch(event, extra, prefix)
    if event_type == "job" or event_type == "log":
        _envelope_event(event, event_type, prefix)
    _copy(event, extra)
    return event_type, None, None, None


def _fetch(
    event: dict[str, JSON], extra: dict[str, JSON], prefix: str
) -> tuple[str, str | None, str | None, int | None]:
    request = event["request"]
    if type(request) is not dict:
        expected(prefix, "event.request", "an object", request)
    # Headers and cf go to `extra` as given (redaction is a later stage); checked to be
    # objects because that stage indexes them.
    for name in ("headers", "cf"):
        value = request.get(name)
        if value is not None and type(value) is not dict:
            expected(prefix, f"event.request.{name}", "an object", value)
    method = opt_str(request.get("method"), prefix, "event.request.method")
    # An oversized request keeps only its method: the URL is then "" or absent.
    url = opt_str(request.get("url"), prefix, "event.request.url")
    _copy(request, extra, _REQUEST_TYPED)
    code = None
    response = event.get("response")
    if response is not None:
        if type(response) is not dict:
            expected(prefix, "event.response", "an object or null", response)
        code = status(response.get("status"), prefix, "event.response.status")
        if len(response) > ("status" in response):  # keys besides status: rare, kept
            _copy({"response": {k: v for k, v in response.items() if k != "status"}}, extra)
    if len(event) > 1 + ("response" in event):
        _copy(event, extra, _EVENT_TYPED)
    return "fetch", method, url, code


def _envelope_event(event: dict[str, JSON], event_type: str, prefix: str) -> None:
    """`{"job": {"name": ...}}` needs its name; `{"log": {...}}` only to be an object."""
    details = event[event_type]
    if type(details) is not dict:
        expected(prefix, f"event.{event_type}", "an object", details)
    if event_type == "job":
        name = details.get("name")
        if type(name) is not str or not name:
            expected(prefix, "event.job.name", "a non-empty string", name)


def _copy(details: dict[str, JSON], extra: dict[str, JSON], skip: tuple[str, ...] = ()) -> None:
    """Event details into `extra`; a name already taken by a top-level key gets `event.`."""
    for key, value in details.items():
        if key not in skip:
            extra[key if key not in extra else f"event.{key}"] = value


def _logs(logs: JSON, prefix: str) -> tuple[tuple[LogLine, ...], bool]:
    """The log lines, and whether one is the runtime's size-limit marker."""
    if type(logs) is not list:
        if logs is None:
            return (), False
        expected(prefix, "logs", "an array", logs)
    lines = []
    cut = False
    for i, entry in enumerate(logs):
        line = log_line(entry, f"{prefix}logs[{i}].")
        if is_limit_marker(line):
            cut = True
        lines.append(line)
    return tuple(lines), cut


def _dev_prefix(logs: tuple[LogLine, ...]) -> tuple[str | None, tuple[LogLine, ...]]:
    """`wrangler dev` running several Workers prepends the Worker's name, as an argument of its
    own, to every `console.log`, `.info` and `.debug` call: `["[producer]", "text"]`, coloured
    (`"\\u001b[34m[producer]\\u001b[39m"`) on a terminal. The runtime names no script there, so
    when every such line of an unnamed invocation starts with one name, that name is the
    script's, and it is taken off the lines, colour codes and all. Anything else: no name."""
    name = None
    ends: list[int] = []
    for line in logs:
        if line.level in _DEV_WRAPPED:
            found = _DEV_PREFIX.match(line.text)
            if found is None or (name is not None and found[1] != name):
                return None, logs
            name = found[1]
            ends.append(found.end())
    if name is None:
        return None, logs
    cut = iter(ends)
    return name, tuple(
        dataclasses.replace(line, text=line.text[next(cut) :])
        if line.level in _DEV_WRAPPED
        else line
        for line in logs
    )


def _exceptions(entries: JSON, prefix: str) -> tuple[tuple[ExceptionInfo, ...], bool]:
    if type(entries) is not list:
        if entries is None:
            return (), False
        expected(prefix, "exceptions", "an array", entries)
    if not entries:
        return (), False
    found = tuple(exception_info(e, f"{prefix}exceptions[{i}].") for i, e in enumerate(entries))
    cut = any(e.message.startswith(LIMIT_EXCEPTION_PREFIX) for e in found)
    return found, cut


def _diagnostics(extra: dict[str, JSON], prefix: str) -> bool:
    """Whether the runtime's `workerd.LimitExceeded` channel marker is present. An empty list
    is dropped from `extra`: it is in every current trace item and says nothing."""
    events = extra["diagnosticsChannelEvents"]
    if events == []:
        del extra["diagnosticsChannelEvents"]
        return False
    if type(events) is not list:
        expected(prefix, "diagnosticsChannelEvents", "an array", events)
    return any(type(e) is dict and e.get("channel") == "workerd.LimitExceeded" for e in events)


def _version(version: JSON, prefix: str) -> str | None:
    """`scriptVersion.id`, else its `tag`; the whole object stays in `extra`."""
    if type(version) is not dict:
        expected(prefix, "scriptVersion", "an object", version)
    found = opt_str(version.get("id"), prefix, "scriptVersion.id")
    if found is None:
        found = opt_str(version.get("tag"), prefix, "scriptVersion.tag")
    return found
